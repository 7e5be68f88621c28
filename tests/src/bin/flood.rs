//! Spoofed floods from random source addresses, as fast as one core sends
//! or at most PER_SECOND: `announce`, v1 payloads with random tags to the
//! LB (the hardening tests); `syn`, TCP SYNs from random ports to a VIP
//! (the continuity tests: they fill the connection table; their TCP
//! checksum is left zero, so the backends' stacks drop them).
//! Usage: flood announce|syn ADDR PORT SECONDS SRC_PREFIX [PER_SECOND]
//! (e.g. 10.100.0.0/16). Prints one JSON line: packets sent and the rate.
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
        eprintln!("error: usage: flood announce|syn ADDR PORT SECONDS SRC_PREFIX [PER_SECOND]");
        ExitCode::from(2)
    };
    let (kind, rest) = match args.split_first() {
        Some((kind, rest)) if kind == "announce" || kind == "syn" => (kind.as_str(), rest),
        _ => return usage(),
    };
    let (target, port, seconds, prefix, per_second) = match rest {
        [target, port, seconds, prefix] => (target, port, seconds, prefix, None),
        [target, port, seconds, prefix, rate] => (target, port, seconds, prefix, Some(rate)),
        _ => return usage(),
    };
    let (Ok(lb), Ok(port), Ok(seconds)) = (
        target.parse::<Ipv4Addr>(),
        port.parse::<u16>(),
        seconds.parse::<u64>(),
    ) else {
        return usage();
    };
    let Ok(per_second) = per_second.map(|r| r.parse::<u32>()).transpose() else {
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
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        if let Some(rate) = per_second
            && sent as f64 > start.elapsed().as_secs_f64() * f64::from(rate)
        {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        for _ in 0..64 {
            let r = next();
            let host = if host_bits == 0 {
                0
            } else {
                (r as u32) & ((1u32 << host_bits) - 1)
            };
            let src = Ipv4Addr::from(u32::from(net) | host.max(1));
            let sport = 40000 + (r >> 48) as u16 % 20000;
            let packet = match kind {
                "syn" => syn(src, sport, lb, port, next()),
                _ => announcement(src, sport, lb, port, [next(), next()]),
            };
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

/// An IPv4 header of `total` bytes of `proto` from `src` to `dst`.
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, total: u16) -> [u8; 20] {
    let mut header = [
        0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    header[2..4].copy_from_slice(&total.to_be_bytes());
    header[12..16].copy_from_slice(&src.octets());
    header[16..20].copy_from_slice(&dst.octets());
    let sum = internet_checksum(&header);
    header[10..12].copy_from_slice(&sum.to_be_bytes());
    header
}

/// A v1 announcement with random sequence and tag (`random`).
fn announcement(src: Ipv4Addr, sport: u16, lb: Ipv4Addr, port: u16, random: [u64; 2]) -> Vec<u8> {
    let mut packet = ipv4(src, lb, 17, 20 + 8 + 24).to_vec();
    packet.extend_from_slice(&sport.to_be_bytes());
    packet.extend_from_slice(&port.to_be_bytes());
    packet.extend_from_slice(&(8u16 + 24).to_be_bytes());
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(b"LBAN");
    packet.extend_from_slice(&[1, 0]);
    packet.extend_from_slice(&100u16.to_be_bytes());
    packet.extend_from_slice(&random[0].to_be_bytes());
    packet.extend_from_slice(&random[1].to_le_bytes());
    packet
}

/// A TCP SYN with sequence `random`, its checksum left zero.
fn syn(src: Ipv4Addr, sport: u16, vip: Ipv4Addr, port: u16, random: u64) -> Vec<u8> {
    let mut packet = ipv4(src, vip, 6, 20 + 20).to_vec();
    packet.extend_from_slice(&sport.to_be_bytes());
    packet.extend_from_slice(&port.to_be_bytes());
    packet.extend_from_slice(&(random as u32).to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0, 0, 5 << 4, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    packet
}
