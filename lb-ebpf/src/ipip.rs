//! IPIP forwarding (protocol §7): direct server return across routers. The
//! client's packet is wrapped in an outer IPv4 header from the LB to the
//! backend and sent to the next hop the kernel's FIB gives for the backend;
//! the backend's agent strips the header. A packet that would not fit the
//! egress MTU once wrapped is answered with ICMP "fragmentation needed"
//! (DF set) or dropped (DF clear): XDP cannot fragment. A packet longer
//! than the interface's MTU is no wire frame but a GSO super-packet (XDP in
//! generic mode sees them whole): it goes to the GSO program (`gso`).
use core::mem::{size_of, zeroed};

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_OUTPUT,
        bpf_fib_lookup as FibLookup,
    },
    helpers::{
        bpf_check_mtu, bpf_fib_lookup, bpf_ktime_get_ns, bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
    },
    programs::XdpContext,
};
use lb_common::{
    COARSE_LAG_MAX_NS, Counter, NEXT_HOP_CACHE_NS, NextHop, NextHopError, wire::internet_checksum,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    clock, gso,
    maps::{LB_ADDR, LB_MAC, NEXT_HOP_ERRORS, NEXT_HOPS},
    parse::{Ipv4Packet, ptr_at},
};

/// `AF_INET`, the FIB lookup's address family.
const AF_INET: u8 = 2;
/// IP protocol numbers of the outer headers.
pub const IPPROTO_IPIP: u8 = 4;
const IPPROTO_ICMP: u8 = 1;
/// The DF bit of the IPv4 flags (first byte of the fragment field).
pub const DONT_FRAGMENT: u8 = 0x40;
const OUTER_TTL: u8 = 64;
/// ICMP "destination unreachable", code "fragmentation needed and DF set".
const ICMP_UNREACHABLE: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMP_HEADER_LEN: usize = 8;
/// What an ICMP error quotes of the offending packet: its IP header (no
/// options reach this path) and the first 8 bytes after it (RFC 792).
const QUOTED_LEN: usize = Ipv4Hdr::LEN + 8;
/// The whole "fragmentation needed" frame.
const TOO_BIG_FRAME_LEN: usize = EthHdr::LEN + Ipv4Hdr::LEN + ICMP_HEADER_LEN + QUOTED_LEN;

/// Wraps the client packet of `packet` for `backend` and sends it to the
/// next hop, counted as `sent`. With `next` (a second chance, protocol §7)
/// it is wrapped twice: the inner header, from the LB to `next`, names
/// the backend to pass it to when `backend` holds no such connection.
#[inline(always)]
pub fn forward(
    ctx: &XdpContext,
    packet: &Ipv4Packet,
    backend: [u8; 4],
    (next, on_segment): (Option<[u8; 4]>, Option<[u8; 6]>),
    sent: Counter,
) -> Counter {
    let Some(inner) = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN) else {
        // The caller parsed this header: only for the verifier.
        return Counter::IpipNoRoom;
    };
    // SAFETY: ptr_at checked the bounds; copied out before the frame moves.
    let (tos, dont_fragment) = unsafe { ((*inner).tos, (*inner).frags[0] & DONT_FRAGMENT != 0) };
    let inner_len = packet.l4_offset - EthHdr::LEN + packet.l4_len;
    let overhead = if next.is_some() { 2 } else { 1 } * Ipv4Hdr::LEN;
    let outer_len = (inner_len + overhead) as u16;
    let lb = LB_ADDR.load();
    let hop = match hop_toward(
        ctx,
        packet,
        (lb, backend),
        (outer_len, overhead),
        on_segment,
    ) {
        Ok(hop) => hop,
        // Wrapped once there, second chance or not.
        Err(Resolve::TooBig { .. }) if on_segment.is_none() && gso::is_super_packet(ctx) => {
            return gso::hand_over(ctx, packet, lb, backend);
        }
        Err(Resolve::TooBig { mtu }) if dont_fragment => {
            return too_big(ctx, packet.src, mtu.saturating_sub(overhead as u16));
        }
        Err(Resolve::TooBig { .. }) => return Counter::IpipTooBigDropped,
        Err(Resolve::NoNextHop) => return Counter::IpipNoNextHop,
    };
    // SAFETY: a negative delta grows the headroom; the helper checks it.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(overhead as i32)) } != 0 {
        return Counter::IpipNoRoom;
    }
    let Some(eth) = ptr_at::<[u8; EthHdr::LEN]>(ctx, 0) else {
        return Counter::IpipNoRoom;
    };
    // SAFETY: ptr_at checked the bounds; XDP packets are writable.
    let eth = unsafe { &mut *eth.cast_mut() };
    eth[..6].copy_from_slice(&hop.dmac);
    eth[6..12].copy_from_slice(&hop.smac);
    eth[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    // One buffer for both headers: the program's stack is tight.
    let mut header = ipv4_header(tos, outer_len, dont_fragment, IPPROTO_IPIP, lb, backend);
    if !put_header(ctx, EthHdr::LEN, &header) {
        return Counter::IpipNoRoom;
    }
    if let Some(next) = next {
        let len = outer_len - Ipv4Hdr::LEN as u16;
        header = ipv4_header(tos, len, dont_fragment, IPPROTO_IPIP, lb, next);
        if !put_header(ctx, EthHdr::LEN + Ipv4Hdr::LEN, &header) {
            return Counter::IpipNoRoom;
        }
    }
    sent
}

