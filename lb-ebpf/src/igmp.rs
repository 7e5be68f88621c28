//! IGMP membership reports and leaves for the configured groups (protocol §4.2, §5.4).
//! Reports are recorded per group for liveness and always passed on: the
//! LB's kernel and other listeners see them unchanged.
use aya_ebpf::programs::XdpContext;
use lb_common::{
    BackendKey, Counter, DepartureReason,
    wire::{
        IGMP_V1_REPORT, IGMP_V2_LEAVE, IGMP_V2_LEN, IGMP_V2_REPORT, IGMP_V3_CHANGE_TO_INCLUDE,
        IGMP_V3_REPORT,
    },
};

use crate::{
    epochs, events,
    maps::{AUTH_ON, BACKENDS, GROUP_ADDRS},
    parse::{Ipv4Packet, ptr_at},
    server_list::ServerKey,
    stats::{self, Membership},
};

/// Group records of one IGMPv3 report that are examined; a host's report
/// lists its groups, and a longer list is cut here for the verifier's sake.
const MAX_V3_RECORDS: u16 = 16;
/// Upper bound on a record offset; keeps the verifier's range finite.
const MAX_RECORD_OFFSET: usize = 1500;

/// Fixed part of an IGMPv3 group record.
#[repr(C)]
struct V3Record {
    kind: u8,
    aux_words: u8,
    sources: [u8; 2],
    group: [u8; 4],
}

#[inline(always)]
pub fn handle(ctx: &XdpContext, packet: &Ipv4Packet) -> Counter {
    if packet.is_fragment || packet.l4_len < IGMP_V2_LEN {
        return Counter::Malformed;
    }
    let Some(msg) = ptr_at::<[u8; IGMP_V2_LEN]>(ctx, packet.l4_offset) else {
        return Counter::Malformed;
    };
    // SAFETY: ptr_at checked the bounds.
    let msg = unsafe { &*msg };
    let group = [msg[4], msg[5], msg[6], msg[7]];
    let recorded = match msg[0] {
        IGMP_V1_REPORT | IGMP_V2_REPORT => record(ctx, packet.src, group, Membership::Report),
        IGMP_V2_LEAVE => record(ctx, packet.src, group, Membership::Leave),
        IGMP_V3_REPORT => match v3_report(ctx, packet, u16::from_be_bytes([msg[6], msg[7]])) {
            V3Report::Recorded(counter) => Some(counter),
            V3Report::NoGroupOfOurs => None,
            V3Report::Truncated => return Counter::Malformed,
        },
        _ => None,
    };
    recorded.unwrap_or(Counter::Ignored)
}

/// What an IGMPv3 report held for us.
enum V3Report {
    /// A record for a configured group, counted.
    Recorded(Counter),
    NoGroupOfOurs,
    /// A record that the message claims but does not hold.
    Truncated,
}

/// Walks the group records of an IGMPv3 report; the first record for a
/// configured group decides.
#[inline(always)]
fn v3_report(ctx: &XdpContext, packet: &Ipv4Packet, records: u16) -> V3Report {
    let end = packet.l4_offset + packet.l4_len;
    let mut offset = packet.l4_offset + IGMP_V2_LEN;
    for index in 0..MAX_V3_RECORDS {
        if index >= records || offset > MAX_RECORD_OFFSET {
            break;
        }
        if offset + size_of::<V3Record>() > end {
            return V3Report::Truncated;
        }
        let Some(rec) = ptr_at::<V3Record>(ctx, offset) else {
            return V3Report::Truncated;
        };
        // SAFETY: ptr_at checked the bounds.
        let rec = unsafe { &*rec };
        let sources = u16::from_be_bytes(rec.sources);
        let membership = if rec.kind == IGMP_V3_CHANGE_TO_INCLUDE && sources == 0 {
            Membership::Leave
        } else {
            Membership::Report
        };
        if let Some(counter) = record(ctx, packet.src, rec.group, membership) {
            return V3Report::Recorded(counter);
        }
        offset += size_of::<V3Record>() + usize::from(sources) * 4 + usize::from(rec.aux_words) * 4;
    }
    V3Report::NoGroupOfOurs
}

/// A leave from `key.addr`. Without a key it removes that backend at once.
/// With a key it cannot be authenticated (anyone on the segment can send
/// one), so it only asks lb-user to confirm: a query, and removal unless
/// an authenticated announcement arrives in the window (protocol §4.2).
/// Not registered is fine: the leave is only counted. Returns whether the
/// server list changed (or a leave waits for confirmation).
#[inline(always)]
fn leave(ctx: &XdpContext, key: &BackendKey) -> bool {
    if AUTH_ON.load() != 0 {
        return key.hold_leave();
    }
    let removed = BACKENDS.remove(key).is_ok();
    if removed {
        epochs::bump();
        events::removed(ctx, key, DepartureReason::IgmpLeave);
    }
    removed
}

/// Records a report or leave for `group` if it is one of ours. A leave
/// also removes its sender if that is a registered backend: its kernel
/// leaves the group when the agent's socket closes, even after SIGKILL.
#[inline(always)]
fn record(
    ctx: &XdpContext,
    source: [u8; 4],
    group: [u8; 4],
    membership: Membership,
) -> Option<Counter> {
    // SAFETY: the value is a plain u32 that only lb-user writes.
    let group_id = *unsafe { GROUP_ADDRS.get(&group) }?;
    let key = BackendKey {
        group_id,
        addr: source,
    };
    stats::membership(group_id, &membership, || leave(ctx, &key));
    Some(match membership {
        Membership::Report => Counter::IgmpReport,
        Membership::Leave => Counter::IgmpLeave,
    })
}
