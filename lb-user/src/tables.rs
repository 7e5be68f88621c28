//! Service tables: for each service, the Maglev table built from the
//! group's registered, non-draining backends, written into the inactive
//! slot and then made active with one map update, so XDP never reads a
//! half-built table. A table's size follows its backend count
//! (`maglev::table_size`); the slots are ranges of the MAGLEV pool, given
//! out by `pool::Pool`. Large tables are built on a thread of their own, so the
//! control loop never waits for one.
use std::{
    net::IpAddr,
    sync::mpsc,
    time::{Duration, Instant},
};

use foldhash::HashSet;
use lb_common::{BackendEntry, BackendKey, BackendKey6, MAGLEV_POOL, Service, ServiceKey};
use tracing::{info, warn};

use crate::{
    address::Address,
    eligible::{eligible_backends, oldest_change, previous_backends},
    maglev::{MaglevBackend, MaglevError, MaglevTable, patch, table_size},
    maps::{FamilyKey, LbMaps, MapsError, TableKind},
    metrics::{ControlMetrics, ServiceLabels},
    pool::Pool,
    reach::{OffSegmentReport, Reach},
    rows::Rows,
    system,
};

/// How the tables are sized and filled.
#[derive(Clone, Copy, Debug)]
pub struct TableParams {
    /// The smallest table (`--maglev-size`).
    pub min_size: u32,
    pub reach: Reach,
    /// How long a backend must have been registered to be in the previous
    /// tables (`--second-chance-window`).
    pub second_chance_window: Duration,
}

/// One service as configured: its VIP (of either family) and port, and
/// its group, whose family its backends are of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    pub key: ServiceKey,
    pub group_id: u32,
    pub group_ipv6: bool,
}

/// Entries of `next` that differ from `current` (index, new value).
pub fn table_diff<'a, A: Address>(
    current: &'a [A],
    next: &'a [A],
) -> impl Iterator<Item = (u32, A)> + 'a {
    (0u32..)
        .zip(current.iter().zip(next))
        .filter(|(_, (c, n))| c != n)
        .map(|(i, (_, n))| (i, *n))
}

/// Tables up to this size are built in the control loop itself (a few
/// milliseconds, so a new backend gets flows on the same pass); larger
/// ones on a thread of their own, and patched meanwhile.
const INLINE_BUILD_MAX: u32 = 262_139;

/// Least time between two full populations of a large table while its
/// backends change: the patches in between carry the changes (a population
/// of 2,097,143 entries costs 50-90 ms here, a patch a few).
const FULL_BUILD_INTERVAL: Duration = Duration::from_secs(2);

/// A table on its way: the backends it is for, when its build began,
/// when the oldest change it brings happened (CLOCK_MONOTONIC ns), and
/// whether it is a patch or a full population.
struct Pending<A> {
    set: Vec<MaglevBackend<A>>,
    started: Instant,
    changed_ns: Option<u64>,
    how: &'static str,
}

/// A table being built on a thread, and where it will come.
struct Build<A> {
    pending: Pending<A>,
    result: mpsc::Receiver<Built<A>>,
}

/// What a build gives.
type Built<A> = Result<MaglevTable<A>, MaglevError>;

/// A build that has come, with what it was for.
type Finished<A> = (Pending<A>, Built<A>);

/// One table (current or previous) of one service, whose backends'
/// addresses are `A`s.
struct ServiceState<A> {
    kind: TableKind,
    config: ServiceConfig,
    service: Service,
    /// The backends each slot's entries name in the map (its rows'
    /// addresses, or `Address::STALE` where the map may hold a row that
    /// no longer names that entry's backend); `None` when not known
    /// (adopted), so that the next table there is written whole.
    slots: [Option<Vec<A>>; 2],
    /// The backend set the active slot was built from.
    built_from: Option<Vec<MaglevBackend<A>>>,
    /// Whether the active slot holds the table of `built_from` (a table
    /// that could not be installed leaves an older one, which may name
    /// backends gone since: their rows stay until a table is installed).
    installed: bool,
    /// The backends eligible at the last sync.
    latest: Vec<MaglevBackend<A>>,
    /// The last full population and its backends: a change is patched
    /// onto it (`maglev::patch`) until the next full build replaces it.
    base: Option<(Vec<MaglevBackend<A>>, Vec<A>)>,
    building: Option<Build<A>>,
    /// When the last full build of a large table began.
    last_full: Option<Instant>,
    /// Tables made active since start.
    rebuilds: u64,
}

