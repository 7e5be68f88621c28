//! `lb-user status`: a snapshot of a running instance, read from its pins
//! into `lb_host::status::StatusReport`.
use std::net::{IpAddr, Ipv4Addr};

use foldhash::{HashMap, HashSet};
use lb_common::{
    Action, BackendKey, BackendKey6, Departure, DepartureReason, FIRST_BACKEND_ROW,
    GROUP_STATE_ALIVE, GROUP_STATE_DEAD, GROUP_STATE_UNUSED, MAX_GROUPS, ServiceBackend, Traffic,
    addr, fib_result_name,
};
use lb_host::status::{
    BackendReport, BackendTraffic, DepartureReport, GroupReport, NextHopReport, ServiceReport,
    StatusReport, format_mac,
};

use crate::{
    address::Address,
    maps::{FamilyKey, HopAddr, LbMaps, MapsError, TableKind},
};

/// The status page `lb-user run --metrics` serves at `/`: it reads the
/// `status --json` document from `/status.json` every second.
pub const STATUS_PAGE: &str = include_str!("status_page.html");

/// The MAC of each IP-in-IP backend's next hop XDP caches, of one family.
fn next_hop_macs<A: HopAddr>(maps: &LbMaps) -> Result<HashMap<IpAddr, [u8; 6]>, MapsError> {
    Ok(maps
        .next_hops::<A>()?
        .into_iter()
        .map(|(addr, hop)| (A::Addr::from(addr).ip(), hop.dmac))
        .collect())
}

/// The backends of one family toward which XDP found no next hop.
fn next_hop_reports<A: HopAddr>(
    maps: &LbMaps,
    now_ns: u64,
) -> Result<Vec<NextHopReport>, MapsError> {
    Ok(maps
        .next_hop_errors::<A>()?
        .into_iter()
        .map(|(backend, e)| NextHopReport {
            backend: A::Addr::from(backend).ip(),
            reason: fib_result_name(e.result).to_owned(),
            drops: e.drops,
            last_ms_ago: now_ns.saturating_sub(e.last_ns) / 1_000_000,
        })
        .collect())
}

/// Reads every map once, at monotonic time `now_ns`.
pub fn read(maps: &LbMaps, now_ns: u64) -> Result<StatusReport, MapsError> {
    let mut members = Members::read::<BackendKey>(maps, now_ns)?;
    members.add(Members::read::<BackendKey6>(maps, now_ns)?);
    members.backends.sort_by_key(|(id, b)| (*id, b.address));
    let mut next_hops = next_hop_macs::<[u8; 4]>(maps)?;
    next_hops.extend(next_hop_macs::<[u8; 16]>(maps)?);
    let mut groups = Vec::new();
    for id in 0..MAX_GROUPS {
        let status = maps.group_status(id)?;
        let state = match status.state {
            GROUP_STATE_UNUSED => continue,
            GROUP_STATE_ALIVE => "alive",
            GROUP_STATE_DEAD => "dead",
            _ => "unknown",
        };
        let reports = maps.group_reports(id)?;
        let backends = members
            .backends
            .iter()
            .filter(|(group_id, _)| *group_id == id)
            .map(|(_, member)| {
                let mut member = member.clone();
                member.next_hop = next_hops.get(&member.address).copied().map(format_mac);
                member
            })
            .collect();
        groups.push(GroupReport {
            group: status.group(),
            port: status.port,
            state: state.to_owned(),
            silent_periods: status.silent_periods,
            queries_sent: status.queries_sent,
            reports: reports.reports,
            leaves: reports.leaves,
            backends,
            departed: members.departed_from(id),
        });
    }
    let rows = maps.rows()?;
    // Rows are given out lowest first: those past the last that names a
    // backend carry nothing.
    let in_use = rows
        .iter()
        .rposition(ServiceBackend::is_backend)
        .map_or(FIRST_BACKEND_ROW, |last| last as u32 + 1);
    let traffic = maps.traffic(in_use)?;
    let mut services = Vec::new();
    for (key, service) in maps.services(TableKind::Current)? {
        let table: Vec<Option<IpAddr>> = maps
            .active_table(&service)?
            .into_iter()
            .map(|row| {
                rows.get(row as usize)
                    .filter(|target| target.is_backend())
                    .map(|target| addr::to_ip(target.addr16()))
            })
            .collect();
        let (totals, mut backends) = service_traffic(service.service_id, &rows, &traffic);
        let table_backends = table_backends(&table);
        weigh(
            &mut backends,
            &table_backends,
            &backend_weights(&groups, service.group_id),
        );
        services.push(ServiceReport {
            vip: key.vip(),
            port: key.port,
            proto: lb_common::transport_name(key.proto).to_owned(),
            group: groups
                .get(service.group_id as usize)
                .map_or(Ipv4Addr::UNSPECIFIED.into(), |g| g.group),
            table_size: service.active_size(),
            table_digest: format!("{:016x}", digest(&table)),
            table_backends,
            packets: totals.packets,
            bytes: totals.bytes,
            new_flows: totals.new_flows,
            backends,
            active_slot: service.active_slot,
        });
    }
    services.sort_by(|a, b| (a.vip, a.port, &a.proto).cmp(&(b.vip, b.port, &b.proto)));
    let by_reason = maps.counters()?;
    let counters = by_reason
        .iter()
        .map(|(c, n)| (c.name().to_owned(), *n))
        .collect();
    let actions = Action::ALL
        .iter()
        .map(|&a| {
            let total = by_reason
                .iter()
                .filter(|(c, _)| c.action() == a)
                .map(|(_, n)| n)
                .sum();
            (a.name().to_owned(), total)
        })
        .collect();
    let mut next_hop_errors = next_hop_reports::<[u8; 4]>(maps, now_ns)?;
    next_hop_errors.extend(next_hop_reports::<[u8; 16]>(maps, now_ns)?);
    next_hop_errors.sort_by_key(|e| e.last_ms_ago);
    let gso_counters = maps
        .gso_counters()?
        .iter()
        .map(|(c, n)| (c.name().to_owned(), *n))
        .collect();
    Ok(StatusReport {
        groups,
        services,
        counters,
        actions,
        gso_counters,
        next_hop_errors,
    })
}

