//! Bounds-checked packet access and the IPv4 and IPv6 header checks shared
//! by all paths.
use aya_ebpf::programs::XdpContext;
use lb_common::mld::IPPROTO_HOPOPTS;
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

pub use lb_common::{IPPROTO_TCP, IPPROTO_UDP, wire::IPPROTO_IGMP};

/// Largest IPv4 header (IHL 15).
const MAX_IPV4_HEADER: usize = 60;

/// Returns a pointer to a `T` at `offset`, or `None` if it does not fit in
/// the packet. The one bounds check every packet access goes through; the
/// caller names the outcome of a packet too short for it.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

/// The parts of an IPv4 packet the program uses, read once.
pub struct Ipv4Packet {
    pub eth_src: [u8; 6],
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub proto: u8,
    /// Offset of the layer-4 header (after any IP options).
    pub l4_offset: usize,
    /// Bytes after the IP header according to the IP total length.
    pub l4_len: usize,
    /// More-fragments flag or a non-zero fragment offset.
    pub is_fragment: bool,
    /// The header carries IP options.
    pub has_options: bool,
}

impl Ipv4Packet {
    /// `None` for a header that is not IPv4, too short, or longer than the frame.
    #[inline(always)]
    pub fn parse(ctx: &XdpContext, eth: *const EthHdr, ip: *const Ipv4Hdr) -> Option<Self> {
        // SAFETY: both pointers come from ptr_at.
        let (eth, ip) = unsafe { (&*eth, &*ip) };
        let header_len = usize::from(ip.vihl & 0x0f) * 4;
        if ip.vihl >> 4 != 4 || header_len < Ipv4Hdr::LEN {
            return None;
        }
        let total_len = usize::from(u16::from_be_bytes(ip.tot_len));
        let available = ctx.data_end() - ctx.data() - EthHdr::LEN;
        if total_len < header_len || total_len > available {
            return None;
        }
        let frags = u16::from_be_bytes(ip.frags);
        Some(Self {
            eth_src: eth.src_addr,
            src: ip.src_addr,
            dst: ip.dst_addr,
            proto: ip.proto,
            // The mask is for the verifier: it bounds the variable offset of
            // every later packet access.
            l4_offset: EthHdr::LEN + (header_len & MAX_IPV4_HEADER),
            l4_len: total_len - header_len,
            is_fragment: frags & 0x3fff != 0,
            has_options: header_len > Ipv4Hdr::LEN,
        })
    }
}

/// Largest Hop-by-Hop header walked (its length byte counts 8-byte units
/// after the first 8): MLD's is 8 bytes.
const MAX_HOP_BY_HOP: usize = 64;

/// The parts of an IPv6 packet the program uses, read once: the upper
/// layer after the fixed header or one Hop-by-Hop header (MLD always has
/// one, protocol §9); any other extension header is left as the next
/// header, which no IPv6 path takes.
pub struct Ipv6Packet {
    pub eth_src: [u8; 6],
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Next header after the Hop-by-Hop header, if any.
    pub proto: u8,
    pub l4_offset: usize,
    /// Bytes after the extension headers according to the payload length.
    pub l4_len: usize,
    /// A Hop-by-Hop header was walked: the packet has extension headers.
    pub hop_by_hop: bool,
}

/// IPv6 extension headers (RFC 7045's list, with the unassigned
/// experimental 253 and 254), as a next header.
const EXTENSION_HEADERS: [u8; 11] = [0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254];

impl Ipv6Packet {
    /// Whether the packet carries an extension header: a Hop-by-Hop
    /// header (walked) or one left as the next header.
    #[inline(always)]
    pub fn has_extension_headers(&self) -> bool {
        self.hop_by_hop || EXTENSION_HEADERS.contains(&self.proto)
    }

    /// `None` for a header that is not IPv6, a payload length longer than
    /// the frame, or a Hop-by-Hop header that does not fit in it.
    #[inline(always)]
    pub fn parse(ctx: &XdpContext, eth: *const EthHdr, ip: *const Ipv6Hdr) -> Option<Self> {
        // SAFETY: both pointers come from ptr_at.
        let (eth, ip) = unsafe { (&*eth, &*ip) };
        if ip.vcf[0] >> 4 != 6 {
            return None;
        }
        let payload_len = usize::from(u16::from_be_bytes(ip.payload_len));
        let available = ctx.data_end() - ctx.data() - EthHdr::LEN - Ipv6Hdr::LEN;
        if payload_len > available {
            return None;
        }
        let mut packet = Self {
            eth_src: eth.src_addr,
            src: ip.src_addr,
            dst: ip.dst_addr,
            proto: ip.next_hdr,
            l4_offset: EthHdr::LEN + Ipv6Hdr::LEN,
            l4_len: payload_len,
            hop_by_hop: false,
        };
        if packet.proto == IPPROTO_HOPOPTS {
            let hop_by_hop = ptr_at::<[u8; 2]>(ctx, packet.l4_offset)?;
            // SAFETY: ptr_at checked the bounds.
            let [next, units] = unsafe { *hop_by_hop };
            let len = (usize::from(units) + 1) * 8;
            if len > packet.l4_len || len > MAX_HOP_BY_HOP {
                return None;
            }
            packet.proto = next;
            // The mask is for the verifier (len is at most 64 already): it
            // bounds the variable offset of every later packet access.
            packet.l4_offset += len & (2 * MAX_HOP_BY_HOP - 1);
            packet.l4_len -= len;
            packet.hop_by_hop = true;
        }
        Some(packet)
    }
}
