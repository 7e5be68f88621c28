//! Per-packet cost of each XDP path through BPF_PROG_TEST_RUN, next to an
//! empty XDP program measured in the same run (the floor). The kernel times
//! `REPEAT` runs of one frame and reports the mean. A registration changes
//! the map (a repeat would only refresh), so that path runs each of
//! `REGISTRATIONS` new sources once, with its log record written and with
//! it held back by the rate limit, and reports the median of the kernel's
//! per-run times, next to the floor measured the same way. So does the IPIP
//! path, which grows the frame: BPF_PROG_TEST_RUN does not restore a frame
//! between repeats, so a second repeat would meet the wrapped packet (to
//! the backend, no VIP) and only pass it; each run is a fresh frame, and
//! its L2 twin is measured the same way beside it, in a network namespace
//! with a route and a resolved neighbour for the FIB lookup. Needs root.
//! Run: `cargo bench -p lb-user --bench xdp_paths` (or `cargo xtask bench`).
use std::{net::Ipv4Addr, time::Duration};

use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use lb_common::{
    Counter, FLOOR_PROGRAM_NAME, LogBudget,
    mld::{MLD_V1_REPORT, mld_v1_message},
    wire::{IGMP_V2_REPORT, igmp_v2_message},
};

#[path = "../tests/common/mod.rs"]
pub mod common;
use common::*;

const REPEAT: u32 = 2_000_000;
/// Rounds per path; the median is reported, against the noise of a shared machine.
const ROUNDS: usize = 5;

fn run(program: &mut Xdp, frame: &[u8], repeat: u32) -> Duration {
    run_on(program, frame, repeat, None)
}

/// `repeat` runs of `frame`, with `ctx` (an `xdp_md`) if given.
fn run_on(program: &mut Xdp, frame: &[u8], repeat: u32, ctx: Option<&[u8]>) -> Duration {
    program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: ctx,
            repeat,
            ..TestRunOptions::default()
        })
        .expect("BPF_PROG_TEST_RUN (are you root?)")
        .duration
}

fn median_ns(program: &mut Xdp, frame: &[u8]) -> f64 {
    median(
        (0..ROUNDS)
            .map(|_| run(program, frame, REPEAT).as_nanos() as f64)
            .collect(),
    )
}

/// New sources registered, one run each, per variant of the registration path.
const REGISTRATIONS: u16 = 2000;

/// Drops the records: the benchmark only keeps the log ring from filling
/// (a full ring makes writing a record cheaper than it is).
struct Discard;

impl log::Log for Discard {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        false
    }
    fn log(&self, _: &log::Record<'_>) {}
    fn flush(&self) {}
}

/// Median kernel time of one run of each frame (each once).
fn median_single_ns(program: &mut Xdp, frames: &[Vec<u8>], mut before: impl FnMut()) -> f64 {
    median(
        frames
            .iter()
            .map(|frame| {
                before();
                run(program, frame, 1).as_nanos() as f64
            })
            .collect(),
    )
}

