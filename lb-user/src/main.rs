//! lb-user: loads the XDP program, runs the registration control plane and
//! shows the status of a running instance.
use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, bail};
use aya::programs::XdpMode;
use aya_log::EbpfLogger;
use clap::{Parser, Subcommand};
use lb_common::{
    DEFAULT_MAX_BACKENDS, DEFAULT_MAX_FLOWS, ForwardingMode, MAX_AUTH_KEYS, MAX_MAGLEV_SIZE,
};
use lb_host::{
    cli::{parse_duration, parse_port, read_key_file},
    igmp_socket::IgmpSocket,
    kernel,
    metrics_server::MetricsEndpoint,
    routed_socket::RoutedSocket,
};
use lb_user::{
    aging::AgingParams,
    config::{self, GroupSpec, Plan},
    control::{ControlParams, Controller, Queriers, QueryVersion, RoutedQuerier},
    forwarding::{Reach, Segment},
    instance::{self, InstanceLock, ModeArg},
    maglev::{self, DEFAULT_TABLE_SIZE},
    maps::{self, GroupConfig, LbMaps, LoadParams, load_program, xdp_program},
    metrics::{self, ControlMetrics},
    next_hop::{self, NextHops},
    status, system,
};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};
use tracing::{info, warn};

const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/xdp-lb";

#[derive(Parser)]
#[command(
    version,
    about = "XDP layer-4 load balancer with zero-configuration backend registration"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach the XDP program to an interface and run the control plane.
    Run(Box<RunArgs>),
    /// Detach the XDP program and remove every pin of an instance that is
    /// not running (one killed with SIGKILL keeps forwarding until this).
    Stop {
        /// Directory on a bpffs where `run` pinned its maps.
        #[arg(long, default_value = DEFAULT_PIN_PATH)]
        pin_path: PathBuf,
    },
    /// Write the man page or a shell completion script to stdout.
    Generate {
        /// What to write.
        #[arg(value_enum)]
        what: lb_host::cli::Generated,
    },
    /// Print the kernel features lb-user and backend-agent rely on, each
    /// with the Linux version that brought it and whether this kernel has
    /// it; fails if lb-user lacks one.
    CheckKernel,
    /// Show the registered backends of a running instance.
    Status {
        /// Directory on a bpffs where `run` pinned its maps.
        #[arg(long, default_value = DEFAULT_PIN_PATH)]
        pin_path: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Redraw the table in place every `--interval` until Ctrl-C.
        #[arg(long)]
        watch: bool,
        /// How often `--watch` redraws.
        #[arg(long, default_value = "1s", value_parser = parse_duration, requires = "watch")]
        interval: Duration,
    },
}

#[derive(Parser)]
struct RunArgs {
    /// Interface to attach to; its first IPv4 address is the LB's address.
    #[arg(long)]
    iface: String,
    /// Multicast group, `ADDR` or `ADDR:PORT`; repeat for several groups.
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
    vip: Option<Ipv4Addr>,
    /// A port of the VIP to balance, `tcp:PORT` or `udp:PORT`; repeatable.
    /// Served by the first group's backends.
    #[arg(long = "service", requires = "vip")]
    services: Vec<String>,
    /// Entries of the smallest Maglev table (a prime); tables grow with
    /// the backend count, to 100 entries per backend, up to 2,097,143.
    #[arg(long, default_value_t = DEFAULT_TABLE_SIZE)]
    maglev_size: u32,
    /// SipHash key (32 hex digits) that announcements must be tagged with;
    /// give two during a key rotation. Without one, any announcement counts.
    /// SIGHUP reads the files again (a rotation without a restart).
    #[arg(long = "key-file")]
    key_files: Vec<PathBuf>,
    /// Largest accepted distance between an announcement's sequence (the
    /// backend's clock) and the LB's clock, with a key set.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    max_clock_skew: Duration,
    /// Only sources in this prefix (`ADDR/LEN`) may announce; repeatable.
    /// Without it, any source may.
    #[arg(long, value_parser = config::parse_cidr)]
    allow: Vec<(Ipv4Addr, u8)>,
    /// Capacity of the connection table: the flows it holds (80 bytes
    /// each), beyond which the least recently used make room.
    #[arg(long, default_value_t = DEFAULT_MAX_FLOWS, value_parser = clap::value_parser!(u32).range(1..))]
    max_flows: u32,
}