/// Writes an IPv4 header at `offset` of the frame; false past its end.
#[inline(always)]
fn put_header(ctx: &XdpContext, offset: usize, header: &[u8; Ipv4Hdr::LEN]) -> bool {
    let Some(at) = ptr_at::<[u8; Ipv4Hdr::LEN]>(ctx, offset) else {
        return false;
    };
    // SAFETY: ptr_at checked the bounds; XDP packets are writable.
    unsafe { *at.cast_mut() = *header };
    true
}

/// Where an outer packet of `outer_len` bytes from `lb` to `backend`
/// (`overhead` bytes of outer headers) goes:
/// straight to `on_segment` (the MAC of a backend on the LB's segment, for
/// a second chance, which no FIB or neighbour entry of the LB's knows)
/// if the interface's MTU takes it, else to the next hop the cache or the
/// kernel's FIB gives.
#[inline(always)]
fn hop_toward(
    ctx: &XdpContext,
    packet: &Ipv4Packet,
    (lb, backend): ([u8; 4], [u8; 4]),
    (outer_len, overhead): (u16, usize),
    on_segment: Option<[u8; 6]>,
) -> Result<NextHop, Resolve> {
    if let Some(dmac) = on_segment {
        let mut mtu = 0u32;
        // SAFETY: the context's own packet; the helper checks the rest.
        let result = unsafe { bpf_check_mtu(ctx.as_ptr(), 0, &mut mtu, overhead as i32, 0) };
        if result != 0 {
            return Err(Resolve::TooBig { mtu: mtu as u16 });
        }
        return Ok(NextHop {
            resolved_ns: 0,
            dmac,
            smac: LB_MAC.load(),
            fits: outer_len,
            _pad: [0; 2],
        });
    }
    // The coarse clock (a tick or two behind) is enough to age a 100 ms
    // cache, and costs a fraction of the fine one on every packet.
    let now = clock::coarse_ns();
    // SAFETY: a plain value written only by XDP; copied out at once.
    match unsafe { NEXT_HOPS.get(&backend) }.copied() {
        Some(hop)
            if now.wrapping_sub(hop.resolved_ns) < CACHE_COARSE_NS && outer_len <= hop.fits =>
        {
            Ok(hop)
        }
        _ => resolve(ctx, packet, lb, backend, outer_len, now),
    }
}

/// The cache's age limit on the coarse clock: its most lag short of
/// `NEXT_HOP_CACHE_NS`, so that an entry is never used once it is really
/// that old, whatever the lag of the two readings.
const CACHE_COARSE_NS: u64 = NEXT_HOP_CACHE_NS - COARSE_LAG_MAX_NS;

/// Why the FIB gave no next hop for a packet.
pub enum Resolve {
    /// The packet would exceed the egress MTU (`mtu`) once wrapped.
    TooBig { mtu: u16 },
    /// No usable route or neighbour (recorded for lb-user).
    NoNextHop,
}

/// Asks the kernel's FIB for the next hop toward `backend` of an outer
/// packet of `outer_len` bytes from `lb`, and caches the answer.
#[inline(always)]
fn resolve(
    ctx: &XdpContext,
    packet: &Ipv4Packet,
    lb: [u8; 4],
    backend: [u8; 4],
    outer_len: u16,
    now: u64,
) -> Result<NextHop, Resolve> {
    let hop = next_hop(ctx, packet, lb, backend, outer_len, now)?;
    // A full LRU evicts its oldest entry; a failed insert costs a lookup.
    let _ = NEXT_HOPS.insert(&backend, &hop, 0);
    Ok(hop)
}

/// The next hop toward `backend` from the kernel's FIB for an outer
/// packet of `outer_len` bytes from `lb` (a length of 0 skips the MTU
/// check), stamped `now`.
#[inline(always)]
pub fn next_hop(
    ctx: &XdpContext,
    packet: &Ipv4Packet,
    lb: [u8; 4],
    backend: [u8; 4],
    outer_len: u16,
    now: u64,
) -> Result<NextHop, Resolve> {
    // SAFETY: all-zero is a valid value of this plain C struct.
    let mut fib: FibLookup = unsafe { zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = packet.proto;
    fib.__bindgen_anon_1.tot_len = outer_len;
    // As if the LB's own stack sent it out of this interface: no
    // forwarding sysctl is involved, and the egress MTU is checked.
    fib.ifindex = ctx.ingress_ifindex() as u32;
    fib.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(lb);
    fib.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(backend);
    // SAFETY: `fib` is a valid bpf_fib_lookup of the size passed.
    let result = unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            &mut fib,
            size_of::<FibLookup>() as i32,
            BPF_FIB_LOOKUP_OUTPUT,
        )
    };
    match result as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {}
        BPF_FIB_LKUP_RET_FRAG_NEEDED => {
            // SAFETY: the kernel wrote the union's MTU member.
            let mtu = unsafe { fib.__bindgen_anon_1.mtu_result };
            return Err(Resolve::TooBig { mtu });
        }
        other => {
            record_error(backend, other);
            return Err(Resolve::NoNextHop);
        }
    }
    // SAFETY: the kernel wrote the MAC members on success.
    let (smac, dmac) = unsafe {
        (
            fib.__bindgen_anon_6.__bindgen_anon_2.smac,
            fib.__bindgen_anon_6.__bindgen_anon_2.dmac,
        )
    };
    Ok(NextHop {
        resolved_ns: now,
        dmac,
        smac,
        fits: outer_len,
        _pad: [0; 2],
    })
}

