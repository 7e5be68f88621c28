//! GSO super-packets to IPIP backends (protocol §7, §8). Where XDP runs in
//! generic mode (a veth, or behind GRO), it sees a sender's TSO/GSO
//! super-packets whole, up to 64 KB: it can neither wrap nor split them,
//! and an ICMP "fragmentation needed" does not help (the sender's GSO goes
//! on). So XDP picks the backend and next hop as for any packet, leaves
//! them with the packet's IPv4 header in its CPU's `GSO_HANDOFFS` slot and
//! passes it; the GSO program on the
//! interface's tc ingress then wraps it with `bpf_skb_adjust_room`, which
//! marks the packet IPIP-encapsulated and lowers its GSO size by the outer
//! header, and sends it back out of the interface, where the kernel cuts it
//! into segments that fit the MTU (as Cilium does).
use aya_ebpf::{
    EbpfContext,
    bindings::{
        __sk_buff, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
        bpf_check_mtu_ret::BPF_MTU_CHK_RET_FRAG_NEEDED,
    },
    helpers::{bpf_check_mtu, bpf_redirect},
    programs::{TcContext, XdpContext},
};
use lb_common::{Counter, GsoCounter, GsoHandoff, TcAction};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    ipip::{self, DONT_FRAGMENT, IPPROTO_IPIP},
    maps::{GSO_COUNTERS, GSO_HANDOFF, GSO_HANDOFFS, LB_ADDR},
    parse::{Ipv4Packet, ptr_at},
};

/// Whether the frame is longer than the interface's MTU allows: no wire
/// frame, so a GSO super-packet, and the GSO program runs to take it.
#[inline(always)]
pub fn is_super_packet(ctx: &XdpContext) -> bool {
    if GSO_HANDOFF.load() == 0 {
        return false;
    }
    // 0: the whole frame against the ingress interface's MTU.
    let mut mtu_len = 0u32;
    // SAFETY: ifindex 0 is the ingress interface; the helper writes mtu_len.
    let result = unsafe { bpf_check_mtu(ctx.as_ptr(), 0, &mut mtu_len, 0, 0) };
    result as u32 == BPF_MTU_CHK_RET_FRAG_NEEDED
}

/// Hands the super-packet of `packet`, for `backend`, to the GSO program:
/// the next hop (no MTU check: the segments will fit) and the backend go
/// into this CPU's slot, with the packet's IPv4 header that names it.
#[inline(always)]
pub fn hand_over(ctx: &XdpContext, packet: &Ipv4Packet, lb: [u8; 4], backend: [u8; 4]) -> Counter {
    // Not cached: its `fits` would be no packet's.
    let Ok(hop) = ipip::next_hop(ctx, packet, lb, backend, 0, 0) else {
        return Counter::IpipNoNextHop;
    };
    // The caller parsed this header (without options): only for the verifier.
    let Some(ip_header) = ptr_at::<[u8; Ipv4Hdr::LEN]>(ctx, EthHdr::LEN) else {
        return Counter::IpipNoRoom;
    };
    // The array has its one slot on every CPU: only for the verifier.
    let Some(slot) = GSO_HANDOFFS.get_ptr_mut(0) else {
        return Counter::IpipNoRoom;
    };
    let handoff = GsoHandoff {
        // SAFETY: ptr_at checked the bounds; a copy.
        ip_header: unsafe { *ip_header },
        backend,
        dmac: hop.dmac,
        smac: hop.smac,
    };
    // SAFETY: this CPU's slot; the GSO program reads it on this CPU after
    // this program returns. One copy in, through the raw pointer.
    unsafe { slot.write(handoff) };
    Counter::IpipGsoHandoff
}

/// The GSO program's work on one packet of the interface's ingress.
#[inline(always)]
pub fn wrap(ctx: &TcContext) -> GsoCounter {
    let Some(handoff) = handoff(ctx) else {
        return GsoCounter::NotHandedOver;
    };
    // The room right after the MAC header becomes the outer header; the
    // flag marks the packet encapsulated and lowers its GSO size to match.
    if ctx
        .adjust_room(
            Ipv4Hdr::LEN as i32,
            BPF_ADJ_ROOM_MAC,
            u64::from(BPF_F_ADJ_ROOM_ENCAP_L3_IPV4),
        )
        .is_err()
    {
        return GsoCounter::CannotWrap;
    }
    // The kernel writes each segment's own length and checksum when it
    // cuts the packet; the super-packet's may exceed 16 bits.
    let outer_len = (ctx.len() as usize - EthHdr::LEN).min(usize::from(u16::MAX)) as u16;
    // The inner header's TOS (byte 1) and DF (in byte 6) carry over.
    let inner = handoff.ip_header;
    let header = ipip::ipv4_header(
        inner[1],
        outer_len,
        inner[6] & DONT_FRAGMENT != 0,
        IPPROTO_IPIP,
        LB_ADDR.load(),
        handoff.backend,
    );
    let mut eth = [0u8; EthHdr::LEN];
    eth[..6].copy_from_slice(&handoff.dmac);
    eth[6..12].copy_from_slice(&handoff.smac);
    eth[12..].copy_from_slice(&0x0800u16.to_be_bytes());
    if ctx.store(0, &eth, 0).is_err() || ctx.store(EthHdr::LEN, &header, 0).is_err() {
        return GsoCounter::CannotWrap;
    }
    GsoCounter::Wrapped
}

/// What XDP left in this CPU's slot for this packet, if XDP handed this
/// packet over: the slot is taken (emptied) so that it names no later one.
#[inline(always)]
fn handoff(ctx: &TcContext) -> Option<GsoHandoff> {
    let slot = GSO_HANDOFFS.get_ptr_mut(0)?;
    let header = ctx.load::<[u8; Ipv4Hdr::LEN]>(EthHdr::LEN).ok()?;
    // SAFETY: this CPU's slot, written by XDP before this program ran for
    // the packet on this CPU; copies through the raw pointer.
    let handoff = unsafe { slot.read() };
    if handoff.ip_header != header {
        return None;
    }
    // SAFETY: as above.
    unsafe { slot.write(GsoHandoff::default()) };
    Some(handoff)
}

/// Counts `outcome` and returns its tc action; a wrapped packet leaves by
/// the interface it came in on, toward the next hop in its new header.
#[inline(always)]
pub fn finish(ctx: &TcContext, outcome: GsoCounter) -> i32 {
    if let Some(slot) = GSO_COUNTERS.get_ptr_mut(outcome as u32) {
        // SAFETY: per-CPU slot; only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
    if outcome.action() == TcAction::Redirect {
        let skb = ctx.as_ptr().cast::<__sk_buff>();
        // SAFETY: the context is the kernel's __sk_buff; flags 0: egress.
        return unsafe { bpf_redirect((*skb).ifindex, 0) } as i32;
    }
    outcome.action() as i32
}
