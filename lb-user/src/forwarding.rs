//! Forwarding tables: for each service, the Maglev table built from the
//! group's registered, non-draining backends, written into the inactive
//! slot and then made active with one map update, so XDP never reads a
//! half-built table.
use std::net::Ipv4Addr;

use lb_common::{
    BackendEntry, BackendKey, ForwardingMode, Service, ServiceKey,
    wire::{FLAG_DOWN, FLAG_DRAINING},
};
use tracing::{info, warn};

use crate::{
    maglev::{MaglevBackend, MaglevError, MaglevTable},
    maps::{LbMaps, MapsError},
};

/// One service as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    pub key: ServiceKey,
    pub group_id: u32,
}

/// The LB's own segment: backends on it are reached at layer 2.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

/// How backends are reached: the forwarding mode and the LB's segment.
#[derive(Clone, Copy, Debug)]
pub struct Reach {
    pub mode: ForwardingMode,
    pub segment: Segment,
}

impl Reach {
    /// Whether traffic can reach `backend` at all (`l2` reaches only the segment).
    pub fn reaches(&self, backend: Ipv4Addr) -> bool {
        self.mode != ForwardingMode::L2 || self.segment.contains(backend)
    }

    /// Whether traffic to `backend` is wrapped in IPIP (as XDP decides it).
    pub fn wraps(&self, backend: Ipv4Addr) -> bool {
        let prefix = u32::from(self.segment.prefix_len.min(32));
        let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
        self.mode.wraps(
            backend.octets(),
            self.segment.addr.octets(),
            mask.to_be_bytes(),
        )
    }
}

impl Segment {
    pub fn contains(&self, other: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0);
        u32::from(self.addr) & mask == u32::from(other) & mask
    }
}

/// The backends that get new flows of a service: registered in its group,
/// neither DRAINING nor DOWN, with a weight, reachable (with `l2`, on the
/// LB's segment). Sorted.
pub fn eligible_backends(
    group_id: u32,
    backends: &[(BackendKey, BackendEntry)],
    reach: Reach,
) -> Vec<MaglevBackend> {
    let mut set: Vec<MaglevBackend> = backends
        .iter()
        .filter(|(k, e)| {
            k.group_id == group_id && e.flags & (FLAG_DRAINING | FLAG_DOWN) == 0 && e.weight > 0
        })
        .map(|(k, e)| MaglevBackend {
            addr: Ipv4Addr::from(k.addr),
            weight: e.weight,
        })
        .filter(|b| reach.reaches(b.addr))
        .collect();
    set.sort();
    set
}

/// Entries of `next` that differ from `current` (index, new value).
pub fn table_diff<'a>(
    current: &'a [[u8; 4]],
    next: &'a [[u8; 4]],
) -> impl Iterator<Item = (u32, [u8; 4])> + 'a {
    (0u32..)
        .zip(current.iter().zip(next))
        .filter(|(_, (c, n))| c != n)
        .map(|(i, (_, n))| (i, *n))
}

struct ServiceState {
    config: ServiceConfig,
    service: Service,
    /// What each slot holds in the map.
    slots: [Vec<[u8; 4]>; 2],
    /// The backend set the active slot was built from.
    built_from: Option<Vec<MaglevBackend>>,
}

/// Forwarding state of all services.
pub struct Forwarding {
    services: Vec<ServiceState>,
    reach: Reach,
    /// Off-segment backends already reported.
    reported_off_segment: Vec<(u32, [u8; 4])>,
}