/// Registration of a new backend, with and without its log record.
fn registration_rows(lb: &mut TestLb) -> Vec<(&'static str, f64, f64)> {
    let mut logger = aya_log::EbpfLogger::init_with_logger(&mut lb.ebpf, Discard)
        .expect("the program's log ring");
    let frames: Vec<Vec<u8>> = (0..REGISTRATIONS)
        .map(|i| {
            let [hi, lo] = i.to_be_bytes();
            Frame::announce(Ipv4Addr::new(10, 1, hi, lo.max(1)), 2000, 0, 100, 1)
                .with(|f| f.src_mac = [2, 0xbf, 0, 0, hi, lo])
                .bytes()
        })
        .collect();
    let floor = median_single_ns(lb.extra_program(FLOOR_PROGRAM_NAME), &frames, || {});
    let mut rows = vec![("empty XDP program, one run each", floor, floor)];
    let budgets = [
        ("registration, log record written", LogBudget::default()),
        (
            "registration, log record held back",
            // A window that opened now and is spent: the record is skipped.
            LogBudget {
                window_start_ns: lb_host::system::monotonic_ns(),
                written: u32::MAX,
                suppressed: 0,
            },
        ),
    ];
    for (name, budget) in budgets {
        let mut ran = 0u32;
        let program = lb_user::loader::xdp_program(&mut lb.ebpf).unwrap();
        let ns = median_single_ns(program, &frames, || {
            lb.maps.set_log_budget(budget).unwrap();
            ran += 1;
            if ran.is_multiple_of(256) {
                logger.flush();
            }
        });
        let registered = lb.maps.backends().unwrap();
        for (key, _) in registered.iter().filter(|(k, _)| k.addr[1] == 1) {
            lb.maps
                .remove_backend(key, lb_common::DepartureReason::Leaving, 0)
                .unwrap();
        }
        logger.flush();
        rows.push((name, ns, floor));
    }
    rows
}

/// Clients in the distinct-clients row: three times the connection table
/// of `LOAD`, so that most of them evict the least recently used flow.
const DISTINCT_CLIENTS: u32 = 3 * LOAD.max_flows;

/// New flows (SYN, Maglev pick, connection-table insert), each frame run
/// once: from one client, and from distinct clients into a cold table that
/// fills and then evicts. Checks that every run forwarded a new flow.
fn new_flow_rows(lb: &mut TestLb) -> Vec<(&'static str, f64, f64)> {
    let one: Vec<Vec<u8>> = (0..DISTINCT_CLIENTS)
        .map(|_| Frame::tcp(CLIENT, 40002, VIP, 80, 0x02).bytes())
        .collect();
    let distinct: Vec<Vec<u8>> = (0..DISTINCT_CLIENTS)
        .map(|i| Frame::tcp(Ipv4Addr::from(0x0a40_0000 + i), 40000, VIP, 80, 0x02).bytes())
        .collect();
    let floor = median_single_ns(lb.extra_program(FLOOR_PROGRAM_NAME), &one, || {});
    let mut rows = vec![("empty XDP program, one run each", floor, floor)];
    for (name, frames) in [
        ("SYN, one client", &one),
        ("SYN, distinct clients, evicting", &distinct),
    ] {
        let before = lb.counter(Counter::VipNewFlow);
        let program = lb_user::loader::xdp_program(&mut lb.ebpf).unwrap();
        let ns = median_single_ns(program, frames, || {});
        assert_eq!(
            lb.counter(Counter::VipNewFlow) - before,
            u64::from(DISTINCT_CLIENTS),
            "{name}: every run must start a forwarded flow"
        );
        rows.push((name, ns, floor));
    }
    rows
}

/// Single runs per path in the L2-and-IPIP rows.
const SINGLE_RUNS: u32 = 20_000;

/// Median kernel time of `SINGLE_RUNS` single runs of `frame` arriving on `ifindex`.
fn median_single_on(program: &mut Xdp, frame: &[u8], ifindex: u32) -> f64 {
    let ctx = routed::xdp_md(frame.len(), ifindex);
    median(
        (0..SINGLE_RUNS)
            .map(|_| run_on(program, frame, 1, Some(&ctx)).as_nanos() as f64)
            .collect(),
    )
}

