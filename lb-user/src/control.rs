//! The control loop of `lb-user run`: queries, group liveness and aging,
//! driven by a periodic tick. Decisions come from the pure `aging` and
//! `liveness` modules; this module does the map and socket I/O.
use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use foldhash::{HashMap, HashSet};
use lb_common::{
    AgingState, AuthClock, BackendEntry, BackendKey, BackendKey6, DepartureReason,
    GROUP_STATE_ALIVE, GROUP_STATE_DEAD, GroupReports, GroupStatus,
    mld::{ALL_SNOOPERS_V6, mld_mrd_advertisement},
    wire::{ALL_SNOOPERS, mrd_advertisement},
};
use lb_host::{status::format_mac, system};
use tracing::{debug, info, warn};

use crate::{
    aging::{AgingParams, AgingVerdict, age},
    leaves::{LeaveVerdict, judge},
    liveness::{GroupLiveness, Heard, LivenessEvent, LivenessParams},
    maps::{FamilyKey, GroupConfig, LbMaps, MapsError},
    metrics::ControlMetrics,
    next_hop::NextHops,
    queries::{Queriers, QueryVersion},
    registrations::Registrations,
    tables::{ServiceConfig, ServiceTables, TableParams},
};

/// Protocol parameters of one LB instance (protocol §3).
#[derive(Clone, Copy, Debug)]
pub struct ControlParams {
    pub lb_addr: Ipv4Addr,
    pub query_interval: Duration,
    pub max_response_time: Duration,
    pub aging: AgingParams,
    pub robustness: u32,
    /// Allowed distance of an authenticated announcement's sequence from
    /// the LB's wall clock.
    pub max_clock_skew: Duration,
    /// Layout of the query: 3 (12 bytes, the default) or 2 (8 bytes).
    pub query_version: QueryVersion,
}

/// Max response time of a leave's confirmation query, in tenths of a
/// second: the shortest there is.
const CONFIRMATION_TENTHS: u32 = 1;

impl ControlParams {
    /// The max response time in tenths of a second, at least 1.
    pub(crate) fn max_resp_tenths(&self) -> u32 {
        u32::try_from(self.max_response_time.as_millis() / 100)
            .unwrap_or(u32::MAX)
            .max(1)
    }

    /// How long a confirmation waits for an announcement: twice the max
    /// response time of its query. Agents announce within half of it; the
    /// rest is slack for a loaded host (a CI run once saw a live keyed
    /// backend's answer arrive 140 ms after a 100 ms query and removed it).
    pub fn confirmation_window(&self) -> Duration {
        Duration::from_millis(200) * CONFIRMATION_TENTHS
    }

    /// How long a new instance waits before it builds its first tables:
    /// a query period, by which the answers to its first query (due within
    /// the max response time) are in even on a loaded host. Tables of a
    /// partial view would send the established connections it does not
    /// know (after a failover or a restart) to backends that do not hold
    /// them; its services drop their packets meanwhile (`vip_no_backend`;
    /// an adopted instance's tables serve).
    pub fn first_tables_after(&self) -> Duration {
        self.query_interval.max(self.max_response_time) + 2 * self.tick()
    }

    /// How often aging sweeps the server list when nothing changed: the
    /// shorter of P and T. A miss is counted from the timestamps (a late
    /// sweep does not stretch the period, misses stay exact and
    /// consecutive) and acted on at most this late; a full list of 65,536
    /// costs a few milliseconds a sweep.
    fn sweep_interval_ns(&self) -> u64 {
        let interval = self.query_interval.min(self.aging.timeout);
        u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX)
    }

    /// How often the loop runs: fine enough for the shortest timer, and at
    /// most 25 ms, which bounds how long a change to the server list waits
    /// before its table is built (a pass with nothing to do reads a few
    /// per-group counters).
    pub fn tick(&self) -> Duration {
        (self.query_interval.min(self.aging.timeout) / 8)
            .clamp(Duration::from_millis(5), Duration::from_millis(25))
    }
}

/// What the control loop keeps of one address family's server list.
struct ServerList<K> {
    aging: HashMap<K, AgingState>,
    /// When the backends registered by their registering announcements'
    /// ages (CLOCK_MONOTONIC ns), until the next sweep stores them.
    learned_ages: HashMap<K, u64>,
}