impl<A> ServiceState<A> {
    fn new(kind: TableKind, config: ServiceConfig, service: Service) -> Self {
        Self {
            kind,
            config,
            service,
            slots: [None, None],
            built_from: None,
            installed: false,
            latest: Vec::new(),
            base: None,
            building: None,
            last_full: None,
            rebuilds: 0,
        }
    }
}

/// The Maglev tables of all services: those of IPv4 groups and those of
/// IPv6 groups (whatever their VIPs' family), which share the Maglev pool
/// and the rows.
pub struct ServiceTables {
    v4: FamilyTables<BackendKey>,
    v6: FamilyTables<BackendKey6>,
    shared: Shared,
}

/// The tables of the services whose groups are of `K`'s family.
struct FamilyTables<K: FamilyKey> {
    services: Vec<ServiceState<K::Addr>>,
    off_segment: OffSegmentReport,
}

/// What the tables of both families share.
struct Shared {
    metrics: ControlMetrics,
    params: TableParams,
    pool: Pool,
    rows: Rows,
}

/// Removes the services and VIPs an earlier instance configured and this
/// one does not, then has every kept flow check its service and backend
/// again (XDP forwards a flow without a service lookup while nothing
/// changed).
fn forget_unconfigured(
    maps: &mut LbMaps,
    configs: &[ServiceConfig],
    vips: &[IpAddr],
) -> Result<(), MapsError> {
    for kind in TableKind::ALL {
        for (key, _) in maps.services(kind)? {
            if !configs.iter().any(|c| c.key == key) {
                maps.remove_service(kind, &key)?;
            }
        }
    }
    for vip in maps.vips()? {
        if !vips.contains(&vip) {
            maps.set_vip(vip, 0)?;
        }
    }
    maps.recheck_flows();
    Ok(())
}

