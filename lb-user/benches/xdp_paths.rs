//! Per-packet cost of each XDP path through BPF_PROG_TEST_RUN, next to an
//! empty XDP program measured in the same run (the floor). The kernel times
//! `REPEAT` runs of one frame and reports the mean. Needs root.
//! Run: `cargo bench -p lb-user --bench xdp_paths` (or `cargo xtask bench`).
use std::{net::Ipv4Addr, time::Duration};

use aya::programs::{TestRun, TestRunOptions, Xdp};
use lb_common::{
    FLOOR_PROGRAM_NAME, IPPROTO_TCP, ServiceKey,
    wire::{IGMP_V2_REPORT, igmp_v2_message},
};

#[path = "../tests/common/mod.rs"]
pub mod common;
use common::*;

const REPEAT: u32 = 2_000_000;
/// Rounds per path; the median is reported, against the noise of a shared machine.
const ROUNDS: usize = 5;

fn run(program: &mut Xdp, frame: &[u8], repeat: u32) -> Duration {
    program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::default()
        })
        .expect("BPF_PROG_TEST_RUN (are you root?)")
        .duration
}

fn median_ns(program: &mut Xdp, frame: &[u8]) -> f64 {
    let mut samples: Vec<f64> = (0..ROUNDS)
        .map(|_| run(program, frame, REPEAT).as_nanos() as f64)
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[ROUNDS / 2]
}

fn main() {
    let service = ServiceKey {
        vip: VIP.octets(),
        port: 80,
        proto: IPPROTO_TCP,
        _pad: 0,
    };
    let mut lb = TestLb::new(LOAD, service, 65537);
    // Three registered backends and a built table, as in production.
    for i in 0..3 {
        lb.announce(i, 0, 100);
    }
    let established = Frame::tcp(CLIENT, 40000, VIP, 80, 0x10).bytes();
    // Records the flow so that the ACKs below hit the connection table.
    lb.run(&Frame::tcp(CLIENT, 40000, VIP, 80, 0x02).bytes());

    let paths: Vec<(&str, Vec<u8>)> = vec![
        (
            "pass-through (TCP, not a VIP)",
            Frame::tcp(CLIENT, 40000, LB, 22, 0x10).bytes(),
        ),
        (
            "announcement (refresh)",
            Frame::announce(Ipv4Addr::new(10, 0, 0, 10), 2000, 0, 100, 2)
                .with(|f| f.src_mac = [2, 0xbe, 0, 0, 0, 0])
                .bytes(),
        ),
        (
            "IGMP report",
            Frame::igmp(
                igmp_v2_message(IGMP_V2_REPORT, 0, GROUP.octets()).to_vec(),
                GROUP,
            )
            .bytes(),
        ),
        ("forward, connection-table hit", established),
        (
            "forward, miss (SYN, Maglev)",
            Frame::tcp(CLIENT, 40001, VIP, 80, 0x02).bytes(),
        ),
    ];
    let floor = median_ns(lb.extra_program(FLOOR_PROGRAM_NAME), &paths[0].1);
    println!("XDP per-packet cost, BPF_PROG_TEST_RUN, median of {ROUNDS} x {REPEAT} runs");
    println!("{:<34} {:>9} {:>9}", "path", "ns/pkt", "x floor");
    println!(
        "{:<34} {:>9.1} {:>9.2}",
        "empty XDP program (floor)", floor, 1.0
    );
    let program = lb.program();
    for (name, frame) in &paths {
        let ns = median_ns(program, frame);
        println!("{name:<34} {ns:>9.1} {:>9.2}", ns / floor);
    }
}
