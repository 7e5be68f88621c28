//! One second-chance packet (protocol §7) for the continuity tests, as an
//! LB sends it: IPIP from OUTER_SRC to FIRST holding IPIP from MIDDLE_SRC
//! to NEXT holding a client's TCP ACK (CLIENT:PORT -> VIP:PORT, sequence
//! and acknowledgement numbers of no connection's window: a socket answers
//! it with an ACK, no socket with a RST). Every checksum is filled in.
//! Usage: second-chance OUTER_SRC FIRST MIDDLE_SRC NEXT CLIENT:PORT VIP:PORT
//! Prints one JSON line: packets sent.
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    process::ExitCode,
};

use lb_common::{IPPROTO_TCP, wire::internet_checksum};
use lb_tests::raw;

const IPPROTO_IPIP: u8 = 4;
const TCP_ACK: u8 = 0x10;

/// An IPv4 header (no options) of `payload_len` bytes of `proto`.
fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload_len: usize) -> [u8; 20] {
    let total = u16::try_from(20 + payload_len).unwrap_or(u16::MAX);
    let mut header = [0u8; 20];
    header[0] = 0x45;
    header[2..4].copy_from_slice(&total.to_be_bytes());
    header[8] = 64;
    header[9] = proto;
    header[12..16].copy_from_slice(&src.octets());
    header[16..20].copy_from_slice(&dst.octets());
    let sum = internet_checksum(&header);
    header[10..12].copy_from_slice(&sum.to_be_bytes());
    header
}

/// The client's TCP ACK with its IPv4 header.
fn client_ack(client: SocketAddrV4, vip: SocketAddrV4) -> Vec<u8> {
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&client.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&vip.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&1u32.to_be_bytes());
    tcp[8..12].copy_from_slice(&1u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = TCP_ACK;
    tcp[14..16].copy_from_slice(&1024u16.to_be_bytes());
    let mut pseudo = Vec::with_capacity(12 + tcp.len());
    pseudo.extend_from_slice(&client.ip().octets());
    pseudo.extend_from_slice(&vip.ip().octets());
    pseudo.extend_from_slice(&[0, IPPROTO_TCP, 0, tcp.len() as u8]);
    pseudo.extend_from_slice(&tcp);
    let sum = internet_checksum(&pseudo);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    let mut packet = ipv4_header(*client.ip(), *vip.ip(), IPPROTO_TCP, tcp.len()).to_vec();
    packet.extend_from_slice(&tcp);
    packet
}

/// `inner` wrapped in IPIP from `src` to `dst`.
fn wrapped(src: Ipv4Addr, dst: Ipv4Addr, inner: &[u8]) -> Vec<u8> {
    let mut packet = ipv4_header(src, dst, IPPROTO_IPIP, inner.len()).to_vec();
    packet.extend_from_slice(inner);
    packet
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        eprintln!(
            "error: usage: second-chance OUTER_SRC FIRST MIDDLE_SRC NEXT CLIENT:PORT VIP:PORT"
        );
        ExitCode::from(2)
    };
    let [outer_src, first, middle_src, next, client, vip] = args.as_slice() else {
        return usage();
    };
    let (Ok(outer_src), Ok(first), Ok(middle_src), Ok(next), Ok(client), Ok(vip)) = (
        outer_src.parse::<Ipv4Addr>(),
        first.parse::<Ipv4Addr>(),
        middle_src.parse::<Ipv4Addr>(),
        next.parse::<Ipv4Addr>(),
        client.parse::<SocketAddrV4>(),
        vip.parse::<SocketAddrV4>(),
    ) else {
        return usage();
    };
    let middle = wrapped(middle_src, next, &client_ack(client, vip));
    let packet = wrapped(outer_src, first, &middle);
    let sent = raw::socket().and_then(|socket| raw::send(&socket, &packet, first));
    if let Err(e) = sent {
        eprintln!("error: sending the second-chance packet: {e}");
        return ExitCode::FAILURE;
    }
    println!("{{\"sent\":1}}");
    ExitCode::SUCCESS
}
