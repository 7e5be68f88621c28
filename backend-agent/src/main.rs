//! backend-agent: registers this host with every LB that queries the group
//! (protocol §5.7). Answers each query with a suppressible membership
//! report and one announcement to the LB; sends LEAVING on SIGINT/SIGTERM.
//! SIGUSR1 switches it to DRAINING (no new flows), SIGUSR2 back. SIGQUIT
//! exits keeping state for the next agent (handover.rs).
mod checker;
mod decap;
mod handover;
mod health;
mod metrics;
mod schedule;
mod state;

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    process::ExitCode,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use clap::Parser;
use lb_common::wire::{
    AnnouncementV1, DEFAULT_WEIGHT, FLAG_DOWN, FLAG_DRAINING, FLAG_LEAVING, IGMP_V2_REPORT,
    IgmpMessage, Routed, igmp_v2_message,
};
use lb_host::{
    cli::{parse_duration, parse_group, parse_port, read_key_file},
    igmp_socket::{IgmpSocket, Received},
    kernel,
    metrics_server::MetricsEndpoint,
    routed_socket::{RoutedReceived, RoutedSocket},
    service_manager, system,
};
use rand::Rng;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    sync::mpsc,
    time::{Instant, sleep_until},
};
use tracing::{debug, error, info, warn};

use crate::{
    checker::CheckResult,
    decap::Decap,
    handover::{Inherited, KeptVip, Record},
    health::{CheckSpec, Health, State},
    metrics::AgentMetrics,
    schedule::{Due, Schedule, Via},
    state::AgentStatus,
};

#[derive(Parser)]
#[command(
    version,
    about = "Registers this backend with XDP load balancers on its segment",
    // A flag given twice keeps the last: the command line overrides --config.
    args_override_self = true
)]
struct Args {
    /// Settings file (TOML): each key a flag of this command, for example
    /// `iface = "eth0"`, `vip = "10.0.0.100"`, `weight = 200`,
    /// `check = ["http://127.0.0.1:80/"]`; flags on the command line
    /// override it (`--check` adds to the file's).
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Interface facing the LB; its first IPv4 address is announced.
    #[arg(long, required_unless_present_any = ["generate", "check_kernel"])]
    iface: Option<String>,
    /// Write the man page or a shell completion script to stdout, and exit.
    #[arg(long, value_enum, exclusive = true)]
    generate: Option<lb_host::cli::Generated>,
    /// Print the kernel features backend-agent and lb-user rely on, each
    /// with the Linux version that brought it and whether this kernel has
    /// it, and exit (non-zero if the agent lacks one).
    #[arg(long, exclusive = true)]
    check_kernel: bool,
    /// Print the state of the agent running on --iface (the LBs it knows,
    /// its service state, its last transitions) and exit.
    #[arg(long)]
    status: bool,
    /// Multicast group shared with the LB.
    #[arg(long, default_value = "239.192.0.1", value_parser = parse_group)]
    group: Ipv4Addr,
    /// The LB's announcement port (>= 1024).
    #[arg(long, default_value_t = 2000, value_parser = parse_port)]
    port: u16,
    /// Weight announced to the LB.
    #[arg(long, default_value_t = DEFAULT_WEIGHT)]
    weight: u16,
    /// TTL of the membership reports. Default: 1 for IGMP reports on the
    /// segment, and 16 for routed reports (sent only in answer to a routed
    /// query, protocol §4.4), which must cross the routers the query came through.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=255))]
    ttl: Option<u32>,
    /// SipHash key (32 hex digits) shared with the LB; announcements are
    /// tagged with it. Without one they carry a zero tag.
    #[arg(long)]
    key_file: Option<std::path::PathBuf>,
    /// Virtual IP served through the LB (direct server return): put on the
    /// loopback, with ARP for it left to the LB; both undone on exit.
    #[arg(long)]
    vip: Option<Ipv4Addr>,
    /// Service check: `tcp:PORT` (on 127.0.0.1), `http://HOST:PORT/PATH`
    /// (2xx or 3xx passes) or `exec:COMMAND` (exit 0 passes); repeat for
    /// several, all must pass. While it fails the backend is announced
    /// DOWN: it stays registered and gets no traffic. It starts DOWN.
    #[arg(long = "check")]
    checks: Vec<CheckSpec>,
    /// How often the checks run.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    check_interval: Duration,
    /// How long one check may take; below the interval. Default: half of it.
    #[arg(long, value_parser = parse_duration)]
    check_timeout: Option<Duration>,
    /// Passing rounds in a row that bring a DOWN service up.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    rise: u32,
    /// Serve Prometheus metrics (OpenMetrics text) at http://ADDR:PORT/metrics.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<std::net::SocketAddr>,
    /// Failing rounds in a row that bring an UP service down.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    fall: u32,
    /// Directory on a bpffs where a restart that keeps state (SIGQUIT)
    /// pins the decapsulation program's link for the next agent.
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf/xdp-lb-agent")]
    pin_path: std::path::PathBuf,
}

