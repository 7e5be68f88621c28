//! MLD reports and leaves for the configured IPv6 groups (protocol §9):
//! reports are recorded per group for liveness, as IGMP reports are; a
//! leave (Done, or an MLDv2 CHANGE_TO_INCLUDE with no sources) comes from
//! the host's link-local address, so it is tied to a backend by its MAC
//! (`MAC_BACKENDS6`) and, without a key, removes it; with a key, it is
//! held for lb-user to confirm, as an IGMP leave is. Always passed on.
use aya_ebpf::programs::XdpContext;
use lb_common::{
    BackendKey6, Counter, DepartureReason, MacKey,
    mld::{
        MLD_DONE, MLD_OFF_ADDRESS, MLD_V1_LEN, MLD_V1_REPORT, MLD_V2_FIRST_RECORD,
        MLD_V2_OFF_RECORDS, MLD_V2_REPORT,
    },
};

use crate::{
    epochs,
    group_records::{self, Records},
    maps::{AUTH_ON, BACKENDS6, GROUP_ADDRS6, MAC_BACKENDS6},
    parse::{Ipv6Packet, ptr_at},
    server_list::ServerKey,
    stats::{self, Membership},
};

#[inline(always)]
pub fn handle(ctx: &XdpContext, packet: &Ipv6Packet) -> Counter {
    // Type and the v2 record count; an MLDv1 message is 24 bytes.
    let Some(head) = ptr_at::<[u8; MLD_V2_FIRST_RECORD]>(ctx, packet.l4_offset) else {
        return Counter::Malformed;
    };
    // SAFETY: ptr_at checked the bounds.
    let head = unsafe { &*head };
    let recorded = match head[0] {
        MLD_V1_REPORT => v1_group(ctx, packet)
            .and_then(|group| record(ctx, packet.eth_src, group, Membership::Report)),
        MLD_DONE => v1_group(ctx, packet)
            .and_then(|group| record(ctx, packet.eth_src, group, Membership::Leave)),
        MLD_V2_REPORT => {
            let records =
                u16::from_be_bytes([head[MLD_V2_OFF_RECORDS], head[MLD_V2_OFF_RECORDS + 1]]);
            let span = (
                packet.l4_offset + MLD_V2_FIRST_RECORD,
                packet.l4_offset + packet.l4_len,
            );
            // A record cut short ends the walk: the message is passed on
            // uncounted (as it always was for MLD).
            match group_records::walk(ctx, span, records, |group, membership| {
                record(ctx, packet.eth_src, group, membership)
            }) {
                Records::Recorded(counter) => Some(counter),
                Records::NoGroupOfOurs | Records::Truncated => None,
            }
        }
        _ => None,
    };
    recorded.unwrap_or(Counter::Ignored)
}

/// The group of an MLDv1 message, if the message holds one.
#[inline(always)]
fn v1_group(ctx: &XdpContext, packet: &Ipv6Packet) -> Option<[u8; 16]> {
    if packet.l4_len < MLD_V1_LEN {
        return None;
    }
    let group = ptr_at::<[u8; 16]>(ctx, packet.l4_offset + MLD_OFF_ADDRESS)?;
    // SAFETY: ptr_at checked the bounds.
    Some(unsafe { *group })
}

/// Records a report or leave for `group` if it is one of ours; a leave
/// also removes the backend that announces from `mac`.
#[inline(always)]
fn record(
    ctx: &XdpContext,
    mac: [u8; 6],
    group: [u8; 16],
    membership: Membership,
) -> Option<Counter> {
    // SAFETY: the value is a plain u32 that only lb-user writes.
    let group_id = *unsafe { GROUP_ADDRS6.get(&group) }?;
    let removed = stats::membership(group_id, &membership, || leave(ctx, group_id, mac));
    Some(match membership {
        Membership::Report => Counter::MldReport,
        Membership::Leave if removed => Counter::MldLeave,
        Membership::Leave => Counter::MldLeaveUntied,
    })
}

/// Removes the group's backend that announces from `mac`, if there is
/// one; with a key set (a leave cannot be authenticated) holds the leave
/// for lb-user to confirm instead. Whether it did either.
#[inline(always)]
fn leave(ctx: &XdpContext, group_id: u32, mac: [u8; 6]) -> bool {
    let by_mac = MacKey {
        group_id,
        mac,
        _pad: [0; 2],
    };
    // SAFETY: copied out at once.
    let Some(&addr) = (unsafe { MAC_BACKENDS6.get(&by_mac) }) else {
        return false;
    };
    let key = BackendKey6 { group_id, addr };
    // The note may be stale: the backend must still announce from `mac`.
    let Some(entry) = BACKENDS6.get_ptr_mut(&key) else {
        return false;
    };
    // SAFETY: a valid pointer into the map's value, read through the raw
    // pointer (heartbeats on other CPUs write it).
    if unsafe { (&raw const (*entry).mac).read() } != mac {
        return false;
    }
    if AUTH_ON.load() != 0 {
        return key.hold_leave();
    }
    if !key.remove() {
        return false;
    }
    epochs::bump();
    key.log_removed(ctx, DepartureReason::MldLeave);
    true
}
