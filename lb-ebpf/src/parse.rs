//! Bounds-checked packet access and the IPv4 header checks shared by all paths.
use aya_ebpf::programs::XdpContext;
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

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
