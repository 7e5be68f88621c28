//! Forged IGMP leaves for the hardening tests: IGMPv2 leaves for a group,
//! sent with another host's source address (as anyone on a segment can),
//! at a fixed rate for a fixed time, bounded both ways.
//! Usage: forge-leave SRC GROUP IFACE PER_SECOND SECONDS
//! Prints one JSON line: leaves sent.
use std::{
    ffi::CString,
    net::Ipv4Addr,
    process::ExitCode,
    thread::sleep,
    time::{Duration, Instant},
};

use lb_common::wire::{IGMP_V2_LEAVE, igmp_v2_message, internet_checksum};
use lb_host::igmp_socket::set_multicast_ifindex;
use lb_tests::raw;

/// All-routers group, where IGMPv2 leaves go.
const ALL_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 2);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        eprintln!("error: usage: forge-leave SRC GROUP IFACE PER_SECOND SECONDS");
        ExitCode::from(2)
    };
    let [src, group, iface, rate, seconds] = args.as_slice() else {
        return usage();
    };
    let (Ok(src), Ok(group), Ok(rate), Ok(seconds)) = (
        src.parse::<Ipv4Addr>(),
        group.parse::<Ipv4Addr>(),
        rate.parse::<u32>(),
        seconds.parse::<u64>(),
    ) else {
        return usage();
    };
    let Ok(name) = CString::new(iface.as_str()) else {
        return usage();
    };
    // SAFETY: a valid NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 || rate == 0 {
        return usage();
    }
    let socket = match raw::socket() {
        Ok(socket) => socket,
        Err(e) => {
            eprintln!("error: raw socket: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = set_multicast_ifindex(&socket, ifindex) {
        eprintln!("error: IP_MULTICAST_IF: {e}");
        return ExitCode::FAILURE;
    }
    let mut packet = [0u8; 20 + 8];
    packet[..20].copy_from_slice(&[
        0x45, 0, 0, 28, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    packet[12..16].copy_from_slice(&src.octets());
    packet[16..20].copy_from_slice(&ALL_ROUTERS.octets());
    let sum = internet_checksum(&packet[..20]);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
    packet[20..].copy_from_slice(&igmp_v2_message(IGMP_V2_LEAVE, 0, group.octets()));
    let every = Duration::from_secs(1) / rate;
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        if let Err(e) = raw::send(&socket, &packet, ALL_ROUTERS) {
            eprintln!("error: sendto: {e}");
            return ExitCode::FAILURE;
        }
        sent += 1;
        sleep(every);
    }
    println!("{{\"sent\":{sent}}}");
    ExitCode::SUCCESS
}
