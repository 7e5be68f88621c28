//! XDP fast path: registers backends from their announcements (SPEC 4.3) and
//! records IGMP membership reports for group liveness (SPEC 4.2). Everything
//! else passes untouched.
#![no_std]
#![no_main]

mod auth;
mod forwarding;
mod igmp;
mod maps;
mod parse;
mod registration;
mod stats;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::Counter;
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::parse::{Ipv4Packet, ptr_at};

/// What the program does with a packet it finished parsing.
pub(crate) struct Verdict {
    pub action: u32,
    pub counter: Counter,
}

impl Verdict {
    pub const fn tx(counter: Counter) -> Self {
        Self {
            action: xdp_action::XDP_TX,
            counter,
        }
    }
    pub const fn pass(counter: Counter) -> Self {
        Self {
            action: xdp_action::XDP_PASS,
            counter,
        }
    }
    pub const fn drop(counter: Counter) -> Self {
        Self {
            action: xdp_action::XDP_DROP,
            counter,
        }
    }
}

#[xdp]
pub fn xdp_lb(ctx: XdpContext) -> u32 {
    // A header too short to hold what it announces is counted and left to
    // the kernel, which drops it; nothing is registered from it.
    let verdict = try_xdp_lb(&ctx).unwrap_or(Verdict::pass(Counter::Malformed));
    stats::count(verdict.counter);
    verdict.action
}

fn try_xdp_lb(ctx: &XdpContext) -> Result<Verdict, ()> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: ptr_at checked that the header lies inside the packet.
    if unsafe { (*eth).ether_type } != (0x0800u16).to_be() {
        return Ok(Verdict::pass(Counter::Ignored));
    }
    let ip: *const Ipv4Hdr = ptr_at(ctx, EthHdr::LEN)?;
    let packet = Ipv4Packet::parse(ctx, eth, ip)?;
    // SAFETY: the value is a plain u32 that only lb-user writes.
    if unsafe { maps::VIPS.get(&packet.dst) }.is_some() {
        return forwarding::handle(ctx, eth.cast_mut(), &packet);
    }
    match packet.proto {
        parse::IPPROTO_UDP => registration::handle(ctx, &packet),
        parse::IPPROTO_IGMP => igmp::handle(ctx, &packet),
        _ => Ok(Verdict::pass(Counter::Ignored)),
    }
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
