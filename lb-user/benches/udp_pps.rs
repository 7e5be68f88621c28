//! Packets per second forwarded for small UDP packets. The generator is the
//! kernel itself: BPF_PROG_TEST_RUN in XDP live-frames mode injects frames
//! into the program on a veth, and XDP_TX really transmits them to the peer.
//! The ceiling, measured in the same run, is a program that only returns
//! XDP_TX (generator and transmit path, no work). The two alternate round
//! by round, so a drift of the shared machine meets both, and the ratio is
//! the median of the rounds' ratios. Needs root.
//! Run: `cargo bench -p lb-user --bench udp_pps` (or `cargo xtask bench`).
use std::process::Command;

use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode};
use lb_common::{FLOOR_PROGRAM_NAME, IPPROTO_UDP, ServiceKey, TX_FLOOR_PROGRAM_NAME};
use lb_host::system;
use lb_user::loader::LoadParams;

#[path = "../tests/common/mod.rs"]
pub mod common;
use common::*;

const PACKETS: u32 = 5_000_000;
const BATCH: u32 = 64;
const ROUNDS: usize = 5;
const INNER: &str = "XDP_LB_PPS_INNER";

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {args:?} failed");
}

/// Builds a namespace with a veth pair, runs the measurement inside it,
/// and removes the namespace however that ends.
fn main() {
    if std::env::var_os(INNER).is_some() {
        return inner();
    }
    let ns = format!("xlbpps{}", std::process::id());
    ip(&["netns", "add", &ns]);
    let result = std::panic::catch_unwind(|| {
        ip(&[
            "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
        ]);
        for dev in ["eth0", "eth1", "lo"] {
            ip(&["-n", &ns, "link", "set", dev, "up"]);
        }
        ip(&["-n", &ns, "addr", "add", "10.0.0.1/24", "dev", "eth0"]);
        let exe = std::env::current_exe().expect("bench path");
        Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(exe)
            .env(INNER, "1")
            .status()
            .expect("run the measurement")
    });
    ip(&["netns", "del", &ns]);
    let status = result.expect("setting up the namespace");
    // The measurement said why it failed.
    std::process::exit(status.code().unwrap_or(1));
}

/// Mean ns per packet of `PACKETS` live frames through `program` on
/// `ifindex`, and the frames its peer `eth1` received meanwhile. A kernel
/// that refuses live frames (measured: Linux 6.18.44 of these machines
/// answers EPERM, as root too) ends the bench with one line saying so.
fn live_round(program: &mut Xdp, frame: &[u8], ifindex: u32) -> (f64, u64) {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let ctx: Vec<u8> = [0, frame.len() as u32, 0, ifindex, 0, 0]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect();
    let before = rx_packets("eth1");
    let result = match program.test_run(TestRunOptions {
        data_in: Some(frame),
        ctx_in: Some(&ctx),
        repeat: PACKETS,
        attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
        ..TestRunOptions::default()
    }) {
        Ok(result) => result,
        Err(e) => {
            eprintln!(
                "error: UDP forwarding rate not measurable here: this kernel refuses BPF_PROG_RUN in XDP live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES, Linux 5.18): {}",
                std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string)
            );
            std::process::exit(2);
        }
    };
    (
        result.duration.as_nanos() as f64,
        rx_packets("eth1") - before,
    )
}

fn rx_packets(dev: &str) -> u64 {
    std::fs::read_to_string(format!("/sys/class/net/{dev}/statistics/rx_packets"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn inner() {
    let load = LoadParams {
        lb_mac: system::interface_mac("eth0").expect("eth0 MAC"),
        ..LOAD
    };
    let service = ServiceKey {
        vip: lb_common::addr::mapped(VIP.octets()),
        port: 5000,
        proto: IPPROTO_UDP,
        _pad: 0,
    };
    let mut lb = TestLb::new(load, service, 65537);
    for i in 0..3 {
        lb.announce(i, 0, 100);
    }

    // A veth delivers XDP_TX frames to its peer only if the peer runs XDP.
    lb.extra_program(FLOOR_PROGRAM_NAME)
        .attach(system::interface_index("eth1").unwrap(), XdpMode::Driver)
        .expect("attach the floor to eth1");
    let ifindex = system::interface_index("eth0").unwrap();
    // 60-byte frame (64 on the wire): Ethernet, IPv4, UDP, 18 bytes of payload.
    let frame = Frame::udp(CLIENT, VIP, 5000, &[0; 18]).bytes();

    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let ceiling = live_round(lb.extra_program(TX_FLOOR_PROGRAM_NAME), &frame, ifindex);
        let forward = live_round(lb.program(), &frame, ifindex);
        rounds.push((ceiling, forward));
    }
    let ceiling = median(rounds.iter().map(|((ns, _), _)| *ns).collect());
    let lb_ns = median(rounds.iter().map(|(_, (ns, _))| *ns).collect());
    let ratio = median(rounds.iter().map(|((c, _), (f, _))| c / f).collect());
    let ceiling_delivered: u64 = rounds.iter().map(|((_, d), _)| d).sum();
    let lb_delivered: u64 = rounds.iter().map(|(_, (_, d))| d).sum();
    let forwarded = lb.maps.counters().unwrap();
    let forwarded: u64 = forwarded
        .iter()
        .filter(|(c, _)| {
            matches!(
                c,
                lb_common::Counter::VipForwarded | lb_common::Counter::VipNewFlow
            )
        })
        .map(|(_, n)| n)
        .sum();

    println!(
        "UDP forwarding, {}-byte frames (without FCS), XDP live frames (batch {BATCH}), {ROUNDS} alternating rounds of {PACKETS}: medians",
        frame.len()
    );
    println!(
        "{:<34} {:>8} {:>10} {:>9} {:>12}",
        "program", "ns/pkt", "Mpps", "x ceiling", "delivered"
    );
    println!(
        "{:<34} {:>8.1} {:>10.2} {:>9.2} {:>12}",
        "XDP_TX only (ceiling)",
        ceiling,
        1e3 / ceiling,
        1.0,
        ceiling_delivered
    );
    println!(
        "{:<34} {:>8.1} {:>10.2} {:>9.2} {:>12}",
        "xdp-lb forward (flow-table hit)",
        lb_ns,
        1e3 / lb_ns,
        ratio,
        lb_delivered
    );
    println!("xdp-lb counted {forwarded} packets forwarded");
}