/// The registered and departed backends of both families, by group id.
#[derive(Default)]
struct Members {
    backends: Vec<(u32, BackendReport)>,
    /// Departed and not registered now: (group id, left ns, report).
    departed: Vec<(u32, u64, DepartureReport)>,
}

impl Members {
    /// One family's server list, aging states and departures.
    fn read<K: FamilyKey>(maps: &LbMaps, now_ns: u64) -> Result<Self, MapsError> {
        let aging: HashMap<K, u32> = maps
            .aging_states::<K>()?
            .into_iter()
            .map(|(k, a)| (k, a.misses))
            .collect();
        let list = maps.list_of::<K>()?;
        let registered: HashSet<K> = list.iter().map(|(k, _)| *k).collect();
        let backends = list
            .iter()
            .map(|(key, entry)| {
                let misses = aging.get(key).copied().unwrap_or(0);
                (
                    key.group_id(),
                    BackendReport::new(key.ip(), entry, misses, now_ns),
                )
            })
            .collect();
        let departed = maps
            .departures_of::<K>()?
            .into_iter()
            .filter(|(k, _)| !registered.contains(k))
            .map(|(key, d): (K, Departure)| {
                let reason = DepartureReason::from_raw(d.reason).map_or("unknown", |r| r.name());
                let report = DepartureReport {
                    address: key.ip(),
                    reason: reason.to_owned(),
                    left_ms_ago: now_ns.saturating_sub(d.left_ns) / 1_000_000,
                };
                (key.group_id(), d.left_ns, report)
            })
            .collect();
        Ok(Self { backends, departed })
    }

    fn add(&mut self, other: Self) {
        self.backends.extend(other.backends);
        self.departed.extend(other.departed);
    }

    /// The group's backends that left and are not registered now, newest first.
    fn departed_from(&self, group_id: u32) -> Vec<DepartureReport> {
        let mut departed: Vec<&(u32, u64, DepartureReport)> =
            self.departed.iter().filter(|d| d.0 == group_id).collect();
        departed.sort_by_key(|d| std::cmp::Reverse(d.1));
        departed.into_iter().map(|d| d.2.clone()).collect()
    }
}

/// What service `service_id` carried in all (its departed row and its
/// backends' rows) and per backend, from `traffic` (per row, summed over
/// the CPUs) and what each row names.
fn service_traffic(
    service_id: u32,
    rows: &[ServiceBackend],
    traffic: &[Traffic],
) -> (Traffic, Vec<BackendTraffic>) {
    let mut totals = traffic
        .get(service_id as usize)
        .copied()
        .unwrap_or_default();
    let mut backends = Vec::new();
    for (target, carried) in rows.iter().zip(traffic).skip(FIRST_BACKEND_ROW as usize) {
        if target.is_backend() && target.service_id == service_id {
            totals += *carried;
            backends.push(BackendTraffic {
                address: addr::to_ip(target.addr16()),
                packets: carried.packets,
                bytes: carried.bytes,
                new_flows: carried.new_flows,
                weight_share: 0.0,
            });
        }
    }
    backends.sort_by_key(|b| b.address);
    (totals, backends)
}

/// The weights of the backends of group `group_id` (index in `groups`, as
/// `read` lists them).
fn backend_weights(groups: &[GroupReport], group_id: u32) -> HashMap<IpAddr, u16> {
    groups
        .get(group_id as usize)
        .map(|g| g.backends.iter().map(|b| (b.address, b.weight)).collect())
        .unwrap_or_default()
}

/// Sets each backend's `weight_share`: its weight over the weights of the
/// backends the table names (`in_table`).
fn weigh(backends: &mut [BackendTraffic], in_table: &[IpAddr], weights: &HashMap<IpAddr, u16>) {
    let weight = |addr: &IpAddr| f64::from(weights.get(addr).copied().unwrap_or(0));
    let total: f64 = in_table.iter().map(weight).sum();
    let in_table: HashSet<&IpAddr> = in_table.iter().collect();
    for backend in backends.iter_mut() {
        if total > 0.0 && in_table.contains(&backend.address) {
            backend.weight_share = weight(&backend.address) / total;
        }
    }
}

/// FNV-1a (64 bits) over the table's bytes: each entry's address (4 or
/// 16 bytes), 4 zero bytes for none.
fn digest(table: &[Option<IpAddr>]) -> u64 {
    let bytes = table.iter().flat_map(|entry| match entry {
        Some(IpAddr::V4(v4)) => v4.octets().to_vec(),
        Some(IpAddr::V6(v6)) => v6.octets().to_vec(),
        None => vec![0; 4],
    });
    bytes.fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The distinct backends a table names, sorted.
fn table_backends(table: &[Option<IpAddr>]) -> Vec<IpAddr> {
    let named: std::collections::BTreeSet<IpAddr> = table.iter().flatten().copied().collect();
    named.into_iter().collect()
}