impl Args {
    /// The interface (required unless `--generate`, which exits first).
    fn iface(&self) -> &str {
        self.iface.as_deref().unwrap_or_default()
    }

    /// TTL of IGMP reports on the segment.
    fn igmp_ttl(&self) -> u32 {
        self.ttl.unwrap_or(1)
    }

    /// TTL of routed reports, which must cross routers.
    fn routed_ttl(&self) -> u32 {
        self.ttl.unwrap_or(DEFAULT_ROUTED_TTL)
    }
}

/// TTL of routed reports without `--ttl`: enough for any chain of routers
/// in one site (the default group is administratively scoped).
const DEFAULT_ROUTED_TTL: u32 = 16;

/// Longest jitter before an announcement: spreads a large fleet's answers.
const MAX_ANNOUNCE_JITTER: Duration = Duration::from_millis(50);

struct Agent {
    args: Args,
    local: Ipv4Addr,
    igmp: AsyncFd<IgmpSocket>,
    /// Routed queries and reports (protocol §4.4), to group:port.
    routed: AsyncFd<RoutedSocket>,
    udp: UdpSocket,
    schedule: Schedule,
    last_sequence: u64,
    /// Draining (SIGUSR1 on, SIGUSR2 off): no new flows.
    draining: bool,
    /// The service checks' state, if any check is configured.
    health: Option<Health>,
    /// The last failure logged: a failure is logged when its reason changes.
    last_failure: Option<String>,
    /// What `--status` shows; rewritten on every change.
    state: AgentStatus,
    /// The IPIP decapsulation program, with `--vip`.
    decap: Option<Decap>,
    metrics: AgentMetrics,
    key: Option<[u8; 16]>,
}

impl Agent {
    fn handle(&mut self, received: Received) {
        match received.message {
            IgmpMessage::Query {
                max_resp_tenths,
                group_field: lb,
            } if received.destination == self.args.group => {
                let max_resp = Duration::from_millis(u64::from(max_resp_tenths) * 100);
                self.on_query(Ipv4Addr::from(lb), Via::Segment, max_resp);
            }
            IgmpMessage::Report { group } => self.on_report(Ipv4Addr::from(group), received.source),
            _ => {}
        }
    }

    /// A routed message (protocol §4.4); with a key, one whose tag does not
    /// verify is ignored.
    fn handle_routed(&mut self, received: RoutedReceived) {
        let source = received.source.octets();
        match Routed::parse(&received.payload, source, self.key.as_ref()) {
            Some(Routed::Query {
                lb, max_resp_ms, ..
            }) => {
                let max_resp = Duration::from_millis(u64::from(max_resp_ms));
                self.on_query(Ipv4Addr::from(lb), Via::Routed, max_resp);
            }
            Some(Routed::Report { group, .. }) => {
                self.on_report(Ipv4Addr::from(group), received.source);
            }
            None => {
                debug!(from = %received.source, "routed message ignored: malformed, or its tag does not verify")
            }
        }
    }

