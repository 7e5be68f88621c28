//! The backend agent's decapsulation program (protocol §7, §9): strips
//! the outer header of IP-in-IP (IPv4 with protocol 4 or 41, IPv6 with
//! next header 4 or 41) from an LB the agent learned from a query to this
//! backend's own address, and passes the client's packet (of either
//! family) up to the stack, where the VIP on the loopback accepts it. No
//! tunnel device or module is involved. IP-in-IP to this backend from
//! anyone else is dropped; every other packet is left alone. Each packet
//! moves one counter, whose declaration in lb-common fixes the tc action.
//!
//! A second-chance packet (IP-in-IP from a known LB holding IP-in-IP of
//! the same family from the same LB to another backend) is the LB's way
//! of naming the backend that may hold the connection when this one does
//! not: kept here if this backend has a socket for it (or it opens a
//! connection), else sent on to the named backend with only the first
//! header stripped. What goes on is plain IP-in-IP from the LB, so the
//! next backend strips it and never hands it on again.
//!
//! tc (ingress, attached through a TCX link), not XDP: it runs on every
//! driver with no generic-mode caveat, leaves the interface's XDP hook to
//! others, and a TCX link belongs to the agent's file descriptor, so the
//! program is detached when the agent exits, however it exits.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext,
    bindings::{
        __sk_buff, BPF_F_ADJ_ROOM_DECAP_L3_IPV4, BPF_F_ADJ_ROOM_DECAP_L3_IPV6, BPF_F_CURRENT_NETNS,
        TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
        bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1, bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2,
    },
    btf_maps::{Array, HashMap, PerCpuArray},
    helpers::{bpf_redirect_neigh, bpf_sk_release, bpf_skc_lookup_tcp},
    macros::{btf_map, classifier},
    programs::TcContext,
};
use lb_common::{DecapCounter, IPPROTO_TCP, TcAction};
use lb_ebpf::declare_maps;
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
};

lb_common::decap_maps!(declare_maps);

// lb-common numbers the actions the way the kernel does.
const _: () = assert!(TcAction::Pass as i32 == TC_ACT_OK);
const _: () = assert!(TcAction::Drop as i32 == TC_ACT_SHOT);
const _: () = assert!(TcAction::Redirect as i32 == TC_ACT_REDIRECT);

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;
/// `TCP_LISTEN` (include/net/tcp_states.h): a listener is no connection.
const TCP_LISTEN: u32 = 10;

