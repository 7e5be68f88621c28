//! IP-in-IP forwarding (protocol §7, §9): direct server return across
//! routers. The client's packet (either family) is wrapped in an outer
//! header of the backend's family from the LB's address of that family to
//! the backend (IPv4 with protocol 4 or 41, IPv6 with next header 4 or 41)
//! and sent to the next hop the kernel's FIB gives for the backend; the
//! backend's agent strips the header. A packet that would not fit the
//! egress MTU once wrapped is answered (`too_big`) or, IPv4 without DF,
//! dropped: XDP cannot fragment. A packet longer than the interface's MTU
//! is no wire frame but a GSO super-packet (XDP in generic mode sees them
//! whole): it goes to the GSO program (`gso`).
use core::mem::{size_of, zeroed};

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_OUTPUT,
        bpf_fib_lookup as FibLookup,
    },
    helpers::{bpf_check_mtu, bpf_fib_lookup, bpf_ktime_get_ns, bpf_xdp_adjust_head},
    programs::XdpContext,
};
use lb_common::{
    COARSE_LAG_MAX_NS, Counter, NEXT_HOP_CACHE_NS, NextHop, NextHopError,
    addr::{mapped, unmapped},
    wire::internet_checksum,
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

use crate::{
    clock, gso,
    maps::{NEXT_HOP_ERRORS, NEXT_HOP_ERRORS6, NEXT_HOPS, NEXT_HOPS6, lb_addr, lb_addr6, lb_mac},
    parse::{Ipv4Packet, Ipv6Packet, ptr_at},
    too_big,
};

/// The FIB lookup's address families.
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// IP protocol numbers (IPv6 next headers) of what an outer header wraps.
pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_IPV6: u8 = 41;
/// The DF bit of the IPv4 flags (first byte of the fragment field).
pub const DONT_FRAGMENT: u8 = 0x40;
/// The outer header's TTL or hop limit.
pub const OUTER_TTL: u8 = 64;

/// The client's packet as its outer header and the FIB need it.
#[derive(Clone, Copy)]
pub struct Inner {
    /// Bytes of the client's IP packet, header and payload.
    pub len: usize,
    /// Its TOS or traffic class, copied to the outer header.
    pub tos: u8,
    /// IPv4's DF; always set for IPv6, which routers never fragment.
    pub dont_fragment: bool,
    /// Its family as an outer header names it: `IPPROTO_IPIP` or
    /// `IPPROTO_IPV6`.
    pub proto: u8,
    /// Its transport protocol, for the FIB's policy rules.
    pub l4_proto: u8,
}

impl Inner {
    /// An IPv4 client's packet (`packet`, parsed without options).
    #[inline(always)]
    pub fn of_ipv4(ctx: &XdpContext, packet: &Ipv4Packet) -> Option<Self> {
        // The caller parsed this header: only for the verifier.
        let header = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN)?;
        // SAFETY: ptr_at checked the bounds; copied out before the frame moves.
        let (tos, frags) = unsafe { ((*header).tos, (*header).frags[0]) };
        Some(Self {
            len: packet.l4_offset - EthHdr::LEN + packet.l4_len,
            tos,
            dont_fragment: frags & DONT_FRAGMENT != 0,
            proto: IPPROTO_IPIP,
            l4_proto: packet.proto,
        })
    }

    /// An IPv6 client's packet (`packet`, without extension headers).
    #[inline(always)]
    pub fn of_ipv6(ctx: &XdpContext, packet: &Ipv6Packet) -> Option<Self> {
        // The caller parsed this header: only for the verifier.
        let header = ptr_at::<[u8; 2]>(ctx, EthHdr::LEN)?;
        // SAFETY: ptr_at checked the bounds; a copy.
        let [first, second] = unsafe { *header };
        Some(Self {
            len: Ipv6Hdr::LEN + packet.l4_len,
            tos: (first << 4) | (second >> 4),
            dont_fragment: true,
            proto: IPPROTO_IPV6,
            l4_proto: packet.proto,
        })
    }
}

