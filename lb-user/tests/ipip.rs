//! IPIP forwarding through BPF_PROG_TEST_RUN, in a network namespace of
//! the test's own (a veth, routes and a neighbour entry), so that the
//! program's FIB lookups meet a real routing table: the wrapped frame,
//! whole; the ICMP answer to a packet too big once wrapped; the drop of a
//! packet without a next hop, recorded for lb-user. Needs root.
use std::net::Ipv4Addr;

use std::collections::HashMap;

use lb_common::{
    BackendKey, Counter, NEXT_HOP_CACHE_NS,
    wire::{FLAG_DRAINING, FLAG_LEAVING},
};

pub mod common;
use common::{routed::*, *};
use lb_user::loader::LoadParams;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const BEHIND_UNRESOLVED: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);
const NO_ROUTE: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 2);
/// `frame` as it must leave toward `backend`: the router's MAC, the LB
/// interface's MAC, an outer header from the LB, the inner packet untouched.
fn wrapped(frame: &[u8], lb_mac: [u8; 6], backend: Ipv4Addr) -> Vec<u8> {
    let inner = &frame[14..];
    let df = inner[6] & 0x40;
    let mut out = ROUTER_MAC.to_vec();
    out.extend_from_slice(&lb_mac);
    out.extend_from_slice(&[0x08, 0x00]);
    out.extend(ipv4_header(inner.len() + 20, df, 4, LB, backend));
    out.extend_from_slice(inner);
    out
}

#[test]
fn ipip_wraps_answers_too_big_and_records_missing_next_hops() {
    lb_tests_require_root();
    in_namespace(|ifindex| {
        let lb_mac = LB_MAC;
        let mut lb = TestLb::with(LOAD);
        lb.register_routed(ROUTED_BACKEND);
        let fits = MTU - 20;
        // (name, frame, action, counter, expected output frame)
        let cases = [
            (
                "a SYN is wrapped toward the routed backend",
                tcp_segment(1000, SYN, 60, true),
                XDP_TX,
                Counter::IpipNewFlow,
                wrapped(&tcp_segment(1000, SYN, 60, true), lb_mac, ROUTED_BACKEND),
            ),
            (
                "the same flow's next segment, as large as fits once wrapped",
                tcp_segment(1000, ACK, fits, true),
                XDP_TX,
                Counter::IpipForwarded,
                wrapped(&tcp_segment(1000, ACK, fits, true), lb_mac, ROUTED_BACKEND),
            ),
            (
                "DF clear keeps DF clear on the outer header",
                tcp_segment(1000, ACK, 100, false),
                XDP_TX,
                Counter::IpipForwarded,
                wrapped(&tcp_segment(1000, ACK, 100, false), lb_mac, ROUTED_BACKEND),
            ),
            (
                "one byte too big with DF: ICMP fragmentation needed, MTU 1480",
                tcp_segment(1000, ACK, fits + 1, true),
                XDP_TX,
                Counter::IpipTooBig,
                fragmentation_needed(&tcp_segment(1000, ACK, fits + 1, true), fits as u16),
            ),
            (
                "one byte too big without DF: dropped",
                tcp_segment(1000, ACK, fits + 1, false),
                XDP_DROP,
                Counter::IpipTooBigDropped,
                tcp_segment(1000, ACK, fits + 1, false),
            ),
        ];
        for (name, frame, action, counter, expected) in cases {
            let before = lb.counter(counter);
            let (got, out) = lb.run_on(ifindex, &frame);
            assert_eq!(got, action, "{name}: action");
            assert_eq!(lb.counter(counter), before + 1, "{name}: counter");
            assert_eq!(out, expected, "{name}: output frame");
        }
        assert!(lb.maps.next_hop_errors::<[u8; 4]>().unwrap().is_empty());
        // The next hop is cached: the router's MAC, for packets as large as
        // the largest the FIB let through; a changed neighbour applies
        // once the entry is NEXT_HOP_CACHE_NS old.
        let hops = lb.maps.next_hops::<[u8; 4]>().unwrap();
        assert_eq!(hops.len(), 1, "{hops:?}");
        assert_eq!(hops[0].0, ROUTED_BACKEND.octets());
        assert_eq!((hops[0].1.dmac, hops[0].1.smac), (ROUTER_MAC, lb_mac));
        assert_eq!(usize::from(hops[0].1.fits), MTU);
        let new_router_mac = [0x02, 0, 0, 0, 0, 0xfd];
        ip(&format!(
            "neigh replace {ROUTER} lladdr 02:00:00:00:00:fd dev {LB_IFACE} nud permanent"
        ));
        std::thread::sleep(std::time::Duration::from_nanos(NEXT_HOP_CACHE_NS));
        let frame = tcp_segment(1000, ACK, 100, true);
        let (action, out) = lb.run_on(ifindex, &frame);
        assert_eq!(action, XDP_TX);
        assert_eq!(
            out[..6],
            new_router_mac,
            "the changed neighbour was not followed"
        );
        ip(&format!(
            "neigh replace {ROUTER} lladdr 02:00:00:00:00:fe dev {LB_IFACE} nud permanent"
        ));

        // Backends whose next hop the FIB cannot give: dropped and recorded.
        for (backend, reason) in [(BEHIND_UNRESOLVED, Some(7)), (NO_ROUTE, None)] {
            let mut lb = TestLb::with(LOAD);
            lb.register_routed(backend);
            let frame = tcp_segment(2000, SYN, 60, true);
            assert_eq!(lb.run_on(ifindex, &frame).0, XDP_DROP, "{backend}");
            assert_eq!(lb.counter(Counter::IpipNoNextHop), 1, "{backend}");
            let errors = lb.maps.next_hop_errors::<[u8; 4]>().unwrap();
            assert_eq!(errors.len(), 1, "{backend}: {errors:?}");
            assert_eq!(errors[0].0, backend.octets());
            assert_eq!(errors[0].1.drops, 1);
            match reason {
                Some(code) => assert_eq!(errors[0].1.result, code, "{backend}"),
                None => assert_ne!(errors[0].1.result, 7, "{backend}: not a neighbour problem"),
            }
            assert!(
                lb.maps
                    .backend(&BackendKey {
                        group_id: 0,
                        addr: backend.octets()
                    })
                    .unwrap()
                    .is_some(),
                "a next-hop error never removes a backend"
            );
        }
    });
}

