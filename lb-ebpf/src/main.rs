//! XDP fast path: registers backends from their announcements (protocol §4.3) and
//! records IGMP membership reports for group liveness (protocol §4.2). Everything
//! else passes untouched.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "the core atomic types lack read-modify-write on bpfel; see epochs"
)]

mod auth;
mod clock;
mod epochs;
mod events;
mod flows;
mod forwarding;
mod group_records;
mod gso;
mod igmp;
mod ipip;
mod maps;
mod mld;
mod parse;
mod registration;
mod routed;
mod server_list;
mod stats;
mod too_big;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use lb_common::{Action, Counter, FORWARD6_SLOT, IPV6_SLOT, TcAction, vip_filter_bit};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

use crate::parse::{Ipv4Packet, Ipv6Packet, ptr_at};

// lb-common numbers the actions the way the kernel does.
const _: () = assert!(Action::Drop as u32 == xdp_action::XDP_DROP);
const _: () = assert!(Action::Pass as u32 == xdp_action::XDP_PASS);
const _: () = assert!(Action::Tx as u32 == xdp_action::XDP_TX);
const _: () = assert!(TcAction::Pass as i32 == TC_ACT_OK);
const _: () = assert!(TcAction::Drop as i32 == TC_ACT_SHOT);
const _: () = assert!(TcAction::Redirect as i32 == TC_ACT_REDIRECT);

/// Every packet ends in exactly one counter, and the counter's declaration
/// in lb-common fixes the action: parse -> classify -> act, then count.
#[xdp]
pub fn xdp_lb(ctx: XdpContext) -> u32 {
    let outcome = classify(&ctx);
    stats::count(outcome);
    outcome.action() as u32
}

fn classify(ctx: &XdpContext) -> Counter {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Counter::Malformed;
    };
    // SAFETY: ptr_at checked that the header lies inside the packet.
    let ether_type = unsafe { (*eth).ether_type };
    if ether_type != (0x0800u16).to_be() {
        if ether_type == (0x86ddu16).to_be() {
            // IPv6 goes on in programs of its own (below), with their own
            // stacks: the verifier allows 512 bytes along a call chain and
            // the IPv4 paths take most of them. The VIP filter, read off
            // the destination's last two bytes in place, picks forwarding
            // or registration. A tail call returns only if the slot is
            // empty.
            let maybe_vip = ptr_at::<[u8; 2]>(ctx, EthHdr::LEN + Ipv6Hdr::LEN - 2)
                // SAFETY: ptr_at checked the bounds.
                .is_some_and(|low| may_be_vip(unsafe { *low }));
            let slot = if maybe_vip { FORWARD6_SLOT } else { IPV6_SLOT };
            // SAFETY: the context and the map are the kernel's.
            unsafe { maps::FAMILY_PROGRAMS.tail_call(ctx, slot) };
        }
        return Counter::Ignored;
    }
    let Some(packet) =
        ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN).and_then(|ip| Ipv4Packet::parse(ctx, eth, ip))
    else {
        return Counter::Malformed;
    };
    // Most traffic is to no VIP: the filter says so without a hash lookup.
    if may_be_vip([packet.dst[2], packet.dst[3]])
        && let Some(outcome) = forwarding::handle::<[u8; 4]>(ctx, eth.cast_mut(), &packet)
    {
        return outcome;
    }
    match packet.proto {
        parse::IPPROTO_UDP => registration::handle(ctx, &packet),
        parse::IPPROTO_IGMP => igmp::handle(ctx, &packet),
        _ => Counter::Ignored,
    }
}

/// Whether a destination whose last two bytes are `low` may be a VIP:
/// the VIP filter says most are not without a hash lookup.
#[inline(always)]
fn may_be_vip(low: [u8; 2]) -> bool {
    maps::VIP_FILTER
        .get(0)
        .is_some_and(|filter| filter & vip_filter_bit(low) != 0)
}

/// The IPv6 half (protocol §9): announcements and MLD reports, counted
/// like the rest. Tail-called by `xdp_lb` (and by `xdp_forward6` for what
/// is no service's), never attached.
#[xdp]
pub fn xdp_lb6(ctx: XdpContext) -> u32 {
    let outcome = classify6(&ctx);
    stats::count(outcome);
    outcome.action() as u32
}