/// An outer header's family: IPv4 toward an IPv4 backend, IPv6 toward an
/// IPv6 one (protocol §9), with its next-hop cache and error record.
pub trait Outer: Copy + 'static {
    const HEADER_LEN: usize;
    const ETHER_TYPE: u16;
    /// The outer protocol of a header that wraps another of this family.
    const PROTO: u8;
    /// The LB's address of this family.
    fn lb() -> Self;
    /// This backend's cached next hop, copied out.
    fn cached_hop(&self) -> Option<NextHop>;
    fn cache_hop(&self, hop: &NextHop);
    /// The backend's record of next-hop errors, if any.
    fn errors(&self) -> Option<*mut NextHopError>;
    fn record(&self, error: &NextHopError);
    /// Fills the FIB lookup's family and addresses.
    fn fib_addresses(fib: &mut FibLookup, src: Self, dst: Self);
    /// Writes an outer header at `offset` of the frame, of an outer packet
    /// of `outer_len` bytes wrapping `inner_proto`; false past its end.
    fn put_header(
        ctx: &XdpContext,
        offset: usize,
        inner: &Inner,
        lengths: (u16, u8),
        addrs: (Self, Self),
    ) -> bool;
    /// The 16-byte form (IPv4-mapped for IPv4).
    fn addr16(self) -> [u8; 16];
    /// The address of this family a 16-byte form names, if any (all zero
    /// names none).
    fn of16(addr: &[u8; 16]) -> Option<Self>;
}

/// The methods of [`Outer`] that read and write the family's LB address,
/// next-hop cache and error record: the same code over each family's maps.
macro_rules! family_maps {
    ($lb:expr, $hops:ident, $errors:ident) => {
        #[inline(always)]
        fn lb() -> Self {
            $lb
        }
        #[inline(always)]
        fn cached_hop(&self) -> Option<NextHop> {
            // SAFETY: a plain value written only by XDP; copied out at once.
            unsafe { $hops.get(self) }.copied()
        }
        #[inline(always)]
        fn cache_hop(&self, hop: &NextHop) {
            // A full LRU evicts its oldest entry; a failed insert costs a
            // lookup.
            let _ = $hops.insert(self, hop, 0);
        }
        #[inline(always)]
        fn errors(&self) -> Option<*mut NextHopError> {
            $errors.get_ptr_mut(self)
        }
        #[inline(always)]
        fn record(&self, error: &NextHopError) {
            // A full LRU evicts the oldest: lb-user has reported it by then.
            let _ = $errors.insert(self, error, 0);
        }
    };
}

impl Outer for [u8; 4] {
    const HEADER_LEN: usize = Ipv4Hdr::LEN;
    const ETHER_TYPE: u16 = 0x0800;
    const PROTO: u8 = IPPROTO_IPIP;
    family_maps!(lb_addr(), NEXT_HOPS, NEXT_HOP_ERRORS);
    #[inline(always)]
    fn fib_addresses(fib: &mut FibLookup, src: Self, dst: Self) {
        fib.family = AF_INET;
        fib.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(src);
        fib.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(dst);
    }
    #[inline(always)]
    fn put_header(
        ctx: &XdpContext,
        offset: usize,
        inner: &Inner,
        (outer_len, inner_proto): (u16, u8),
        (src, dst): (Self, Self),
    ) -> bool {
        let Some(at) = ptr_at::<[u8; Ipv4Hdr::LEN]>(ctx, offset) else {
            return false;
        };
        let header = ipv4_header(
            inner.tos,
            outer_len,
            inner.dont_fragment,
            inner_proto,
            src,
            dst,
        );
        // SAFETY: ptr_at checked the bounds; XDP packets are writable.
        unsafe { *at.cast_mut() = header };
        true
    }
    #[inline(always)]
    fn addr16(self) -> [u8; 16] {
        mapped(self)
    }
    #[inline(always)]
    fn of16(addr: &[u8; 16]) -> Option<Self> {
        unmapped(addr).filter(|a| *a != [0; 4])
    }
}