impl ServiceTables {
    /// Registers the services with XDP, each with empty current and
    /// previous tables of `min_size` entries, or keeps the tables of an
    /// earlier instance serving until the first rebuild.
    pub fn new(
        maps: &mut LbMaps,
        configs: &[ServiceConfig],
        params: TableParams,
        metrics: ControlMetrics,
    ) -> Result<Self, MapsError> {
        let mut pool = Pool::default();
        // Adopted tables first: their ranges are taken before fresh ones are given out.
        let mut kept = Vec::new();
        for kind in TableKind::ALL {
            for (config, service_id) in configs.iter().zip(0u32..) {
                let adopted = maps.service(kind, &config.key)?.filter(|kept| {
                    kept.service_id == service_id
                        && kept.group_id == config.group_id
                        && kept.backends_ipv6 == u32::from(config.group_ipv6)
                        && (0..2).all(|s| pool.reserve(kept.slot_offset[s], kept.slot_size[s]))
                });
                kept.push((kind, config, service_id, adopted));
            }
        }
        let kept_ids: Vec<u32> = kept
            .iter()
            .filter(|(kind, _, _, adopted)| *kind == TableKind::Current && adopted.is_some())
            .map(|(_, _, id, _)| *id)
            .collect();
        let rows = Rows::adopt(maps, &kept_ids)?;
        let mut tables = Self {
            v4: FamilyTables::default(),
            v6: FamilyTables::default(),
            shared: Shared {
                metrics,
                params,
                pool,
                rows,
            },
        };
        for (kind, config, service_id, adopted) in kept {
            let service = match adopted {
                Some(adopted) => adopted,
                None => {
                    let fresh = match fresh_service(
                        &mut tables.shared.pool,
                        service_id,
                        config,
                        params.min_size,
                    ) {
                        Ok(fresh) => fresh,
                        Err(e) if kind == TableKind::Previous => {
                            warn!(vip = %config.key.vip(), port = config.key.port, "no previous table, so no second chance for this service: {e}");
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    // The range may hold an old instance's entries: clear the active slot.
                    let indices: Vec<u32> = (0..params.min_size)
                        .map(|e| fresh.maglev_index(0, e))
                        .collect();
                    maps.set_maglev_entries(&indices, &vec![0; indices.len()])?;
                    maps.set_service(kind, &config.key, &fresh)?;
                    fresh
                }
            };
            if config.group_ipv6 {
                let state = ServiceState::new(kind, *config, service);
                tables.v6.services.push(state);
            } else {
                let state = ServiceState::new(kind, *config, service);
                tables.v4.services.push(state);
            }
        }
        let mut vips: Vec<IpAddr> = configs.iter().map(|c| c.key.vip()).collect();
        vips.sort();
        vips.dedup();
        for &vip in &vips {
            let count = configs.iter().filter(|c| c.key.vip() == vip).count() as u32;
            maps.set_vip(vip, count)?;
        }
        maps.set_vip_filter(&vips)?;
        forget_unconfigured(maps, configs, &vips)?;
        Ok(tables)
    }

    /// Rebuilds every service whose eligible backends changed, from the
    /// server lists of both families. A small table is populated at once.
    /// A large one is patched at once from its last full population (a
    /// change costs in proportion to itself, not to the table), and
    /// populated in full on a thread, at most every
    /// `FULL_BUILD_INTERVAL`, whose table is installed by a later call:
    /// LBs that see the same backends end with byte-identical tables.
    pub fn sync(
        &mut self,
        maps: &mut LbMaps,
        backends: &[(BackendKey, BackendEntry)],
        backends6: &[(BackendKey6, BackendEntry)],
    ) -> Result<(), MapsError> {
        self.v4.sync(&mut self.shared, maps, backends)?;
        self.v6.sync(&mut self.shared, maps, backends6)
    }

    /// Installs the tables whose builds have finished, each patched to the
    /// backends eligible now if they changed during its build; returns
    /// whether any was (the caller then reads the backends again).
    pub fn install_finished(&mut self, maps: &mut LbMaps) -> Result<bool, MapsError> {
        let v4 = self.v4.install_finished(&mut self.shared, maps)?;
        let v6 = self.v6.install_finished(&mut self.shared, maps)?;
        Ok(v4 || v6)
    }

    /// Waits (bounded) until no table is being built: for tests and tools
    /// that need the tables of the current backends in place.
    pub fn settle(
        &mut self,
        maps: &mut LbMaps,
        backends: &[(BackendKey, BackendEntry)],
        backends6: &[(BackendKey6, BackendEntry)],
        limit: Duration,
    ) -> Result<(), MapsError> {
        let start = Instant::now();
        self.sync(maps, backends, backends6)?;
        let building = |tables: &Self| {
            tables.v4.services.iter().any(|s| s.building.is_some())
                || tables.v6.services.iter().any(|s| s.building.is_some())
        };
        while building(self) && start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(5));
            self.sync(maps, backends, backends6)?;
        }
        Ok(())
    }
}

impl<K: FamilyKey> Default for FamilyTables<K> {
    fn default() -> Self {
        Self {
            services: Vec::new(),
            off_segment: OffSegmentReport::default(),
        }
    }
}

