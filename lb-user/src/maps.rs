//! Typed access to the program's maps, from a fresh load or from the pins of
//! a running instance.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, Map, MapData, MapError, PerCpuArray,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{ProgramError, Xdp},
};
use lb_common::{
    AgingState, AuthClock, AuthKey, BackendEntry, BackendKey, COUNTER_SLOTS, Counter, Flow,
    FlowKey, GLOBAL_ALLOWLIST_ON, GLOBAL_AUTH_ON, GLOBAL_LB_ADDR, GLOBAL_LB_MAC, GroupReports,
    GroupStatus, MAX_AUTH_KEYS, MAX_GROUPS, PROGRAM_NAME, Service, ServiceKey, map_name,
};

/// The XDP object, built by build.rs from the current sources.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf.o"));

/// Every map the program declares, in pin order.
pub const ALL_MAPS: [&str; 15] = [
    map_name::BACKENDS,
    map_name::BACKEND_AGING,
    map_name::ANNOUNCE_PORTS,
    map_name::GROUP_ADDRS,
    map_name::GROUP_REPORTS,
    map_name::GROUP_STATUS,
    map_name::COUNTERS,
    map_name::VIPS,
    map_name::SERVICES,
    map_name::MAGLEV,
    map_name::FLOWS,
    map_name::ANNOUNCE_ALLOW,
    map_name::AUTH_KEYS,
    map_name::AUTH_CLOCK,
    map_name::LAST_SEQUENCE,
];

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("loading the XDP object failed")]
    Load(#[from] aya::EbpfError),
    #[error("the XDP program was rejected")]
    Program(#[from] ProgramError),
    #[error("the XDP object has no map {name}")]
    Missing { name: &'static str },
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
}

/// One configured group: the multicast address and its announcement port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    pub group: Ipv4Addr,
    pub port: u16,
}

/// Where and how big: what the object is loaded with.
#[derive(Clone, Copy, Debug)]
pub struct LoadParams {
    /// The LB's own address: announcements go to it.
    pub lb_addr: Ipv4Addr,
    /// The LB interface's MAC: the source of forwarded frames.
    pub lb_mac: [u8; 6],
    /// Capacity of the server list.
    pub max_backends: u32,
    /// Capacity of the connection table.
    pub max_flows: u32,
    /// Only sources in the allowlist (`LbMaps::allow`) may announce.
    pub allowlist_on: bool,
    /// Announcements must carry a tag under a key of `LbMaps::set_keys`.
    pub auth_on: bool,
}

/// Loads the object and verifies the program. With `pin_dir`, every map
/// is pinned there, or, if a map of that name is pinned there already (a
/// killed instance's), that map is reused; a pinned map whose layout differs
/// from this build's is an error, never misread.
pub fn load_program(params: LoadParams, pin_dir: Option<&Path>) -> Result<Ebpf, MapsError> {
    let octets = params.lb_addr.octets();
    let mut loader = EbpfLoader::new();
    if let Some(dir) = pin_dir {
        for name in ALL_MAPS {
            loader.map_pin_path(name, dir.join(name));
        }
    }
    let mut ebpf = loader
        .override_global(GLOBAL_LB_ADDR, &octets, true)
        .override_global(GLOBAL_LB_MAC, &params.lb_mac, true)
        .override_global(GLOBAL_ALLOWLIST_ON, &u8::from(params.allowlist_on), true)
        .override_global(GLOBAL_AUTH_ON, &u8::from(params.auth_on), true)
        .map_max_entries(
            map_name::LAST_SEQUENCE,
            params.max_backends.saturating_mul(2),
        )
        .map_max_entries(map_name::BACKENDS, params.max_backends)
        .map_max_entries(map_name::BACKEND_AGING, params.max_backends)
        .map_max_entries(map_name::FLOWS, params.max_flows)
        .load(EBPF_OBJECT)?;
    xdp_program(&mut ebpf)?.load()?;
    Ok(ebpf)
}

/// The XDP program of a loaded object.
pub fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, MapsError> {
    let program = ebpf
        .program_mut(PROGRAM_NAME)
        .ok_or(MapsError::Missing { name: "xdp_lb" })?;
    Ok(program.try_into()?)
}

/// Typed handles on all maps.
pub struct LbMaps {
    pub backends: HashMap<MapData, BackendKey, BackendEntry>,
    pub aging: HashMap<MapData, BackendKey, AgingState>,
    pub announce_ports: HashMap<MapData, u16, u32>,
    pub group_addrs: HashMap<MapData, [u8; 4], u32>,
    pub group_reports: PerCpuArray<MapData, GroupReports>,
    pub group_status: Array<MapData, GroupStatus>,
    pub counters: PerCpuArray<MapData, u64>,
    pub vips: HashMap<MapData, [u8; 4], u32>,
    pub services: HashMap<MapData, ServiceKey, Service>,
    pub maglev: Array<MapData, [u8; 4]>,
    pub flows: HashMap<MapData, FlowKey, Flow>,
    pub announce_allow: LpmTrie<MapData, [u8; 4], u8>,
    pub auth_keys: Array<MapData, AuthKey>,
    pub auth_clock: Array<MapData, AuthClock>,
    pub last_sequence: HashMap<MapData, BackendKey, u64>,
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
            Map::from_map_data(data).map_err(|source| MapsError::Map { name, source })
        })
    }

    fn from_source(
        mut get: impl FnMut(&'static str) -> Result<Map, MapsError>,
    ) -> Result<Self, MapsError> {
        fn typed<T: TryFrom<Map, Error = MapError>>(
            get: &mut impl FnMut(&'static str) -> Result<Map, MapsError>,
            name: &'static str,
        ) -> Result<T, MapsError> {
            T::try_from(get(name)?).map_err(|source| MapsError::Map { name, source })
        }
        Ok(Self {
            backends: typed(&mut get, map_name::BACKENDS)?,
            aging: typed(&mut get, map_name::BACKEND_AGING)?,
            announce_ports: typed(&mut get, map_name::ANNOUNCE_PORTS)?,
            group_addrs: typed(&mut get, map_name::GROUP_ADDRS)?,
            group_reports: typed(&mut get, map_name::GROUP_REPORTS)?,
            group_status: typed(&mut get, map_name::GROUP_STATUS)?,
            counters: typed(&mut get, map_name::COUNTERS)?,
            vips: typed(&mut get, map_name::VIPS)?,
            services: typed(&mut get, map_name::SERVICES)?,
            maglev: typed(&mut get, map_name::MAGLEV)?,
            flows: typed(&mut get, map_name::FLOWS)?,
            announce_allow: typed(&mut get, map_name::ANNOUNCE_ALLOW)?,
            auth_keys: typed(&mut get, map_name::AUTH_KEYS)?,
            auth_clock: typed(&mut get, map_name::AUTH_CLOCK)?,
            last_sequence: typed(&mut get, map_name::LAST_SEQUENCE)?,
        })
    }

    /// Tells XDP which ports and group addresses belong to which group id.
    pub fn configure_groups(&mut self, groups: &[GroupConfig]) -> Result<(), MapsError> {
        if groups.len() > MAX_GROUPS as usize {
            return Err(MapsError::TooManyGroups);
        }
        let err = |name| move |source| MapsError::Map { name, source };
        for (id, g) in (0u32..).zip(groups) {
            self.announce_ports
                .insert(&g.port, &id, 0)
                .map_err(err(map_name::ANNOUNCE_PORTS))?;
            self.group_addrs
                .insert(&g.group.octets(), &id, 0)
                .map_err(err(map_name::GROUP_ADDRS))?;
            let status = GroupStatus {
                group_addr: g.group.octets(),
                port: g.port,
                state: lb_common::GROUP_STATE_ALIVE,
                ..GroupStatus::default()
            };
            self.set_group_status(id, &status)?;
        }
        Ok(())
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
                .map_err(|source| MapsError::Map {
                    name: map_name::AUTH_KEYS,
                    source,
                })?;
        }
        Ok(())
    }

    /// Tells XDP the wall clock (as an offset from the monotonic clock).
    pub fn set_clock(&mut self, clock: &AuthClock) -> Result<(), MapsError> {
        self.auth_clock
            .set(0, clock, 0)
            .map_err(|source| MapsError::Map {
                name: map_name::AUTH_CLOCK,
                source,
            })
    }

    /// Lets sources in `prefix/len` announce (with the allowlist on).
    pub fn allow(&mut self, prefix: Ipv4Addr, len: u8) -> Result<(), MapsError> {
        self.announce_allow
            .insert(&Key::new(u32::from(len), prefix.octets()), &1, 0)
            .map_err(|source| MapsError::Map {
                name: map_name::ANNOUNCE_ALLOW,
                source,
            })
    }

    /// Adds or replaces a service; XDP sees the new value atomically.
    pub fn set_service(&mut self, key: &ServiceKey, service: &Service) -> Result<(), MapsError> {
        self.services
            .insert(key, service, 0)
            .map_err(|source| MapsError::Map {
                name: map_name::SERVICES,
                source,
            })
    }

    /// Marks `vip` as carrying `services` services (0 removes it).
    pub fn set_vip(&mut self, vip: Ipv4Addr, services: u32) -> Result<(), MapsError> {
        let result = if services == 0 {
            self.vips.remove(&vip.octets())
        } else {
            self.vips.insert(&vip.octets(), &services, 0)
        };
        result.map_err(|source| MapsError::Map {
            name: map_name::VIPS,
            source,
        })
    }

    pub fn maglev_entry(&self, index: u32) -> Result<[u8; 4], MapsError> {
        self.maglev.get(&index, 0).map_err(|source| MapsError::Map {
            name: map_name::MAGLEV,
            source,
        })
    }

    pub fn set_maglev_entry(&mut self, index: u32, backend: [u8; 4]) -> Result<(), MapsError> {
        self.maglev
            .set(index, &backend, 0)
            .map_err(|source| MapsError::Map {
                name: map_name::MAGLEV,
                source,
            })
    }

    pub fn set_group_status(&mut self, id: u32, status: &GroupStatus) -> Result<(), MapsError> {
        self.group_status
            .set(id, status, 0)
            .map_err(|source| MapsError::Map {
                name: map_name::GROUP_STATUS,
                source,
            })
    }

    /// A group's IGMP statistics summed over CPUs; the newest report time.
    pub fn group_reports(&self, id: u32) -> Result<GroupReports, MapsError> {
        let per_cpu = self
            .group_reports
            .get(&id, 0)
            .map_err(|source| MapsError::Map {
                name: map_name::GROUP_REPORTS,
                source,
            })?;
        Ok(per_cpu
            .iter()
            .fold(GroupReports::default(), |acc, r| GroupReports {
                reports: acc.reports + r.reports,
                leaves: acc.leaves + r.leaves,
                last_report_ns: acc.last_report_ns.max(r.last_report_ns),
            }))
    }

    /// All packet counters summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>, MapsError> {
        debug_assert_eq!(Counter::ALL.len(), COUNTER_SLOTS as usize);
        Counter::ALL
            .iter()
            .map(|&c| {
                let per_cpu =
                    self.counters
                        .get(&(c as u32), 0)
                        .map_err(|source| MapsError::Map {
                            name: map_name::COUNTERS,
                            source,
                        })?;
                Ok((c, per_cpu.iter().sum()))
            })
            .collect()
    }

    /// Every backend in the server list.
    pub fn backends(&self) -> Result<Vec<(BackendKey, BackendEntry)>, MapsError> {
        self.backends
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|source| MapsError::Map {
                name: map_name::BACKENDS,
                source,
            })
    }
}
