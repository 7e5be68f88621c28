//! `lb-user status`: a snapshot of a running instance, read from its pins.
use std::{collections::BTreeMap, fmt::Write as _, net::Ipv4Addr};

use lb_common::{
    GROUP_STATE_ALIVE, GROUP_STATE_DEAD, GROUP_STATE_UNUSED, MAX_GROUPS, wire::FLAG_DRAINING,
};
use serde::Serialize;

use crate::{
    control::format_mac,
    maps::{LbMaps, MapsError},
};

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub groups: Vec<GroupReport>,
    pub services: Vec<ServiceReport>,
    /// Packet counters of the XDP program, summed over CPUs.
    pub counters: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Serialize)]
pub struct GroupReport {
    pub group: Ipv4Addr,
    pub port: u16,
    /// `alive` or `dead`.
    pub state: &'static str,
    pub silent_periods: u32,
    pub queries_sent: u64,
    pub reports: u64,
    pub leaves: u64,
    pub backends: Vec<BackendReport>,
}

#[derive(Debug, Serialize)]
pub struct ServiceReport {
    pub vip: Ipv4Addr,
    pub port: u16,
    /// `tcp` or `udp`.
    pub proto: &'static str,
    /// Group whose backends serve it.
    pub group: Ipv4Addr,
    pub table_size: u32,
    /// The Maglev table slot XDP reads.
    pub active_slot: u32,
}

#[derive(Debug, Serialize)]
pub struct BackendReport {
    pub address: Ipv4Addr,
    pub mac: String,
    pub misses: u32,
    pub last_seen_ms: u64,
    pub weight: u16,
    /// `active` or `draining`.
    pub state: &'static str,
    pub announcements: u64,
    pub sequence: u64,
}

impl StatusReport {
    /// Reads every map once, at monotonic time `now_ns`.
    pub fn read(maps: &LbMaps, now_ns: u64) -> Result<Self, MapsError> {
        let mut backends = maps.backends()?;
        backends.sort_by_key(|(k, _)| (k.group_id, k.addr));
        let mut groups = Vec::new();
        for id in 0..MAX_GROUPS {
            let status = maps
                .group_status
                .get(&id, 0)
                .map_err(|source| MapsError::Map {
                    name: lb_common::map_name::GROUP_STATUS,
                    source,
                })?;
            let state = match status.state {
                GROUP_STATE_UNUSED => continue,
                GROUP_STATE_ALIVE => "alive",
                GROUP_STATE_DEAD => "dead",
                _ => "unknown",
            };
            let reports = maps.group_reports(id)?;
            let members = backends
                .iter()
                .filter(|(k, _)| k.group_id == id)
                .map(|(key, entry)| BackendReport {
                    address: Ipv4Addr::from(key.addr),
                    mac: format_mac(entry.mac),
                    misses: maps.aging.get(key, 0).map_or(0, |a| a.misses),
                    last_seen_ms: now_ns.saturating_sub(entry.last_seen_ns) / 1_000_000,
                    weight: entry.weight,
                    state: if entry.flags & FLAG_DRAINING != 0 {
                        "draining"
                    } else {
                        "active"
                    },
                    announcements: entry.announcements,
                    sequence: entry.sequence,
                })
                .collect();
            groups.push(GroupReport {
                group: Ipv4Addr::from(status.group_addr),
                port: status.port,
                state,
                silent_periods: status.silent_periods,
                queries_sent: status.queries_sent,
                reports: reports.reports,
                leaves: reports.leaves,
                backends: members,
            });
        }
        let mut services = Vec::new();
        for item in maps.services.iter() {
            let (key, service) = item.map_err(|source| MapsError::Map {
                name: lb_common::map_name::SERVICES,
                source,
            })?;
            services.push(ServiceReport {
                vip: Ipv4Addr::from(key.vip),
                port: key.port,
                proto: if key.proto == lb_common::IPPROTO_TCP {
                    "tcp"
                } else {
                    "udp"
                },
                group: groups
                    .get(service.group_id as usize)
                    .map_or(Ipv4Addr::UNSPECIFIED, |g| g.group),
                table_size: service.table_size,
                active_slot: service.active_slot,
            });
        }
        services.sort_by_key(|s| (s.vip, s.port, s.proto));
        let counters = maps
            .counters()?
            .into_iter()
            .map(|(c, n)| (c.name(), n))
            .collect();
        Ok(Self {
            groups,
            services,
            counters,
        })
    }

    /// A table for people.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for g in &self.groups {
            let _ = writeln!(
                out,
                "group {} port {}: {} ({} backends, {} queries sent, {} reports, {} leaves)",
                g.group,
                g.port,
                g.state,
                g.backends.len(),
                g.queries_sent,
                g.reports,
                g.leaves
            );
            if !g.backends.is_empty() {
                let _ = writeln!(
                    out,
                    "  {:<15} {:<17} {:>8} {:>6} {:>6} {:<8}",
                    "ADDRESS", "MAC", "SEEN_MS", "MISSES", "WEIGHT", "STATE"
                );
            }
            for b in &g.backends {
                let _ = writeln!(
                    out,
                    "  {:<15} {:<17} {:>8} {:>6} {:>6} {:<8}",
                    b.address.to_string(),
                    b.mac,
                    b.last_seen_ms,
                    b.misses,
                    b.weight,
                    b.state
                );
            }
        }
        for s in &self.services {
            let _ = writeln!(
                out,
                "service {}:{}/{} -> group {} (Maglev {} entries, slot {})",
                s.vip, s.port, s.proto, s.group, s.table_size, s.active_slot
            );
        }
        let counters: Vec<String> = self
            .counters
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(out, "counters: {}", counters.join(" "));
        out
    }
}