/// Removes the instance's pins (detaching XDP) when `run` ends, if armed:
/// from the start for a new instance, once running for an adopted one, so
/// that a failed takeover leaves the surviving data path alone.
struct PinGuard {
    dir: PathBuf,
    armed: bool,
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        if self.armed {
            instance::remove_pins(&self.dir);
        }
    }
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
                let (address, port) = match g.split_once(':') {
                    Some((a, p)) => (
                        a,
                        Some(parse_port(p).map_err(|e| anyhow::anyhow!("--group {g}: {e}"))?),
                    ),
                    None => (g.as_str(), None),
                };
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

/// A started instance: XDP attached, maps pinned, control plane ready.
struct Running {
    controller: Controller,
    tick: Duration,
    /// Reads the records XDP logs (registrations, removals, a full list).
    xdp_log: EbpfLogger<&'static dyn log::Log>,
    /// The loaded object: its program stays referenced while we run.
    _ebpf: aya::Ebpf,
    /// Held for the life of the instance, released in reverse order.
    vips: Vec<system::AddedAddress>,
    pins: PinGuard,
    _lock: InstanceLock,
}

/// The facts about `--iface` that `run` needs.
struct Interface {
    addr: Ipv4Addr,
    prefix_len: u8,
    mac: [u8; 6],
    index: u32,
}

impl Interface {
    fn read(name: &str) -> anyhow::Result<Self> {
        let (addr, prefix_len) = system::interface_ipv4_net(name)?;
        Ok(Self {
            addr,
            prefix_len,
            mac: system::interface_mac(name)?,
            index: system::interface_index(name)?,
        })
    }
}

/// The program, loaded with its maps pinned and attached to the interface,
/// or swapped into the link a killed instance left.
struct Attached {
    ebpf: aya::Ebpf,
    pins: PinGuard,
    adopted: bool,
}

fn attach(args: &RunArgs, iface: &Interface, auth_on: bool) -> anyhow::Result<Attached> {
    // A link left behind means a killed instance whose XDP still forwards.
    let adopting = args.pin_path.join(instance::LINK_PIN).exists();
    let mut pins = PinGuard {
        dir: args.pin_path.clone(),
        armed: !adopting,
    };
    let choice = instance::choose_mode(
        args.xdp_mode,
        system::interface_driver(&args.iface)?.as_deref(),
    );
    if choice.forwarding_lost {
        warn!(iface = %args.iface, "XDP mode: {}", choice.why);
    } else if !adopting {
        info!(iface = %args.iface, mode = ?choice.mode, "XDP mode: {}", choice.why);
    }
    // Generic XDP (asked for, or the kernel's fallback) sees GSO
    // super-packets whole; native XDP sees wire frames only.
    let gso_handoff = choice.mode != XdpMode::Driver;
    let load = LoadParams {
        lb_addr: iface.addr,
        lb_mac: iface.mac,
        max_backends: args.max_backends,
        max_flows: args.max_flows,
        allowlist_on: !args.allow.is_empty(),
        auth_on,
        forwarding: args.forwarding.into(),
        segment_prefix_len: iface.prefix_len,
        gso_handoff,
    };
    let mut ebpf = load_program(load, Some(&args.pin_path)).with_context(|| {
        format!(
            "loading the XDP program with its maps pinned at {dir} (if they were left by an instance with \
             other flags or an older build, restart with its flags or remove it with `lb-user stop --pin-path {dir}`)",
            dir = args.pin_path.display()
        )
    })?;
    let program = xdp_program(&mut ebpf)?;
    let attachment = instance::attach_or_adopt(program, iface.index, choice.mode, &args.pin_path)
        .with_context(|| format!("attaching XDP to {}", args.iface))?;
    pins.armed = true;
    if attachment.adopted {
        info!(pin_path = %args.pin_path.display(), "took over the XDP program and maps left by an earlier instance (its attach mode stays)");
    }
    if gso_handoff {
        let program = maps::gso_program(&mut ebpf)?;
        instance::attach_or_adopt_gso(program, iface.index, &args.pin_path)
            .with_context(|| format!("attaching the GSO program to {}", args.iface))?;
        info!(iface = %args.iface, "GSO program on the ingress (TCX): GSO super-packets to IPIP backends, which generic XDP cannot wrap, are wrapped there");
    }
    Ok(Attached {
        ebpf,
        pins,
        adopted: attachment.adopted,
    })
}

