//! Typed access to the program's maps, from a fresh load or from the pins of
//! a running instance.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, Pod,
    maps::{IterableMap, Map, MapData, MapError, PerCpuValues, lpm_trie::Key},
    programs::ProgramError,
    sys::SyscallError,
};
use lb_common::{
    AgingState, AuthClock, AuthKey, BackendEntry, BackendKey, BackendKey6, CoarseClock, Counter,
    Departure, DepartureReason, GroupReports, GroupStatus, GsoCounter, GsoHandoff, LogBudget,
    MAX_AUTH_KEYS, MAX_GROUPS, MacKey, NextHop, NextHopError, PendingLeave, Service,
    ServiceBackend, ServiceKey, ServiceKey4, Traffic, addr, map_name, vip_filter_bit,
};

use crate::address::Address;

/// Every map the program declares (`lb_common::program_maps!`): all are
/// pinned, and adopted by the next `run`.
pub const ALL_MAPS: &[&str] = map_name::ALL;

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("loading the XDP object failed")]
    Load(#[from] aya::EbpfError),
    #[error("a program of the XDP object was rejected")]
    Program(#[from] ProgramError),
    #[error("the XDP object has no map or program {name}")]
    Missing { name: &'static str },
    #[error(
        "the Maglev pool ({pool} entries) has no room for two tables of {entries}: fewer services, or a smaller --maglev-size"
    )]
    MaglevPoolFull { entries: u32, pool: u32 },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("no pinned map at {path}; is `lb-user run` running with this --pin-path?")]
    NotPinned {
        path: PathBuf,
        #[source]
        source: MapError,
    },
    #[error("pinning {name} at {path}: {source}")]
    Pin {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("at most {max} groups per instance", max = MAX_GROUPS)]
    TooManyGroups,
    #[error("at most {max} keys at once", max = MAX_AUTH_KEYS)]
    TooManyKeys,
    #[error("cannot count the possible CPUs: {0}")]
    Cpus(std::io::Error),
    #[error("cannot duplicate the descriptor of program {name}: {source}")]
    ProgramFd {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Which of a service's tables: the one new flows take (`SERVICES`), or
/// the one of the backends registered at least the second-chance window
/// ago (`PREVIOUS_SERVICES`, protocol §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    Current,
    Previous,
}

impl TableKind {
    pub const ALL: [TableKind; 2] = [TableKind::Current, TableKind::Previous];

    pub fn name(self) -> &'static str {
        match self {
            TableKind::Current => "current",
            TableKind::Previous => "previous",
        }
    }
}

/// One configured group: the multicast address (of either family,
/// protocol §9) and its announcement port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    pub group: IpAddr,
    pub port: u16,
}

/// The key of one address family's server list (protocol §9): each family
/// has its own list, aging states and departures, and the control loop
/// ages both through this trait.
pub trait FamilyKey: Pod + Copy + Eq + std::hash::Hash + std::fmt::Debug + Send + 'static {
    /// The family's address.
    type Addr: Address;
    fn group_id(&self) -> u32;
    fn addr(&self) -> Self::Addr;
    fn ip(&self) -> IpAddr;
    /// The key of `addr` in group `group_id`, if `addr` is of this family.
    fn of(group_id: u32, addr: IpAddr) -> Option<Self>;
    #[doc(hidden)]
    fn list(maps: &LbMaps) -> &kind::HashMap<Self, BackendEntry>;
    #[doc(hidden)]
    fn list_mut(maps: &mut LbMaps) -> &mut kind::HashMap<Self, BackendEntry>;
    #[doc(hidden)]
    fn aging_mut(maps: &mut LbMaps) -> &mut kind::HashMap<Self, AgingState>;
    #[doc(hidden)]
    fn aging(maps: &LbMaps) -> &kind::HashMap<Self, AgingState>;
    #[doc(hidden)]
    fn departures_mut(maps: &mut LbMaps) -> &mut kind::LruHashMap<Self, Departure>;
    #[doc(hidden)]
    fn departures(maps: &LbMaps) -> &kind::LruHashMap<Self, Departure>;
    #[doc(hidden)]
    fn leaves_mut(maps: &mut LbMaps) -> &mut kind::HashMap<Self, PendingLeave>;
    #[doc(hidden)]
    fn leaves(maps: &LbMaps) -> &kind::HashMap<Self, PendingLeave>;
    /// The names of the list, aging, departure and leave maps, for errors.
    const MAPS: [&'static str; 4];
    /// The membership protocol of the family, for the log.
    const MEMBERSHIP: &'static str;
    /// Why a backend whose held leave was confirmed left.
    const LEAVE_CONFIRMED: DepartureReason;
}