    /// The LB's query: a report after a random delay in [0, max_resp] and
    /// an announcement to `lb` after a short jitter.
    fn on_query(&mut self, lb: Ipv4Addr, via: Via, max_resp: Duration) {
        if lb.is_multicast() || lb.is_unspecified() || lb.is_broadcast() {
            // An ordinary group-specific query: the kernel answers it.
            return;
        }
        self.follow_local_address();
        let mut rng = rand::rng();
        let report_delay = rng.random_range(Duration::ZERO..=max_resp);
        let jitter = rng.random_range(Duration::ZERO..=(max_resp / 2).min(MAX_ANNOUNCE_JITTER));
        self.metrics.query(lb, via);
        if self
            .schedule
            .on_query(Instant::now(), (lb, via), report_delay, jitter)
        {
            info!(%lb, group = %self.args.group, ?via, "new load balancer; announcing to it");
            self.learn_lb(lb);
        }
        self.publish();
    }

    /// `lb` is known from now on: in the status, and to the decapsulation
    /// program.
    fn learn_lb(&mut self, lb: Ipv4Addr) {
        self.state.lbs.push(lb);
        if let Some(decap) = &mut self.decap
            && let Err(e) = decap.learn_lb(lb)
        {
            warn!(%lb, "IPIP from this LB will not be decapsulated: {e:#}");
        }
    }

    /// Another member's report for our group cancels ours (suppression).
    fn on_report(&mut self, group: Ipv4Addr, source: Ipv4Addr) {
        if group == self.args.group && source != self.local && self.schedule.on_report_heard() {
            self.metrics.report_suppressed();
            debug!(from = %source, "report suppressed by another member's");
        }
    }

    fn send_due(&mut self) {
        for due in self.schedule.take_due(Instant::now()) {
            let result = match due {
                Due::Report { routed } => self.report(routed),
                Due::Announce(lb) => self.announce(lb, self.flags()),
            };
            if let Err(e) = result {
                warn!(?due, "send failed: {e}");
            }
        }
    }

    /// The membership report on the segment, and as a routed report too
    /// when a routed query asked for it.
    fn report(&mut self, routed: bool) -> std::io::Result<()> {
        let group = self.args.group;
        let report = igmp_v2_message(IGMP_V2_REPORT, 0, group.octets());
        self.igmp.get_ref().send(&report, group)?;
        self.metrics.report_sent(false);
        if routed {
            let report = Routed::Report {
                group: group.octets(),
                sequence: self.next_sequence(),
            };
            let payload = report.encode(self.local.octets(), self.key.as_ref());
            self.routed
                .get_ref()
                .send(&payload, group, self.args.port)?;
        }
        Ok(())
    }

    /// The Unix time in ns, strictly increasing even if the clock steps back.
    fn next_sequence(&mut self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self.last_sequence = now.max(self.last_sequence + 1);
        self.last_sequence
    }

    fn announce(&mut self, lb: Ipv4Addr, flags: u8) -> std::io::Result<()> {
        let sequence = self.next_sequence();
        let announcement = AnnouncementV1 {
            flags,
            weight: self.args.weight,
            sequence,
            tag: 0,
        };
        let payload = match &self.key {
            Some(key) => announcement.encode_tagged(key, self.local.octets(), lb.octets()),
            None => announcement.encode(),
        };
        self.udp
            .send_to(&payload, SocketAddrV4::new(lb, self.args.port))?;
        self.metrics.announced(lb);
        Ok(())
    }

