//! Which backends get a service's new flows, and when a change of them
//! happened.
use foldhash::HashMap;
use lb_common::{
    BackendEntry,
    wire::{FLAG_DOWN, FLAG_DRAINING},
};

use crate::{
    address::Address,
    maglev::MaglevBackend,
    maps::{FamilyKey, LbMaps, MapsError},
    reach::Reach,
    system,
};

/// The backends that get new flows of a service: registered in its group,
/// neither DRAINING nor DOWN, with a weight, reachable (with `l2`, on the
/// LB's segment). Sorted.
pub fn eligible_backends<K: FamilyKey>(
    group_id: u32,
    backends: &[(K, BackendEntry)],
    reach: Reach,
) -> Vec<MaglevBackend<K::Addr>> {
    backends_where(group_id, backends, reach, |e| {
        e.flags & (FLAG_DRAINING | FLAG_DOWN) == 0
    })
}

/// The backends of a group's previous table (second chance, protocol
/// §7): those registered at `registered_by_ns` (CLOCK_MONOTONIC ns) or
/// before, DRAINING ones included (their open flows came from such a
/// table), not DOWN, weight above 0, reachable; sorted.
pub fn previous_backends<K: FamilyKey>(
    group_id: u32,
    backends: &[(K, BackendEntry)],
    reach: Reach,
    registered_by_ns: u64,
) -> Vec<MaglevBackend<K::Addr>> {
    backends_where(group_id, backends, reach, |e| {
        e.flags & FLAG_DOWN == 0 && e.registered_ns <= registered_by_ns
    })
}

/// The group's backends of positive weight that `keep` keeps and `reach`
/// reaches, sorted.
fn backends_where<K: FamilyKey>(
    group_id: u32,
    backends: &[(K, BackendEntry)],
    reach: Reach,
    keep: impl Fn(&BackendEntry) -> bool,
) -> Vec<MaglevBackend<K::Addr>> {
    let mut set: Vec<MaglevBackend<K::Addr>> = backends
        .iter()
        .filter(|(k, e)| k.group_id() == group_id && e.weight > 0 && keep(e))
        .map(|(k, e)| MaglevBackend {
            addr: k.addr(),
            weight: e.weight,
        })
        .filter(|b| reach.reaches(b.addr.ip()))
        .collect();
    set.sort();
    set
}

/// When the oldest of the changes between the `old` and `new` backend sets
/// happened (CLOCK_MONOTONIC ns): a backend that came or changed, at its
/// last announcement; one that went, when it left; now, for what no map
/// dates.
pub fn oldest_change<K: FamilyKey>(
    old: &[MaglevBackend<K::Addr>],
    new: &[MaglevBackend<K::Addr>],
    backends: &[(K, BackendEntry)],
    maps: &LbMaps,
) -> Result<u64, MapsError> {
    let now = system::monotonic_ns();
    // Both sets are sorted by address (`eligible_backends`).
    let has = |set: &[MaglevBackend<K::Addr>], b| set.binary_search(b).is_ok();
    let came: Vec<K::Addr> = new
        .iter()
        .filter(|b| !has(old, b))
        .map(|b| b.addr)
        .collect();
    let gone: Vec<K::Addr> = old
        .iter()
        .filter(|b| new.binary_search_by_key(&b.addr, |n| n.addr).is_err())
        .map(|b| b.addr)
        .collect();
    let mut oldest = now;
    if !came.is_empty() {
        let last_seen: HashMap<K::Addr, u64> = backends
            .iter()
            .map(|(k, e)| (k.addr(), e.last_seen_ns))
            .collect();
        for addr in &came {
            oldest = oldest.min(last_seen.get(addr).copied().unwrap_or(now));
        }
    }
    if !gone.is_empty() {
        for (key, departure) in maps.departures_of::<K>()? {
            if gone.contains(&key.addr()) {
                oldest = oldest.min(departure.left_ns);
            }
        }
    }
    Ok(oldest)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use lb_common::{BackendKey, ForwardingMode};

    use super::*;
    use crate::reach::Segment;

    fn entry(weight: u16, flags: u8) -> BackendEntry {
        BackendEntry {
            last_seen_ns: 1,
            sequence: 0,
            announcements: 1,
            registered_ns: 1,
            mac: [2, 0, 0, 0, 0, 1],
            weight,
            flags,
            version: 1,
            _pad: [0; 6],
        }
    }

    const SEGMENT: Segment = Segment {
        addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
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
            segment6: None,
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
    fn the_previous_table_keeps_draining_backends_and_leaves_young_and_down_ones_out() {
        let key = |last| BackendKey {
            group_id: 0,
            addr: [10, 0, 0, last],
        };
        let registered = |e: BackendEntry, at| BackendEntry {
            registered_ns: at,
            ..e
        };
        let backends = vec![
            (key(2), registered(entry(100, 0), 10)),
            (key(3), registered(entry(100, FLAG_DRAINING), 10)),
            (key(4), registered(entry(100, FLAG_DOWN), 10)),
            (key(5), registered(entry(100, 0), 21)),
            (key(6), registered(entry(100, 0), 20)),
        ];
        let reach = Reach {
            mode: ForwardingMode::L2,
            segment: SEGMENT,
            segment6: None,
        };
        let addrs: Vec<u8> = previous_backends(0, &backends, reach, 20)
            .iter()
            .map(|b| b.addr.octets()[3])
            .collect();
        assert_eq!(addrs, vec![2, 3, 6]);
    }

    #[test]
    fn auto_reaches_off_segment_backends_by_ipip_and_l2_not_at_all() {
        let off = Ipv4Addr::new(10, 9, 0, 6);
        let on = Ipv4Addr::new(10, 0, 0, 6);
        let (off_ip, on_ip) = (IpAddr::V4(off), IpAddr::V4(on));
        let reach = |mode| Reach {
            mode,
            segment: SEGMENT,
            segment6: None,
        };
        let auto = reach(ForwardingMode::Auto);
        assert!(auto.reaches(off_ip) && auto.wraps(off_ip));
        assert!(auto.reaches(on_ip) && !auto.wraps(on_ip));
        let l2 = reach(ForwardingMode::L2);
        assert!(!l2.reaches(off_ip) && !l2.wraps(off_ip));
        let ipip = reach(ForwardingMode::Ipip);
        assert!(ipip.wraps(on_ip) && ipip.wraps(off_ip));
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
}