/// The outer destination of a frame XDP wrapped, or `None` if it did not
/// transmit one.
fn outer_destination(lb: &mut TestLb, ifindex: u32, frame: &[u8]) -> Option<Ipv4Addr> {
    let (action, out) = lb.run_on(ifindex, frame);
    (action == XDP_TX && out.len() >= 34 && out[23] == 4)
        .then(|| Ipv4Addr::new(out[30], out[31], out[32], out[33]))
}

/// Weights, DRAINING, the connection table and a leave work through IPIP
/// as at layer 2 (the same tables; only the way out differs).
#[test]
fn ipip_flows_follow_weights_draining_and_leaves_as_at_layer_2() {
    lb_tests_require_root();
    in_namespace(|ifindex| {
        const LIGHT: Ipv4Addr = ROUTED_BACKEND;
        const HEAVY: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 3);
        let mut lb = TestLb::with(LOAD);
        lb.announce_routed(LIGHT, 0, 100, 1);
        lb.announce_routed(HEAVY, 0, 300, 1);
        let flows: HashMap<u16, Ipv4Addr> = (3000..3800)
            .map(|p| {
                let to = outer_destination(&mut lb, ifindex, &tcp_segment(p, SYN, 60, true));
                (p, to.expect("a SYN wrapped"))
            })
            .collect();
        let light = flows.values().filter(|&&b| b == LIGHT).count();
        assert!(
            (170..=230).contains(&light),
            "weight 100 of 400 got {light} of 800 new flows"
        );
        assert_eq!(
            flows.len() - light,
            flows.values().filter(|&&b| b == HEAVY).count()
        );

        // DRAINING: its flows stay, it gets no new ones.
        lb.announce_routed(HEAVY, FLAG_DRAINING, 300, 2);
        for (&port, &backend) in &flows {
            let to = outer_destination(&mut lb, ifindex, &tcp_segment(port, ACK, 60, true));
            assert_eq!(to, Some(backend), "flow {port} moved when {HEAVY} drained");
        }
        for port in 4000..4200 {
            let to = outer_destination(&mut lb, ifindex, &tcp_segment(port, SYN, 60, true));
            assert_eq!(
                to,
                Some(LIGHT),
                "new flow {port} reached a draining backend"
            );
        }

        // It leaves: its flows move to the other at once.
        lb.announce_routed(HEAVY, FLAG_LEAVING, 300, 3);
        for (&port, &backend) in &flows {
            let to = outer_destination(&mut lb, ifindex, &tcp_segment(port, ACK, 60, true));
            assert_eq!(
                to,
                Some(LIGHT),
                "flow {port} (on {backend}) after {HEAVY} left"
            );
        }
    });
}

#[test]
fn a_gso_super_packet_is_handed_to_the_gso_program_with_its_backend_and_next_hop() {
    lb_tests_require_root();
    in_namespace(|ifindex| {
        let mut lb = TestLb::with(LoadParams {
            gso_handoff: true,
            ..LOAD
        });
        lb.register_routed(ROUTED_BACKEND);
        // Longer than the interface's MTU: a sender's GSO super-packet, as
        // generic XDP sees it on a veth or behind GRO (twice the MTU fits
        // the one page BPF_PROG_TEST_RUN gives a frame).
        let frame = tcp_segment(1000, ACK, 2 * MTU, true);
        let before = lb.counter(Counter::IpipGsoHandoff);
        let (action, out) = lb.run_on(ifindex, &frame);
        assert_eq!(action, XDP_PASS, "passed on to the GSO program");
        assert_eq!(out, frame, "untouched");
        assert_eq!(lb.counter(Counter::IpipGsoHandoff), before + 1);
        let handoffs = lb.maps.gso_handoffs().unwrap();
        let handoff = handoffs
            .iter()
            .find(|h| h.backend == lb_common::addr::mapped(ROUTED_BACKEND.octets()))
            .unwrap_or_else(|| panic!("no CPU's slot names the backend: {handoffs:?}"));
        assert_eq!(
            handoff.ip_header[..],
            frame[14..54],
            "the packet's own first bytes"
        );
        assert_eq!((handoff.inner_proto, handoff.dont_fragment), (4, 1));
        assert_eq!((handoff.dmac, handoff.smac), (ROUTER_MAC, LB_MAC));
    });
}