// Not `pub`: the macro's wrapper takes a raw pointer, which clippy refuses
// in a public function; `no_mangle` exports it all the same.
#[classifier]
fn agent_decap(ctx: TcContext) -> i32 {
    let outcome = classify(&ctx);
    if let Some(slot) = DECAP_COUNTERS.get_ptr_mut(outcome as u32) {
        // SAFETY: per-CPU slot; only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
    if outcome.action() == TcAction::Redirect {
        // Back out of the interface it came in on, toward the next
        // backend's next hop as the kernel's FIB and neighbours give it.
        let skb = ctx.as_ptr().cast::<__sk_buff>();
        // SAFETY: the context's own skb; no parameters (the kernel looks
        // the next hop up itself).
        return unsafe { bpf_redirect_neigh((*skb).ifindex, core::ptr::null_mut(), 0, 0) } as i32;
    }
    outcome.action() as i32
}

fn classify(ctx: &TcContext) -> DecapCounter {
    let Ok(eth) = ctx.load::<EthHdr>(0) else {
        return DecapCounter::NotIpip;
    };
    if eth.ether_type == ETH_P_IP.to_be() {
        classify4(ctx)
    } else if eth.ether_type == ETH_P_IPV6.to_be() {
        classify6(ctx)
    } else {
        DecapCounter::NotIpip
    }
}

/// An IPv4 outer header: protocol 4 (an IPv4 client's packet, or a
/// second chance) or 41 (an IPv6 client's).
fn classify4(ctx: &TcContext) -> DecapCounter {
    let Ok(outer) = ctx.load::<Ipv4Hdr>(EthHdr::LEN) else {
        return DecapCounter::NotIpip;
    };
    if outer.proto != IPPROTO_IPIP && outer.proto != IPPROTO_IPV6 {
        return DecapCounter::NotIpip;
    }
    if DECAP_LOCAL
        .get(0)
        .is_none_or(|local| *local != outer.dst_addr)
    {
        return DecapCounter::NotForUs;
    }
    // SAFETY: a presence check of a plain value that only the agent writes.
    if unsafe { DECAP_LBS.get(&outer.src_addr) }.is_none() {
        return DecapCounter::UnknownSource;
    }
    if !whole_option_free(&outer) {
        return DecapCounter::Malformed;
    }
    let outer_header = (IpFamily::V4, Ipv4Hdr::LEN);
    if outer.proto == IPPROTO_IPV6 {
        return strip_to(ctx, outer_header, IpFamily::V6);
    }
    let Ok(inner) = ctx.load::<Ipv4Hdr>(EthHdr::LEN + Ipv4Hdr::LEN) else {
        return DecapCounter::Malformed;
    };
    if inner.vihl >> 4 != 4 {
        return DecapCounter::Malformed;
    }
    // The LB's header toward the next backend, around the client's
    // packet of either family: a second chance.
    if let Some(client) = wrapped_family(inner.proto) {
        if !whole_option_free(&inner) {
            return DecapCounter::SecondChanceRefused;
        }
        let addrs = [
            (outer.src_addr, outer.dst_addr),
            (inner.src_addr, inner.dst_addr),
        ];
        return second_chance(ctx, outer_header, addrs, client);
    }
    strip_to(ctx, outer_header, IpFamily::V4)
}

/// An IPv6 outer header (protocol §9): next header 41 (an IPv6 client's
/// packet, or a second chance) or 4 (an IPv4 client's).
fn classify6(ctx: &TcContext) -> DecapCounter {
    let Ok(outer) = ctx.load::<Ipv6Hdr>(EthHdr::LEN) else {
        return DecapCounter::NotIpip;
    };
    let Some(inner_family) = wrapped_family(outer.next_hdr) else {
        return DecapCounter::NotIpip;
    };
    if DECAP_LOCAL6
        .get(0)
        .is_none_or(|local| *local != outer.dst_addr)
    {
        return DecapCounter::NotForUs;
    }
    // SAFETY: as for IPv4.
    if unsafe { DECAP_LBS6.get(&outer.src_addr) }.is_none() {
        return DecapCounter::UnknownSource;
    }
    let outer_header = (IpFamily::V6, Ipv6Hdr::LEN);
    if inner_family == IpFamily::V6
        && let Ok(inner) = ctx.load::<Ipv6Hdr>(EthHdr::LEN + Ipv6Hdr::LEN)
        && inner.vcf[0] >> 4 == 6
        && let Some(client) = wrapped_family(inner.next_hdr)
    {
        let addrs = [
            (outer.src_addr, outer.dst_addr),
            (inner.src_addr, inner.dst_addr),
        ];
        return second_chance(ctx, outer_header, addrs, client);
    }
    strip_to(ctx, outer_header, inner_family)
}

/// The family of the packet an outer header wraps.
#[derive(Clone, Copy, PartialEq, Eq)]
enum IpFamily {
    V4,
    V6,
}

/// The family a protocol (next header) of 4 or 41 wraps; `None` for any
/// other.
fn wrapped_family(proto: u8) -> Option<IpFamily> {
    match proto {
        IPPROTO_IPIP => Some(IpFamily::V4),
        IPPROTO_IPV6 => Some(IpFamily::V6),
        _ => None,
    }
}

/// An IPv4 header without options that is no fragment.
fn whole_option_free(header: &Ipv4Hdr) -> bool {
    let is_fragment = u16::from_be_bytes(header.frags) & 0x3fff != 0;
    header.vihl == 0x45 && !is_fragment
}

/// Removes the `outer` header (its family and length: one header, or two
/// of a second chance) before a packet of family `inner` (checked: its
/// version must say so), telling the kernel the family where it changes,
/// and passes it up.
fn strip_to(ctx: &TcContext, outer: (IpFamily, usize), inner: IpFamily) -> DecapCounter {
    if strip(ctx, outer, inner) {
        DecapCounter::Decapsulated
    } else {
        DecapCounter::Malformed
    }
}

/// [`strip_to`]'s work; false if the packet cannot be stripped.
fn strip(ctx: &TcContext, (outer_family, outer_len): (IpFamily, usize), inner: IpFamily) -> bool {
    let Ok(first) = ctx.load::<u8>(EthHdr::LEN + outer_len) else {
        return false;
    };
    let (version, ether_type, flag) = match inner {
        IpFamily::V4 => (4, ETH_P_IP, BPF_F_ADJ_ROOM_DECAP_L3_IPV4),
        IpFamily::V6 => (6, ETH_P_IPV6, BPF_F_ADJ_ROOM_DECAP_L3_IPV6),
    };
    if first >> 4 != version {
        return false;
    }
    let same_family = outer_family == inner;
    let flags = if same_family { 0 } else { u64::from(flag) };
    if ctx
        .adjust_room(-(outer_len as i32), BPF_ADJ_ROOM_MAC, flags)
        .is_err()
    {
        return false;
    }
    // The kernel took the new family from the flag; the MAC header says
    // it too, for whatever reads the frame.
    same_family || ctx.store(12, &ether_type.to_be_bytes(), 0).is_ok()
}

/// A second-chance packet: `outer` (its family and one header's length)
/// from a known LB to this backend, holding the LB's header of the same
/// family to the backend it names next, around a client's packet of
/// family `client`; `addrs` are the two headers' (source, destination).
fn second_chance<A: PartialEq>(
    ctx: &TcContext,
    outer: (IpFamily, usize),
    [(outer_src, outer_dst), (middle_src, middle_dst)]: [(A, A); 2],
    client: IpFamily,
) -> DecapCounter {
    // Only the LB that sent the packet may name the next backend, and
    // never this one (a loop).
    if middle_src != outer_src || middle_dst == outer_dst {
        return DecapCounter::SecondChanceRefused;
    }
    let (family, header_len) = outer;
    let client_at = EthHdr::LEN + 2 * header_len;
    match opens_or_held(ctx, client_at, client) {
        // The LB's IP-in-IP to the next backend, as it would have sent it.
        Some(false) if strip(ctx, outer, family) => DecapCounter::SecondChanceHandedOn,
        Some(true) if strip(ctx, (family, 2 * header_len), client) => {
            DecapCounter::SecondChanceKept
        }
        _ => DecapCounter::SecondChanceRefused,
    }
}

/// Whether the client's packet at `at` (of family `client`) opens a
/// connection (a SYN without ACK), belongs to a socket of this backend's
/// (any state but listening), or is not TCP (kept); `None` if its header
/// cannot be read whole.
fn opens_or_held(ctx: &TcContext, at: usize, client: IpFamily) -> Option<bool> {
    let mut tuple = bpf_sock_tuple {
        __bindgen_anon_1: bpf_sock_tuple__bindgen_ty_1 {
            ipv6: bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2 {
                saddr: [0; 4],
                daddr: [0; 4],
                sport: 0,
                dport: 0,
            },
        },
    };
    let (tcp, size) = match client {
        IpFamily::V4 => {
            let header = ctx.load::<Ipv4Hdr>(at).ok()?;
            if header.proto != IPPROTO_TCP {
                return Some(true);
            }
            let tcp = ctx
                .load::<TcpHdr>(at + usize::from(header.vihl & 0x0f) * 4)
                .ok()?;
            tuple.__bindgen_anon_1.ipv4 = bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 {
                saddr: u32::from_ne_bytes(header.src_addr),
                daddr: u32::from_ne_bytes(header.dst_addr),
                sport: u16::from_ne_bytes(tcp.source),
                dport: u16::from_ne_bytes(tcp.dest),
            };
            (tcp, size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1>())
        }
        IpFamily::V6 => {
            let header = ctx.load::<Ipv6Hdr>(at).ok()?;
            if header.next_hdr != IPPROTO_TCP {
                return Some(true);
            }
            let tcp = ctx.load::<TcpHdr>(at + Ipv6Hdr::LEN).ok()?;
            // SAFETY: 16 bytes either way, network order kept.
            let words =
                |addr: [u8; 16]| unsafe { core::mem::transmute::<[u8; 16], [u32; 4]>(addr) };
            tuple.__bindgen_anon_1.ipv6 = bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2 {
                saddr: words(header.src_addr),
                daddr: words(header.dst_addr),
                sport: u16::from_ne_bytes(tcp.source),
                dport: u16::from_ne_bytes(tcp.dest),
            };
            (tcp, size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2>())
        }
    };
    if tcp.syn() != 0 && tcp.ack() == 0 {
        return Some(true);
    }
    // SAFETY: the context's own skb and a tuple on the stack of `size`
    // bytes; the socket found is released before return.
    unsafe {
        let sock = bpf_skc_lookup_tcp(
            ctx.as_ptr(),
            &raw mut tuple,
            size as u32,
            BPF_F_CURRENT_NETNS as u64,
            0,
        );
        if sock.is_null() {
            return Some(false);
        }
        let listening = (*sock).state == TCP_LISTEN;
        bpf_sk_release(sock.cast());
        Some(!listening)
    }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
