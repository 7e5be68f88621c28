//! How the agent answers: a query with a suppressible report and an
//! announcement, a check's verdict or a signal with an announcement to
//! every LB it knows, a stop with LEAVING.
use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use lb_common::{
    is_global_unicast6,
    wire::{
        AGE_EXTENSION_LEN, ANNOUNCE_V1_LEN, AnnouncementV1, FLAG_DOWN, FLAG_DRAINING, FLAG_LEAVING,
        Routed, age_extension,
    },
};
use lb_host::{
    cli::read_key_file,
    routed_socket::{RoutedReceived, RoutedSocket},
    system,
};
use rand::Rng;
use tokio::{io::unix::AsyncFd, time::Instant};
use tracing::{debug, info, warn};

use crate::{
    args::Args,
    checker::CheckResult,
    decap::Decap,
    health::{Health, State},
    membership::{Heard, Membership},
    metrics::AgentMetrics,
    schedule::{Due, Schedule, Via},
    state::{self, AgentStatus},
};

/// Longest jitter before an announcement: spreads a large fleet's answers.
const MAX_ANNOUNCE_JITTER: Duration = Duration::from_millis(50);

/// The agent between events: its sockets, the LBs it knows, its state.
pub struct Agent {
    pub(crate) args: Args,
    /// The address announced: the interface's of the group's family.
    pub(crate) local: IpAddr,
    /// IGMP or MLD, as the group's family says.
    pub(crate) membership: AsyncFd<Membership>,
    /// Routed queries and reports (protocol §4.4, §9), to group:port.
    pub(crate) routed: AsyncFd<RoutedSocket>,
    pub(crate) udp: UdpSocket,
    pub(crate) schedule: Schedule,
    pub(crate) last_sequence: u64,
    /// When the backend registered (Unix ms: its first announcement, or
    /// its predecessor's across a handover): announced as its age.
    pub(crate) registered_unix_ms: u64,
    /// Draining (SIGUSR1 on, SIGUSR2 off): no new flows.
    pub(crate) draining: bool,
    /// The service checks' state, if any check is configured.
    pub(crate) health: Option<Health>,
    /// The last failure logged: a failure is logged when its reason changes.
    pub(crate) last_failure: Option<String>,
    /// What `--status` shows; rewritten on every change.
    pub(crate) state: AgentStatus,
    /// The IPIP decapsulation program, with `--vip`.
    pub(crate) decap: Option<Decap>,
    pub(crate) metrics: AgentMetrics,
    pub(crate) key: Option<[u8; 16]>,
}

impl Agent {
    fn handle(&mut self, heard: Heard) {
        match heard {
            Heard::Query {
                lb,
                max_resp,
                for_group: true,
            } => self.on_query(lb, Via::Segment, max_resp),
            Heard::Report { group, source } => self.on_report(group, source),
            Heard::Query { .. } => {}
        }
    }

    /// A routed message (protocol §4.4); with a key, one whose tag does not
    /// verify is ignored.
    fn handle_routed(&mut self, received: RoutedReceived) {
        match Routed::parse_from(&received.payload, received.source, self.key.as_ref()) {
            Some(Routed::Query {
                lb, max_resp_ms, ..
            }) => {
                let max_resp = Duration::from_millis(u64::from(max_resp_ms));
                self.on_query(lb, Via::Routed, max_resp);
            }
            Some(Routed::Report { group, .. }) => {
                self.on_report(group, received.source);
            }
            None => {
                debug!(from = %received.source, "routed message ignored: malformed, or its tag does not verify")
            }
        }
    }