impl<K: FamilyKey> ServerList<K> {
    /// An adopted instance's backends keep their aging state: they are
    /// neither registered again nor given a fresh timer.
    /// The list an earlier instance kept, its heartbeat timers restarted
    /// at `now_ns`: agents announce when queried, so while no instance
    /// ran (a restart, and this one's start) they could not, and that
    /// silence is not theirs.
    fn adopt(maps: &LbMaps, now_ns: u64) -> Result<Self, MapsError> {
        // An announcement XDP took after the earlier instance's last pass
        // counts as one the state has seen: the timer starts now either
        // way.
        let last_seen: HashMap<K, u64> = maps
            .list_of::<K>()?
            .into_iter()
            .map(|(key, entry)| (key, entry.last_seen_ns))
            .collect();
        let aging = maps
            .aging_states::<K>()?
            .into_iter()
            .map(|(key, mut state)| {
                state.timer_start_ns = state.timer_start_ns.max(now_ns);
                if let Some(&seen) = last_seen.get(&key) {
                    state.seen_ns = seen;
                }
                (key, state)
            });
        Ok(Self {
            aging: aging.collect(),
            learned_ages: HashMap::default(),
        })
    }
}

/// Both families' lists (protocol §9).
struct Lists {
    v4: ServerList<BackendKey>,
    v6: ServerList<BackendKey6>,
}

/// A family's key, with where the control loop keeps its list.
trait Listed: FamilyKey {
    fn kept(lists: &mut Lists) -> &mut ServerList<Self>;
}

impl Listed for BackendKey {
    fn kept(lists: &mut Lists) -> &mut ServerList<Self> {
        &mut lists.v4
    }
}

impl Listed for BackendKey6 {
    fn kept(lists: &mut Lists) -> &mut ServerList<Self> {
        &mut lists.v6
    }
}

struct Group {
    id: u32,
    config: GroupConfig,
    liveness: GroupLiveness,
    status: GroupStatus,
    /// Monotonic ns of the last query that asks to confirm leaves.
    confirmation_ns: Option<u64>,
}

/// State of the control plane between ticks.
pub struct Controller {
    params: ControlParams,
    maps: LbMaps,
    queriers: Queriers,
    groups: Vec<Group>,
    lists: Lists,
    /// Where registering announcements arrive, and the keys their ages are
    /// verified with.
    registrations: Registrations,
    keys: Vec<[u8; 16]>,
    tables: Option<ServiceTables>,
    sweeps: Sweeps,
    /// Resolves and reports next hops toward IPIP backends.
    next_hops: Option<NextHops>,
    metrics: ControlMetrics,
    /// Monotonic ns of the next multicast router advertisement.
    next_advertisement_ns: u64,
}

/// When the server list is swept. Idle, the list costs nothing but one
/// sweep per `sweep_interval`: the counters XDP keeps per group say when a
/// backend came, went or changed, and a sweep then follows in the same
/// tick.
#[derive(Debug, Default)]
struct Sweeps {
    /// XDP's `changes`, summed over groups, at the last sweep.
    changes_seen: u64,
    /// Monotonic ns of the next sweep that aging needs.
    next_ns: u64,
    /// Leaves wait for confirmation: sweep every tick until they are resolved.
    leaves_pending: bool,
    /// Backends removed for missed heartbeats in the current sweep.
    removed: u32,
    /// When the first tables may be built (set at the first pass), and
    /// whether they have been.
    first_tables_ns: Option<u64>,
    tables_built: bool,
}

/// Removals for missed heartbeats logged one by one in one sweep.
const LOGGED_REMOVALS_PER_SWEEP: u32 = 10;

/// What XDP heard from a group, for liveness.
fn heard(reports: &GroupReports) -> Heard {
    Heard {
        reports: reports.reports,
        announcements: reports.announcements,
    }
}

fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

