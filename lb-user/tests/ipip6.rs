//! IP-in-IP of every family mix (protocol §9) through BPF_PROG_TEST_RUN,
//! in a network namespace of the test's own whose FIB the program's
//! lookups meet: the outer header is of the backend's family (IPv6 with
//! next header 41 or 4, IPv4 with protocol 41), whole frames checked; a
//! packet too big once wrapped gets ICMPv6 Packet Too Big (checksum
//! checked) or, from an IPv4 client, "fragmentation needed"; a missing
//! IPv6 next hop is recorded for lb-user; a super-packet is handed to the
//! GSO program. Needs root.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::{Counter, addr::mapped, wire::internet_checksum};

pub mod common;
use common::{routed::*, *};
use lb_user::loader::LoadParams;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;
/// Expedited Forwarding: a traffic class the outer header must copy.
const TRAFFIC_CLASS: u8 = 0xb8;

/// An IPv6 client's TCP segment to VIP6 whose IP packet is `total_len`
/// bytes, with TRAFFIC_CLASS.
fn segment6(sport: u16, flags: u8, total_len: usize) -> Vec<u8> {
    let mut frame = tcp6(CLIENT6, sport, VIP6, 80, flags)
        .with(|f| f.payload.resize(total_len - 40, 0xab))
        .bytes();
    frame[14] = 0x60 | (TRAFFIC_CLASS >> 4);
    frame[15] = TRAFFIC_CLASS << 4;
    frame
}

/// `frame` as it must leave toward IPv6 `backend`: the router's MAC, the
/// LB's, an outer IPv6 header from LB6 naming the inner family, the inner
/// packet untouched.
fn wrapped6(frame: &[u8], backend: Ipv6Addr) -> Vec<u8> {
    let inner = &frame[14..];
    let (next, tc) = match inner[0] >> 4 {
        4 => (IPPROTO_IPIP, inner[1]),
        _ => (IPPROTO_IPV6, (inner[0] << 4) | (inner[1] >> 4)),
    };
    let mut out = ROUTER_MAC.to_vec();
    out.extend_from_slice(&LB_MAC);
    out.extend_from_slice(&[0x86, 0xdd]);
    out.extend(ipv6_header(inner.len(), next, tc, LB6, backend));
    out.extend_from_slice(inner);
    out
}