/// An established flow forwarded at L2 (on-segment backends) and through
/// IP-in-IP (a routed backend, FIB lookup, outer header), for an IPv4 and
/// an IPv6 client, each run on a fresh frame; checks that every run was
/// forwarded by the path named.
fn l2_and_ipip_rows() -> Vec<(&'static str, f64, f64)> {
    routed::in_namespace(|ifindex| {
        let syn = Frame::tcp(CLIENT, 40000, VIP, 80, 0x02).bytes();
        let established = Frame::tcp(CLIENT, 40000, VIP, 80, 0x10).bytes();
        let syn6 = tcp6(CLIENT6, 40000, VIP6, 80, 0x02).bytes();
        let established6 = tcp6(CLIENT6, 40000, VIP6, 80, 0x10).bytes();
        let mut l2 = TestLb::with(LOAD);
        for i in 0..3 {
            l2.announce(i, 0, 100);
        }
        let mut ipip = TestLb::with(LOAD);
        ipip.register_routed(routed::ROUTED_BACKEND);
        let mut l2_6 = TestLb::serving_ipv6_backends(VIP6.into());
        let mut ip6ip6 = TestLb::serving(VIP6.into(), true);
        ip6ip6.register_routed6(routed::ROUTED_BACKEND6);
        let floor = median_single_on(l2.extra_program(FLOOR_PROGRAM_NAME), &established, ifindex);
        let mut rows = vec![("empty XDP program, one run each", floor, floor)];
        for (name, lb, (syn, established), counter) in [
            (
                "L2, connection-table hit",
                &mut l2,
                (&syn, &established),
                Counter::VipForwarded,
            ),
            (
                "IPIP, connection-table hit",
                &mut ipip,
                (&syn, &established),
                Counter::IpipForwarded,
            ),
            (
                "IPv6 L2, connection-table hit",
                &mut l2_6,
                (&syn6, &established6),
                Counter::VipForwarded,
            ),
            (
                "ip6ip6, connection-table hit",
                &mut ip6ip6,
                (&syn6, &established6),
                Counter::IpipForwarded,
            ),
        ] {
            // Records the flow.
            lb.run_on(ifindex, syn);
            let before = lb.counter(counter);
            let ns = median_single_on(lb.program(), established, ifindex);
            assert_eq!(
                lb.counter(counter) - before,
                u64::from(SINGLE_RUNS),
                "{name}: every run must be forwarded this way"
            );
            rows.push((name, ns, floor));
        }
        rows.push((
            "second chance (unknown, wrapped x2)",
            second_chance_ns(ifindex),
            floor,
        ));
        rows
    })
}

/// The second chance (protocol §7): an ACK of a flow the LB has no entry
/// for, whose previous backend is not its pick, sent to the pick (on the
/// segment) wrapped twice; never recorded, so every run takes the whole
/// path: service, table, previous table, MTU check, two headers.
fn second_chance_ns(ifindex: u32) -> f64 {
    let window = Duration::from_millis(100);
    let mut lb = TestLb::with_window(LOAD, TCP_SERVICE, 1009, window);
    lb.announce(0, 0, 100);
    lb.announce(1, 0, 100);
    std::thread::sleep(window + Duration::from_millis(50));
    lb.announce(2, 0, 100);
    let frame = (40000..41000)
        .map(|port| Frame::tcp(CLIENT, port, VIP, 80, 0x10).bytes())
        .find(|frame| {
            let before = lb.counter(Counter::VipSecondChance);
            lb.run_on(ifindex, frame);
            lb.counter(Counter::VipSecondChance) > before
        })
        .expect("a flow whose previous backend differs");
    let before = lb.counter(Counter::VipSecondChance);
    let ns = median_single_on(lb.program(), &frame, ifindex);
    assert_eq!(
        lb.counter(Counter::VipSecondChance) - before,
        u64::from(SINGLE_RUNS),
        "every run must take the second chance"
    );
    ns
}

/// The agent's decapsulation object (backend-agent embeds the same).
static DECAP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-decap.o"));