impl Forwarding {
    /// Registers the services with XDP, with empty tables.
    pub fn new(
        maps: &mut LbMaps,
        configs: &[ServiceConfig],
        table_size: u32,
        reach: Reach,
    ) -> Result<Self, MapsError> {
        let mut services = Vec::with_capacity(configs.len());
        for (service_id, config) in (0u32..).zip(configs) {
            let fresh = Service {
                service_id,
                group_id: config.group_id,
                table_size,
                active_slot: 0,
            };
            let mut slots = [
                vec![[0; 4]; table_size as usize],
                vec![[0; 4]; table_size as usize],
            ];
            // A table left by a killed instance keeps serving until the first
            // rebuild replaces it, so forwarding has no gap.
            let service = match maps.service(&config.key)? {
                Some(kept) if kept.service_id == service_id && kept.table_size == table_size => {
                    let active = kept.active_slot & 1;
                    for (entry, value) in (0u32..).zip(slots[active as usize].iter_mut()) {
                        *value = maps.maglev_entry(kept.maglev_index(active, entry))?;
                    }
                    kept
                }
                _ => {
                    maps.set_service(&config.key, &fresh)?;
                    fresh
                }
            };
            services.push(ServiceState {
                config: *config,
                service,
                slots,
                built_from: None,
            });
        }
        let mut vips: Vec<[u8; 4]> = configs.iter().map(|c| c.key.vip).collect();
        vips.sort();
        vips.dedup();
        for &vip in &vips {
            let count = configs.iter().filter(|c| c.key.vip == vip).count() as u32;
            maps.set_vip(Ipv4Addr::from(vip), count)?;
        }
        let vips: Vec<Ipv4Addr> = vips.into_iter().map(Ipv4Addr::from).collect();
        maps.set_vip_filter(&vips)?;
        Ok(Self {
            services,
            reach,
            reported_off_segment: Vec::new(),
        })
    }

    /// Rebuilds every service whose eligible backends changed.
    pub fn sync(
        &mut self,
        maps: &mut LbMaps,
        backends: &[(BackendKey, BackendEntry)],
    ) -> Result<(), MapsError> {
        self.report_off_segment(backends);
        for state in &mut self.services {
            let eligible = eligible_backends(state.config.group_id, backends, self.reach);
            if state.built_from.as_ref() == Some(&eligible) {
                continue;
            }
            let table = match MaglevTable::build(&eligible, state.service.table_size) {
                Ok(table) => table,
                Err(e @ (MaglevError::TooSmall { .. } | MaglevError::NotPrime { .. })) => {
                    warn!(vip = %Ipv4Addr::from(state.config.key.vip), port = state.config.key.port, "forwarding table not rebuilt: {e}");
                    continue;
                }
            };
            let next: Vec<[u8; 4]> = table
                .entries()
                .iter()
                .map(|e| e.map_or([0; 4], |a| a.octets()))
                .collect();
            let inactive = (state.service.active_slot ^ 1) as usize;
            for (entry, value) in table_diff(&state.slots[inactive], &next) {
                maps.set_maglev_entry(state.service.maglev_index(inactive as u32, entry), value)?;
            }
            state.slots[inactive] = next;
            state.service.active_slot = inactive as u32;
            // One update makes the whole new table visible to XDP.
            maps.set_service(&state.config.key, &state.service)?;
            info!(
                vip = %Ipv4Addr::from(state.config.key.vip), port = state.config.key.port,
                backends = eligible.len(), "forwarding table rebuilt"
            );
            state.built_from = Some(eligible);
        }
        Ok(())
    }

