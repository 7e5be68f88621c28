//! What `lb-user status --json` prints: one type for the writer (lb-user)
//! and its readers (the tests, the demo), kept apart from lb-user so that
//! reading it needs no eBPF build.
use std::{collections::BTreeMap, fmt::Write as _, net::IpAddr};

use lb_common::{
    Action, BackendEntry, Counter, GsoCounter,
    wire::{FLAG_DOWN, FLAG_DRAINING},
};
use serde::{Deserialize, Serialize};

/// What `status --json` prints; the tests read it back with the same type.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusReport {
    pub groups: Vec<GroupReport>,
    pub services: Vec<ServiceReport>,
    /// Packet counters of the XDP program by reason, summed over CPUs.
    pub counters: BTreeMap<String, u64>,
    /// Packets per XDP action (`drop`, `pass`, `tx`): the counters summed
    /// by the action each belongs to.
    pub actions: BTreeMap<String, u64>,
    /// Packet counters of the GSO program (tc, where XDP runs in generic
    /// mode) by reason, summed over CPUs.
    pub gso_counters: BTreeMap<String, u64>,
    /// Backends reached by IPIP whose packets XDP dropped for want of a
    /// next hop, most recent first.
    pub next_hop_errors: Vec<NextHopReport>,
}

/// A backend toward which the kernel's FIB gave XDP no next hop.
#[derive(Debug, Serialize, Deserialize)]
pub struct NextHopReport {
    pub backend: IpAddr,
    /// What the FIB said, in words.
    pub reason: String,
    /// Packets dropped for it.
    pub drops: u32,
    pub last_ms_ago: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct GroupReport {
    /// IPv4 or IPv6 (protocol §9).
    pub group: IpAddr,
    pub port: u16,
    /// `alive` or `dead`.
    pub state: String,
    pub silent_periods: u32,
    pub queries_sent: u64,
    pub reports: u64,
    pub leaves: u64,
    pub backends: Vec<BackendReport>,
    /// Backends that left and are not registered now, newest first.
    pub departed: Vec<DepartureReport>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ServiceReport {
    pub vip: IpAddr,
    pub port: u16,
    /// `tcp` or `udp`.
    pub proto: String,
    /// Group whose backends serve it.
    pub group: IpAddr,
    pub table_size: u32,
    /// The Maglev table slot XDP reads.
    pub active_slot: u32,
    /// FNV-1a of the active table's entries, in hex: LBs that see the same
    /// backends show the same digest (their tables are byte for byte equal).
    pub table_digest: String,
    /// The backends the active table names, sorted: those that get new
    /// flows of this service now.
    #[serde(default)]
    pub table_backends: Vec<IpAddr>,
    /// Client packets XDP forwarded to the service's backends since the
    /// program was loaded, their bytes (IP header and payload, as they
    /// arrived) and the new flows among them.
    #[serde(default)]
    pub packets: u64,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub new_flows: u64,
    /// The same per backend: every backend the service's table named while
    /// it stayed registered, sorted by address. The service's totals also
    /// hold what departed backends carried.
    #[serde(default)]
    pub backends: Vec<BackendTraffic>,
}

/// What one backend carried for one service.
#[derive(Debug, Serialize, Deserialize)]
pub struct BackendTraffic {
    pub address: IpAddr,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    /// The share of the service's new flows the backend's weight asks
    /// for: its weight over the weights of the backends the table names
    /// (0 when it names not this one).
    pub weight_share: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackendReport {
    pub address: IpAddr,
    pub mac: String,
    pub misses: u32,
    pub last_seen_ms: u64,
    pub weight: u16,
    /// `active`, `draining` (no new flows) or `down` (no traffic).
    pub state: String,
    pub announcements: u64,
    pub sequence: u64,
    /// Where XDP sends this backend's IPIP packets: the next hop's MAC as
    /// the kernel's FIB last gave it (IPIP backends that got traffic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop: Option<String>,
}

/// A backend that left, and why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DepartureReport {
    pub address: IpAddr,
    /// `LEAVING announcement`, `IGMP leave`, `IGMP leave confirmed` or
    /// `missed heartbeats`.
    pub reason: String,
    pub left_ms_ago: u64,
}

/// A counter or action that a report does not have: a reader that expects
/// a name the program no longer counts fails instead of reading zero.
#[derive(Debug, thiserror::Error)]
#[error("status has no {kind} {name:?} (it has: {known})")]
pub struct UnknownName {
    kind: &'static str,
    name: String,
    known: String,
}

fn lookup(map: &BTreeMap<String, u64>, kind: &'static str, name: &str) -> Result<u64, UnknownName> {
    map.get(name).copied().ok_or_else(|| UnknownName {
        kind,
        name: name.to_owned(),
        known: map.keys().cloned().collect::<Vec<_>>().join(", "),
    })
}

impl StatusReport {
    /// The value of `counter`.
    pub fn counter(&self, counter: Counter) -> Result<u64, UnknownName> {
        lookup(&self.counters, "counter", counter.name())
    }

    /// The value of the GSO program's `counter`.
    pub fn gso_counter(&self, counter: GsoCounter) -> Result<u64, UnknownName> {
        lookup(&self.gso_counters, "GSO counter", counter.name())
    }

    /// Packets that ended in `action`.
    pub fn action(&self, action: Action) -> Result<u64, UnknownName> {
        lookup(&self.actions, "action", action.name())
    }
}

/// `name=value name=value ...`
fn name_value_list(map: &BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl BackendReport {
    /// A backend as XDP last saw it, at monotonic time `now_ns`.
    pub fn new(address: IpAddr, entry: &BackendEntry, misses: u32, now_ns: u64) -> Self {
        Self {
            address,
            mac: format_mac(entry.mac),
            misses,
            last_seen_ms: now_ns.saturating_sub(entry.last_seen_ns) / 1_000_000,
            weight: entry.weight,
            state: if entry.flags & FLAG_DOWN != 0 {
                "down"
            } else if entry.flags & FLAG_DRAINING != 0 {
                "draining"
            } else {
                "active"
            }
            .to_owned(),
            announcements: entry.announcements,
            sequence: entry.sequence,
            next_hop: None,
        }
    }
}

impl StatusReport {
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
            for d in &g.departed {
                let _ = writeln!(
                    out,
                    "  left: {} ({}, {} ms ago)",
                    d.address, d.reason, d.left_ms_ago
                );
            }
        }
        for s in &self.services {
            let _ = writeln!(
                out,
                "service {}:{}/{} -> group {} (Maglev {} entries for {} backends, slot {}, digest {})",
                s.vip,
                s.port,
                s.proto,
                s.group,
                s.table_size,
                s.table_backends.len(),
                s.active_slot,
                s.table_digest
            );
        }
        for e in &self.next_hop_errors {
            let _ = writeln!(
                out,
                "no next hop toward {}: {} ({} packets dropped, the last {} ms ago)",
                e.backend, e.reason, e.drops, e.last_ms_ago
            );
        }
        let _ = writeln!(out, "counters: {}", name_value_list(&self.counters));
        let _ = writeln!(out, "GSO program: {}", name_value_list(&self.gso_counters));
        let _ = writeln!(out, "actions: {}", name_value_list(&self.actions));
        out
    }
}

/// `aa:bb:cc:dd:ee:ff`
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
