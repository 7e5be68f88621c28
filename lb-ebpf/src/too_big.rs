//! The answer to a client's packet too big once wrapped (protocol §7,
//! §9): XDP cannot fragment, so the frame turns into an ICMP error back to
//! the client, quoting its IP header and the first 8 bytes after it, with
//! the MTU left once wrapped. An IPv4 client (DF set) gets "fragmentation
//! needed", an IPv6 one a Packet Too Big (IPv6 routers never fragment).
use aya_ebpf::{
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{
    Counter,
    mld::IPPROTO_ICMPV6,
    wire::{icmpv6_checksum, internet_checksum},
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

use crate::{
    ipip::{IPPROTO_IPIP, Inner, OUTER_TTL, ipv4_header},
    maps::{lb_addr, lb_addr6},
    parse::ptr_at,
};

const IPPROTO_ICMP: u8 = 1;
/// ICMP "destination unreachable", code "fragmentation needed and DF set".
const ICMP_UNREACHABLE: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
/// ICMPv6 Packet Too Big (RFC 4443 3.2), code 0.
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
const ICMP_HEADER_LEN: usize = 8;
/// What an answer quotes after the offending packet's IP header (no
/// options or extension headers reach this path): enough for the
/// client's stack to find its socket (RFC 792).
const QUOTED_PAYLOAD: usize = 8;
const ICMP4_LEN: usize = ICMP_HEADER_LEN + Ipv4Hdr::LEN + QUOTED_PAYLOAD;
const ICMP6_LEN: usize = ICMP_HEADER_LEN + Ipv6Hdr::LEN + QUOTED_PAYLOAD;
const ICMP4_FRAME_LEN: usize = EthHdr::LEN + Ipv4Hdr::LEN + ICMP4_LEN;
const ICMP6_FRAME_LEN: usize = EthHdr::LEN + Ipv6Hdr::LEN + ICMP6_LEN;

/// Turns the frame of `inner` into the ICMP answer of its family, with
/// the MTU left once wrapped (`usable`), back to where it came from.
///
/// Not inlined (a rare path): its own stack frame keeps the programs
/// within the verifier's 512 bytes.
#[inline(never)]
pub fn answer(ctx: &XdpContext, inner: &Inner, usable: u16) -> Counter {
    let answered = if inner.proto == IPPROTO_IPIP {
        fragmentation_needed(ctx, usable)
    } else {
        packet_too_big(ctx, usable)
    };
    if answered.is_some() {
        Counter::IpipTooBig
    } else {
        Counter::IpipNoRoom
    }
}

/// An ICMP "fragmentation needed" from the LB's address.
#[inline(always)]
fn fragmentation_needed(ctx: &XdpContext, usable: u16) -> Option<()> {
    const IP_AT: usize = EthHdr::LEN;
    const ICMP_AT: usize = IP_AT + Ipv4Hdr::LEN;
    const CLIENT_AT: usize = ICMP_AT + ICMP_HEADER_LEN + 12;
    let frame = reshape::<ICMP4_FRAME_LEN>(ctx, Ipv4Hdr::LEN, 0x0800)?;
    let mut client = [0u8; 4];
    client.copy_from_slice(&frame[CLIENT_AT..CLIENT_AT + 4]);
    let header = ipv4_header(
        0,
        (Ipv4Hdr::LEN + ICMP4_LEN) as u16,
        false,
        IPPROTO_ICMP,
        lb_addr(),
        client,
    );
    frame[IP_AT..ICMP_AT].copy_from_slice(&header);
    // Built on the stack: a loop over packet memory is more than the
    // verifier follows.
    let mut icmp = [0u8; ICMP4_LEN];
    icmp.copy_from_slice(&frame[ICMP_AT..]);
    let [mtu_hi, mtu_lo] = usable.to_be_bytes();
    icmp[..ICMP_HEADER_LEN].copy_from_slice(&[
        ICMP_UNREACHABLE,
        ICMP_FRAG_NEEDED,
        0,
        0,
        0,
        0,
        mtu_hi,
        mtu_lo,
    ]);
    let sum = internet_checksum(&icmp).to_be_bytes();
    icmp[2..4].copy_from_slice(&sum);
    frame[ICMP_AT..].copy_from_slice(&icmp);
    Some(())
}

/// An ICMPv6 Packet Too Big from the LB's IPv6 address.
#[inline(always)]
fn packet_too_big(ctx: &XdpContext, usable: u16) -> Option<()> {
    const IP_AT: usize = EthHdr::LEN;
    const ICMP_AT: usize = IP_AT + Ipv6Hdr::LEN;
    const CLIENT_AT: usize = ICMP_AT + ICMP_HEADER_LEN + 8;
    let frame = reshape::<ICMP6_FRAME_LEN>(ctx, Ipv6Hdr::LEN, 0x86dd)?;
    let mut addrs = [0u8; 32];
    addrs[..16].copy_from_slice(&lb_addr6());
    addrs[16..].copy_from_slice(&frame[CLIENT_AT..CLIENT_AT + 16]);
    let [len_hi, len_lo] = (ICMP6_LEN as u16).to_be_bytes();
    frame[IP_AT..IP_AT + 8].copy_from_slice(&[
        0x60,
        0,
        0,
        0,
        len_hi,
        len_lo,
        IPPROTO_ICMPV6,
        OUTER_TTL,
    ]);
    frame[IP_AT + 8..ICMP_AT].copy_from_slice(&addrs);
    // Built on the stack, as above.
    let mut icmp = [0u8; ICMP6_LEN];
    icmp.copy_from_slice(&frame[ICMP_AT..]);
    let mtu = u32::from(usable).to_be_bytes();
    icmp[..ICMP_HEADER_LEN].copy_from_slice(&[
        ICMPV6_PACKET_TOO_BIG,
        0,
        0,
        0,
        mtu[0],
        mtu[1],
        mtu[2],
        mtu[3],
    ]);
    let sum = icmpv6_checksum(&addrs, &icmp).to_be_bytes();
    icmp[2..4].copy_from_slice(&sum);
    frame[ICMP_AT..].copy_from_slice(&icmp);
    Some(())
}

/// Makes the frame `LEN` bytes for an answer whose IP header is
/// `ip_len` bytes: room for it and the ICMP header before the old frame's
/// IP packet (the rest cut), the MACs swapped, `ether_type` set.
#[inline(always)]
fn reshape<'a, const LEN: usize>(
    ctx: &XdpContext,
    ip_len: usize,
    ether_type: u16,
) -> Option<&'a mut [u8; LEN]> {
    let frame_len = ctx.data_end() - ctx.data();
    let prepended = ip_len + ICMP_HEADER_LEN;
    // SAFETY: the helpers check their deltas against the frame.
    let resized = unsafe {
        bpf_xdp_adjust_head(ctx.ctx, -(prepended as i32)) == 0
            && bpf_xdp_adjust_tail(ctx.ctx, LEN as i32 - (frame_len + prepended) as i32) == 0
    };
    if !resized {
        return None;
    }
    let frame = ptr_at::<[u8; LEN]>(ctx, 0)?;
    // SAFETY: ptr_at checked the bounds; XDP packets are writable.
    let frame = unsafe { &mut *frame.cast_mut() };
    // The old Ethernet header now sits just before the quoted packet.
    let mut old_eth = [0u8; EthHdr::LEN];
    old_eth.copy_from_slice(&frame[prepended..prepended + EthHdr::LEN]);
    frame[..6].copy_from_slice(&old_eth[6..12]);
    frame[6..12].copy_from_slice(&old_eth[..6]);
    frame[12..14].copy_from_slice(&ether_type.to_be_bytes());
    Some(frame)
}