impl Outer for [u8; 16] {
    const HEADER_LEN: usize = Ipv6Hdr::LEN;
    const ETHER_TYPE: u16 = 0x86dd;
    const PROTO: u8 = IPPROTO_IPV6;
    family_maps!(lb_addr6(), NEXT_HOPS6, NEXT_HOP_ERRORS6);
    #[inline(always)]
    fn fib_addresses(fib: &mut FibLookup, src: Self, dst: Self) {
        fib.family = AF_INET6;
        // SAFETY: 16 bytes either way; the kernel reads them in network order.
        unsafe {
            fib.__bindgen_anon_3.ipv6_src = core::mem::transmute::<[u8; 16], [u32; 4]>(src);
            fib.__bindgen_anon_4.ipv6_dst = core::mem::transmute::<[u8; 16], [u32; 4]>(dst);
        }
    }
    #[inline(always)]
    fn put_header(
        ctx: &XdpContext,
        offset: usize,
        inner: &Inner,
        (outer_len, inner_proto): (u16, u8),
        (src, dst): (Self, Self),
    ) -> bool {
        let Some(at) = ptr_at::<[u8; Ipv6Hdr::LEN]>(ctx, offset) else {
            return false;
        };
        // SAFETY: ptr_at checked the bounds; XDP packets are writable.
        let header = unsafe { &mut *at.cast_mut() };
        // Written in place, not built on the stack and copied: the wrap
        // program's frame is tight.
        header[..8].copy_from_slice(&ipv6_fixed(
            inner.tos,
            outer_len - Ipv6Hdr::LEN as u16,
            inner_proto,
        ));
        header[8..24].copy_from_slice(&src);
        header[24..].copy_from_slice(&dst);
        true
    }
    #[inline(always)]
    fn addr16(self) -> [u8; 16] {
        self
    }
    #[inline(always)]
    fn of16(addr: &[u8; 16]) -> Option<Self> {
        (*addr != [0; 16] && unmapped(addr).is_none()).then_some(*addr)
    }
}

/// Wraps the client's packet (`inner`) for `backend` in an outer header of
/// the backend's family and sends it to the next hop, counted as `sent`.
/// With `next` (a second chance, protocol §7) it is wrapped twice: the
/// inner header, from the LB to `next`, names the backend to pass it to
/// when `backend` holds no such connection.
#[inline(always)]
pub fn forward<A: Outer>(
    ctx: &XdpContext,
    inner: &Inner,
    backend: A,
    (next, on_segment): (Option<A>, Option<[u8; 6]>),
    sent: Counter,
) -> Counter {
    let overhead = if next.is_some() { 2 } else { 1 } * A::HEADER_LEN;
    let outer_len = (inner.len + overhead) as u16;
    let hop = match hop_toward(
        ctx,
        inner.l4_proto,
        backend,
        (outer_len, overhead),
        on_segment,
    ) {
        Ok(hop) => hop,
        // Wrapped once there, second chance or not.
        Err(Resolve::TooBig { .. }) if on_segment.is_none() && gso::is_super_packet(ctx) => {
            return gso::hand_over(ctx, inner, backend);
        }
        Err(Resolve::TooBig { mtu }) if inner.dont_fragment => {
            return too_big::answer(ctx, inner, mtu.saturating_sub(overhead as u16));
        }
        Err(Resolve::TooBig { .. }) => return Counter::IpipTooBigDropped,
        Err(Resolve::NoNextHop { result }) => {
            record_error(backend, result);
            return Counter::IpipNoNextHop;
        }
    };
    let headers = Headers {
        inner: *inner,
        outer_len,
        backend,
        next,
        dmac: hop.dmac,
        smac: hop.smac,
    };
    let wrapped = if A::HEADER_LEN == Ipv6Hdr::LEN {
        put_headers_out_of_line(ctx, &headers)
    } else {
        put_headers(ctx, &headers)
    };
    if wrapped { sent } else { Counter::IpipNoRoom }
}