    /// The LB's query: a report after a random delay in [0, max_resp] and
    /// an announcement to `lb` after a short jitter.
    fn on_query(&mut self, lb: IpAddr, via: Via, max_resp: Duration) {
        let unicast = match lb {
            IpAddr::V4(lb) => !(lb.is_multicast() || lb.is_unspecified() || lb.is_broadcast()),
            IpAddr::V6(lb) => is_global_unicast6(&lb.octets()),
        };
        if !unicast {
            // An ordinary general or group-specific query: the kernel answers it.
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
    pub(crate) fn learn_lb(&mut self, lb: IpAddr) {
        self.state.lbs.push(lb);
        if let Some(decap) = &mut self.decap
            && let Err(e) = decap.learn_lb(lb)
        {
            warn!(%lb, "IP-in-IP from this LB will not be decapsulated: {e:#}");
        }
    }

    /// Another member's report for our group cancels ours (suppression).
    fn on_report(&mut self, group: IpAddr, source: IpAddr) {
        if group == self.args.group && source != self.local && self.schedule.on_report_heard() {
            self.metrics.report_suppressed();
            debug!(from = %source, "report suppressed by another member's");
        }
    }

    pub(crate) fn send_due(&mut self) {
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
    pub(crate) fn report(&mut self, routed: bool) -> std::io::Result<()> {
        let group = self.args.group;
        let membership = self.membership.get_ref();
        membership.report(group)?;
        self.metrics.report_sent(membership.protocol());
        if routed {
            let report = Routed::Report {
                group,
                sequence: self.next_sequence(),
            };
            if let Some(payload) = report.encode_from(self.local, self.key.as_ref()) {
                self.routed
                    .get_ref()
                    .send(payload.as_ref(), group, self.args.port)?;
                self.metrics.report_sent("routed");
            }
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

    fn announce(&mut self, lb: IpAddr, flags: u8) -> std::io::Result<()> {
        let sequence = self.next_sequence();
        let announcement = AnnouncementV1 {
            flags,
            weight: self.args.weight,
            sequence,
            tag: 0,
        };
        let head = announcement.encode_between(self.key.as_ref(), self.local, lb);
        let age_ms = unix_ms().saturating_sub(self.registered_unix_ms);
        let seconds = u32::try_from(age_ms / 1000).unwrap_or(u32::MAX);
        let age = age_extension(seconds, sequence, self.key.as_ref(), (self.local, lb));
        let mut payload = [0u8; ANNOUNCE_V1_LEN + AGE_EXTENSION_LEN];
        payload[..ANNOUNCE_V1_LEN].copy_from_slice(&head);
        payload[ANNOUNCE_V1_LEN..].copy_from_slice(&age);
        self.udp
            .send_to(&payload, SocketAddr::new(lb, self.args.port))?;
        self.metrics.announced(lb);
        Ok(())
    }

    /// The interface's address may have changed (DHCP, an operator): the
    /// announcements must come from the current one, or the LB would
    /// register a stale address.
    fn follow_local_address(&mut self) {
        let Ok(current) = system::interface_addr_like(self.args.iface(), self.args.group) else {
            return;
        };
        if current == self.local {
            return;
        }
        match UdpSocket::bind(SocketAddr::new(current, 0)) {
            Ok(udp) => {
                info!(old = %self.local, new = %current, "interface address changed; announcing from the new one");
                self.udp = udp;
                self.local = current;
                if let Some(decap) = &mut self.decap
                    && let Err(e) = decap.set_local(current)
                {
                    warn!("IP-in-IP to the new address will not be decapsulated: {e:#}");
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
    pub(crate) fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
        self.metrics.draining(draining);
        info!(draining, "announcing the new state to every LB");
        self.state.draining = draining;
        self.publish();
        self.announce_state();
    }

    /// Rewrites the state file that `--status` reads.
    pub(crate) fn publish(&mut self) {
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
    pub(crate) fn on_checks(&mut self, result: CheckResult) {
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
        let lbs: Vec<IpAddr> = self.schedule.known_lbs().collect();
        for lb in lbs {
            if let Err(e) = self.announce(lb, self.flags()) {
                warn!(%lb, "announcing failed: {e}");
            }
        }
    }

    pub(crate) fn leave(&mut self) {
        let lbs: Vec<IpAddr> = self.schedule.known_lbs().collect();
        for lb in lbs {
            match self.announce(lb, FLAG_LEAVING) {
                Ok(()) => info!(%lb, "sent LEAVING"),
                Err(e) => warn!(%lb, "sending LEAVING failed: {e}"),
            }
        }
        if let Err(e) = self.membership.get_ref().leave(self.args.group) {
            warn!("leaving the group failed: {e}");
        }
    }

    /// SIGHUP: the command line and `--config` file read again. The weight
    /// and the key apply at once (announced to every LB now); what the
    /// sockets, the VIP setup or the checks were built from waits for a
    /// restart, which a warning says.
    pub(crate) fn reload(&mut self) {
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

    /// Reads every queued packet of whichever socket is readable first.
    pub(crate) async fn receive(&mut self) -> anyhow::Result<()> {
        let group = self.args.group;
        let (heard, routed) = tokio::select! {
            guard = self.membership.readable() => {
                let mut guard = guard.context("waiting on the membership socket")?;
                (drain(&mut guard, |s| s.try_recv(group), "membership"), Vec::new())
            }
            guard = self.routed.readable() => {
                let mut guard = guard.context("waiting on the routed query socket")?;
                (Vec::new(), drain(&mut guard, |s| s.try_recv().map(Some), "routed"))
            }
        };
        for message in heard {
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

/// The wall clock in Unix milliseconds.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