fn classify6(ctx: &XdpContext) -> Counter {
    let Some(packet) = ptr_at::<EthHdr>(ctx, 0).and_then(|eth| {
        ptr_at::<Ipv6Hdr>(ctx, EthHdr::LEN).and_then(|ip| Ipv6Packet::parse(ctx, eth, ip))
    }) else {
        return Counter::Malformed;
    };
    match packet.proto {
        parse::IPPROTO_UDP => registration::handle6(ctx, &packet),
        lb_common::mld::IPPROTO_ICMPV6 => mld::handle(ctx, &packet),
        _ => Counter::Ignored,
    }
}

/// IPv6 clients' packets to VIPs (protocol §9), the packets whose bit the
/// VIP filter sets. Tail-called by `xdp_lb`, never attached.
#[xdp]
pub fn xdp_forward6(ctx: XdpContext) -> u32 {
    let outcome = classify_forward6(&ctx);
    stats::count(outcome);
    outcome.action() as u32
}

fn classify_forward6(ctx: &XdpContext) -> Counter {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Counter::Malformed;
    };
    let Some(packet) =
        ptr_at::<Ipv6Hdr>(ctx, EthHdr::LEN).and_then(|ip| Ipv6Packet::parse(ctx, eth, ip))
    else {
        return Counter::Malformed;
    };
    if let Some(outcome) = forwarding::handle6(ctx, eth.cast_mut(), &packet) {
        return outcome;
    }
    // No service's: the IPv6 half classifies it (a tail call returns only
    // if the slot is empty).
    // SAFETY: the context and the map are the kernel's.
    unsafe { maps::FAMILY_PROGRAMS.tail_call(ctx, IPV6_SLOT) };
    Counter::Ignored
}

/// IPv4 clients' packets to services of IPv6 backends (protocol §9),
/// forwarded with their rows' 16-byte addresses. Tail-called by `xdp_lb`,
/// never attached.
#[xdp]
pub fn xdp_lb4to6(ctx: XdpContext) -> u32 {
    let outcome = classify4to6(&ctx);
    stats::count(outcome);
    outcome.action() as u32
}

fn classify4to6(ctx: &XdpContext) -> Counter {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Counter::Malformed;
    };
    let Some(packet) =
        ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN).and_then(|ip| Ipv4Packet::parse(ctx, eth, ip))
    else {
        return Counter::Malformed;
    };
    // `xdp_lb` found a service here: never `None`, but counted if so.
    forwarding::handle::<[u8; 16]>(ctx, eth.cast_mut(), &packet).unwrap_or(Counter::Ignored)
}

/// IP-in-IP for the programs with 16-byte backend addresses
/// (`xdp_forward6`, `xdp_lb4to6`), on a stack of its own: the packet and
/// the backend they picked (in this CPU's `WRAP_HANDOFFS` slot) go out in
/// an outer header of the backend's family. Tail-called, never attached.
#[xdp]
pub fn xdp_wrap(ctx: XdpContext) -> u32 {
    let outcome = classify_wrap(&ctx);
    stats::count(outcome);
    outcome.action() as u32
}

fn classify_wrap(ctx: &XdpContext) -> Counter {
    // The programs before this one parsed the packet: never `None` (but
    // counted if so).
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Counter::Malformed;
    };
    // SAFETY: ptr_at checked the bounds.
    let inner = if unsafe { (*eth).ether_type } == (0x0800u16).to_be() {
        ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN)
            .and_then(|ip| Ipv4Packet::parse(ctx, eth, ip))
            .and_then(|packet| ipip::Inner::of_ipv4(ctx, &packet))
    } else {
        ptr_at::<Ipv6Hdr>(ctx, EthHdr::LEN)
            .and_then(|ip| Ipv6Packet::parse(ctx, eth, ip))
            .and_then(|packet| ipip::Inner::of_ipv6(ctx, &packet))
    };
    match inner {
        Some(inner) => forwarding::wrap_handed_over(ctx, &inner),
        None => Counter::Malformed,
    }
}

/// The tc half of the IPIP path for GSO super-packets (`gso`), on the
/// interface's ingress where XDP runs in generic mode.
// Not `pub`: the macro's wrapper takes a raw pointer, which clippy refuses
// in a public function; `no_mangle` exports it all the same.
#[classifier]
fn lb_gso(ctx: TcContext) -> i32 {
    let outcome = gso::wrap(&ctx);
    gso::finish(&ctx, outcome)
}

/// Does nothing: the benchmarks' floor, the cost of running any XDP program.
/// Never attached by lb-user.
#[xdp]
pub fn xdp_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Sends every frame back out unchanged: the ceiling of the forwarding
/// benchmark (generator and transmit path, no work). Never attached by lb-user.
#[xdp]
pub fn xdp_tx_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

// The panic handler is the library's.
use lb_ebpf as _;

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