/// The outer headers of a packet [`forward`] sends: the client's packet,
/// the outer packet's length, the backend, the next backend (a second
/// chance) and the MACs of the hop.
struct Headers<A> {
    inner: Inner,
    outer_len: u16,
    backend: A,
    next: Option<A>,
    dmac: [u8; 6],
    smac: [u8; 6],
}

/// Grows the frame by the outer headers and writes them and the new MAC
/// header; false if the frame cannot grow.
#[inline(always)]
fn put_headers<A: Outer>(ctx: &XdpContext, headers: &Headers<A>) -> bool {
    let overhead = usize::from(headers.outer_len) - headers.inner.len;
    // SAFETY: a negative delta grows the headroom; the helper checks it.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(overhead as i32)) } != 0 {
        return false;
    }
    let Some(eth) = ptr_at::<[u8; EthHdr::LEN]>(ctx, 0) else {
        return false;
    };
    // SAFETY: ptr_at checked the bounds; XDP packets are writable.
    let eth = unsafe { &mut *eth.cast_mut() };
    eth[..6].copy_from_slice(&headers.dmac);
    eth[6..12].copy_from_slice(&headers.smac);
    eth[12..14].copy_from_slice(&A::ETHER_TYPE.to_be_bytes());
    let (inner, outer_len, lb) = (&headers.inner, headers.outer_len, A::lb());
    let Some(next) = headers.next else {
        return A::put_header(
            ctx,
            EthHdr::LEN,
            inner,
            (outer_len, inner.proto),
            (lb, headers.backend),
        );
    };
    let middle_len = outer_len - A::HEADER_LEN as u16;
    A::put_header(
        ctx,
        EthHdr::LEN,
        inner,
        (outer_len, A::PROTO),
        (lb, headers.backend),
    ) && A::put_header(
        ctx,
        EthHdr::LEN + A::HEADER_LEN,
        inner,
        (middle_len, inner.proto),
        (lb, next),
    )
}

/// [`put_headers`] in a stack frame of its own, for IPv6 outer headers: the
/// wrap program's frame with its 16-byte addresses inline left no room
/// for the calls of the next-hop phase.
#[inline(never)]
fn put_headers_out_of_line<A: Outer>(ctx: &XdpContext, headers: &Headers<A>) -> bool {
    put_headers(ctx, headers)
}

/// Where an outer packet of `outer_len` bytes from the LB to `backend`
/// (`overhead` bytes of outer headers, around a `l4_proto` packet) goes:
/// straight to `on_segment` (the MAC of a backend on the LB's segment, for
/// a second chance, which no FIB or neighbour entry of the LB's knows)
/// if the interface's MTU takes it, else to the next hop the cache or the
/// kernel's FIB gives.
#[inline(always)]
fn hop_toward<A: Outer>(
    ctx: &XdpContext,
    l4_proto: u8,
    backend: A,
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
            smac: lb_mac(),
            fits: outer_len,
            _pad: [0; 2],
        });
    }
    // The coarse clock (a tick or two behind) is enough to age a 100 ms
    // cache, and costs a fraction of the fine one on every packet.
    let now = clock::coarse_ns();
    match backend.cached_hop() {
        Some(hop)
            if now.wrapping_sub(hop.resolved_ns) < CACHE_COARSE_NS && outer_len <= hop.fits =>
        {
            Ok(hop)
        }
        _ => resolve(ctx, l4_proto, backend, outer_len),
    }
}