    /// The interface's address may have changed (DHCP, an operator): the
    /// announcements must come from the current one, or the LB would
    /// register a stale address.
    fn follow_local_address(&mut self) {
        let Ok(current) = system::interface_ipv4(self.args.iface()) else {
            return;
        };
        if current == self.local {
            return;
        }
        match UdpSocket::bind(SocketAddrV4::new(current, 0)) {
            Ok(udp) => {
                info!(old = %self.local, new = %current, "interface address changed; announcing from the new one");
                self.udp = udp;
                self.local = current;
                if let Some(decap) = &mut self.decap
                    && let Err(e) = decap.set_local(current)
                {
                    warn!("IPIP to the new address will not be decapsulated: {e:#}");
                }
            }
            Err(e) => warn!(%current, "cannot bind to the new interface address: {e}"),
        }
    }

    /// The flags every announcement carries now.
    fn flags(&self) -> u8 {
        let down = self
            .health
            .as_ref()
            .is_some_and(|h| h.state() == State::Down);
        (if self.draining { FLAG_DRAINING } else { 0 }) | (if down { FLAG_DOWN } else { 0 })
    }

    /// Switches DRAINING and tells every known LB at once.
    fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
        self.metrics.draining(draining);
        info!(draining, "announcing the new state to every LB");
        self.state.draining = draining;
        self.publish();
        self.announce_state();
    }

    /// Rewrites the state file that `--status` reads.
    fn publish(&mut self) {
        self.state.address = Some(self.local);
        if let Some(decap) = &self.decap {
            match decap.counters() {
                Ok(counters) => {
                    self.state.decap = counters
                        .into_iter()
                        .map(|(name, n)| (name.to_owned(), n))
                        .collect();
                }
                Err(e) => warn!("{e:#}"),
            }
        }
        if let Err(e) = state::write(&self.state) {
            warn!("writing the agent's state for --status failed: {e}");
        }
    }

    /// A round of service checks ended: count it, and on a transition log
    /// it with the checks' output and tell every LB at once.
    fn on_checks(&mut self, result: CheckResult) {
        let Some(health) = &mut self.health else {
            return;
        };
        match &result {
            Err(reason) if self.last_failure.as_ref() != Some(reason) => {
                warn!("service check failed: {reason}");
                self.last_failure = Some(reason.clone());
            }
            Err(_) => {}
            Ok(_) => self.last_failure = None,
        }
        let Some(state) = health.record(result.is_ok()) else {
            return;
        };
        let detail = match (state, result) {
            (State::Up, Ok(detail) | Err(detail)) => {
                info!(%detail, "service is UP: announcing it to every LB");
                detail
            }
            (State::Down, Ok(detail) | Err(detail)) => {
                warn!(%detail, "service is DOWN: announcing it to every LB, which stop sending traffic");
                detail
            }
        };
        let name = match state {
            State::Up => "up",
            State::Down => "down",
        };
        self.state.transition(name, &detail);
        self.metrics.service(name, true);
        self.publish();
        self.announce_state();
    }

    fn announce_state(&mut self) {
        let lbs: Vec<Ipv4Addr> = self.schedule.known_lbs().collect();
        for lb in lbs {
            if let Err(e) = self.announce(lb, self.flags()) {
                warn!(%lb, "announcing failed: {e}");
            }
        }
    }

    fn leave(&mut self) {
        let lbs: Vec<Ipv4Addr> = self.schedule.known_lbs().collect();
        for lb in lbs {
            match self.announce(lb, FLAG_LEAVING) {
                Ok(()) => info!(%lb, "sent LEAVING"),
                Err(e) => warn!(%lb, "sending LEAVING failed: {e}"),
            }
        }
        if let Err(e) = self.igmp.get_ref().leave(self.args.group) {
            warn!("leaving the group failed: {e}");
        }
    }

    /// SIGHUP: the command line and `--config` file read again. The weight
    /// and the key apply at once (announced to every LB now); what the
    /// sockets, the VIP setup or the checks were built from waits for a
    /// restart, which a warning says.
    fn reload(&mut self) {
        let new = match lb_host::cli::reparse_with_settings_file::<Args>() {
            Ok(new) => new,
            Err(e) => return warn!("SIGHUP: settings not changed: {e}"),
        };
        let key = match new.key_file.as_deref().map(read_key_file).transpose() {
            Ok(key) => key,
            Err(e) => return warn!("SIGHUP: settings not changed: {e}"),
        };
        let old = &self.args;
        let on_restart = [
            ("iface", old.iface != new.iface),
            ("group", old.group != new.group),
            ("port", old.port != new.port),
            ("ttl", old.ttl != new.ttl),
            ("vip", old.vip != new.vip),
            ("metrics", old.metrics != new.metrics),
            ("pin-path", old.pin_path != new.pin_path),
            (
                "check",
                old.checks
                    .iter()
                    .map(ToString::to_string)
                    .ne(new.checks.iter().map(ToString::to_string))
                    || (old.check_interval, old.check_timeout, old.rise, old.fall)
                        != (new.check_interval, new.check_timeout, new.rise, new.fall),
            ),
        ];
        for (flag, _) in on_restart.iter().filter(|(_, changed)| *changed) {
            warn!("SIGHUP: --{flag} changed; it takes effect on the next restart");
        }
        let changed = self.key != key || self.args.weight != new.weight;
        self.key = key;
        self.args.weight = new.weight;
        self.args.key_file = new.key_file;
        info!(
            weight = self.args.weight,
            keyed = self.key.is_some(),
            "SIGHUP: settings read again"
        );
        if changed {
            self.announce_state();
        }
    }

    /// Exits keeping state (handover.rs): the sockets go to the service
    /// manager's store, the rest stays in place for the next agent. Fails,
    /// having changed nothing, when no service manager takes the sockets.
    fn hand_over(&mut self, vip: Option<&mut VipSetup>) -> anyhow::Result<()> {
        use std::os::fd::AsFd;
        service_manager::store(handover::IGMP_SOCKET, self.igmp.get_ref().as_fd())
            .and_then(|()| {
                service_manager::store(handover::ROUTED_SOCKET, self.routed.get_ref().as_fd())
            })
            .context("handing the group membership to the service manager")?;
        let iface = self.args.iface().to_owned();
        if let Some(decap) = self.decap.take() {
            let kept = handover::link_path(&self.args.pin_path, &iface)
                .map_err(anyhow::Error::from)
                .and_then(|path| decap.keep(&path));
            if let Err(e) = kept {
                warn!("IPIP is not decapsulated until the next agent starts: {e:#}");
            }
        }
        let record = Record {
            group: self.args.group,
            port: self.args.port,
            lbs: self.schedule.known_lbs().collect(),
            vip: vip
                .zip(self.args.vip)
                .map(|((addr, arp_ignore, arp_announce), vip)| {
                    let kept = KeptVip {
                        addr: vip,
                        added: addr.owned(),
                        arp_ignore: arp_ignore.original().to_owned(),
                        arp_announce: arp_announce.original().to_owned(),
                    };
                    addr.keep();
                    arp_ignore.keep();
                    arp_announce.keep();
                    kept
                }),
        };
        handover::save(&iface, &record).context("recording the state for the next agent")
    }
}

