//! `lb-user run`: the flags, their validation, then start and serve.

mod serve;
mod start;

use std::{
    fs,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context, bail};
use clap::Parser;
use lb_common::{
    DEFAULT_MAX_BACKENDS, DEFAULT_MAX_FLOWS, ForwardingMode, MAX_AUTH_KEYS, MAX_MAGLEV_SIZE,
};
use lb_host::cli::{parse_duration, parse_port, read_key_file};
use lb_user::{
    aging::AgingParams,
    config::{self, GroupSpec, Plan},
    control::ControlParams,
    instance::ModeArg,
    maglev::{self, DEFAULT_TABLE_SIZE},
    queries::QueryVersion,
};

use crate::DEFAULT_PIN_PATH;

#[derive(Parser)]
pub struct RunArgs {
    /// Interface to attach to; its first IPv4 address is the LB's address
    /// (and, for IPv6 groups, its first global or unique-local IPv6 one).
    #[arg(long)]
    iface: String,
    /// Multicast group, IPv4 or IPv6 (`ff15::4c42`: its backends register
    /// over MLD and UDPv6), `ADDR`, `ADDR:PORT` or `[ADDR6]:PORT`; repeat
    /// for several groups, each with its own port.
    #[arg(
        long = "group",
        default_value = "239.192.0.1",
        conflicts_with = "config"
    )]
    groups: Vec<String>,
    /// TOML file with several groups, VIPs and services (see docs/operations.md);
    /// replaces --group, --vip and --service.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Announcement port of groups given without one (>= 1024).
    #[arg(long, default_value_t = 2000, value_parser = parse_port)]
    port: u16,
    /// Query interval P.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    query_interval: Duration,
    /// Max response time carried in the query; must be below P. Default: 1s, or P/2 if P <= 1s.
    #[arg(long, value_parser = parse_duration)]
    max_response_time: Option<Duration>,
    /// Heartbeat timeout T.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    timeout: Duration,
    /// A backend with more than this many consecutive misses is removed (N).
    #[arg(long, default_value_t = 10)]
    max_misses: u32,
    /// Periods in a row without a membership report before a group is dead (R).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    robustness: u32,
    /// Layout of the query: 3 (12 bytes; hosts keep IGMPv3 and report a
    /// killed agent's leave at once) or 2 (the original 8 bytes).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=3))]
    query_version: u8,
    /// TTL of the queries. Above 1 (backends behind multicast routers, as
    /// many hops as routers plus one), each query also goes out as a
    /// routed UDP query to the group's port, which routers replicate.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=255))]
    ttl: u32,
    /// Directory on a bpffs where the maps are pinned.
    #[arg(long, default_value = DEFAULT_PIN_PATH)]
    pin_path: PathBuf,
    /// Capacity of the server list.
    #[arg(long, default_value_t = DEFAULT_MAX_BACKENDS, value_parser = clap::value_parser!(u32).range(1..))]
    max_backends: u32,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
    xdp_mode: ModeArg,
    /// Serve Prometheus metrics (OpenMetrics text) at http://ADDR:PORT/metrics.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<std::net::SocketAddr>,
    /// How client traffic reaches a backend (protocol §7): `l2` rewrites the MAC
    /// (backends on the LB's segment only), `ipip` wraps every packet in an
    /// outer IPv4 header, `auto` does L2 on the segment and IPIP beyond it.
    #[arg(long, value_enum, default_value_t = ForwardingArg::Auto)]
    forwarding: ForwardingArg,
    /// Virtual IP of the service; lb-user puts it on the interface so the
    /// LB answers ARP for it.
    #[arg(long, requires = "services", conflicts_with = "config")]
    vip: Option<IpAddr>,
    /// A port of the VIP to balance, `tcp:PORT` or `udp:PORT`; repeatable.
    /// Served by the first group's backends.
    #[arg(long = "service", requires = "vip")]
    services: Vec<String>,
    /// Entries of the smallest Maglev table (a prime); tables grow with
    /// the backend count, to 100 entries per backend, up to 2,097,143.
    #[arg(long, default_value_t = DEFAULT_TABLE_SIZE)]
    maglev_size: u32,
    /// How long a backend must have been registered to be in the previous
    /// tables: a packet of a flow this LB has no entry for (after a
    /// failover or restart) goes to its pick naming the backend the
    /// previous table gives, which gets it when the pick holds no such
    /// connection. Connections older than this that fail over after a
    /// change of the backends may break.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    second_chance_window: Duration,
    /// SipHash key (32 hex digits) that announcements must be tagged with;
    /// give two during a key rotation. Without one, any announcement counts.
    /// SIGHUP reads the files again (a rotation without a restart).
    #[arg(long = "key-file")]
    key_files: Vec<PathBuf>,
    /// Largest accepted distance between an announcement's sequence (the
    /// backend's clock) and the LB's clock, with a key set.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    max_clock_skew: Duration,
    /// Only sources in this prefix (`ADDR/LEN`, IPv4 or IPv6) may announce;
    /// repeatable. Without it, any source may.
    #[arg(long, value_parser = config::parse_cidr)]
    allow: Vec<(std::net::IpAddr, u8)>,
    /// Capacity of the connection table: the flows it holds (80 bytes
    /// each), beyond which the least recently used make room.
    #[arg(long, default_value_t = DEFAULT_MAX_FLOWS, value_parser = clap::value_parser!(u32).range(1..))]
    max_flows: u32,
}