/// The agent's side of the path, in a network namespace of its own where
/// it holds one TCP connection: IPIP from a known LB stripped, and a
/// second chance kept (its socket found) or handed on (no socket: the
/// first header stripped, redirected); each the median of single runs
/// (each run rewrites its frame).
fn decap_rows() -> Vec<(&'static str, f64)> {
    routed::in_namespace(|_| {
        let mut ebpf = aya::Ebpf::load(DECAP_OBJECT).expect("the decapsulation object");
        let local = Ipv4Addr::new(127, 0, 0, 1);
        // The maps of `lb_common::decap_maps!`, filled as the agent does.
        let mut local_map: aya::maps::Array<_, [u8; 4]> =
            ebpf.map_mut("DECAP_LOCAL").unwrap().try_into().unwrap();
        local_map.set(0, &local.octets(), 0).unwrap();
        let mut lbs: aya::maps::HashMap<_, [u8; 4], u8> =
            ebpf.map_mut("DECAP_LBS").unwrap().try_into().unwrap();
        lbs.insert(&LB.octets(), &1, 0).unwrap();
        let program: &mut SchedClassifier = ebpf
            .program_mut(lb_common::DECAP_PROGRAM_NAME)
            .unwrap()
            .try_into()
            .unwrap();
        program.load().expect("verifying the decapsulation program");
        // One connection this backend holds (loopback to loopback).
        let listener = std::net::TcpListener::bind((local, 0)).unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (from, to) = (client.local_addr().unwrap(), listener.local_addr().unwrap());
        let ack =
            |sport: u16| Frame::tcp(local, sport, local, to.port(), 0x10).bytes()[14..].to_vec();
        let next = Ipv4Addr::new(127, 0, 0, 2);
        let wrap = |src: Ipv4Addr, dst: Ipv4Addr, inner: &[u8]| {
            Frame::ip(4, src, dst, inner.to_vec()).bytes()[14..].to_vec()
        };
        let frame = |packet: Vec<u8>| {
            let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
            f.extend(packet);
            f
        };
        let cases = [
            (
                "IPIP from a known LB",
                frame(wrap(LB, local, &ack(from.port()))),
            ),
            (
                "second chance, kept (its socket)",
                frame(wrap(LB, local, &wrap(LB, next, &ack(from.port())))),
            ),
            (
                "second chance, handed on",
                frame(wrap(LB, local, &wrap(LB, next, &ack(from.port() ^ 1)))),
            ),
        ];
        cases
            .into_iter()
            .map(|(name, frame)| {
                let ns = median(
                    (0..SINGLE_RUNS)
                        .map(|_| {
                            program
                                .test_run(TestRunOptions {
                                    data_in: Some(&frame),
                                    ..TestRunOptions::default()
                                })
                                .expect("BPF_PROG_TEST_RUN")
                                .duration
                                .as_nanos() as f64
                        })
                        .collect(),
                );
                (name, ns)
            })
            .collect()
    })
}

/// IPv6 clients' paths (protocol §9), beside their IPv4 twins above: an
/// LB serving an IPv6 VIP from three IPv6 backends at layer 2, and one
/// serving an IPv4 VIP from them (`xdp_lb` hands those to `xdp_lb4to6`).
fn ipv6_rows() -> Vec<(&'static str, f64)> {
    let mut lb6 = TestLb::serving_ipv6_backends(VIP6.into());
    let vip4 = Ipv4Addr::new(10, 0, 0, 101);
    let mut lb46 = TestLb::serving_ipv6_backends(vip4.into());
    // Records the flows so that the ACKs below hit the connection tables.
    lb6.run(&tcp6(CLIENT6, 40000, VIP6, 80, 0x02).bytes());
    lb46.run(&Frame::tcp(CLIENT, 40000, vip4, 80, 0x02).bytes());
    let rows = [
        (
            "IPv6 pass-through (TCP, not a VIP)",
            false,
            tcp6(CLIENT6, 40000, LB6, 22, 0x10).bytes(),
            Counter::Ignored,
        ),
        (
            "IPv6 forward, connection-table hit",
            false,
            tcp6(CLIENT6, 40000, VIP6, 80, 0x10).bytes(),
            Counter::VipForwarded,
        ),
        (
            "IPv6 forward, miss (SYN, Maglev)",
            false,
            tcp6(CLIENT6, 40001, VIP6, 80, 0x02).bytes(),
            Counter::VipNewFlow,
        ),
        (
            "IPv4 VIP to IPv6 backends, hit",
            true,
            Frame::tcp(CLIENT, 40000, vip4, 80, 0x10).bytes(),
            Counter::VipForwarded,
        ),
    ];
    rows.into_iter()
        .map(|(name, to_ipv4_vip, frame, counter)| {
            let lb = if to_ipv4_vip { &mut lb46 } else { &mut lb6 };
            let before = lb.counter(counter);
            let ns = median_ns(lb.program(), &frame);
            assert!(
                lb.counter(counter) - before >= u64::from(REPEAT),
                "{name}: every run must end in {counter:?}"
            );
            (name, ns)
        })
        .collect()
}

