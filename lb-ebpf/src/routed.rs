//! Routed reports (protocol §4.4): members behind multicast routers report as
//! UDP to group:port, since routers never forward IGMP. Each one counts for
//! the group's liveness like an IGMP report; with a key set, only one whose
//! tag verifies and whose sequence is within the clock skew.
use aya_ebpf::programs::XdpContext;
use lb_common::{
    Counter,
    siphash::routed_tagged_message,
    wire::{
        ROUTED_KIND_QUERY, ROUTED_KIND_REPORT, ROUTED_LEN, ROUTED_MAGIC, ROUTED_OFF_ADDR,
        ROUTED_OFF_KIND, ROUTED_OFF_SEQUENCE, ROUTED_OFF_TAG, ROUTED_OFF_VERSION, ROUTED_VERSION,
    },
};
use network_types::udp::UdpHdr;

use crate::{
    auth,
    maps::{AUTH_ON, GROUP_ADDRS},
    parse::{Ipv4Packet, ptr_at},
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
    if payload[..4] != ROUTED_MAGIC || payload[ROUTED_OFF_VERSION] != ROUTED_VERSION {
        return Counter::RoutedRefused;
    }
    match payload[ROUTED_OFF_KIND] {
        // Another LB's query: the stack may have a listener for it.
        ROUTED_KIND_QUERY => return Counter::Ignored,
        ROUTED_KIND_REPORT => {}
        _ => return Counter::RoutedRefused,
    }
    if payload[ROUTED_OFF_ADDR..ROUTED_OFF_SEQUENCE] != packet.dst {
        return Counter::RoutedRefused;
    }
    if AUTH_ON.load() != 0 && !is_authentic(packet.src, payload) {
        return Counter::RoutedRefused;
    }
    stats::group_add(group_id, GroupEvent::Report, 1);
    Counter::RoutedReport
}

/// The tag verifies under an active key and the sequence is fresh. No
/// replay check: a replayed report can only keep a group alive for as long
/// as the clock skew allows.
#[inline(always)]
fn is_authentic(src: [u8; 4], payload: &[u8; ROUTED_LEN]) -> bool {
    let mut head = [0u8; ROUTED_OFF_TAG];
    head.copy_from_slice(&payload[..ROUTED_OFF_TAG]);
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&payload[ROUTED_OFF_TAG..]);
    let mut sequence = [0u8; 8];
    sequence.copy_from_slice(&payload[ROUTED_OFF_SEQUENCE..ROUTED_OFF_TAG]);
    auth::tag_matches(&routed_tagged_message(src, &head), u64::from_le_bytes(tag))
        && auth::is_fresh(u64::from_be_bytes(sequence))
}