/// The groups and services to serve, from --config or the flags.
fn plan_from_args(args: &RunArgs) -> anyhow::Result<Plan> {
    let specs = match &args.config {
        Some(path) => {
            let text =
                fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            config::parse_file(&text).with_context(|| path.display().to_string())?
        }
        None => args
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let (address, port) = split_group_port(g)?;
                // The flags' VIP and services belong to the first group.
                let first = i == 0;
                Ok(GroupSpec {
                    address: address.to_owned(),
                    port,
                    vip: args.vip.filter(|_| first).map(|v| v.to_string()),
                    services: if first {
                        args.services.clone()
                    } else {
                        Vec::new()
                    },
                })
            })
            .collect::<anyhow::Result<_>>()?,
    };
    Ok(config::plan(&specs, args.port)?)
}

/// `ADDR`, `ADDR:PORT`, `IPV6` or `[IPV6]:PORT` of `--group`.
fn split_group_port(g: &str) -> anyhow::Result<(&str, Option<u16>)> {
    let port = |p: &str| parse_port(p).map_err(|e| anyhow::anyhow!("--group {g}: {e}"));
    if let Some(rest) = g.strip_prefix('[') {
        let (address, after) = rest.split_once(']').ok_or_else(|| {
            anyhow::anyhow!("--group {g}: no closing ] (write [ff15::4c42]:2001)")
        })?;
        return match after.strip_prefix(':') {
            Some(p) => Ok((address, Some(port(p)?))),
            None if after.is_empty() => Ok((address, None)),
            None => anyhow::bail!("--group {g}: expected :PORT after ]"),
        };
    }
    match g.split_once(':') {
        // Two colons or more: a bare IPv6 address.
        Some((_, rest)) if rest.contains(':') => Ok((g, None)),
        Some((a, p)) => Ok((a, Some(port(p)?))),
        None => Ok((g, None)),
    }
}

/// `--forwarding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ForwardingArg {
    Auto,
    L2,
    Ipip,
}

impl From<ForwardingArg> for ForwardingMode {
    fn from(arg: ForwardingArg) -> Self {
        match arg {
            ForwardingArg::Auto => ForwardingMode::Auto,
            ForwardingArg::L2 => ForwardingMode::L2,
            ForwardingArg::Ipip => ForwardingMode::Ipip,
        }
    }
}

/// What `run` was asked to do, checked before anything is touched.
struct Settings {
    plan: Plan,
    keys: Vec<[u8; 16]>,
    control: ControlParams,
}

/// The keys of the `--key-file`s (read again on SIGHUP).
fn read_keys(files: &[PathBuf]) -> anyhow::Result<Vec<[u8; 16]>> {
    files
        .iter()
        .map(|path| read_key_file(path).map_err(anyhow::Error::msg))
        .collect()
}

/// Checks the flags that need no privileges and no system state.
fn validate(args: &RunArgs) -> anyhow::Result<Settings> {
    let max_response_time = args
        .max_response_time
        .unwrap_or_else(|| Duration::from_secs(1).min(args.query_interval / 2));
    if max_response_time >= args.query_interval {
        bail!(
            "--max-response-time ({}) must be below --query-interval ({})",
            humantime::format_duration(max_response_time),
            humantime::format_duration(args.query_interval)
        );
    }
    let plan = plan_from_args(args)?;
    if args.key_files.len() > MAX_AUTH_KEYS as usize {
        bail!("at most {MAX_AUTH_KEYS} --key-file (the current key and the next)");
    }
    let keys = read_keys(&args.key_files)?;
    if args.maglev_size > MAX_MAGLEV_SIZE {
        bail!(
            "--maglev-size {} is above the largest table, {MAX_MAGLEV_SIZE}",
            args.maglev_size
        );
    }
    if !maglev::is_prime(args.maglev_size) {
        bail!(
            "--maglev-size {} is not a prime (try 65537, 16381 or 4093)",
            args.maglev_size
        );
    }
    let control = ControlParams {
        // Filled in by `start` from the interface.
        lb_addr: Ipv4Addr::UNSPECIFIED,
        query_interval: args.query_interval,
        max_response_time,
        aging: AgingParams {
            timeout: args.timeout,
            max_misses: args.max_misses,
        },
        robustness: args.robustness,
        max_clock_skew: args.max_clock_skew,
        query_version: if args.query_version == 2 {
            QueryVersion::V2
        } else {
            QueryVersion::V3
        },
    };
    Ok(Settings {
        plan,
        keys,
        control,
    })
}

/// Validates the flags, starts the instance and serves until a signal.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let settings = validate(args)?;
    serve::serve(start::start(args, settings)?, &args.key_files)
}