impl<K: FamilyKey> FamilyTables<K> {
    /// `ServiceTables::sync` for the services of this family's groups.
    fn sync(
        &mut self,
        shared: &mut Shared,
        maps: &mut LbMaps,
        backends: &[(K, BackendEntry)],
    ) -> Result<(), MapsError> {
        if self.services.is_empty() {
            return Ok(());
        }
        let TableParams {
            min_size,
            reach,
            second_chance_window,
        } = shared.params;
        self.off_segment.report(reach, backends);
        self.install_finished(shared, maps)?;
        let window_ns = u64::try_from(second_chance_window.as_nanos()).unwrap_or(u64::MAX);
        let registered_by_ns = system::monotonic_ns().saturating_sub(window_ns);
        // Previous tables first: a packet that meets a service's current
        // table without its previous one gets no second chance, which broke
        // connections in the few ms between a fresh LB's first two tables.
        let previous_first = (0..self.services.len())
            .filter(|&i| self.services[i].kind == TableKind::Previous)
            .chain(
                (0..self.services.len()).filter(|&i| self.services[i].kind == TableKind::Current),
            )
            .collect::<Vec<_>>();
        for index in previous_first {
            let state = &mut self.services[index];
            let group_id = state.config.group_id;
            state.latest = match state.kind {
                TableKind::Current => eligible_backends(group_id, backends, reach),
                TableKind::Previous => {
                    previous_backends(group_id, backends, reach, registered_by_ns)
                }
            };
            let size = table_size(state.latest.len(), min_size);
            if state.built_from.as_ref() != Some(&state.latest) {
                let changed_ns = state
                    .built_from
                    .as_deref()
                    .map(|old| oldest_change(old, &state.latest, backends, maps))
                    .transpose()?;
                let mut pending = Pending {
                    set: state.latest.clone(),
                    started: Instant::now(),
                    changed_ns,
                    how: "population",
                };
                match &state.base {
                    Some((set, table))
                        if size > INLINE_BUILD_MAX && table.len() == size as usize =>
                    {
                        let next = patch(table, set, &pending.set);
                        pending.how = "patch";
                        self.install(shared, maps, index, pending, Ok(next))?;
                    }
                    _ if state.building.is_none() => {
                        self.build(shared, maps, index, pending, size)?
                    }
                    // A new size: the build under way is followed by another.
                    _ => {}
                }
            }
            let state = &self.services[index];
            let patched = state
                .base
                .as_ref()
                .is_some_and(|(set, _)| state.built_from.as_ref() != Some(set));
            let due = state
                .last_full
                .is_none_or(|at| at.elapsed() >= FULL_BUILD_INTERVAL);
            if patched && due && state.building.is_none() {
                let pending = Pending {
                    set: state.latest.clone(),
                    started: Instant::now(),
                    changed_ns: None,
                    how: "population",
                };
                self.build(shared, maps, index, pending, size)?;
            }
        }
        self.release_rows(shared, maps, backends)
    }

    /// Frees the rows of backends no longer registered in their service's
    /// group, once the service's tables name none of them (XDP takes a
    /// table's rows as its service's unchecked), and marks their entries
    /// in the slots' copies `Address::STALE`: a freed row may name another backend
    /// when it is given out again.
    fn release_rows(
        &mut self,
        shared: &mut Shared,
        maps: &mut LbMaps,
        backends: &[(K, BackendEntry)],
    ) -> Result<(), MapsError> {
        let mut services: Vec<(u32, u32)> = self
            .services
            .iter()
            .map(|s| (s.service.service_id, s.config.group_id))
            .collect();
        services.sort_unstable();
        services.dedup();
        for (service_id, group_id) in services {
            let tables = || {
                self.services
                    .iter()
                    .filter(move |s| s.service.service_id == service_id)
            };
            // A previous table that could not be installed may name freed
            // rows: XDP checks a previous pick's service and registration.
            if !tables().all(|s| s.installed || s.kind == TableKind::Previous) {
                continue;
            }
            let registered: HashSet<[u8; 16]> = backends
                .iter()
                .filter(|(key, _)| key.group_id() == group_id)
                .map(|(key, _)| key.addr().row_addr())
                .collect();
            let freed: HashSet<[u8; 16]> = shared
                .rows
                .release(maps, service_id, &registered)?
                .into_iter()
                .collect();
            if freed.is_empty() {
                continue;
            }
            let states = self
                .services
                .iter_mut()
                .filter(|s| s.service.service_id == service_id);
            for entry in
                states.flat_map(|s| s.slots.iter_mut().flatten().flat_map(|t| t.iter_mut()))
            {
                if freed.contains(&entry.row_addr()) {
                    *entry = K::Addr::STALE;
                }
            }
        }
        Ok(())
    }