/// Runs the checks every `interval` in a task of their own; each round's
/// result arrives on the returned channel. `None` without checks.
fn start_checks(
    checks: Vec<CheckSpec>,
    interval: Duration,
    limit: Duration,
) -> Option<mpsc::Receiver<CheckResult>> {
    if checks.is_empty() {
        return None;
    }
    let (results, receiver) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if results
                .send(checker::round(&checks, limit).await)
                .await
                .is_err()
            {
                break;
            }
        }
    });
    Some(receiver)
}

/// The next round's result; never, without checks.
async fn next_checks(results: &mut Option<mpsc::Receiver<CheckResult>>) -> Option<CheckResult> {
    match results {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// The checks' timeout: given, or half the interval; below the interval.
fn check_timeout(args: &Args) -> anyhow::Result<Duration> {
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

/// What the direct-server-return setup changed, undone on drop: the VIP
/// on the loopback and the interface's ARP settings.
type VipSetup = (
    system::AddedAddress,
    system::SysctlOverride,
    system::SysctlOverride,
);

/// Opens the IGMP and routed sockets and joins the group.
fn open_sockets(args: &Args, ifindex: u32) -> anyhow::Result<(IgmpSocket, RoutedSocket)> {
    let igmp = IgmpSocket::open(args.iface(), ifindex, args.igmp_ttl())
        .context("opening the raw IGMP socket")?;
    let routed = RoutedSocket::member(args.group, args.port, ifindex, args.routed_ttl())
        .with_context(|| {
            format!(
                "opening the UDP socket for routed queries on {}:{}",
                args.group, args.port
            )
        })?;
    igmp.join(args.group)
        .with_context(|| format!("joining {} on {}", args.group, args.iface()))?;
    Ok((igmp, routed))
}

/// Takes over a predecessor's sockets, still members of the group (no
/// leave, no join), and empties the service manager's store: a crash from
/// now on leaves the group at once, as without a handover.
fn adopt_sockets(
    args: &Args,
    ifindex: u32,
    (igmp, routed): (std::os::fd::OwnedFd, std::os::fd::OwnedFd),
) -> anyhow::Result<(IgmpSocket, RoutedSocket)> {
    let igmp = IgmpSocket::adopt(igmp, ifindex, args.igmp_ttl())
        .context("adopting the predecessor's IGMP socket")?;
    let routed = RoutedSocket::adopt(routed, args.routed_ttl())
        .context("adopting the predecessor's routed socket")?;
    for name in [handover::IGMP_SOCKET, handover::ROUTED_SOCKET] {
        if let Err(e) = service_manager::remove(name) {
            warn!("the service manager still holds the {name} socket: {e}");
        }
    }
    info!(group = %args.group, "adopted the predecessor's group membership (restart keeping state)");
    Ok((igmp, routed))
}

/// Direct server return: the backend accepts VIP traffic on its loopback
/// and never answers ARP for the VIP, which belongs to the LB. What a
/// predecessor `kept` for this VIP is taken over: removed and restored on
/// this agent's stop.
fn set_up_vip(vip: Ipv4Addr, iface: &str, kept: Option<&KeptVip>) -> anyhow::Result<VipSetup> {
    let kept = kept.filter(|k| k.addr == vip);
    let original = |value: fn(&KeptVip) -> &String| kept.map(|k| value(k).clone());
    Ok((
        system::AddedAddress::add(vip, "lo", kept.is_some_and(|k| k.added))?,
        system::SysctlOverride::set_restoring(
            &format!("net/ipv4/conf/{iface}/arp_ignore"),
            "1",
            original(|k| &k.arp_ignore),
        )?,
        system::SysctlOverride::set_restoring(
            &format!("net/ipv4/conf/{iface}/arp_announce"),
            "2",
            original(|k| &k.arp_announce),
        )?,
    ))
}

impl Agent {
    /// Joins the group and opens the sockets, or adopts a predecessor's
    /// (`inherited`); the agent starts with no LB but those it inherits.
    fn start(args: Args, key: Option<[u8; 16]>, inherited: Inherited) -> anyhow::Result<Self> {
        let local = system::interface_ipv4(args.iface())?;
        let ifindex = system::interface_index(args.iface())?;
        let record = inherited
            .record
            .filter(|r| r.group == args.group && r.port == args.port);
        let (igmp, routed) = match inherited.sockets.filter(|_| record.is_some()) {
            Some(sockets) => adopt_sockets(&args, ifindex, sockets)?,
            None => open_sockets(&args, ifindex)?,
        };
        let udp = UdpSocket::bind(SocketAddrV4::new(local, 0))
            .with_context(|| format!("binding a UDP socket to {local}"))?;
        info!(iface = %args.iface(), %local, group = %args.group, port = args.port, weight = args.weight, "agent is a member of the group");
        let checks: Vec<String> = args.checks.iter().map(ToString::to_string).collect();
        if !checks.is_empty() {
            info!(?checks, interval = %humantime::format_duration(args.check_interval), rise = args.rise, fall = args.fall, "service checks: DOWN until they pass {} times in a row", args.rise);
        }
        let state = AgentStatus {
            pid: std::process::id(),
            iface: args.iface().to_owned(),
            group: Some(args.group),
            service: if checks.is_empty() {
                "unchecked"
            } else {
                "down"
            }
            .to_owned(),
            checks,
            ..AgentStatus::default()
        };
        // Only a backend that serves a VIP (direct server return) can be
        // sent IPIP; it accepts it only from the LBs it learns.
        let kept_link = handover::link_path(&args.pin_path, args.iface())?;
        let decap = if args.vip.is_some() {
            let decap = Decap::attach(args.iface(), local, &kept_link)?;
            info!(iface = %args.iface(), "IPIP decapsulation attached (tc ingress): IPIP from the LBs that query this agent is stripped");
            Some(decap)
        } else {
            // A predecessor's kept program goes with its VIP.
            let _ = std::fs::remove_file(&kept_link);
            None
        };
        let metrics = AgentMetrics::default();
        metrics.service(&state.service, false);
        let mut agent = Agent {
            decap,
            metrics,
            health: (!args.checks.is_empty()).then(|| Health::new(args.rise, args.fall)),
            args,
            local,
            // SAFETY: the AsyncFd owns the socket, so the fd stays open while registered.
            igmp: unsafe { AsyncFd::register(igmp) }
                .map_err(|e| anyhow::anyhow!("registering the IGMP socket: {e}"))?,
            // SAFETY: as above.
            routed: unsafe { AsyncFd::register(routed) }
                .map_err(|e| anyhow::anyhow!("registering the routed query socket: {e}"))?,
            udp,
            schedule: Schedule::default(),
            last_sequence: 0,
            draining: false,
            last_failure: None,
            state,
            key,
        };
        for lb in record.map(|r| r.lbs).unwrap_or_default() {
            agent.schedule.know(lb);
            agent.learn_lb(lb);
        }
        agent.publish();
        // The kernel's join report revives a dead group on the LB's
        // segment, but never crosses a router: an unsolicited routed report
        // does, so an LB whose group died before any backend came hears of
        // this one (protocol §5.4).
        if let Err(e) = agent.report(true) {
            warn!("sending the first membership report failed: {e}");
        }
        Ok(agent)
    }

    /// Reads every queued packet of whichever socket is readable first.
    async fn receive(&mut self) -> anyhow::Result<()> {
        let (igmp, routed) = tokio::select! {
            guard = self.igmp.readable() => {
                let mut guard = guard.context("waiting on the IGMP socket")?;
                (drain(&mut guard, IgmpSocket::try_recv, "IGMP"), Vec::new())
            }
            guard = self.routed.readable() => {
                let mut guard = guard.context("waiting on the routed query socket")?;
                (Vec::new(), drain(&mut guard, |s| s.try_recv().map(Some), "routed"))
            }
        };
        for message in igmp {
            self.handle(message);
        }
        for message in routed {
            self.handle_routed(message);
        }
        Ok(())
    }
}

/// Every packet queued on a readable socket; `None`s (packets that do not
/// parse) are skipped.
fn drain<S, T>(
    guard: &mut tokio::io::unix::AsyncFdReadyGuard<'_, S>,
    recv: impl Fn(&S) -> std::io::Result<Option<T>>,
    what: &str,
) -> Vec<T>
where
    S: std::os::fd::AsRawFd,
{
    let mut received = Vec::new();
    loop {
        // try_io clears the readiness only on WouldBlock: a packet that
        // arrives after the last read wakes us again.
        match guard.try_io(|socket| recv(socket.get_ref())) {
            Ok(Ok(Some(message))) => received.push(message),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                warn!("receiving {what} failed: {e}");
                guard.clear_ready();
                break;
            }
            Err(_would_block) => break,
        }
    }
    received
}

async fn run(args: Args, passed: Vec<(String, std::os::fd::OwnedFd)>) -> anyhow::Result<()> {
    if let Some(what) = args.generate {
        return lb_host::cli::generate::<Args>(what);
    }
    if args.check_kernel {
        print!("{}", kernel::report(&kernel::release()?)?);
        return Ok(kernel::require(kernel::User::Agent)?);
    }
    if args.status {
        print!(
            "{}",
            state::read(args.iface())
                .map_err(anyhow::Error::msg)?
                .render_text()
        );
        return Ok(());
    }
    let check_timeout = check_timeout(&args)?;
    let key = args
        .key_file
        .as_deref()
        .map(read_key_file)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    system::require_root("backend-agent")?;
    kernel::require(kernel::User::Agent)?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigusr1 =
        signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;
    let mut sigusr2 =
        signal(SignalKind::user_defined2()).context("installing the SIGUSR2 handler")?;
    let mut sigquit = signal(SignalKind::quit()).context("installing the SIGQUIT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut check_results = start_checks(args.checks.clone(), args.check_interval, check_timeout);
    let (vip, iface) = (args.vip, args.iface().to_owned());
    // Bound first: a port in use is an error before the agent joins.
    let metrics_endpoint = MetricsEndpoint::bind_flag(args.metrics)?;
    let inherited = handover::take(args.iface(), passed);
    let kept_vip = inherited.record.as_ref().and_then(|r| r.vip.clone());
    let mut agent = Agent::start(args, key, inherited)?;
    if let Some(endpoint) = metrics_endpoint {
        let decap = agent
            .decap
            .as_ref()
            .map(Decap::counters_handle)
            .transpose()?;
        let metrics = agent.metrics.clone();
        info!(addr = %endpoint.local_addr()?, "serving Prometheus metrics at /metrics");
        endpoint.serve(move || metrics.render(decap.as_ref()));
    }
    let mut vip = vip
        .map(|vip| set_up_vip(vip, &iface, kept_vip.as_ref()))
        .transpose()?;
    let keep_state = loop {
        // With nothing pending, wake up only for packets and signals.
        let deadline = agent
            .schedule
            .next_deadline()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            received = agent.receive() => received?,
            _ = sleep_until(deadline) => agent.send_due(),
            Some(result) = next_checks(&mut check_results) => agent.on_checks(result),
            _ = sigusr1.recv() => agent.set_draining(true),
            _ = sigusr2.recv() => agent.set_draining(false),
            _ = sighup.recv() => agent.reload(),
            _ = sigterm.recv() => break false,
            _ = sigint.recv() => break false,
            _ = sigquit.recv() => break true,
        }
    };
    state::remove(agent.args.iface());
    if keep_state {
        match agent.hand_over(vip.as_mut()) {
            Ok(()) => {
                info!(
                    "exiting keeping state (SIGQUIT): the service manager holds the group membership; the VIP and the decapsulation program stay for the next agent"
                );
                return Ok(());
            }
            Err(e) => error!("{e:#}; leaving as on SIGTERM"),
        }
    }
    agent.leave();
    info!("left the group; exiting");
    Ok(())
}

fn main() -> ExitCode {
    lb_host::cli::main_with_settings_file(|args: Args| {
        // Before any thread starts: taking them edits the environment.
        let passed = service_manager::take_passed();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(run(args, passed))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_subcommand_and_flag_has_a_help_line() {
        assert_eq!(
            lb_host::cli::undocumented::<super::Args>(),
            Vec::<String>::new()
        );
    }
}
