//! Routed reports (protocol §4.4, §9): members behind multicast routers
//! report as UDP to group:port, since routers never forward IGMP or MLD. Each one counts for
//! the group's liveness like an IGMP report; with a key set, only one whose
//! tag verifies and whose sequence is within the clock skew.
use aya_ebpf::programs::XdpContext;
use lb_common::{
    Counter,
    siphash::{routed_tagged_message, routed_tagged_message6},
    wire::{
        ROUTED_KIND_QUERY, ROUTED_KIND_REPORT, ROUTED_LEN, ROUTED_MAGIC, ROUTED_OFF_ADDR,
        ROUTED_OFF_KIND, ROUTED_OFF_VERSION, ROUTED_VERSION, ROUTED6_LEN, ROUTED6_VERSION,
    },
};
use network_types::udp::UdpHdr;

use crate::{
    auth,
    maps::{AUTH_ON, GROUP_ADDRS, GROUP_ADDRS6},
    parse::{Ipv4Packet, Ipv6Packet, ptr_at},
    stats::{self, GroupEvent},
};

/// A UDP datagram to group `group_id`'s port that is not addressed to the LB.
#[inline(always)]
pub fn handle(ctx: &XdpContext, packet: &Ipv4Packet, udp_len: usize, group_id: u32) -> Counter {
    // SAFETY: a plain u32 that only lb-user writes, copied out at once.
    if unsafe { GROUP_ADDRS.get(&packet.dst) }.copied() != Some(group_id) {
        return Counter::Ignored;
    }
    if packet.is_fragment || udp_len < UdpHdr::LEN + ROUTED_LEN || udp_len > packet.l4_len {
        return Counter::RoutedRefused;
    }
    let Some(payload) = ptr_at::<[u8; ROUTED_LEN]>(ctx, packet.l4_offset + UdpHdr::LEN) else {
        return Counter::RoutedRefused;
    };
    // SAFETY: ptr_at checked the bounds.
    let payload = unsafe { &*payload };
    count_report(group_id, &packet.dst, payload, |head| {
        routed_tagged_message(packet.src, head)
    })
}

/// The same for an IPv6 group (protocol §9: version 2, 16-byte addresses).
/// Fragments never get here (their next header is the fragment header).
#[inline(always)]
pub fn handle6(ctx: &XdpContext, packet: &Ipv6Packet, udp_len: usize, group_id: u32) -> Counter {
    // SAFETY: a plain u32 that only lb-user writes, copied out at once.
    if unsafe { GROUP_ADDRS6.get(&packet.dst) }.copied() != Some(group_id) {
        return Counter::Ignored;
    }
    if udp_len < UdpHdr::LEN + ROUTED6_LEN || udp_len > packet.l4_len {
        return Counter::RoutedRefused;
    }
    let Some(payload) = ptr_at::<[u8; ROUTED6_LEN]>(ctx, packet.l4_offset + UdpHdr::LEN) else {
        return Counter::RoutedRefused;
    };
    // SAFETY: ptr_at checked the bounds.
    let payload = unsafe { &*payload };
    count_report(group_id, &packet.dst, payload, |head| {
        routed_tagged_message6(packet.src, head)
    })
}

/// Counts a routed report of group `group_id`, sent to `group`, for its
/// liveness; refuses anything else but another LB's query. `A` is the
/// address's length, `L` the message's, `T` where its tag starts; `tagged`
/// gives the message the tag covers from the bytes before the tag.
#[inline(always)]
fn count_report<const A: usize, const L: usize, const T: usize, const M: usize>(
    group_id: u32,
    group: &[u8; A],
    payload: &[u8; L],
    tagged: impl FnOnce(&[u8; T]) -> [u8; M],
) -> Counter {
    let version = if A == 4 {
        ROUTED_VERSION
    } else {
        ROUTED6_VERSION
    };
    if payload[..4] != ROUTED_MAGIC || payload[ROUTED_OFF_VERSION] != version {
        return Counter::RoutedRefused;
    }
    match payload[ROUTED_OFF_KIND] {
        // Another LB's query: the stack may have a listener for it.
        ROUTED_KIND_QUERY => return Counter::Ignored,
        ROUTED_KIND_REPORT => {}
        _ => return Counter::RoutedRefused,
    }
    if payload[ROUTED_OFF_ADDR..ROUTED_OFF_ADDR + A] != group[..] {
        return Counter::RoutedRefused;
    }
    if AUTH_ON.load() != 0 && !is_authentic::<L, T, M>(payload, tagged) {
        return Counter::RoutedRefused;
    }
    stats::group_add(group_id, GroupEvent::Report, 1);
    Counter::RoutedReport
}

/// The tag verifies under an active key and the sequence (the 8 bytes
/// before the tag at `T`) is fresh. No replay check: a replayed report can
/// only keep a group alive for as long as the clock skew allows.
#[inline(always)]
fn is_authentic<const L: usize, const T: usize, const M: usize>(
    payload: &[u8; L],
    tagged: impl FnOnce(&[u8; T]) -> [u8; M],
) -> bool {
    let mut head = [0u8; T];
    head.copy_from_slice(&payload[..T]);
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&payload[T..T + 8]);
    let mut sequence = [0u8; 8];
    sequence.copy_from_slice(&payload[T - 8..T]);
    auth::tag_matches(&tagged(&head), u64::from_le_bytes(tag))
        && auth::is_fresh(u64::from_be_bytes(sequence))
}
