//! The agent's flags (and `--config` file keys).
use std::{net::IpAddr, time::Duration};

use clap::Parser;
use lb_common::wire::DEFAULT_WEIGHT;
use lb_host::cli::{parse_any_group, parse_duration, parse_port};

use crate::health::CheckSpec;

#[derive(Parser)]
#[command(
    version,
    about = "Registers this backend with XDP load balancers on its segment",
    // A flag given twice keeps the last: the command line overrides --config.
    args_override_self = true
)]
pub struct Args {
    /// Settings file (TOML): each key a flag of this command, for example
    /// `iface = "eth0"`, `vip = "10.0.0.100"`, `weight = 200`,
    /// `check = ["http://127.0.0.1:80/"]`; flags on the command line
    /// override it (`--check` adds to the file's).
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Interface facing the LB; its first address of the group's family
    /// is announced (IPv6: its first global or unique-local one).
    #[arg(long, required_unless_present_any = ["generate", "check_kernel"])]
    pub iface: Option<String>,
    /// Write the man page or a shell completion script to stdout, and exit.
    #[arg(long, value_enum, exclusive = true)]
    pub generate: Option<lb_host::cli::Generated>,
    /// Print the kernel features backend-agent and lb-user rely on, each
    /// with the Linux version that brought it and whether this kernel has
    /// it, and exit (non-zero if the agent lacks one).
    #[arg(long, exclusive = true)]
    pub check_kernel: bool,
    /// Print the state of the agent running on --iface (the LBs it knows,
    /// its service state, its last transitions) and exit.
    #[arg(long)]
    pub status: bool,
    /// Multicast group shared with the LB: IPv4, or IPv6 (`ff15::4c42`:
    /// the agent joins over MLD and announces over UDPv6).
    #[arg(long, default_value = "239.192.0.1", value_parser = parse_any_group)]
    pub group: IpAddr,
    /// The LB's announcement port (>= 1024).
    #[arg(long, default_value_t = 2000, value_parser = parse_port)]
    pub port: u16,
    /// Weight announced to the LB.
    #[arg(long, default_value_t = DEFAULT_WEIGHT)]
    pub weight: u16,
    /// TTL of the membership reports. Default: 1 for IGMP reports on the
    /// segment, and 16 for routed reports (sent only in answer to a routed
    /// query, protocol §4.4), which must cross the routers the query came through.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=255))]
    pub ttl: Option<u32>,
    /// SipHash key (32 hex digits) shared with the LB; announcements are
    /// tagged with it. Without one they carry a zero tag.
    #[arg(long)]
    pub key_file: Option<std::path::PathBuf>,
    /// Virtual IP served through the LB (direct server return): put on the
    /// loopback, with ARP for it left to the LB; both undone on exit.
    #[arg(long)]
    pub vip: Option<IpAddr>,
    /// Service check: `tcp:PORT` (on 127.0.0.1), `http://HOST:PORT/PATH`
    /// (2xx or 3xx passes) or `exec:COMMAND` (exit 0 passes); repeat for
    /// several, all must pass. While it fails the backend is announced
    /// DOWN: it stays registered and gets no traffic. It starts DOWN.
    #[arg(long = "check")]
    pub checks: Vec<CheckSpec>,
    /// How often the checks run.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub check_interval: Duration,
    /// How long one check may take; below the interval. Default: half of it.
    #[arg(long, value_parser = parse_duration)]
    pub check_timeout: Option<Duration>,
    /// Passing rounds in a row that bring a DOWN service up.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub rise: u32,
    /// Serve Prometheus metrics (OpenMetrics text) at http://ADDR:PORT/metrics.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Failing rounds in a row that bring an UP service down.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub fall: u32,
    /// Directory on a bpffs where a restart that keeps state (SIGQUIT)
    /// pins the decapsulation program's link for the next agent.
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf/xdp-lb-agent")]
    pub pin_path: std::path::PathBuf,
}

impl Args {
    /// The interface (required unless `--generate`, which exits first).
    pub fn iface(&self) -> &str {
        self.iface.as_deref().unwrap_or_default()
    }

    /// TTL of IGMP reports on the segment.
    pub fn igmp_ttl(&self) -> u32 {
        self.ttl.unwrap_or(1)
    }

    /// TTL of routed reports, which must cross routers.
    pub fn routed_ttl(&self) -> u32 {
        self.ttl.unwrap_or(DEFAULT_ROUTED_TTL)
    }
}

/// TTL of routed reports without `--ttl`: enough for any chain of routers
/// in one site (the default group is administratively scoped).
const DEFAULT_ROUTED_TTL: u32 = 16;

/// The checks' timeout: given, or half the interval; below the interval.
pub fn check_timeout(args: &Args) -> anyhow::Result<Duration> {
    let limit = args.check_timeout.unwrap_or(args.check_interval / 2);
    if limit >= args.check_interval {
        anyhow::bail!(
            "--check-timeout ({}) must be below --check-interval ({})",
            humantime::format_duration(limit),
            humantime::format_duration(args.check_interval)
        );
    }
    Ok(limit)
}