impl Controller {
    pub fn new(
        params: ControlParams,
        mut maps: LbMaps,
        queriers: Queriers,
        registrations: Registrations,
        configs: &[GroupConfig],
        metrics: ControlMetrics,
    ) -> Result<Self, MapsError> {
        maps.configure_groups(configs)?;
        let liveness_params = LivenessParams {
            query_interval: params.query_interval,
            robustness: params.robustness,
        };
        let groups = (0u32..)
            .zip(configs)
            .map(|(id, &config)| {
                let heard = heard(&maps.group_reports(id)?);
                Ok(Group {
                    id,
                    config,
                    liveness: GroupLiveness::new(liveness_params, heard),
                    status: GroupStatus::configured(config.group, config.port),
                    confirmation_ns: None,
                })
            })
            .collect::<Result<_, MapsError>>()?;
        let now_ns = system::monotonic_ns();
        let lists = Lists {
            v4: ServerList::adopt(&maps, now_ns)?,
            v6: ServerList::adopt(&maps, now_ns)?,
        };
        let kept = lists.v4.aging.len() + lists.v6.aging.len();
        if kept > 0 {
            info!(
                backends = kept,
                "kept the registered backends of the earlier instance"
            );
        }
        let mut controller = Self {
            params,
            maps,
            queriers,
            groups,
            lists,
            registrations,
            keys: Vec::new(),
            tables: None,
            sweeps: Sweeps::default(),
            next_hops: None,
            metrics,
            next_advertisement_ns: 0,
        };
        controller.update_clock()?;
        Ok(controller)
    }

    /// Installs the announcement keys (at start, and on a reload).
    pub fn set_keys(&mut self, keys: &[[u8; 16]]) -> Result<(), MapsError> {
        self.maps.set_keys(keys)?;
        self.keys = keys.to_vec();
        if let Some(routed) = &mut self.queriers.routed {
            routed.key = keys.first().copied();
        }
        Ok(())
    }

    /// Prepares an exit that keeps state: what XDP needs to go on
    /// forwarding (the forwarding sysctl) is left in place.
    pub fn keep_state(&mut self) {
        if let Some(next_hops) = &mut self.next_hops {
            next_hops.keep_forwarding();
        }
    }

    /// Keeps XDP's notion of wall-clock time current (it only has the
    /// monotonic clock), for the freshness check of authenticated announcements.
    fn update_clock(&mut self) -> Result<(), MapsError> {
        let clock = AuthClock {
            wall_offset_ns: system::realtime_ns().wrapping_sub(system::monotonic_ns()),
            max_skew_ns: u64::try_from(self.params.max_clock_skew.as_nanos()).unwrap_or(u64::MAX),
        };
        self.maps.set_clock(&clock)
    }

    /// Starts forwarding `services` (none: registration only); `next_hops`
    /// where some backends may be reached by IPIP.
    pub fn serve(
        &mut self,
        services: &[ServiceConfig],
        tables: TableParams,
        next_hops: Option<NextHops>,
    ) -> Result<(), MapsError> {
        self.next_hops = next_hops;
        if !services.is_empty() {
            self.tables = Some(ServiceTables::new(
                &mut self.maps,
                services,
                tables,
                self.metrics.clone(),
            )?);
        }
        Ok(())
    }

    /// One pass: liveness and queries for every group and router
    /// advertisements, from XDP's per-group counters; then, when the
    /// server list may need it, a sweep of the list.
    pub fn step(&mut self, now_ns: u64) -> Result<(), MapsError> {
        let started = std::time::Instant::now();
        let result = self.pass(now_ns);
        self.metrics
            .pass_seconds
            .observe(started.elapsed().as_secs_f64());
        result
    }

    fn pass(&mut self, now_ns: u64) -> Result<(), MapsError> {
        self.update_clock()?;
        self.learn_ages(now_ns);
        let mut changes = 0;
        for index in 0..self.groups.len() {
            let reports = self.maps.group_reports(self.groups[index].id)?;
            changes += reports.changes;
            self.step_group(index, now_ns, heard(&reports))?;
        }
        self.advertise_router(now_ns);
        // A table built on a thread goes in as soon as it is done; the
        // backends may have changed meanwhile, so the list is read again.
        let installed = match &mut self.tables {
            Some(tables) => tables.install_finished(&mut self.maps)?,
            None => false,
        };
        let changed = changes != self.sweeps.changes_seen;
        let wait = u64::try_from(self.params.first_tables_after().as_nanos()).unwrap_or(u64::MAX);
        let first_tables_ns = *self
            .sweeps
            .first_tables_ns
            .get_or_insert(now_ns.saturating_add(wait));
        let tables_due = !self.sweeps.tables_built && now_ns >= first_tables_ns;
        if changed
            || installed
            || tables_due
            || self.sweeps.leaves_pending
            || now_ns >= self.sweeps.next_ns
        {
            self.sweeps.changes_seen = changes;
            self.sweeps.next_ns = now_ns.saturating_add(self.params.sweep_interval_ns());
            self.sweep(now_ns)?;
        }
        Ok(())
    }

