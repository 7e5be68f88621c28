//! IPIP forwarding through BPF_PROG_TEST_RUN, in a network namespace of
//! the test's own (a veth, routes and a neighbour entry), so that the
//! program's FIB lookups meet a real routing table: the wrapped frame,
//! whole; the ICMP answer to a packet too big once wrapped; the drop of a
//! packet without a next hop, recorded for lb-user. Needs root.
use std::{net::Ipv4Addr, process::Command};

use aya::programs::{TestRun, TestRunOptions};
use lb_common::{BackendKey, Counter, wire::internet_checksum};

pub mod common;
use common::*;

const XDP_TX: u32 = 3;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
/// The router toward the backend subnets, and its MAC (a permanent neighbour).
const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);
const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
/// A router whose MAC the kernel has not resolved.
const UNRESOLVED_ROUTER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 253);
const ROUTED_BACKEND: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const BEHIND_UNRESOLVED: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);
const NO_ROUTE: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 2);
const LB_IFACE: &str = "eth0";
const MTU: usize = 1500;

fn ip(args: &str) {
    let status = Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .expect("run ip");
    assert!(status.success(), "ip {args}");
}

/// Runs `test` on a thread of its own in a new network namespace (which
/// disappears with the thread): the LB's interface with MTU 1500, a
/// resolved and an unresolved router.
fn in_test_namespace(test: impl FnOnce(u32) + Send) {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: unshare affects only this thread, which owns nothing yet.
                assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
                ip("link set lo up");
                ip(&format!("link add {LB_IFACE} type veth peer name peer0"));
                ip(&format!("addr add {LB}/24 dev {LB_IFACE}"));
                // The MAC the program is loaded with (LB_MAC) and the FIB gives.
                ip(&format!(
                    "link set {LB_IFACE} address 02:00:00:00:00:01 mtu {MTU} up"
                ));
                ip("link set peer0 up");
                // As lb-user sets it: the FIB helper needs it.
                std::fs::write(
                    format!("/proc/sys/net/ipv4/conf/{LB_IFACE}/forwarding"),
                    "1",
                )
                .unwrap();
                ip(&format!("route add 10.1.0.0/24 via {ROUTER}"));
                ip(&format!("route add 10.2.0.0/24 via {UNRESOLVED_ROUTER}"));
                ip(&format!(
                    "neigh replace {ROUTER} lladdr 02:00:00:00:00:fe dev {LB_IFACE} nud permanent"
                ));
                let ifindex = lb_user::system::interface_index(LB_IFACE).unwrap();
                test(ifindex);
            })
            .join()
            .expect("the test thread panicked");
    });
}

impl TestLb {
    /// Runs one frame as if it arrived on interface `ifindex`.
    fn run_on(&mut self, ifindex: u32, frame: &[u8]) -> (u32, Vec<u8>) {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex.
        let md: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
        let ctx: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let mut out = vec![0u8; frame.len() + 256];
        let result = self
            .program()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                ..TestRunOptions::default()
            })
            .unwrap();
        out.truncate(result.data_size_out as usize);
        (result.return_value, out)
    }

    /// `addr` announces itself through the router (whose MAC the frame carries).
    fn register_routed(&mut self, addr: Ipv4Addr, flags: u8) {
        let frame = Frame::announce(addr, 2000, flags, 100, 1)
            .with(|f| f.src_mac = ROUTER_MAC)
            .bytes();
        assert_eq!(self.run(&frame).0, XDP_DROP);
        let backends = self.maps.backends().unwrap();
        self.forwarding.sync(&mut self.maps, &backends).unwrap();
    }
}

/// An option-free IPv4 header with its checksum.
fn ipv4_header(total_len: usize, flags: u8, proto: u8, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&(total_len as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0, flags, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let sum = internet_checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h
}

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

/// The ICMP "fragmentation needed" XDP must answer `frame` with.
fn too_big_answer(frame: &[u8], usable_mtu: u16) -> Vec<u8> {
    let mut out = frame[6..12].to_vec();
    out.extend_from_slice(&frame[..6]);
    out.extend_from_slice(&[0x08, 0x00]);
    out.extend(ipv4_header(20 + 8 + 28, 0, 1, LB, CLIENT));
    let mut icmp = vec![3, 4, 0, 0, 0, 0];
    icmp.extend_from_slice(&usable_mtu.to_be_bytes());
    icmp.extend_from_slice(&frame[14..14 + 28]);
    let sum = internet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    out.extend(icmp);
    out
}

/// A TCP segment to the VIP whose IP packet is `total_len` bytes.
fn segment(sport: u16, flags: u8, total_len: usize, dont_fragment: bool) -> Vec<u8> {
    Frame::tcp(CLIENT, sport, VIP, 80, flags)
        .with(|f| {
            f.payload.resize(total_len - 20, 0xab);
            f.frag = if dont_fragment { 0x4000 } else { 0 };
        })
        .bytes()
}

#[test]
fn ipip_wraps_answers_too_big_and_records_missing_next_hops() {
    lb_tests_require_root();
    in_test_namespace(|ifindex| {
        let lb_mac = LB_MAC;
        let mut lb = TestLb::with(LOAD);
        lb.register_routed(ROUTED_BACKEND, 0);
        let fits = MTU - 20;
        // (name, frame, action, counter, expected output frame)
        let cases = [
            (
                "a SYN is wrapped toward the routed backend",
                segment(1000, SYN, 60, true),
                XDP_TX,
                Counter::IpipNewFlow,
                wrapped(&segment(1000, SYN, 60, true), lb_mac, ROUTED_BACKEND),
            ),
            (
                "the same flow's next segment, as large as fits once wrapped",
                segment(1000, ACK, fits, true),
                XDP_TX,
                Counter::IpipForwarded,
                wrapped(&segment(1000, ACK, fits, true), lb_mac, ROUTED_BACKEND),
            ),
            (
                "DF clear keeps DF clear on the outer header",
                segment(1000, ACK, 100, false),
                XDP_TX,
                Counter::IpipForwarded,
                wrapped(&segment(1000, ACK, 100, false), lb_mac, ROUTED_BACKEND),
            ),
            (
                "one byte too big with DF: ICMP fragmentation needed, MTU 1480",
                segment(1000, ACK, fits + 1, true),
                XDP_TX,
                Counter::IpipTooBig,
                too_big_answer(&segment(1000, ACK, fits + 1, true), fits as u16),
            ),
            (
                "one byte too big without DF: dropped",
                segment(1000, ACK, fits + 1, false),
                XDP_DROP,
                Counter::IpipTooBigDropped,
                segment(1000, ACK, fits + 1, false),
            ),
        ];
        for (name, frame, action, counter, expected) in cases {
            let before = lb.counter(counter);
            let (got, out) = lb.run_on(ifindex, &frame);
            assert_eq!(got, action, "{name}: action");
            assert_eq!(lb.counter(counter), before + 1, "{name}: counter");
            assert_eq!(out, expected, "{name}: output frame");
        }
        assert!(lb.maps.next_hop_errors().unwrap().is_empty());

        // Backends whose next hop the FIB cannot give: dropped and recorded.
        for (backend, reason) in [(BEHIND_UNRESOLVED, Some(7)), (NO_ROUTE, None)] {
            let mut lb = TestLb::with(LOAD);
            lb.register_routed(backend, 0);
            let frame = segment(2000, SYN, 60, true);
            assert_eq!(lb.run_on(ifindex, &frame).0, XDP_DROP, "{backend}");
            assert_eq!(lb.counter(Counter::IpipNoNextHop), 1, "{backend}");
            let errors = lb.maps.next_hop_errors().unwrap();
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
