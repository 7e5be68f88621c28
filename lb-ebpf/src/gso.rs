//! GSO super-packets to IPIP backends (SPEC 7, 8). Where XDP runs in
//! generic mode (a veth, or behind GRO), it sees a sender's TSO/GSO
//! super-packets whole, up to 64 KB: it can neither wrap nor split them,
//! and an ICMP "fragmentation needed" does not help (the sender's GSO goes
//! on). So XDP picks the backend and next hop as for any packet, writes
//! them into the packet's metadata and passes it; the GSO program on the
//! interface's tc ingress then wraps it with `bpf_skb_adjust_room`, which
//! marks the packet IPIP-encapsulated and lowers its GSO size by the outer
//! header, and sends it back out of the interface, where the kernel cuts it
//! into segments that fit the MTU (as Cilium does).
use core::mem::size_of;

use aya_ebpf::{
    EbpfContext,
    bindings::{
        __sk_buff, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
        bpf_check_mtu_ret::BPF_MTU_CHK_RET_FRAG_NEEDED,
    },
    helpers::{bpf_check_mtu, bpf_redirect, bpf_xdp_adjust_meta},
    programs::{TcContext, XdpContext},
};
use lb_common::{Counter, GsoCounter, GsoHandoff, TcAction};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    ipip::{self, DONT_FRAGMENT, IPPROTO_IPIP},
    maps::{GSO_COUNTERS, GSO_HANDOFF, LB_ADDR},
    parse::Ipv4Packet,
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
/// into its metadata.
#[inline(always)]
pub fn hand_over(ctx: &XdpContext, packet: &Ipv4Packet, lb: [u8; 4], backend: [u8; 4]) -> Counter {
    // Not cached: its `fits` would be no packet's.
    let Ok(hop) = ipip::next_hop(ctx, packet, lb, backend, 0, 0) else {
        return Counter::IpipNoNextHop;
    };
    let len = size_of::<GsoHandoff>();
    // SAFETY: a negative delta grows the metadata area; the helper checks it.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -(len as i32)) } != 0 {
        return Counter::IpipNoRoom;
    }
    let (meta, data) = (ctx.metadata(), ctx.data());
    // The helper made this room: only for the verifier.
    if meta + len > data {
        return Counter::IpipNoRoom;
    }
    let handoff = GsoHandoff {
        magic: GsoHandoff::MAGIC,
        backend,
        dmac: hop.dmac,
        smac: hop.smac,
    };
    // SAFETY: inside the metadata area checked above, which is writable.
    unsafe { (meta as *mut GsoHandoff).write_unaligned(handoff) };
    Counter::IpipGsoHandoff
}

/// The GSO program's work on one packet of the interface's ingress.
#[inline(always)]
pub fn wrap(ctx: &TcContext) -> GsoCounter {
    let Some(handoff) = handoff(ctx) else {
        return GsoCounter::NotHandedOver;
    };
    let Ok(inner) = ctx.load::<Ipv4Hdr>(EthHdr::LEN) else {
        return GsoCounter::Malformed;
    };
    if inner.vihl >> 4 != 4 {
        return GsoCounter::Malformed;
    }
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
    let header = ipip::ipv4_header(
        inner.tos,
        outer_len,
        inner.frags[0] & DONT_FRAGMENT != 0,
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

/// What XDP left in the packet's metadata for this program, if anything.
#[inline(always)]
fn handoff(ctx: &TcContext) -> Option<GsoHandoff> {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    // SAFETY: the context is the kernel's __sk_buff for this program.
    let (meta, data) = unsafe { ((*skb).data_meta as usize, (*skb).data as usize) };
    // Also the verifier's bounds check of the read below.
    if meta + size_of::<GsoHandoff>() > data {
        return None;
    }
    // SAFETY: inside the metadata area checked above.
    let handoff = unsafe { (meta as *const GsoHandoff).read_unaligned() };
    (handoff.magic == GsoHandoff::MAGIC).then_some(handoff)
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