    /// Reads the registering announcements XDP passed up since the last
    /// pass: when each backend says it registered. Before the sweep that
    /// reads the server list, which XDP filled before passing them.
    fn learn_ages(&mut self, now_ns: u64) {
        let lists = &mut self.lists;
        let read = self
            .registrations
            .drain(&self.keys, |group_id, src, seconds| {
                let at = now_ns.saturating_sub(u64::from(seconds) * 1_000_000_000);
                if let Some(key) = BackendKey::of(group_id, src) {
                    lists.v4.learned_ages.insert(key, at);
                } else if let Some(key) = BackendKey6::of(group_id, src) {
                    lists.v6.learned_ages.insert(key, at);
                }
            });
        if let Err(e) = read {
            warn!(
                "reading registering announcements failed: {e}; those backends count as registered now"
            );
        }
    }

    /// Reads the server list (one batched read) and acts on it: leaves to
    /// confirm, aging, next hops, then the forwarding tables from the
    /// backends that remain.
    fn sweep(&mut self, now_ns: u64) -> Result<(), MapsError> {
        self.sweeps.leaves_pending = false;
        self.sweeps.removed = 0;
        let backends = self.maps.backends()?;
        let backends = self.confirm_leaves(backends, now_ns)?;
        let backends = self.age_backends(backends, now_ns)?;
        // Without an IPv6 group its list is not read.
        let backends6 = if self.groups.iter().any(|g| g.config.group.is_ipv6()) {
            let backends6 = self.maps.backends6()?;
            let backends6 = self.confirm_leaves(backends6, now_ns)?;
            self.age_backends(backends6, now_ns)?
        } else {
            Vec::new()
        };
        if let Some(unlogged) = self.sweeps.removed.checked_sub(LOGGED_REMOVALS_PER_SWEEP)
            && unlogged > 0
        {
            warn!(
                removed = self.sweeps.removed,
                "{unlogged} more backends removed: missed heartbeats (status lists them as departed)"
            );
        }
        // Next hops first: a backend new to IPIP is probed (and forwarding
        // enabled for the FIB) before the tables send it a packet.
        if let Some(next_hops) = &mut self.next_hops {
            next_hops.poll(&mut self.maps, (&backends, &backends6), now_ns)?;
        }
        let first_tables_ns = self.sweeps.first_tables_ns.unwrap_or(0);
        if let Some(tables) = &mut self.tables
            && now_ns >= first_tables_ns
        {
            tables.sync(&mut self.maps, &backends, &backends6)?;
            self.sweeps.tables_built = true;
        }
        Ok(())
    }