/// An option-free IPv4 header with its checksum.
#[inline(always)]
pub fn ipv4_header(
    tos: u8,
    total_len: u16,
    dont_fragment: bool,
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
) -> [u8; Ipv4Hdr::LEN] {
    let [len_hi, len_lo] = total_len.to_be_bytes();
    let flags = if dont_fragment { DONT_FRAGMENT } else { 0 };
    let mut header = [
        0x45, tos, len_hi, len_lo, 0, 0, flags, 0, OUTER_TTL, proto, 0, 0, src[0], src[1], src[2],
        src[3], dst[0], dst[1], dst[2], dst[3],
    ];
    let sum = internet_checksum(&header).to_be_bytes();
    header[10] = sum[0];
    header[11] = sum[1];
    header
}

/// Turns the frame into an ICMP "fragmentation needed" to `client`,
/// quoting its IP header and 8 bytes, with the MTU left once wrapped
/// (`usable`).
#[inline(always)]
fn too_big(ctx: &XdpContext, client: [u8; 4], usable: u16) -> Counter {
    let frame_len = ctx.data_end() - ctx.data();
    let prepended = Ipv4Hdr::LEN + ICMP_HEADER_LEN;
    // SAFETY: the helpers check their deltas against the frame.
    let resized = unsafe {
        bpf_xdp_adjust_head(ctx.ctx, -(prepended as i32)) == 0
            && bpf_xdp_adjust_tail(
                ctx.ctx,
                TOO_BIG_FRAME_LEN as i32 - (frame_len + prepended) as i32,
            ) == 0
    };
    if !resized {
        return Counter::IpipNoRoom;
    }
    let Some(frame) = ptr_at::<[u8; TOO_BIG_FRAME_LEN]>(ctx, 0) else {
        return Counter::IpipNoRoom;
    };
    // SAFETY: ptr_at checked the bounds; XDP packets are writable.
    let frame = unsafe { &mut *frame.cast_mut() };
    // The old Ethernet header now sits just before the quoted packet.
    let mut old_eth = [0u8; EthHdr::LEN];
    old_eth.copy_from_slice(&frame[prepended..prepended + EthHdr::LEN]);
    frame[..6].copy_from_slice(&old_eth[6..12]);
    frame[6..12].copy_from_slice(&old_eth[..6]);
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let icmp_len = ICMP_HEADER_LEN + QUOTED_LEN;
    let header = ipv4_header(
        0,
        (Ipv4Hdr::LEN + icmp_len) as u16,
        false,
        IPPROTO_ICMP,
        LB_ADDR.load(),
        client,
    );
    frame[EthHdr::LEN..EthHdr::LEN + Ipv4Hdr::LEN].copy_from_slice(&header);
    let usable = usable.to_be_bytes();
    let mut icmp = [0u8; ICMP_HEADER_LEN + QUOTED_LEN];
    icmp.copy_from_slice(&frame[EthHdr::LEN + Ipv4Hdr::LEN..]);
    icmp[..ICMP_HEADER_LEN].copy_from_slice(&[
        ICMP_UNREACHABLE,
        ICMP_FRAG_NEEDED,
        0,
        0,
        0,
        0,
        usable[0],
        usable[1],
    ]);
    let sum = internet_checksum(&icmp).to_be_bytes();
    icmp[2] = sum[0];
    icmp[3] = sum[1];
    frame[EthHdr::LEN + Ipv4Hdr::LEN..].copy_from_slice(&icmp);
    Counter::IpipTooBig
}

/// Remembers that the FIB gave no next hop toward `backend`, and why.
#[inline(always)]
fn record_error(backend: [u8; 4], result: u32) {
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let drops = NEXT_HOP_ERRORS
        .get_ptr(&backend)
        // SAFETY: a valid pointer into the map's value; read at once.
        .map_or(0, |e| unsafe { (*e).drops });
    let error = NextHopError {
        last_ns: now,
        result,
        drops: drops.saturating_add(1),
    };
    // A full LRU evicts the oldest: lb-user has reported it by then.
    let _ = NEXT_HOP_ERRORS.insert(&backend, &error, 0);
}