/// A backend's address as the next-hop maps key it: `[u8; 4]` for IPv4,
/// `[u8; 16]` for IPv6.
pub trait HopAddr: Pod + Copy + Eq + std::hash::Hash + std::fmt::Debug + Send + 'static {
    /// The family's address.
    type Addr: Address + From<Self>;
    #[doc(hidden)]
    fn hops(maps: &LbMaps) -> &kind::LruHashMap<Self, NextHop>;
    #[doc(hidden)]
    fn errors(maps: &LbMaps) -> &kind::LruHashMap<Self, NextHopError>;
    #[doc(hidden)]
    fn errors_mut(maps: &mut LbMaps) -> &mut kind::LruHashMap<Self, NextHopError>;
    /// The names of the next-hop and error maps, for errors.
    const MAPS: [&'static str; 2];
}

/// Implements [`HopAddr`] for one family's address from its maps' fields.
macro_rules! hop_addr {
    ($key:ty, $addr:ty, $hops:ident, $errors:ident, [$($name:ident),+]) => {
        impl HopAddr for $key {
            type Addr = $addr;
            fn hops(maps: &LbMaps) -> &kind::LruHashMap<Self, NextHop> {
                &maps.$hops
            }
            fn errors(maps: &LbMaps) -> &kind::LruHashMap<Self, NextHopError> {
                &maps.$errors
            }
            fn errors_mut(maps: &mut LbMaps) -> &mut kind::LruHashMap<Self, NextHopError> {
                &mut maps.$errors
            }
            const MAPS: [&'static str; 2] = [$(map_name::$name),+];
        }
    };
}
hop_addr!(
    [u8; 4],
    Ipv4Addr,
    next_hops,
    next_hop_errors,
    [NEXT_HOPS, NEXT_HOP_ERRORS]
);
hop_addr!(
    [u8; 16],
    Ipv6Addr,
    next_hops6,
    next_hop_errors6,
    [NEXT_HOPS6, NEXT_HOP_ERRORS6]
);

/// Implements [`FamilyKey`] for one family's key from its maps' fields.
macro_rules! family_key {
    ($key:ty, $variant:ident, $addr:ty, $membership:literal, $confirmed:ident, $list:ident, $aging:ident, $departures:ident, $leaves:ident, [$($name:ident),+]) => {
        impl FamilyKey for $key {
            type Addr = $addr;
            fn group_id(&self) -> u32 {
                self.group_id
            }
            fn addr(&self) -> $addr {
                self.addr.into()
            }
            fn ip(&self) -> IpAddr {
                IpAddr::$variant(self.addr.into())
            }
            fn of(group_id: u32, addr: IpAddr) -> Option<Self> {
                match addr {
                    IpAddr::$variant(addr) => Some(Self { group_id, addr: addr.octets() }),
                    _ => None,
                }
            }
            fn list(maps: &LbMaps) -> &kind::HashMap<Self, BackendEntry> {
                &maps.$list
            }
            fn list_mut(maps: &mut LbMaps) -> &mut kind::HashMap<Self, BackendEntry> {
                &mut maps.$list
            }
            fn aging_mut(maps: &mut LbMaps) -> &mut kind::HashMap<Self, AgingState> {
                &mut maps.$aging
            }
            fn aging(maps: &LbMaps) -> &kind::HashMap<Self, AgingState> {
                &maps.$aging
            }
            fn departures_mut(maps: &mut LbMaps) -> &mut kind::LruHashMap<Self, Departure> {
                &mut maps.$departures
            }
            fn departures(maps: &LbMaps) -> &kind::LruHashMap<Self, Departure> {
                &maps.$departures
            }
            fn leaves_mut(maps: &mut LbMaps) -> &mut kind::HashMap<Self, PendingLeave> {
                &mut maps.$leaves
            }
            fn leaves(maps: &LbMaps) -> &kind::HashMap<Self, PendingLeave> {
                &maps.$leaves
            }
            const MAPS: [&'static str; 4] = [$(map_name::$name),+];
            const MEMBERSHIP: &'static str = $membership;
            const LEAVE_CONFIRMED: DepartureReason = DepartureReason::$confirmed;
        }
    };
}
family_key!(
    BackendKey,
    V4,
    Ipv4Addr,
    "IGMP",
    LeaveConfirmed,
    backends,
    aging,
    departures,
    leaves,
    [BACKENDS, BACKEND_AGING, DEPARTURES, LEAVES]
);
family_key!(
    BackendKey6,
    V6,
    Ipv6Addr,
    "MLD",
    MldLeaveConfirmed,
    backends6,
    aging6,
    departures6,
    leaves6,
    [BACKENDS6, BACKEND_AGING6, DEPARTURES6, LEAVES6]
);

/// The name of the map of `kind` of tables that holds `key`'s service.
fn service_map_name(kind: TableKind, key: &ServiceKey) -> &'static str {
    match (kind, key.v4().is_some()) {
        (TableKind::Current, true) => map_name::SERVICES,
        (TableKind::Current, false) => map_name::SERVICES6,
        (TableKind::Previous, true) => map_name::PREVIOUS_SERVICES,
        (TableKind::Previous, false) => map_name::PREVIOUS_SERVICES6,
    }
}

/// The userspace type of each kind of map in `lb_common::program_maps!`.
pub mod kind {
    use aya::maps::{self, MapData};
    pub type HashMap<K, V> = maps::HashMap<MapData, K, V>;
    pub type LruHashMap<K, V> = maps::HashMap<MapData, K, V>;
    pub type Array<V> = maps::Array<MapData, V>;
    pub type PerCpuArray<V> = maps::PerCpuArray<MapData, V>;
    pub type LpmTrie<K, V> = maps::lpm_trie::LpmTrie<MapData, K, V>;
    pub type MmapArray<V> = crate::mapped::MappedArray<V>;
}

/// Turns `lb_common::program_maps!` into `LbMaps`: one private typed
/// handle per map, all taken from one source (a load or the pins).
macro_rules! lb_maps {
    ($( $(#[$doc:meta])* $name:ident / $field:ident : $kind:ident <$($ty:ty),+> [$cap:expr]; )*) => {
        /// Typed handles on all maps; every read and write goes through
        /// the methods below.
        pub struct LbMaps {
            $( $(#[$doc])* $field: kind::$kind<$($ty),+>, )*
        }

        impl LbMaps {
            fn from_source(
                mut get: impl FnMut(&'static str) -> Result<Map, MapsError>,
            ) -> Result<Self, MapsError> {
                Ok(Self {
                    $( $field: get(map_name::$name)?.try_into().map_err(map_err(map_name::$name))?, )*
                })
            }
        }
    };
}
lb_common::program_maps!(lb_maps);

/// The one way a map error becomes a `MapsError`: it names the map.
pub(crate) fn map_err(name: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Map { name, source }
}

/// The possible CPUs: the values of a per-CPU map.
pub fn possible_cpus() -> Result<usize, MapsError> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| MapsError::Cpus(e))?;
    Ok(cpus.get() as usize)
}

/// A batched operation's error, naming the map and the command.
fn batch_err(name: &'static str, call: &'static str) -> impl FnOnce(std::io::Error) -> MapsError {
    move |io_error| map_err(name)(MapError::SyscallError(SyscallError { call, io_error }))
}

/// `Ok(None)` for a key that is not there; every other error stays one.
fn found<T>(result: Result<T, MapError>, name: &'static str) -> Result<Option<T>, MapsError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(map_err(name)(e)),
    }
}

/// Every entry a map iterator yields, or the first error, naming the map.
fn entries<K: Pod, V: Pod>(
    map: &impl IterableMap<K, V>,
    name: &'static str,
) -> Result<Vec<(K, V)>, MapsError> {
    crate::batch::lookup_all(map.map().fd().as_fd()).map_err(|io_error| {
        map_err(name)(MapError::SyscallError(SyscallError {
            call: "bpf_map_lookup_batch",
            io_error,
        }))
    })
}

/// Every CPU's value of the one slot of a per-CPU array.
fn every_cpu<V: Pod>(map: &kind::PerCpuArray<V>, name: &'static str) -> Result<Vec<V>, MapsError> {
    let per_cpu = map.get(&0, 0).map_err(map_err(name))?;
    Ok(per_cpu.iter().copied().collect())
}

/// A delete that finds nothing to delete is fine (XDP, or a LEAVING that
/// raced us, removed it first); every other error is one.
fn removed(result: Result<(), MapError>, name: &'static str) -> Result<(), MapsError> {
    match result {
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other.map_err(map_err(name)),
    }
}

impl LbMaps {
    /// Takes the maps out of a loaded object (the program keeps using them).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, MapsError> {
        Self::from_source(|name| ebpf.take_map(name).ok_or(MapsError::Missing { name }))
    }

    /// Opens the maps pinned under `dir` by a running instance.
    pub fn open_pinned(dir: &Path) -> Result<Self, MapsError> {
        Self::from_source(|name| {
            let path = dir.join(name);
            let data = MapData::from_pin(&path).map_err(|source| MapsError::NotPinned {
                path: path.clone(),
                source,
            })?;
            Map::from_map_data(data).map_err(map_err(name))
        })
    }

    /// Tells XDP which ports and group addresses belong to which group id
    /// (ids are shared by both families; each family has its own ports).
    pub fn configure_groups(&mut self, groups: &[GroupConfig]) -> Result<(), MapsError> {
        if groups.len() > MAX_GROUPS as usize {
            return Err(MapsError::TooManyGroups);
        }
        for (id, g) in (0u32..).zip(groups) {
            match g.group {
                IpAddr::V4(group) => self.configure_ipv4_group(id, group, g.port)?,
                IpAddr::V6(group) => self.configure_ipv6_group(id, group, g.port)?,
            }
            self.set_group_status(id, &GroupStatus::configured(g.group, g.port))?;
        }
        Ok(())
    }

    fn configure_ipv4_group(
        &mut self,
        id: u32,
        group: Ipv4Addr,
        port: u16,
    ) -> Result<(), MapsError> {
        self.announce_ports
            .set(u32::from(port), &(id + 1), 0)
            .map_err(map_err(map_name::ANNOUNCE_PORTS))?;
        self.group_addrs
            .insert(&group.octets(), &id, 0)
            .map_err(map_err(map_name::GROUP_ADDRS))
    }

    /// Configures IPv6 group `id` (protocol §9): its announcement port
    /// and its address for MLD reports.
    pub fn configure_ipv6_group(
        &mut self,
        id: u32,
        group: Ipv6Addr,
        port: u16,
    ) -> Result<(), MapsError> {
        self.announce_ports6
            .set(u32::from(port), &(id + 1), 0)
            .map_err(map_err(map_name::ANNOUNCE_PORTS6))?;
        self.group_addrs6
            .insert(&group.octets(), &id, 0)
            .map_err(map_err(map_name::GROUP_ADDRS6))
    }

    /// Installs the announcement keys (at most two: the current and the next).
    pub fn set_keys(&mut self, keys: &[[u8; 16]]) -> Result<(), MapsError> {
        if keys.len() > MAX_AUTH_KEYS as usize {
            return Err(MapsError::TooManyKeys);
        }
        for slot in 0..MAX_AUTH_KEYS {
            let key = keys
                .get(slot as usize)
                .map_or(AuthKey::default(), |&key| AuthKey {
                    key,
                    active: 1,
                    _pad: 0,
                });
            self.auth_keys
                .set(slot, &key, 0)
                .map_err(map_err(map_name::AUTH_KEYS))?;
        }
        Ok(())
    }

    /// Tells XDP the wall clock (as an offset from the monotonic clock).
    pub fn set_clock(&mut self, clock: &AuthClock) -> Result<(), MapsError> {
        self.auth_clock
            .set(0, clock, 0)
            .map_err(map_err(map_name::AUTH_CLOCK))
    }

    /// Lets sources in `prefix/len` announce (with the allowlist on).
    pub fn allow(&mut self, prefix: IpAddr, len: u8) -> Result<(), MapsError> {
        match prefix {
            IpAddr::V4(prefix) => self
                .announce_allow
                .insert(&Key::new(u32::from(len), prefix.octets()), &1, 0)
                .map_err(map_err(map_name::ANNOUNCE_ALLOW)),
            IpAddr::V6(prefix) => self
                .announce_allow6
                .insert(&Key::new(u32::from(len), prefix.octets()), &1, 0)
                .map_err(map_err(map_name::ANNOUNCE_ALLOW6)),
        }
    }

    /// A configured service's `kind` of table, if XDP has it (one left by
    /// a killed instance).
    pub fn service(&self, kind: TableKind, key: &ServiceKey) -> Result<Option<Service>, MapsError> {
        let ((map4, name4), (map6, name6)) = self.service_maps(kind);
        match key.v4() {
            Some(key4) => found(map4.get(&key4, 0), name4),
            None => found(map6.get(key, 0), name6),
        }
    }

    /// Every configured service (VIPs of both families), with its `kind` of table.
    pub fn services(&self, kind: TableKind) -> Result<Vec<(ServiceKey, Service)>, MapsError> {
        let ((map4, name4), (map6, name6)) = self.service_maps(kind);
        let v4 = entries(map4, name4)?
            .into_iter()
            .map(|(k, s)| (k.widened(), s));
        Ok(v4.chain(entries(map6, name6)?).collect())
    }

    /// The maps of `kind` of tables (IPv4 VIPs', IPv6 VIPs') and their names.
    #[expect(
        clippy::type_complexity,
        reason = "two (map, name) pairs, read once where they are taken apart"
    )]
    fn service_maps(
        &self,
        kind: TableKind,
    ) -> (
        (&kind::HashMap<ServiceKey4, Service>, &'static str),
        (&kind::HashMap<ServiceKey, Service>, &'static str),
    ) {
        match kind {
            TableKind::Current => (
                (&self.services, map_name::SERVICES),
                (&self.services6, map_name::SERVICES6),
            ),
            TableKind::Previous => (
                (&self.previous_services, map_name::PREVIOUS_SERVICES),
                (&self.previous_services6, map_name::PREVIOUS_SERVICES6),
            ),
        }
    }

    /// What every row names (`lb_common::ServiceBackend`), in one batched read.
    pub fn rows(&self) -> Result<Vec<ServiceBackend>, MapsError> {
        let fd = self.service_backends.map().fd().as_fd();
        crate::batch::lookup_range(fd, 0, self.service_backends.len()).map_err(batch_err(
            map_name::SERVICE_BACKENDS,
            "bpf_map_lookup_batch",
        ))
    }

    /// Makes `row` name `target` (address 0: nothing).
    pub fn set_row(&mut self, row: u32, target: &ServiceBackend) -> Result<(), MapsError> {
        self.service_backends
            .set(row, target, 0)
            .map_err(map_err(map_name::SERVICE_BACKENDS))
    }

    /// What rows `0..count` carried, each summed over the CPUs, in
    /// batched reads.
    pub fn traffic(&self, count: u32) -> Result<Vec<Traffic>, MapsError> {
        let cpus = possible_cpus()?;
        let fd = self.traffic.map().fd().as_fd();
        let per_cpu: Vec<Traffic> = crate::batch::lookup_range_per_cpu(fd, 0, count, cpus)
            .map_err(batch_err(map_name::TRAFFIC, "bpf_map_lookup_batch"))?;
        Ok(per_cpu
            .chunks(cpus)
            .map(|row| {
                row.iter().fold(Traffic::default(), |mut sum, &t| {
                    sum += t;
                    sum
                })
            })
            .collect())
    }

    /// What `row` carried, per CPU.
    pub fn row_traffic(&self, row: u32) -> Result<PerCpuValues<Traffic>, MapsError> {
        self.traffic
            .get(&row, 0)
            .map_err(map_err(map_name::TRAFFIC))
    }

    /// Sets what `row` carried, per CPU.
    pub fn set_row_traffic(
        &mut self,
        row: u32,
        values: PerCpuValues<Traffic>,
    ) -> Result<(), MapsError> {
        self.traffic
            .set(row, values, 0)
            .map_err(map_err(map_name::TRAFFIC))
    }

    /// Adds or replaces a service's `kind` of table; XDP sees the new
    /// value atomically.
    pub fn set_service(
        &mut self,
        kind: TableKind,
        key: &ServiceKey,
        service: &Service,
    ) -> Result<(), MapsError> {
        match (kind, key.v4()) {
            (TableKind::Current, Some(key4)) => self.services.insert(&key4, service, 0),
            (TableKind::Current, None) => self.services6.insert(key, service, 0),
            (TableKind::Previous, Some(key4)) => self.previous_services.insert(&key4, service, 0),
            (TableKind::Previous, None) => self.previous_services6.insert(key, service, 0),
        }
        .map_err(map_err(service_map_name(kind, key)))
    }

    /// Removes a service's `kind` of table an earlier instance configured.
    pub fn remove_service(&mut self, kind: TableKind, key: &ServiceKey) -> Result<(), MapsError> {
        let result = match (kind, key.v4()) {
            (TableKind::Current, Some(key4)) => self.services.remove(&key4),
            (TableKind::Current, None) => self.services6.remove(key),
            (TableKind::Previous, Some(key4)) => self.previous_services.remove(&key4),
            (TableKind::Previous, None) => self.previous_services6.remove(key),
        };
        removed(result, service_map_name(kind, key))
    }

    /// The VIPs XDP knows.
    pub fn vips(&self) -> Result<Vec<IpAddr>, MapsError> {
        let vips = entries(&self.vips, map_name::VIPS)?;
        Ok(vips.into_iter().map(|(vip, _)| addr::to_ip(vip)).collect())
    }

    /// Makes every flow check its service and backend again on its next
    /// packet (bumps `BACKEND_EPOCH`): after a removal, and after a change
    /// of configuration (flows an earlier instance kept were checked under
    /// another).
    pub fn recheck_flows(&self) {
        self.backend_epoch.bump(0);
    }

    /// Marks `vip` as carrying `services` services (0 removes it).
    pub fn set_vip(&mut self, vip: IpAddr, services: u32) -> Result<(), MapsError> {
        if services == 0 {
            return removed(self.vips.remove(&addr::from_ip(vip)), map_name::VIPS);
        }
        self.vips
            .insert(&addr::from_ip(vip), &services, 0)
            .map_err(map_err(map_name::VIPS))
    }

    /// Sets the VIP filter XDP checks before its VIP lookup to `vips`.
    pub fn set_vip_filter(&mut self, vips: &[IpAddr]) -> Result<(), MapsError> {
        let filter = vips.iter().fold(0u64, |f, &vip| {
            let [.., high, low] = addr::from_ip(vip);
            f | vip_filter_bit([high, low])
        });
        self.vip_filter
            .set(0, &filter, 0)
            .map_err(map_err(map_name::VIP_FILTER))
    }

    /// The row at `index` of the Maglev pool.
    pub fn maglev_entry(&self, index: u32) -> Result<u32, MapsError> {
        self.maglev
            .get(&index, 0)
            .map_err(map_err(map_name::MAGLEV))
    }

    /// The table XDP reads now for `service` (its active slot): rows.
    pub fn active_table(&self, service: &Service) -> Result<Vec<u32>, MapsError> {
        let start = service.maglev_index(service.active_slot, 0);
        crate::batch::lookup_range(self.maglev.map().fd().as_fd(), start, service.active_size())
            .map_err(batch_err(map_name::MAGLEV, "bpf_map_lookup_batch"))
    }

    /// Writes `rows[i]` at `indices[i]` of the Maglev pool, in batches.
    pub fn set_maglev_entries(&mut self, indices: &[u32], rows: &[u32]) -> Result<(), MapsError> {
        crate::batch::update_all(self.maglev.map().fd().as_fd(), indices, rows)
            .map_err(batch_err(map_name::MAGLEV, "bpf_map_update_batch"))
    }

    pub fn group_status(&self, id: u32) -> Result<GroupStatus, MapsError> {
        self.group_status
            .get(&id, 0)
            .map_err(map_err(map_name::GROUP_STATUS))
    }

    pub fn set_group_status(&mut self, id: u32, status: &GroupStatus) -> Result<(), MapsError> {
        self.group_status
            .set(id, status, 0)
            .map_err(map_err(map_name::GROUP_STATUS))
    }

    /// A group's IGMP statistics summed over CPUs.
    pub fn group_reports(&self, id: u32) -> Result<GroupReports, MapsError> {
        let per_cpu = self
            .group_reports
            .get(&id, 0)
            .map_err(map_err(map_name::GROUP_REPORTS))?;
        Ok(per_cpu
            .iter()
            .fold(GroupReports::default(), |acc, r| GroupReports {
                reports: acc.reports + r.reports,
                leaves: acc.leaves + r.leaves,
                announcements: acc.announcements + r.announcements,
                changes: acc.changes + r.changes,
            }))
    }

    /// All packet counters summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>, MapsError> {
        Counter::ALL
            .iter()
            .map(|&c| {
                let per_cpu = self
                    .counters
                    .get(&(c as u32), 0)
                    .map_err(map_err(map_name::COUNTERS))?;
                Ok((c, per_cpu.iter().sum()))
            })
            .collect()
    }

    /// What each CPU's slot of `GSO_HANDOFFS` holds: the last GSO
    /// super-packet XDP passed there, until the GSO program takes it.
    pub fn gso_handoffs(&self) -> Result<Vec<GsoHandoff>, MapsError> {
        every_cpu(&self.gso_handoffs, map_name::GSO_HANDOFFS)
    }

    /// The GSO program's counters summed over CPUs.
    pub fn gso_counters(&self) -> Result<Vec<(GsoCounter, u64)>, MapsError> {
        GsoCounter::ALL
            .iter()
            .map(|&c| {
                let per_cpu = self
                    .gso_counters
                    .get(&(c as u32), 0)
                    .map_err(map_err(map_name::GSO_COUNTERS))?;
                Ok((c, per_cpu.iter().sum()))
            })
            .collect()
    }

    /// Every IPv4 backend in the server list.
    pub fn backends(&self) -> Result<Vec<(BackendKey, BackendEntry)>, MapsError> {
        self.list_of()
    }

    /// The IPv6 backends of the server list (protocol §9), as XDP last
    /// wrote them.
    pub fn backends6(&self) -> Result<Vec<(BackendKey6, BackendEntry)>, MapsError> {
        self.list_of()
    }

    /// Every backend of one family's server list.
    pub fn list_of<K: FamilyKey>(&self) -> Result<Vec<(K, BackendEntry)>, MapsError> {
        entries(K::list(self), K::MAPS[0])
    }

    /// One backend of the server list, as XDP last wrote it.
    pub fn backend<K: FamilyKey>(&self, key: &K) -> Result<Option<BackendEntry>, MapsError> {
        found(K::list(self).get(key, 0), K::MAPS[0])
    }

    /// Removes a backend and its aging state, and remembers why for `status`.
    pub fn remove_backend<K: FamilyKey>(
        &mut self,
        key: &K,
        why: DepartureReason,
        now_ns: u64,
    ) -> Result<(), MapsError> {
        removed(K::list_mut(self).remove(key), K::MAPS[0])?;
        // After the removal: XDP's flows on it check the list again.
        self.recheck_flows();
        let departure = Departure {
            left_ns: now_ns,
            reason: why as u32,
            _pad: 0,
        };
        K::departures_mut(self)
            .insert(key, &departure, 0)
            .map_err(map_err(K::MAPS[2]))?;
        self.remove_aging(key)
    }

    /// Why and when one family's backends left, newest kept (an LRU).
    pub fn departures_of<K: FamilyKey>(&self) -> Result<Vec<(K, Departure)>, MapsError> {
        entries(K::departures(self), K::MAPS[2])
    }

    /// Each CPU's last reading of the coarse clock in XDP (its stamps).
    pub fn coarse_clocks(&self) -> Result<Vec<CoarseClock>, MapsError> {
        every_cpu(&self.coarse_clock, map_name::COARSE_CLOCK)
    }

    /// The next hops XDP caches for one family's IP-in-IP backends.
    pub fn next_hops<A: HopAddr>(&self) -> Result<Vec<(A, NextHop)>, MapsError> {
        entries(A::hops(self), A::MAPS[0])
    }

    /// One family's backends toward which XDP found no next hop, and why.
    pub fn next_hop_errors<A: HopAddr>(&self) -> Result<Vec<(A, NextHopError)>, MapsError> {
        entries(A::errors(self), A::MAPS[1])
    }

    pub fn remove_next_hop_error<A: HopAddr>(&mut self, backend: A) -> Result<(), MapsError> {
        removed(A::errors_mut(self).remove(&backend), A::MAPS[1])
    }

    /// IGMP or MLD leaves waiting for confirmation: backend -> monotonic ns.
    pub fn pending_leaves<K: FamilyKey>(&self) -> Result<Vec<(K, PendingLeave)>, MapsError> {
        entries(K::leaves(self), K::MAPS[3])
    }

    pub fn remove_pending_leave<K: FamilyKey>(&mut self, key: &K) -> Result<(), MapsError> {
        removed(K::leaves_mut(self).remove(key), K::MAPS[3])
    }

    /// The aging state of every backend of one family (kept across restarts).
    pub fn aging_states<K: FamilyKey>(&self) -> Result<Vec<(K, AgingState)>, MapsError> {
        entries(K::aging(self), K::MAPS[1])
    }

    pub fn set_aging_state<K: FamilyKey>(
        &mut self,
        key: &K,
        state: &AgingState,
    ) -> Result<(), MapsError> {
        K::aging_mut(self)
            .insert(key, state, 0)
            .map_err(map_err(K::MAPS[1]))
    }

    pub fn remove_aging<K: FamilyKey>(&mut self, key: &K) -> Result<(), MapsError> {
        removed(K::aging_mut(self).remove(key), K::MAPS[1])
    }

    /// The last accepted sequence of a source, kept after it is removed.
    pub fn last_sequence(&self, key: &BackendKey) -> Result<Option<u64>, MapsError> {
        found(self.last_sequence.get(key, 0), map_name::LAST_SEQUENCE)
    }

    /// The IPv6 backend XDP last saw announce from a MAC in a group: the
    /// one an MLD leave from that MAC names (protocol §9).
    pub fn mac_backend6(&self, key: &MacKey) -> Result<Option<[u8; 16]>, MapsError> {
        found(self.mac_backends6.get(key, 0), map_name::MAC_BACKENDS6)
    }

    /// The same for an IPv6 source (protocol §9).
    pub fn last_sequence6(&self, key: &BackendKey6) -> Result<Option<u64>, MapsError> {
        found(self.last_sequence6.get(key, 0), map_name::LAST_SEQUENCE6)
    }

    /// Sets the log rate limit of every CPU (the benchmark measures the
    /// registration path with its log record written and held back).
    pub fn set_log_budget(&mut self, budget: LogBudget) -> Result<(), MapsError> {
        let values =
            PerCpuValues::try_from(vec![budget; possible_cpus()?]).map_err(MapsError::Cpus)?;
        self.log_budget
            .set(0, values, 0)
            .map_err(map_err(map_name::LOG_BUDGET))
    }

    /// Flows in the connection tables (IPv4 and IPv6 clients').
    pub fn flow_count(&self) -> Result<usize, MapsError> {
        let buckets = entries(&self.flows, map_name::FLOWS)?;
        let buckets6 = entries(&self.flows6, map_name::FLOWS6)?;
        let slots = buckets
            .iter()
            .flat_map(|(_, b)| b.ways.map(|s| s.is_empty()));
        let slots6 = buckets6
            .iter()
            .flat_map(|(_, b)| b.ways.map(|s| s.is_empty()));
        Ok(slots.chain(slots6).filter(|empty| !empty).count())
    }
}
