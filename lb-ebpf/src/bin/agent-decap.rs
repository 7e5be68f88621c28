//! The backend agent's decapsulation program (protocol §7): strips the outer
//! IPv4 header of IPIP from an LB the agent learned from a query to this
//! backend's own address, and passes the client's packet up to the stack,
//! where the VIP on the loopback accepts it. No tunnel device or module is
//! involved. IPIP to this backend from anyone else is dropped; every other
//! packet is left alone. Each packet moves one counter, whose declaration
//! in lb-common fixes the tc action.
//!
//! tc (ingress, attached through a TCX link), not XDP: it runs on every
//! driver with no generic-mode caveat, leaves the interface's XDP hook to
//! others, and a TCX link belongs to the agent's file descriptor, so the
//! program is detached when the agent exits, however it exits.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC},
    btf_maps::{Array, HashMap, PerCpuArray},
    macros::{btf_map, classifier},
    programs::TcContext,
};
use lb_common::{DecapCounter, TcAction};
use lb_ebpf::declare_maps;
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

lb_common::decap_maps!(declare_maps);

// lb-common numbers the actions the way the kernel does.
const _: () = assert!(TcAction::Pass as i32 == TC_ACT_OK);
const _: () = assert!(TcAction::Drop as i32 == TC_ACT_SHOT);

const ETH_P_IP: u16 = 0x0800;
const IPPROTO_IPIP: u8 = 4;

// Not `pub`: the macro's wrapper takes a raw pointer, which clippy refuses
// in a public function; `no_mangle` exports it all the same.
#[classifier]
fn agent_decap(ctx: TcContext) -> i32 {
    let outcome = classify(&ctx);
    if let Some(slot) = DECAP_COUNTERS.get_ptr_mut(outcome as u32) {
        // SAFETY: per-CPU slot; only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
    outcome.action() as i32
}

fn classify(ctx: &TcContext) -> DecapCounter {
    let Ok(eth) = ctx.load::<EthHdr>(0) else {
        return DecapCounter::NotIpip;
    };
    if eth.ether_type != ETH_P_IP.to_be() {
        return DecapCounter::NotIpip;
    }
    let Ok(outer) = ctx.load::<Ipv4Hdr>(EthHdr::LEN) else {
        return DecapCounter::NotIpip;
    };
    if outer.proto != IPPROTO_IPIP {
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
    let is_fragment = u16::from_be_bytes(outer.frags) & 0x3fff != 0;
    if outer.vihl != 0x45 || is_fragment {
        return DecapCounter::Malformed;
    }
    let Ok(inner) = ctx.load::<Ipv4Hdr>(EthHdr::LEN + Ipv4Hdr::LEN) else {
        return DecapCounter::Malformed;
    };
    if inner.vihl >> 4 != 4 {
        return DecapCounter::Malformed;
    }
    // Removes the bytes right after the MAC header: the outer IPv4 header.
    if ctx
        .adjust_room(-(Ipv4Hdr::LEN as i32), BPF_ADJ_ROOM_MAC, 0)
        .is_err()
    {
        return DecapCounter::Malformed;
    }
    DecapCounter::Decapsulated
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