    /// Resolves one family's IGMP or MLD leaves XDP holds for confirmation
    /// (with a key set, protocol §4.2, §9): queries the group once, then removes each backend
    /// that has not announced since its leave when the window closes.
    /// Returns `backends` without the ones removed.
    fn confirm_leaves<K: Listed>(
        &mut self,
        mut backends: Vec<(K, BackendEntry)>,
        now_ns: u64,
    ) -> Result<Vec<(K, BackendEntry)>, MapsError> {
        let pending = self.maps.pending_leaves::<K>()?;
        // Every tick sweeps until each leave is resolved.
        self.sweeps.leaves_pending |= !pending.is_empty();
        let window_ns =
            u64::try_from(self.params.confirmation_window().as_nanos()).unwrap_or(u64::MAX);
        for (key, leave) in pending {
            let Some(group) = self.groups.get_mut(key.group_id() as usize) else {
                self.maps.remove_pending_leave(&key)?;
                continue;
            };
            let announcements = backends
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, e)| e.announcements);
            let addr = key.ip();
            match judge(
                &leave,
                announcements,
                group.confirmation_ns,
                now_ns,
                window_ns,
            ) {
                LeaveVerdict::Wait => {}
                LeaveVerdict::Ask => {
                    match self
                        .queriers
                        .query(&self.params, &group.config, CONFIRMATION_TENTHS)
                    {
                        Ok(()) => group.confirmation_ns = Some(now_ns),
                        Err(e) => {
                            warn!(group = %group.config.group, "sending the confirmation query failed: {e}")
                        }
                    }
                }
                LeaveVerdict::Refuted => {
                    info!(backend = %addr, group = %group.config.group, "{} leave not confirmed: the backend announced since (a forged or stale leave); kept", K::MEMBERSHIP);
                    self.maps.remove_pending_leave(&key)?;
                }
                LeaveVerdict::Confirmed => {
                    let why = K::LEAVE_CONFIRMED;
                    warn!(backend = %addr, group = %group.config.group, "backend removed: {} (no announcement after the confirmation query)", why.name());
                    self.maps.remove_backend(&key, why, now_ns)?;
                    self.maps.remove_pending_leave(&key)?;
                    backends.retain(|(k, _)| *k != key);
                }
                LeaveVerdict::Gone => self.maps.remove_pending_leave(&key)?,
            }
        }
        Ok(backends)
    }

    /// Multicast Router Discovery (RFC 4286, protocol §5.6) once per query
    /// interval: a snooping switch then treats the LB's port as a router
    /// port and forwards membership reports and leaves to it.
    fn advertise_router(&mut self, now_ns: u64) {
        if self.next_advertisement_ns > now_ns {
            return;
        }
        let period_ns = u64::try_from(self.params.query_interval.as_nanos()).unwrap_or(u64::MAX);
        self.next_advertisement_ns = now_ns.saturating_add(period_ns);
        let interval_s = self.params.query_interval.as_secs_f64().ceil().max(1.0);
        let fields = (
            interval_s.min(f64::from(u8::MAX)) as u8,
            interval_s.min(f64::from(u16::MAX)) as u16,
            u16::try_from(self.params.robustness).unwrap_or(u16::MAX),
        );
        // Link-local: TTL (hop limit) 1 whatever --ttl says (RFC 4286).
        if let Some(igmp) = &self.queriers.igmp
            && let Err(e) = igmp.send_link_local(
                &mrd_advertisement(fields.0, fields.1, fields.2),
                Ipv4Addr::from(ALL_SNOOPERS),
            )
        {
            warn!("sending the multicast router advertisement failed: {e}");
        }
        if let Some(mld) = &self.queriers.mld
            && let Err(e) = mld.socket.send(
                &mld_mrd_advertisement(fields.0, fields.1, fields.2),
                ALL_SNOOPERS_V6.into(),
            )
        {
            warn!("sending the MLD multicast router advertisement failed: {e}");
        }
    }

    fn step_group(&mut self, index: usize, now_ns: u64, heard: Heard) -> Result<(), MapsError> {
        let id = self.groups[index].id;
        let params = self.params;
        let group = &mut self.groups[index];
        let event = group.liveness.poll(now_ns, heard);
        if group.liveness.take_hidden_reports() {
            warn!(
                group = %group.config.group,
                "backends announce but no membership report reaches the LB: a snooping switch may \
                 forward reports only to its router ports; the LB sends multicast router \
                 advertisements (RFC 4286) to become one, else make its port a router port by hand \
                 (on a Linux bridge: bridge link set dev PORT mcast_router 2)"
            );
        }
        match event {
            LivenessEvent::Idle => return Ok(()),
            LivenessEvent::Died => warn!(
                group = %group.config.group,
                silent_periods = group.liveness.silent_periods(),
                "group is dead: no membership report for {} periods; queries stop",
                params.robustness
            ),
            LivenessEvent::Revived => {
                info!(group = %group.config.group, "group revived by a membership report; querying")
            }
            LivenessEvent::Query => {}
        }
        if matches!(event, LivenessEvent::Query | LivenessEvent::Revived) {
            match self
                .queriers
                .query(&params, &group.config, params.max_resp_tenths())
            {
                Ok(()) => {
                    group.status.queries_sent += 1;
                    group.status.last_query_ns = now_ns;
                }
                // Counted as not sent; the next period tries again.
                Err(e) => warn!(group = %group.config.group, "sending the query failed: {e}"),
            }
        }
        group.status.state = if group.liveness.is_alive() {
            GROUP_STATE_ALIVE
        } else {
            GROUP_STATE_DEAD
        };
        group.status.silent_periods = group.liveness.silent_periods();
        let status = group.status;
        self.maps.set_group_status(id, &status)
    }

    fn group_addr(&self, id: u32) -> IpAddr {
        self.groups
            .get(id as usize)
            .map_or(Ipv4Addr::UNSPECIFIED.into(), |g| g.config.group)
    }

    /// Ages every backend of `backends` (the server list as read this
    /// pass); returns the ones still registered.
    fn age_backends<K: Listed>(
        &mut self,
        backends: Vec<(K, BackendEntry)>,
        now_ns: u64,
    ) -> Result<Vec<(K, BackendEntry)>, MapsError> {
        let mut kept = Vec::with_capacity(backends.len());
        for (key, entry) in backends {
            let previous = K::kept(&mut self.lists).aging.get(&key).copied();
            let state = match age(previous, entry.last_seen_ns, now_ns, self.params.aging) {
                AgingVerdict::Registered(state) => {
                    // XDP logged the registration when it happened.
                    debug!(
                        backend = %key.ip(), group = %self.group_addr(key.group_id()),
                        weight = entry.weight, flags = entry.flags,
                        mac = %format_mac(entry.mac), "backend registered"
                    );
                    state
                }
                AgingVerdict::Keep(state) => state,
                AgingVerdict::Remove { misses } => {
                    // Re-read: an announcement that arrived since the
                    // snapshot wins, and the next sweep ages it afresh.
                    match self.maps.backend(&key)? {
                        Some(current) if current.last_seen_ns != entry.last_seen_ns => {
                            kept.push((key, current));
                        }
                        _ => self.remove_missing(key, &entry, misses, now_ns)?,
                    }
                    continue;
                }
            };
            let mut state = state;
            let mut entry = entry;
            // The registration time the backend's age gives (a fresh LB's
            // backends registered before it started) replaces XDP's stamp.
            if let Some(at) = K::kept(&mut self.lists).learned_ages.remove(&key) {
                state.registered_ns = at;
            }
            if state.registered_ns != 0 {
                entry.registered_ns = entry.registered_ns.min(state.registered_ns);
            }
            kept.push((key, entry));
            if previous == Some(state) {
                continue;
            }
            K::kept(&mut self.lists).aging.insert(key, state);
            // Persisted (for `status` and the next instance) when the
            // misses or the learned registration time change: a heartbeat
            // that only restarts the timer is one an adopting instance
            // reads from the list itself, so idle backends cost no map write.
            let persisted = |s: AgingState| (s.misses, s.registered_ns);
            if previous.map(persisted) != Some(persisted(state)) {
                self.maps.set_aging_state(&key, &state)?;
            }
        }
        // Ages of backends no longer listed (gone again, or never
        // registered: the list was full) are not kept.
        K::kept(&mut self.lists).learned_ages.clear();
        // Every kept backend has an aging state: more states than kept
        // backends means some left the list (XDP removed them).
        if K::kept(&mut self.lists).aging.len() > kept.len() {
            self.forget_departed(&kept)?;
        }
        Ok(kept)
    }

    /// Removes a backend whose misses ran out; the first few of a sweep
    /// are logged one by one, the rest counted (a whole fleet falling
    /// silent must not flood the log).
    fn remove_missing<K: Listed>(
        &mut self,
        key: K,
        entry: &BackendEntry,
        misses: u32,
        now_ns: u64,
    ) -> Result<(), MapsError> {
        let why = DepartureReason::MissedHeartbeats;
        self.maps.remove_backend(&key, why, now_ns)?;
        K::kept(&mut self.lists).aging.remove(&key);
        self.sweeps.removed += 1;
        if self.sweeps.removed <= LOGGED_REMOVALS_PER_SWEEP {
            warn!(
                backend = %key.ip(), group = %self.group_addr(key.group_id()), misses,
                silent_ms = ms(now_ns.saturating_sub(entry.last_seen_ns)),
                "backend removed: {}", why.name()
            );
        }
        Ok(())
    }

    /// Drops the aging state of backends that XDP removed (LEAVING, IGMP
    /// leave) since the last sweep.
    fn forget_departed<K: Listed>(&mut self, kept: &[(K, BackendEntry)]) -> Result<(), MapsError> {
        let present: HashSet<K> = kept.iter().map(|(k, _)| *k).collect();
        let left: Vec<K> = K::kept(&mut self.lists)
            .aging
            .keys()
            .filter(|k| !present.contains(k))
            .copied()
            .collect();
        for key in left {
            K::kept(&mut self.lists).aging.remove(&key);
            self.maps.remove_aging(&key)?;
            // XDP logged the removal, and why, when it happened.
            debug!(backend = %key.ip(), group = %self.group_addr(key.group_id()), "backend left (LEAVING announcement, IGMP or MLD leave)");
        }
        Ok(())
    }
}
