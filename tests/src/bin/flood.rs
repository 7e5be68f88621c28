//! Spoofed-announcement flood for the hardening tests: v1 payloads with
//! random tags from random source addresses, as fast as one core sends.
//! Usage: flood LB_ADDR PORT SECONDS SRC_PREFIX (e.g. 10.100.0.0/16)
//! Prints one JSON line: packets sent and the rate.
use std::{
    net::Ipv4Addr,
    process::ExitCode,
    time::{Duration, Instant},
};

use lb_common::wire::internet_checksum;
use lb_tests::raw;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        eprintln!("error: usage: flood LB_ADDR PORT SECONDS SRC_PREFIX");
        ExitCode::from(2)
    };
    let [lb, port, seconds, prefix] = args.as_slice() else {
        return usage();
    };
    let (Ok(lb), Ok(port), Ok(seconds)) = (
        lb.parse::<Ipv4Addr>(),
        port.parse::<u16>(),
        seconds.parse::<u64>(),
    ) else {
        return usage();
    };
    let Some((net, len)) = prefix
        .split_once('/')
        .and_then(|(a, l)| Some((a.parse::<Ipv4Addr>().ok()?, l.parse::<u32>().ok()?)))
    else {
        return usage();
    };
    let host_bits = 32 - len.min(32);
    let socket = match raw::socket() {
        Ok(socket) => socket,
        Err(e) => {
            eprintln!("error: raw socket: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut packet = [0u8; 20 + 8 + 24];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        for _ in 0..1024 {
            let r = next();
            let host = if host_bits == 0 {
                0
            } else {
                (r as u32) & ((1u32 << host_bits) - 1)
            };
            let src = Ipv4Addr::from(u32::from(net) | host.max(1));
            let total = packet.len() as u16;
            packet[..20].copy_from_slice(&[
                0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ]);
            packet[2..4].copy_from_slice(&total.to_be_bytes());
            packet[12..16].copy_from_slice(&src.octets());
            packet[16..20].copy_from_slice(&lb.octets());
            let sum = internet_checksum(&packet[..20]);
            packet[10..12].copy_from_slice(&sum.to_be_bytes());
            packet[20..22].copy_from_slice(&(40000 + (r >> 48) as u16 % 20000).to_be_bytes());
            packet[22..24].copy_from_slice(&port.to_be_bytes());
            packet[24..26].copy_from_slice(&(8u16 + 24).to_be_bytes());
            packet[28..32].copy_from_slice(b"LBAN");
            packet[32] = 1;
            packet[33] = 0;
            packet[34..36].copy_from_slice(&100u16.to_be_bytes());
            packet[36..44].copy_from_slice(&next().to_be_bytes());
            packet[44..52].copy_from_slice(&next().to_le_bytes());
            // A full socket buffer drops the packet: only the sent count.
            if raw::send(&socket, &packet, lb).is_ok() {
                sent += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"sent\":{sent},\"seconds\":{secs:.2},\"pps\":{:.0}}}",
        sent as f64 / secs
    );
    ExitCode::SUCCESS
}