/// Attaches (or adopts) the program, fills its maps and opens the query socket.
fn start(args: &RunArgs, settings: Settings) -> anyhow::Result<Running> {
    system::require_root("lb-user run")?;
    kernel::require(kernel::User::Lb)?;
    let iface = Interface::read(&args.iface)?;
    // Bound first: a port in use is an error before anything is attached.
    let metrics_endpoint = MetricsEndpoint::bind_flag(args.metrics)?;
    system::require_bpffs(&args.pin_path)?;
    let lock = InstanceLock::acquire(&args.pin_path)?;
    fs::create_dir_all(&args.pin_path)
        .with_context(|| format!("creating the pin directory {}", args.pin_path.display()))?;
    let Attached {
        mut ebpf,
        pins,
        adopted,
    } = attach(args, &iface, !settings.keys.is_empty())?;
    // Records go through the `log` facade into this process's tracing output.
    let xdp_log = EbpfLogger::init(&mut ebpf).context("reading the XDP program's log ring")?;
    let mut maps = LbMaps::take(&mut ebpf)?;
    maps.set_keys(&settings.keys)?;
    for &(prefix, len) in &args.allow {
        maps.allow(prefix, len)?;
    }
    let groups = &settings.plan.groups;
    let queriers = Queriers {
        igmp: open_query_socket(&args.iface, iface.index, args.ttl, groups)?,
        routed: open_routed_querier(args, &iface, settings.keys.first().copied())?,
    };
    let params = ControlParams {
        lb_addr: iface.addr,
        ..settings.control
    };
    let reach = Reach {
        mode: args.forwarding.into(),
        segment: Segment {
            addr: iface.addr,
            prefix_len: iface.prefix_len,
        },
    };
    let control_metrics = ControlMetrics::default();
    let mut controller = Controller::new(params, maps, queriers, groups, control_metrics.clone())?;
    let services = &settings.plan.services;
    let next_hops = (reach.mode != ForwardingMode::L2 && !services.is_empty())
        .then(|| NextHops::open(&args.iface, reach, &args.pin_path))
        .transpose()?;
    controller.serve(services, args.maglev_size, reach, next_hops)?;
    if let Some(endpoint) = metrics_endpoint {
        serve_metrics(endpoint, &args.pin_path, control_metrics)?;
    }
    // The VIP lives on the interface so that the LB answers ARP for it;
    // XDP takes the service traffic before the stack sees it.
    let vips = settings
        .plan
        .vips
        .iter()
        .map(|&vip| system::AddedAddress::add(vip, &args.iface, adopted))
        .collect::<Result<Vec<_>, _>>()?;
    info!(
        iface = %args.iface, lb_addr = %iface.addr, pin_path = %args.pin_path.display(),
        groups = ?groups.iter().map(|g| format!("{}:{}", g.group, g.port)).collect::<Vec<_>>(),
        query_interval = %humantime::format_duration(args.query_interval),
        timeout = %humantime::format_duration(args.timeout),
        max_misses = args.max_misses, robustness = args.robustness,
        "load balancer running"
    );
    Ok(Running {
        controller,
        tick: params.tick(),
        xdp_log,
        _ebpf: ebpf,
        vips,
        pins,
        _lock: lock,
    })
}

