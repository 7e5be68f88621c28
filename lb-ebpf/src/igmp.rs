//! IGMP membership reports and leaves for the configured groups (protocol §4.2, §5.4).
//! Reports are recorded per group for liveness and always passed on: the
//! LB's kernel and other listeners see them unchanged.
use aya_ebpf::programs::XdpContext;
use lb_common::{
    BackendKey, Counter, DepartureReason,
    wire::{IGMP_V1_REPORT, IGMP_V2_LEAVE, IGMP_V2_LEN, IGMP_V2_REPORT, IGMP_V3_REPORT},
};

use crate::{
    epochs, events,
    group_records::{self, Records},
    maps::{AUTH_ON, BACKENDS, GROUP_ADDRS},
    parse::{Ipv4Packet, ptr_at},
    server_list::ServerKey,
    stats::{self, Membership},
};

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
        IGMP_V3_REPORT => {
            let records = u16::from_be_bytes([msg[6], msg[7]]);
            let span = (
                packet.l4_offset + IGMP_V2_LEN,
                packet.l4_offset + packet.l4_len,
            );
            match group_records::walk(ctx, span, records, |group, membership| {
                record(ctx, packet.src, group, membership)
            }) {
                Records::Recorded(counter) => Some(counter),
                Records::NoGroupOfOurs => None,
                Records::Truncated => return Counter::Malformed,
            }
        }
        _ => None,
    };
    recorded.unwrap_or(Counter::Ignored)
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