/// Asks the kernel's FIB for the next hop toward `backend` of an outer
/// packet of `outer_len` bytes from the LB, and caches the answer.
///
/// Not inlined (once per backend and 100 ms): its own stack frame keeps
/// the programs within the verifier's 512 bytes. (At most five arguments
/// with the result's pointer: the kernel takes no more.)
#[inline(never)]
fn resolve<A: Outer>(
    ctx: &XdpContext,
    l4_proto: u8,
    backend: A,
    outer_len: u16,
) -> Result<NextHop, Resolve> {
    let hop = next_hop(
        ctx,
        l4_proto,
        (A::lb(), backend),
        outer_len,
        clock::coarse_ns(),
    )?;
    backend.cache_hop(&hop);
    Ok(hop)
}

/// The cache's age limit on the coarse clock: its most lag short of
/// `NEXT_HOP_CACHE_NS`, so that an entry is never used once it is really
/// that old, whatever the lag of the two readings.
const CACHE_COARSE_NS: u64 = NEXT_HOP_CACHE_NS - COARSE_LAG_MAX_NS;

/// Why the FIB gave no next hop for a packet.
pub enum Resolve {
    /// The packet would exceed the egress MTU (`mtu`) once wrapped.
    TooBig { mtu: u16 },
    /// No usable route or neighbour (`BPF_FIB_LKUP_RET_*` code
    /// `result`, recorded for lb-user). A field of its own: a variant
    /// without one would leave the other's bytes undefined across
    /// `resolve`'s return, which the verifier refuses.
    NoNextHop { result: u32 },
}

/// The next hop toward `backend` from the kernel's FIB for an outer
/// packet of `outer_len` bytes from `lb` around a `l4_proto` packet (a
/// length of 0 skips the MTU check), stamped `now`.
#[inline(always)]
pub fn next_hop<A: Outer>(
    ctx: &XdpContext,
    l4_proto: u8,
    (lb, backend): (A, A),
    outer_len: u16,
    now: u64,
) -> Result<NextHop, Resolve> {
    // SAFETY: all-zero is a valid value of this plain C struct.
    let mut fib: FibLookup = unsafe { zeroed() };
    A::fib_addresses(&mut fib, lb, backend);
    fib.l4_protocol = l4_proto;
    fib.__bindgen_anon_1.tot_len = outer_len;
    // As if the LB's own stack sent it out of this interface: the egress
    // MTU is checked.
    fib.ifindex = ctx.ingress_ifindex() as u32;
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
        other => return Err(Resolve::NoNextHop { result: other }),
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

/// An IPv6 header without a flow label.
#[inline(always)]
pub fn ipv6_header(
    traffic_class: u8,
    payload_len: u16,
    next_header: u8,
    src: [u8; 16],
    dst: [u8; 16],
) -> [u8; Ipv6Hdr::LEN] {
    let mut header = [0u8; Ipv6Hdr::LEN];
    header[..8].copy_from_slice(&ipv6_fixed(traffic_class, payload_len, next_header));
    header[8..24].copy_from_slice(&src);
    header[24..].copy_from_slice(&dst);
    header
}

/// The first 8 bytes of an IPv6 header (before its addresses), without a
/// flow label.
#[inline(always)]
fn ipv6_fixed(traffic_class: u8, payload_len: u16, next_header: u8) -> [u8; 8] {
    let [len_hi, len_lo] = payload_len.to_be_bytes();
    [
        0x60 | (traffic_class >> 4),
        traffic_class << 4,
        0,
        0,
        len_hi,
        len_lo,
        next_header,
        OUTER_TTL,
    ]
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

/// Remembers that the FIB gave no next hop toward `backend`, and why
/// (`result`, a `BPF_FIB_LKUP_RET_*` code), for lb-user.
#[inline(always)]
pub fn record_error<A: Outer>(backend: A, result: u32) {
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let drops = backend
        .errors()
        // SAFETY: a valid pointer into the map's value; read at once.
        .map_or(0, |e| unsafe { (*e).drops });
    let error = NextHopError {
        last_ns: now,
        result,
        drops: drops.saturating_add(1),
    };
    backend.record(&error);
}