/// The raw IGMP socket the queries leave from, joined to every group (so
/// the NIC accepts their reports) and to 224.0.0.22 (IGMPv3 reports).
fn open_query_socket(
    iface: &str,
    ifindex: u32,
    ttl: u32,
    groups: &[GroupConfig],
) -> anyhow::Result<IgmpSocket> {
    let socket =
        IgmpSocket::open(iface, ifindex, ttl).context("opening the raw IGMP socket for queries")?;
    for g in groups {
        socket
            .join(g.group)
            .with_context(|| format!("joining group {} on {iface}", g.group))?;
    }
    socket
        .join(Ipv4Addr::new(224, 0, 0, 22))
        .context("joining 224.0.0.22 for IGMPv3 reports")?;
    Ok(socket)
}

/// With `--ttl` above 1 backends may sit behind multicast routers, which
/// never forward IGMP: the queries then also go out as UDP (protocol §4.4),
/// tagged with the first key.
fn open_routed_querier(
    args: &RunArgs,
    iface: &Interface,
    key: Option<[u8; 16]>,
) -> anyhow::Result<Option<RoutedQuerier>> {
    if args.ttl <= 1 {
        return Ok(None);
    }
    let socket = RoutedSocket::sender(iface.addr, iface.index, args.ttl).with_context(|| {
        format!(
            "opening the UDP socket for routed queries from {}",
            iface.addr
        )
    })?;
    info!(
        ttl = args.ttl,
        "queries also go out as routed UDP queries to each group's port, for backends behind multicast routers"
    );
    Ok(Some(RoutedQuerier { socket, key }))
}

/// Serves `/metrics` from the pinned maps (read as `status` reads them,
/// from a thread of their own) and the control loop's own measurements.
fn serve_metrics(
    endpoint: MetricsEndpoint,
    pin_path: &Path,
    control: ControlMetrics,
) -> anyhow::Result<()> {
    let maps = LbMaps::open_pinned(pin_path).context("opening the pinned maps for /metrics")?;
    info!(addr = %endpoint.local_addr()?, "serving Prometheus metrics at /metrics");
    endpoint.serve(move || {
        let status = status::read(&maps, system::monotonic_ns()).map_err(|e| e.to_string())?;
        metrics::render(&status, &control).map_err(|e| e.to_string())
    });
    Ok(())
}

/// SIGHUP: the key files read again and installed at once (the current and
/// the next key during a rotation); a file that cannot be read keeps the
/// keys as they were.
fn reload_keys(controller: &mut Controller, key_files: &[PathBuf]) {
    if key_files.is_empty() {
        warn!("SIGHUP: no --key-file to read again (keys are turned on only at start)");
        return;
    }
    match read_keys(key_files).and_then(|keys| Ok(controller.set_keys(&keys)?)) {
        Ok(()) => info!(
            keys = key_files.len(),
            "SIGHUP: announcement keys read again and in use"
        ),
        Err(e) => warn!("SIGHUP: keys not changed: {e:#}"),
    }
}