    /// Populates service `index`'s table for `pending`: at once if small,
    /// else on a thread.
    fn build(
        &mut self,
        shared: &mut Shared,
        maps: &mut LbMaps,
        index: usize,
        pending: Pending<K::Addr>,
        size: u32,
    ) -> Result<(), MapsError> {
        if size <= INLINE_BUILD_MAX {
            // A small table is never patched: no base to patch from.
            self.services[index].base = None;
            let result = MaglevTable::build(&pending.set, size).map(MaglevTable::into_entries);
            return self.install(shared, maps, index, pending, result);
        }
        let (done, result) = mpsc::channel();
        let set = pending.set.clone();
        std::thread::spawn(move || {
            // The receiver may be gone (the LB stops): nothing to do then.
            let _ = done.send(MaglevTable::build(&set, size));
        });
        let state = &mut self.services[index];
        state.last_full = Some(pending.started);
        state.building = Some(Build { pending, result });
        Ok(())
    }

    /// Installs the tables whose builds have finished, each patched to the
    /// backends eligible now if they changed during its build; returns
    /// whether any was (the caller then reads the backends again).
    fn install_finished(
        &mut self,
        shared: &mut Shared,
        maps: &mut LbMaps,
    ) -> Result<bool, MapsError> {
        let mut installed = false;
        for index in 0..self.services.len() {
            let Some((mut pending, result)) = self.finished_build(index) else {
                continue;
            };
            let state = &mut self.services[index];
            let changed = state.latest != pending.set;
            let result = result.map(|table| {
                let full = table.into_entries();
                let next = if changed {
                    patch(&full, &pending.set, &state.latest)
                } else {
                    full.clone()
                };
                state.base = Some((pending.set.clone(), full));
                next
            });
            if result.is_ok() && changed {
                // The backends changed during the build: patched to them.
                pending.how = "population, patched";
                pending.set = state.latest.clone();
            }
            self.install(shared, maps, index, pending, result)?;
            installed = true;
        }
        Ok(installed)
    }

    /// The result of service `index`'s build, if it has come.
    fn finished_build(&mut self, index: usize) -> Option<Finished<K::Addr>> {
        let state = &mut self.services[index];
        let result = match state.building.as_ref()?.result.try_recv() {
            Ok(result) => result,
            Err(mpsc::TryRecvError::Empty) => return None,
            Err(mpsc::TryRecvError::Disconnected) => {
                warn!("a forwarding table build ended without a table; building again");
                state.building = None;
                return None;
            }
        };
        let build = state.building.take()?;
        Some((build.pending, result))
    }