fn main() {
    let mut lb = TestLb::new(LOAD, TCP_SERVICE, 65537);
    // Three registered backends and a built table, as in production.
    for i in 0..3 {
        lb.announce(i, 0, 100);
    }
    // An IPv6 group beside the IPv4 one (protocol §9).
    lb.maps.configure_ipv6_group(1, GROUP6, 2001).unwrap();
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
        (
            "IPv6 announcement (refresh)",
            Frame6::announce("2001:db8::10".parse().unwrap(), 2001, 0, 100, 2)
                .with(|f| f.src_mac = [2, 0xbe, 0, 0, 0, 0])
                .bytes(),
        ),
        (
            "MLD report",
            Frame6::mld(
                mld_v1_message(MLD_V1_REPORT, 0, GROUP6.octets()).to_vec(),
                GROUP6,
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
    for (name, ns) in ipv6_rows() {
        println!("{name:<34} {ns:>9.1} {:>9.2}", ns / floor);
    }

    println!();
    println!(
        "registration of a new backend, BPF_PROG_TEST_RUN, median of {REGISTRATIONS} single runs"
    );
    println!("{:<34} {:>9} {:>9}", "path", "ns/pkt", "x floor");
    for (name, ns, floor) in registration_rows(&mut lb) {
        println!("{name:<34} {ns:>9.1} {:>9.2}", ns / floor);
    }
    println!();
    println!(
        "new flows, BPF_PROG_TEST_RUN, median of {DISTINCT_CLIENTS} single runs (connection table of {})",
        LOAD.max_flows
    );
    println!("{:<34} {:>9} {:>9}", "path", "ns/pkt", "x floor");
    let rows = new_flow_rows(&mut lb);
    for (name, ns, floor) in &rows {
        println!("{name:<34} {ns:>9.1} {:>9.2}", ns / floor);
    }
    println!(
        "distinct clients / one client: {:.2}",
        rows[2].1 / rows[1].1
    );
    println!();
    println!(
        "established flow, L2 and IPIP, and a second chance, BPF_PROG_TEST_RUN, median of {SINGLE_RUNS} single runs"
    );
    println!("{:<34} {:>9} {:>9}", "path", "ns/pkt", "x floor");
    let rows = l2_and_ipip_rows();
    for (name, ns, floor) in &rows {
        println!("{name:<34} {ns:>9.1} {:>9.2}", ns / floor);
    }
    println!(
        "IPIP / L2: {:.2}; ip6ip6 / IPIP: {:.2}; IPv6 L2 / L2: {:.2}",
        rows[2].1 / rows[1].1,
        rows[4].1 / rows[2].1,
        rows[3].1 / rows[1].1
    );
    println!();
    println!(
        "the agent's decapsulation (tc), BPF_PROG_TEST_RUN, median of {SINGLE_RUNS} single runs"
    );
    println!("{:<34} {:>9}", "path", "ns/pkt");
    for (name, ns) in decap_rows() {
        println!("{name:<34} {ns:>9.1}");
    }
}