/// Runs the control loop until SIGINT or SIGTERM, and forwards XDP's log
/// records as they arrive.
fn serve(running: Running, key_files: &[PathBuf]) -> anyhow::Result<()> {
    let Running {
        mut controller,
        tick,
        xdp_log,
        mut vips,
        mut pins,
        ..
    } = running;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let keep_state = runtime.block_on(async {
        let mut sigterm =
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut sigint =
            signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut sigquit = signal(SignalKind::quit()).context("installing the SIGQUIT handler")?;
        let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        // SAFETY: the logger owns its ring's fd and never closes or replaces
        // it while registered; flushing only reads from it.
        let mut xdp_log = unsafe { AsyncFd::register_with_interest(xdp_log, Interest::READABLE) }
            .context("watching the XDP program's log ring")?;
        let mut tick = tokio::time::interval(tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let keep_state = loop {
            tokio::select! {
                _ = tick.tick() => controller.step(system::monotonic_ns())?,
                ready = xdp_log.readable_mut() => {
                    let mut guard = ready.context("reading the XDP program's log ring")?;
                    // Cleared before draining: a record written meanwhile
                    // wakes us again instead of waiting for the next one.
                    guard.clear_ready();
                    guard.get_inner_mut().flush();
                }
                _ = sigterm.recv() => break false,
                _ = sigint.recv() => break false,
                _ = sigquit.recv() => break true,
                _ = sighup.recv() => reload_keys(&mut controller, key_files),
            }
        };
        // Records written since the last wake-up.
        xdp_log.get_mut().flush();
        anyhow::Ok(keep_state)
    })?;
    if keep_state {
        // A restart: XDP stays attached through the pinned link and goes on
        // forwarding with the pinned maps; the next `run` adopts them all.
        pins.armed = false;
        vips.iter_mut().for_each(system::AddedAddress::keep);
        controller.keep_state();
        info!(
            "exiting and keeping state (SIGQUIT): XDP stays attached and forwarding, the pins, VIPs and settings stay for the next `run` with this --pin-path"
        );
    } else {
        info!("stopping: detaching XDP and removing the pins");
    }
    Ok(())
}

fn run(args: &RunArgs) -> anyhow::Result<()> {
    let settings = validate(args)?;
    serve(start(args, settings)?, &args.key_files)
}

fn stop(pin_path: &Path) -> anyhow::Result<()> {
    system::require_root("lb-user stop")?;
    let _lock = InstanceLock::acquire(pin_path)?;
    let removed = instance::remove_pins(pin_path);
    if removed.is_empty() {
        bail!("nothing is pinned at {}", pin_path.display());
    }
    println!(
        "removed {} pins from {}; XDP detached",
        removed.len(),
        pin_path.display()
    );
    if let Some((iface, value)) = next_hop::restore_recorded_forwarding(pin_path) {
        println!("net.ipv4.conf.{iface}.forwarding restored to {value}");
    }
    Ok(())
}

fn show_status(pin_path: &Path, json: bool) -> anyhow::Result<()> {
    system::require_root("lb-user status")?;
    let maps = LbMaps::open_pinned(pin_path)?;
    let report = status::read(&maps, system::monotonic_ns())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render_text());
    }
    Ok(())
}

/// `status --watch`: the table redrawn in place (cursor home, clear to the
/// end) every `interval`, until Ctrl-C, which ends it with status 0.
fn watch_status(pin_path: &Path, interval: Duration) -> anyhow::Result<()> {
    system::require_root("lb-user status")?;
    let maps = LbMaps::open_pinned(pin_path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut sigint =
            signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let report = status::read(&maps, system::monotonic_ns())?;
                    print!(
                        "\x1b[H\x1b[J{} (every {}, Ctrl-C to stop)\n{}",
                        pin_path.display(),
                        humantime::format_duration(interval),
                        report.render_text()
                    );
                    std::io::Write::flush(&mut std::io::stdout())?;
                }
                _ = sigint.recv() => break,
            }
        }
        println!();
        anyhow::Ok(())
    })
}

fn check_kernel() -> anyhow::Result<()> {
    print!("{}", kernel::report(&kernel::release()?)?);
    Ok(kernel::require(kernel::User::Lb)?)
}

fn main() -> ExitCode {
    lb_host::cli::main_with(|cli: Cli| match cli.command {
        Command::Run(args) => run(&args),
        Command::Status {
            pin_path,
            json,
            watch,
            interval,
        } => {
            if watch {
                watch_status(&pin_path, interval)
            } else {
                show_status(&pin_path, json)
            }
        }
        Command::Stop { pin_path } => stop(&pin_path),
        Command::Generate { what } => lb_host::cli::generate::<Cli>(what),
        Command::CheckKernel => check_kernel(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_subcommand_and_flag_has_a_help_line() {
        assert_eq!(
            lb_host::cli::undocumented::<super::Cli>(),
            Vec::<String>::new()
        );
    }
}