/// Second chance (protocol §7): a TCP packet past its SYN of a flow the LB
/// has no entry for, whose backend in the previous table (the backends
/// registered at least the window ago) is not its pick, goes to the pick
/// wrapped twice, the inner header naming the previous backend; it is not
/// recorded, so every packet of the flow asks again. A SYN takes the pick
/// alone and is recorded; so is a flow whose pick the previous table
/// agrees with.
#[test]
fn an_unknown_flow_whose_previous_backend_differs_gets_a_second_chance() {
    lb_tests_require_root();
    in_namespace(|ifindex| {
        let window = std::time::Duration::from_millis(200);
        let mut lb = TestLb::with_window(LOAD, TCP_SERVICE, 1009, window);
        let old = [Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 1, 0, 3)];
        let young = Ipv4Addr::new(10, 1, 0, 4);
        for addr in old {
            lb.register_routed(addr);
        }
        std::thread::sleep(window + std::time::Duration::from_millis(50));
        lb.register_routed(young);
        let (mut chances, mut recorded) = (0, 0);
        for port in 3000..3300 {
            let frame = tcp_segment(port, ACK, 60, true);
            let inner = &frame[14..];
            let before = lb.counter(Counter::VipSecondChance);
            let (action, out) = lb.run_on(ifindex, &frame);
            assert_eq!(action, XDP_TX, "port {port}");
            if lb.counter(Counter::VipSecondChance) == before {
                // Agreed: one header, to an old backend, recorded.
                let to = Ipv4Addr::from(<[u8; 4]>::try_from(&out[30..34]).unwrap());
                assert!(old.contains(&to), "port {port}: recorded on {to}");
                assert_eq!(out, wrapped(&frame, LB_MAC, to), "port {port}");
                recorded += 1;
                continue;
            }
            chances += 1;
            let first = Ipv4Addr::from(<[u8; 4]>::try_from(&out[30..34]).unwrap());
            let next = Ipv4Addr::from(<[u8; 4]>::try_from(&out[50..54]).unwrap());
            assert!(
                old.contains(&next) && next != first,
                "port {port}: {first} then {next}"
            );
            let mut expected = ROUTER_MAC.to_vec();
            expected.extend_from_slice(&LB_MAC);
            expected.extend_from_slice(&[0x08, 0x00]);
            expected.extend(ipv4_header(inner.len() + 40, 0x40, 4, LB, first));
            expected.extend(ipv4_header(inner.len() + 20, 0x40, 4, LB, next));
            expected.extend_from_slice(inner);
            assert_eq!(out, expected, "port {port}: output frame");
            // Not recorded: the next packet asks again.
            let again = lb.counter(Counter::VipSecondChance);
            assert_eq!(lb.run_on(ifindex, &frame).1, expected, "port {port}: again");
            assert_eq!(lb.counter(Counter::VipSecondChance), again + 1);
        }
        println!("300 unknown flows: {chances} second chances, {recorded} recorded");
        // The young backend takes about a third of the table: its flows
        // (and Maglev's few moved between old ones) get a second chance.
        assert!((60..=160).contains(&chances), "{chances} second chances");
        // A SYN opens the connection on the pick alone, recorded.
        let port = (3000..3300)
            .find(|&p| {
                let (_, out) = lb.run_on(ifindex, &tcp_segment(p, ACK, 60, true));
                out.len() == 14 + 40 + 60
            })
            .expect("a second-chance port");
        let syn = tcp_segment(port, SYN, 60, true);
        let (action, out) = lb.run_on(ifindex, &syn);
        assert_eq!(action, XDP_TX);
        let to = Ipv4Addr::from(<[u8; 4]>::try_from(&out[30..34]).unwrap());
        assert_eq!(out, wrapped(&syn, LB_MAC, to), "the SYN is wrapped once");
        let before = lb.counter(Counter::IpipForwarded);
        let ack = tcp_segment(port, ACK, 60, true);
        assert_eq!(lb.run_on(ifindex, &ack).1, wrapped(&ack, LB_MAC, to));
        assert_eq!(
            lb.counter(Counter::IpipForwarded),
            before + 1,
            "not recorded"
        );
    });
}