    /// Writes a table into service `index`'s inactive slot (a range of its
    /// size, taken from the pool if the size changed) and makes it active
    /// with one map update.
    fn install(
        &mut self,
        shared: &mut Shared,
        maps: &mut LbMaps,
        index: usize,
        pending: Pending<K::Addr>,
        result: Result<Vec<K::Addr>, MaglevError>,
    ) -> Result<(), MapsError> {
        let Pending {
            set,
            started,
            changed_ns,
            how,
        } = pending;
        let state = &mut self.services[index];
        let key = state.config.key;
        let next = match result {
            Ok(next) => next,
            Err(e) => {
                warn!(vip = %key.vip(), port = key.port, "forwarding table not rebuilt: {e}");
                // Not retried until the backend set changes.
                state.built_from = Some(set);
                state.installed = false;
                return Ok(());
            }
        };
        let built_in = started.elapsed();
        let size = next.len() as u32;
        let inactive = (state.service.active_slot ^ 1) as usize;
        let same_range = state.service.slot_size[inactive] == size;
        let writes: Vec<(u32, K::Addr)> = match (&state.slots[inactive], same_range) {
            (Some(current), true) => table_diff(current, &next).collect(),
            _ => {
                if !same_range {
                    shared.pool.free(state.service.slot_offset[inactive]);
                    let Some(offset) = shared.pool.alloc(size) else {
                        warn!(
                            vip = %key.vip(), port = key.port, entries = size,
                            "forwarding table not rebuilt: the Maglev pool ({MAGLEV_POOL} entries) has no room for it"
                        );
                        // Freed: an offset past the pool marks it unused.
                        state.service.slot_offset[inactive] = MAGLEV_POOL;
                        state.service.slot_size[inactive] = 0;
                        state.slots[inactive] = None;
                        state.built_from = Some(set);
                        state.installed = false;
                        return Ok(());
                    };
                    state.service.slot_offset[inactive] = offset;
                    state.service.slot_size[inactive] = size;
                }
                (0u32..).zip(next.iter().copied()).collect()
            }
        };
        let indices: Vec<u32> = writes
            .iter()
            .map(|&(e, _)| state.service.maglev_index(inactive as u32, e))
            .collect();
        let mut copy = next;
        let mut values = Vec::with_capacity(writes.len());
        for &(entry, addr) in &writes {
            let row = if addr == K::Addr::NONE {
                Some(0)
            } else {
                let service_id = state.service.service_id;
                shared.rows.row(maps, service_id, addr.row_addr())?
            };
            if row.is_none() {
                // No row to give: no backend there, until one frees.
                copy[entry as usize] = K::Addr::STALE;
            }
            values.push(row.unwrap_or(0));
        }
        maps.set_maglev_entries(&indices, &values)?;
        state.slots[inactive] = Some(copy);
        state.service.active_slot = inactive as u32;
        // One update makes the whole new table visible to XDP.
        maps.set_service(state.kind, &key, &state.service)?;
        state.rebuilds += 1;
        state.built_from = Some(set);
        state.installed = true;
        let kind = state.kind;
        // From the oldest change this table brings (as XDP stamped it) to
        // the table being active; none for the first table after a start.
        let change_ms = changed_ns.map(|at| system::monotonic_ns().saturating_sub(at) / 1_000_000);
        if kind == TableKind::Current {
            shared.observe_rebuild(key, started, change_ms);
        }
        info!(
            vip = %key.vip(), port = key.port, table = kind.name(),
            backends = self.services[index].latest.len(), entries = size,
            built_ms = built_in.as_millis() as u64, written = writes.len(),
            change_ms, how, "forwarding table rebuilt"
        );
        Ok(())
    }
}

impl Shared {
    /// The metrics of a current table made active: its build, and the
    /// time from the change it brings (`change_ms`).
    fn observe_rebuild(&self, key: ServiceKey, started: Instant, change_ms: Option<u64>) {
        let labels = ServiceLabels {
            vip: key.vip().to_string(),
            port: key.port,
            proto: lb_common::transport_name(key.proto).to_owned(),
        };
        self.metrics.rebuilds.get_or_create(&labels).inc();
        self.metrics
            .last_rebuild_seconds
            .get_or_create(&labels)
            .set(started.elapsed().as_secs_f64());
        if let Some(ms) = change_ms {
            self.metrics.change_seconds.observe(ms as f64 / 1e3);
        }
    }
}

/// A service with both slots of `size` entries taken from the pool, slot
/// 0 active.
fn fresh_service(
    pool: &mut Pool,
    service_id: u32,
    config: &ServiceConfig,
    size: u32,
) -> Result<Service, MapsError> {
    let mut offsets = [0; 2];
    for offset in &mut offsets {
        *offset = pool.alloc(size).ok_or(MapsError::MaglevPoolFull {
            entries: size,
            pool: MAGLEV_POOL,
        })?;
    }
    Ok(Service {
        service_id,
        group_id: config.group_id,
        active_slot: 0,
        backends_ipv6: u32::from(config.group_ipv6),
        slot_offset: offsets,
        slot_size: [size; 2],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_lists_only_changed_entries() {
        let ip = |last| std::net::Ipv4Addr::new(10, 0, 0, last);
        let a = [ip(0), ip(1), ip(2)];
        let b = [ip(0), ip(3), ip(2)];
        assert_eq!(table_diff(&a, &b).collect::<Vec<_>>(), vec![(1, ip(3))]);
    }
}
