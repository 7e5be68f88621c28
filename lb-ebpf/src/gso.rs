//! GSO super-packets to IP-in-IP backends (protocol §7, §8, §9). Where
//! XDP runs in generic mode (a veth, or behind GRO), it sees a sender's
//! TSO/GSO super-packets whole, up to 64 KB: it can neither wrap nor split
//! them, and an ICMP answer does not help (the sender's GSO goes on). So
//! XDP picks the backend and next hop as for any packet, leaves them with
//! the packet's first bytes in its CPU's `GSO_HANDOFFS` slot and passes
//! it; the GSO program on the interface's tc ingress then wraps it (in the
//! backend's family) with `bpf_skb_adjust_room`, which marks the packet
//! encapsulated and lowers its GSO size by the outer header, and sends it
//! back out of the interface, where the kernel cuts it into segments that
//! fit the MTU (as Cilium does).
use aya_ebpf::{
    EbpfContext,
    bindings::{
        __sk_buff, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6,
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, bpf_check_mtu_ret::BPF_MTU_CHK_RET_FRAG_NEEDED,
    },
    helpers::{bpf_check_mtu, bpf_redirect},
    programs::{TcContext, XdpContext},
};
use lb_common::{Counter, GsoCounter, GsoHandoff, TcAction, addr::unmapped};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

use crate::{
    ipip::{self, Inner, Outer, Resolve},
    maps::{GSO_COUNTERS, GSO_HANDOFF, GSO_HANDOFFS, lb_addr, lb_addr6},
    parse::ptr_at,
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

/// Hands the super-packet of `inner`, for `backend`, to the GSO program:
/// the next hop (no MTU check: the segments will fit) and the backend go
/// into this CPU's slot, with the packet's first bytes that name it.
///
/// Not inlined (a rare path): its own stack frame keeps the programs
/// within the verifier's 512 bytes.
#[inline(never)]
pub fn hand_over<A: Outer>(ctx: &XdpContext, inner: &Inner, backend: A) -> Counter {
    // Not cached: its `fits` would be no packet's.
    let hop = match ipip::next_hop(ctx, inner.l4_proto, (A::lb(), backend), 0, 0) {
        Ok(hop) => hop,
        Err(Resolve::NoNextHop { result }) => {
            ipip::record_error(backend, result);
            return Counter::IpipNoNextHop;
        }
        // Never: no MTU check.
        Err(Resolve::TooBig { .. }) => return Counter::IpipNoNextHop,
    };
    // A super-packet is longer than this: only for the verifier.
    let Some(ip_header) = ptr_at::<[u8; MATCHED_LEN]>(ctx, EthHdr::LEN) else {
        return Counter::IpipNoRoom;
    };
    // The array has its one slot on every CPU: only for the verifier.
    let Some(slot) = GSO_HANDOFFS.get_ptr_mut(0) else {
        return Counter::IpipNoRoom;
    };
    // SAFETY: this CPU's slot; the GSO program reads it on this CPU after
    // this program returns. Written field by field through the raw
    // pointer, not built on the stack first: the wrap program's frame is
    // tight. ptr_at checked the header's bounds.
    unsafe {
        (&raw mut (*slot).ip_header).write(*ip_header);
        (&raw mut (*slot).backend).write(backend.addr16());
        (&raw mut (*slot).dmac).write(hop.dmac);
        (&raw mut (*slot).smac).write(hop.smac);
        (&raw mut (*slot).inner_proto).write(inner.proto);
        (&raw mut (*slot).tos).write(inner.tos);
        (&raw mut (*slot).dont_fragment).write(u8::from(inner.dont_fragment));
    }
    Counter::IpipGsoHandoff
}

/// How many bytes after the MAC header tc matches against XDP's handoff.
const MATCHED_LEN: usize = 40;

/// The GSO program's work on one packet of the interface's ingress.
#[inline(always)]
pub fn wrap(ctx: &TcContext) -> GsoCounter {
    let Some(handoff) = handoff(ctx) else {
        return GsoCounter::NotHandedOver;
    };
    let outer4 = unmapped(&handoff.backend);
    let (header_len, flag, ether_type) = match outer4 {
        Some(_) => (Ipv4Hdr::LEN, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, 0x0800u16),
        None => (Ipv6Hdr::LEN, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6, 0x86dd),
    };
    // The room right after the MAC header becomes the outer header; the
    // flag marks the packet encapsulated (and of the outer family) and
    // lowers its GSO size to match.
    if ctx
        .adjust_room(header_len as i32, BPF_ADJ_ROOM_MAC, u64::from(flag))
        .is_err()
    {
        return GsoCounter::CannotWrap;
    }
    // The kernel writes each segment's own length (and checksum) when it
    // cuts the packet; the super-packet's may exceed 16 bits.
    let ip_len = (ctx.len() as usize - EthHdr::LEN).min(usize::from(u16::MAX)) as u16;
    let mut eth = [0u8; EthHdr::LEN];
    eth[..6].copy_from_slice(&handoff.dmac);
    eth[6..12].copy_from_slice(&handoff.smac);
    eth[12..].copy_from_slice(&ether_type.to_be_bytes());
    let stored = ctx.store(0, &eth, 0).is_ok()
        && match outer4 {
            Some(backend) => {
                let header = ipip::ipv4_header(
                    handoff.tos,
                    ip_len,
                    handoff.dont_fragment != 0,
                    handoff.inner_proto,
                    lb_addr(),
                    backend,
                );
                ctx.store(EthHdr::LEN, &header, 0).is_ok()
            }
            None => {
                let header = ipip::ipv6_header(
                    handoff.tos,
                    ip_len.saturating_sub(Ipv6Hdr::LEN as u16),
                    handoff.inner_proto,
                    lb_addr6(),
                    handoff.backend,
                );
                ctx.store(EthHdr::LEN, &header, 0).is_ok()
            }
        };
    if stored {
        GsoCounter::Wrapped
    } else {
        GsoCounter::CannotWrap
    }
}

/// What XDP left in this CPU's slot for this packet, if XDP handed this
/// packet over: the slot is taken (emptied) so that it names no later one.
#[inline(always)]
fn handoff(ctx: &TcContext) -> Option<GsoHandoff> {
    let slot = GSO_HANDOFFS.get_ptr_mut(0)?;
    let header = ctx.load::<[u8; MATCHED_LEN]>(EthHdr::LEN).ok()?;
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