    /// Says once per backend off the LB's segment how it is reached:
    /// by IPIP, or (with `--forwarding l2`) not at all.
    fn report_off_segment(&mut self, backends: &[(BackendKey, BackendEntry)]) {
        let segment = self.reach.segment;
        for (key, _) in backends {
            let addr = Ipv4Addr::from(key.addr);
            let id = (key.group_id, key.addr);
            if segment.contains(addr) || self.reported_off_segment.contains(&id) {
                continue;
            }
            if self.reach.reaches(addr) {
                info!(
                    backend = %addr,
                    "backend is off the LB's segment ({}/{}): its traffic is wrapped in IPIP, which its agent strips (backend-agent --vip)",
                    segment.addr, segment.prefix_len
                );
            } else {
                warn!(
                    backend = %addr,
                    "backend is not on the LB's segment ({}/{}) and --forwarding is l2: it gets no traffic (--forwarding auto reaches it by IPIP)",
                    segment.addr, segment.prefix_len
                );
            }
            self.reported_off_segment.push(id);
        }
        self.reported_off_segment
            .retain(|id| backends.iter().any(|(k, _)| (k.group_id, k.addr) == *id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(weight: u16, flags: u8) -> BackendEntry {
        BackendEntry {
            last_seen_ns: 1,
            sequence: 0,
            announcements: 1,
            mac: [2, 0, 0, 0, 0, 1],
            weight,
            flags,
            version: 1,
            _pad: [0; 6],
        }
    }

    const SEGMENT: Segment = Segment {
        addr: Ipv4Addr::new(10, 0, 0, 1),
        prefix_len: 24,
    };

    #[test]
    fn draining_down_zero_weight_other_groups_and_with_l2_off_segment_get_no_new_flows() {
        let key = |g, last| BackendKey {
            group_id: g,
            addr: [10, 0, 0, last],
        };
        let backends = vec![
            (key(0, 2), entry(100, 0)),
            (key(0, 3), entry(100, FLAG_DRAINING)),
            (key(0, 8), entry(100, FLAG_DOWN)),
            (key(0, 4), entry(0, 0)),
            (key(1, 5), entry(100, 0)),
            (
                BackendKey {
                    group_id: 0,
                    addr: [10, 9, 0, 6],
                },
                entry(100, 0),
            ),
            (key(0, 7), entry(50, 0)),
        ];
        let l2 = Reach {
            mode: ForwardingMode::L2,
            segment: SEGMENT,
        };
        let set = eligible_backends(0, &backends, l2);
        assert_eq!(
            set,
            vec![
                MaglevBackend {
                    addr: Ipv4Addr::new(10, 0, 0, 2),
                    weight: 100
                },
                MaglevBackend {
                    addr: Ipv4Addr::new(10, 0, 0, 7),
                    weight: 50
                },
            ]
        );
    }

    #[test]
    fn auto_reaches_off_segment_backends_by_ipip_and_l2_not_at_all() {
        let off = Ipv4Addr::new(10, 9, 0, 6);
        let on = Ipv4Addr::new(10, 0, 0, 6);
        let reach = |mode| Reach {
            mode,
            segment: SEGMENT,
        };
        let auto = reach(ForwardingMode::Auto);
        assert!(auto.reaches(off) && auto.wraps(off));
        assert!(auto.reaches(on) && !auto.wraps(on));
        let l2 = reach(ForwardingMode::L2);
        assert!(!l2.reaches(off) && !l2.wraps(off));
        let ipip = reach(ForwardingMode::Ipip);
        assert!(ipip.wraps(on) && ipip.wraps(off));
        let backends = vec![(
            BackendKey {
                group_id: 0,
                addr: off.octets(),
            },
            entry(100, 0),
        )];
        assert_eq!(eligible_backends(0, &backends, auto).len(), 1);
        assert!(eligible_backends(0, &backends, l2).is_empty());
    }

    #[test]
    fn segment_membership() {
        assert!(SEGMENT.contains(Ipv4Addr::new(10, 0, 0, 200)));
        assert!(!SEGMENT.contains(Ipv4Addr::new(10, 0, 1, 2)));
        let all = Segment {
            addr: Ipv4Addr::new(10, 0, 0, 1),
            prefix_len: 0,
        };
        assert!(all.contains(Ipv4Addr::new(192, 0, 2, 1)));
    }

    #[test]
    fn diff_lists_only_changed_entries() {
        let a = [[0; 4], [1; 4], [2; 4]];
        let b = [[0; 4], [3; 4], [2; 4]];
        assert_eq!(table_diff(&a, &b).collect::<Vec<_>>(), vec![(1, [3; 4])]);
    }
}