/// An IPv6 client's `frame` as it must leave toward IPv4 `backend`:
/// protocol 41, DF set, the traffic class as TOS.
fn wrapped_in_ipv4(frame: &[u8], backend: Ipv4Addr) -> Vec<u8> {
    let inner = &frame[14..];
    let mut header = ipv4_header(inner.len() + 20, 0x40, IPPROTO_IPV6, LB, backend);
    header[1] = TRAFFIC_CLASS;
    let sum = internet_checksum(&{
        let mut h = header.clone();
        h[10..12].fill(0);
        h
    });
    header[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut out = ROUTER_MAC.to_vec();
    out.extend_from_slice(&LB_MAC);
    out.extend_from_slice(&[0x08, 0x00]);
    out.extend(header);
    out.extend_from_slice(inner);
    out
}

/// The ICMPv6 Packet Too Big XDP must answer `frame` with: back to the
/// client from LB6, the usable MTU, the client's header and 8 bytes.
fn packet_too_big(frame: &[u8], mtu: u32) -> Vec<u8> {
    let mut icmp = vec![2, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(&frame[14..14 + 48]);
    let sum = lb_common::wire::icmpv6_checksum(&addresses(LB6, CLIENT6), &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut out = frame[6..12].to_vec();
    out.extend_from_slice(&frame[..6]);
    out.extend_from_slice(&[0x86, 0xdd]);
    out.extend(ipv6_header(icmp.len(), 58, 0, LB6, CLIENT6));
    out.extend(icmp);
    out
}

fn addresses(src: Ipv6Addr, dst: Ipv6Addr) -> [u8; 32] {
    let mut both = [0; 32];
    both[..16].copy_from_slice(&src.octets());
    both[16..].copy_from_slice(&dst.octets());
    both
}

/// Whether the ICMPv6 message of `frame` has a valid checksum, summed here
/// over the pseudo-header as RFC 4443 spells it (not with the helper the
/// expected frames use).
fn icmpv6_checksum_ok(frame: &[u8]) -> bool {
    let ip = &frame[14..54];
    let message = &frame[54..];
    let mut pseudo = ip[8..40].to_vec();
    pseudo.extend_from_slice(&(message.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(message);
    internet_checksum(&pseudo) == 0
}

/// A packet case: name, frame, action, counter moved, expected frame.
type Case = (&'static str, Vec<u8>, u32, Counter, Vec<u8>);

/// Runs each case.
fn run_cases(lb: &mut TestLb, ifindex: u32, cases: Vec<Case>) {
    for (name, frame, action, counter, expected) in cases {
        let before = lb.counter(counter);
        let (got, out) = lb.run_on(ifindex, &frame);
        assert_eq!(got, action, "{name}: action");
        assert_eq!(lb.counter(counter), before + 1, "{name}: counter");
        assert_eq!(out, expected, "{name}: output frame");
    }
}

#[test]
fn ipv6_clients_reach_routed_ipv6_backends_in_ip6ip6_with_packet_too_big() {
    lb_tests_require_root();
    in_namespace(|ifindex| {
        let mut lb = TestLb::serving(VIP6.into(), true);
        lb.register_routed6(ROUTED_BACKEND6);
        let fits = MTU - 40;
        let too_big = segment6(1000, ACK, fits + 1);
        run_cases(
            &mut lb,
            ifindex,
            vec![
                (
                    "a SYN is wrapped in IPv6, next header 41, traffic class kept",
                    segment6(1000, SYN, 60),
                    XDP_TX,
                    Counter::IpipNewFlow,
                    wrapped6(&segment6(1000, SYN, 60), ROUTED_BACKEND6),
                ),
                (
                    "the flow's next segment, as large as fits once wrapped",
                    segment6(1000, ACK, fits),
                    XDP_TX,
                    Counter::IpipForwarded,
                    wrapped6(&segment6(1000, ACK, fits), ROUTED_BACKEND6),
                ),
                (
                    "one byte too big: ICMPv6 Packet Too Big, MTU 1460",
                    too_big.clone(),
                    XDP_TX,
                    Counter::IpipTooBig,
                    packet_too_big(&too_big, fits as u32),
                ),
            ],
        );
        let (_, answer) = lb.run_on(ifindex, &too_big);
        assert!(icmpv6_checksum_ok(&answer), "{answer:02x?}");
        // The next hop is cached under the backend's IPv6 address.
        let hops = lb.maps.next_hops::<[u8; 16]>().unwrap();
        assert_eq!(hops.len(), 1, "{hops:?}");
        assert_eq!(hops[0].0, ROUTED_BACKEND6.octets());
        assert_eq!((hops[0].1.dmac, hops[0].1.smac), (ROUTER_MAC, LB_MAC));
        assert!(lb.maps.next_hop_errors::<[u8; 16]>().unwrap().is_empty());
    });
}

#[test]
fn ipv4_clients_reach_routed_ipv6_backends_in_ipv4_in_ipv6() {
    lb_tests_require_root();
    in_namespace(|ifindex| {
        let mut lb = TestLb::serving(VIP.into(), true);
        lb.register_routed6(ROUTED_BACKEND6);
        let fits = MTU - 40;
        let too_big = tcp_segment(1000, ACK, fits + 1, true);
        run_cases(
            &mut lb,
            ifindex,
            vec![
                (
                    "a SYN is wrapped in IPv6, next header 4",
                    tcp_segment(1000, SYN, 60, true),
                    XDP_TX,
                    Counter::IpipNewFlow,
                    wrapped6(&tcp_segment(1000, SYN, 60, true), ROUTED_BACKEND6),
                ),
                (
                    "as large as fits once wrapped",
                    tcp_segment(1000, ACK, fits, true),
                    XDP_TX,
                    Counter::IpipForwarded,
                    wrapped6(&tcp_segment(1000, ACK, fits, true), ROUTED_BACKEND6),
                ),
                (
                    "one byte too big with DF: fragmentation needed, MTU 1460",
                    too_big.clone(),
                    XDP_TX,
                    Counter::IpipTooBig,
                    fragmentation_needed(&too_big, fits as u16),
                ),
                (
                    "one byte too big without DF: dropped",
                    tcp_segment(1000, ACK, fits + 1, false),
                    XDP_DROP,
                    Counter::IpipTooBigDropped,
                    tcp_segment(1000, ACK, fits + 1, false),
                ),
            ],
        );
    });
}

#[test]
fn ipv6_clients_reach_routed_ipv4_backends_in_ipv6_in_ipv4() {
    lb_tests_require_root();
    in_namespace(|ifindex| {
        let mut lb = TestLb::serving(VIP6.into(), false);
        lb.register_routed(ROUTED_BACKEND);
        let fits = MTU - 20;
        let too_big = segment6(1000, ACK, fits + 1);
        run_cases(
            &mut lb,
            ifindex,
            vec![
                (
                    "a SYN is wrapped in IPv4, protocol 41, DF, TOS from the traffic class",
                    segment6(1000, SYN, 60),
                    XDP_TX,
                    Counter::IpipNewFlow,
                    wrapped_in_ipv4(&segment6(1000, SYN, 60), ROUTED_BACKEND),
                ),
                (
                    "as large as fits once wrapped",
                    segment6(1000, ACK, fits),
                    XDP_TX,
                    Counter::IpipForwarded,
                    wrapped_in_ipv4(&segment6(1000, ACK, fits), ROUTED_BACKEND),
                ),
                (
                    "one byte too big: ICMPv6 Packet Too Big, MTU 1480",
                    too_big.clone(),
                    XDP_TX,
                    Counter::IpipTooBig,
                    packet_too_big(&too_big, fits as u32),
                ),
            ],
        );
        let (_, answer) = lb.run_on(ifindex, &too_big);
        assert!(icmpv6_checksum_ok(&answer), "{answer:02x?}");
    });
}

#[test]
fn a_missing_ipv6_next_hop_is_recorded_and_a_super_packet_handed_over() {
    lb_tests_require_root();
    in_namespace(|ifindex| {
        let behind_unresolved = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2);
        let mut lb = TestLb::serving(VIP6.into(), true);
        lb.register_routed6(behind_unresolved);
        let frame = segment6(2000, SYN, 60);
        assert_eq!(lb.run_on(ifindex, &frame).0, XDP_DROP);
        assert_eq!(lb.counter(Counter::IpipNoNextHop), 1);
        let errors = lb.maps.next_hop_errors::<[u8; 16]>().unwrap();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, behind_unresolved.octets());
        assert_eq!(
            (errors[0].1.result, errors[0].1.drops),
            (7, 1),
            "no neighbour"
        );

        let load = LoadParams {
            gso_handoff: true,
            ..LOAD
        };
        for (vip, backend) in [
            (IpAddr::from(VIP6), IpAddr::from(ROUTED_BACKEND6)),
            (VIP6.into(), ROUTED_BACKEND.into()),
            (VIP.into(), ROUTED_BACKEND6.into()),
        ] {
            let mut lb = TestLb::serving_with(load, vip, backend.is_ipv6(), SECOND_CHANCE_WINDOW);
            match backend {
                IpAddr::V6(addr) => lb.register_routed6(addr),
                IpAddr::V4(addr) => lb.register_routed(addr),
            }
            // Longer than the interface's MTU: a sender's super-packet.
            let frame = match vip {
                IpAddr::V6(_) => segment6(1000, ACK, 2 * MTU),
                IpAddr::V4(_) => tcp_segment(1000, ACK, 2 * MTU, true),
            };
            let (action, out) = lb.run_on(ifindex, &frame);
            assert_eq!(action, XDP_PASS, "{vip} -> {backend}: to the GSO program");
            assert_eq!(out, frame, "{vip} -> {backend}: untouched");
            assert_eq!(lb.counter(Counter::IpipGsoHandoff), 1, "{vip} -> {backend}");
            let backend16 = match backend {
                IpAddr::V6(addr) => addr.octets(),
                IpAddr::V4(addr) => mapped(addr.octets()),
            };
            let handoffs = lb.maps.gso_handoffs().unwrap();
            let handoff = handoffs
                .iter()
                .find(|h| h.backend == backend16)
                .unwrap_or_else(|| panic!("{vip} -> {backend}: no slot: {handoffs:?}"));
            let inner_proto = if vip.is_ipv6() {
                IPPROTO_IPV6
            } else {
                IPPROTO_IPIP
            };
            assert_eq!(handoff.ip_header[..], frame[14..54], "{vip} -> {backend}");
            assert_eq!(handoff.inner_proto, inner_proto, "{vip} -> {backend}");
            assert_eq!((handoff.dmac, handoff.smac), (ROUTER_MAC, LB_MAC));
        }
    });
}

/// The second chance (protocol §7, §10) for IPv6: an ACK of a flow the LB
/// has no entry for, whose backend in the previous table is not its pick,
/// goes to the pick in IPv6 wrapped twice (next header 41 around next
/// header 41 or 4, the inner header naming the previous backend), from an
/// IPv6 client and from an IPv4 one; never recorded.
#[test]
fn an_unknown_flow_to_ipv6_backends_whose_previous_backend_differs_gets_a_second_chance() {
    lb_tests_require_root();
    in_namespace(|ifindex| {
        for vip in [IpAddr::from(VIP6), IpAddr::from(VIP)] {
            let window = std::time::Duration::from_millis(200);
            let mut lb = TestLb::serving_with(LOAD, vip, true, window);
            let routed = |k| Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, k);
            let old = [routed(2), routed(3)];
            for addr in old {
                lb.register_routed6(addr);
            }
            std::thread::sleep(window + std::time::Duration::from_millis(50));
            lb.register_routed6(routed(4));
            let mut chances = 0;
            for port in 3000..3300 {
                let frame = match vip {
                    IpAddr::V6(_) => segment6(port, ACK, 60),
                    IpAddr::V4(_) => tcp_segment(port, ACK, 60, true),
                };
                let before = lb.counter(Counter::VipSecondChance);
                let (action, out) = lb.run_on(ifindex, &frame);
                assert_eq!(action, XDP_TX, "{vip} port {port}");
                let to =
                    |at: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&out[at..at + 16]).unwrap());
                if lb.counter(Counter::VipSecondChance) == before {
                    assert!(
                        old.contains(&to(38)),
                        "{vip} port {port}: recorded on {}",
                        to(38)
                    );
                    assert_eq!(out, wrapped6(&frame, to(38)), "{vip} port {port}");
                    continue;
                }
                chances += 1;
                let (first, next) = (to(38), to(78));
                assert!(
                    old.contains(&next) && next != first,
                    "{vip} port {port}: {first} then {next}"
                );
                let inner = wrapped6(&frame, next);
                let mut expected = ROUTER_MAC.to_vec();
                expected.extend_from_slice(&LB_MAC);
                expected.extend_from_slice(&[0x86, 0xdd]);
                let tc = (inner[14] << 4) | (inner[15] >> 4);
                expected.extend(ipv6_header(inner.len() - 14, IPPROTO_IPV6, tc, LB6, first));
                expected.extend_from_slice(&inner[14..]);
                assert_eq!(out, expected, "{vip} port {port}: output frame");
                let again = lb.counter(Counter::VipSecondChance);
                assert_eq!(
                    lb.run_on(ifindex, &frame).1,
                    expected,
                    "{vip} port {port}: again"
                );
                assert_eq!(
                    lb.counter(Counter::VipSecondChance),
                    again + 1,
                    "not recorded"
                );
            }
            println!("{vip}: 300 unknown flows, {chances} second chances");
            assert!(
                (60..=160).contains(&chances),
                "{vip}: {chances} second chances"
            );
        }
    });
}
