//! Table-driven packet tests: the real XDP program in the real kernel through
//! BPF_PROG_TEST_RUN. Each case gives an input frame, the expected XDP action,
//! the expected change in the maps and the counter that must move. Needs root.
use std::net::Ipv4Addr;

use aya::programs::{TestRun, TestRunOptions};
use lb_common::{
    BackendKey, COARSE_LAG_MAX_NS, Counter,
    wire::{
        AnnouncementV1, FLAG_DRAINING, FLAG_LEAVING, IGMP_QUERY, IGMP_V1_REPORT, IGMP_V2_LEAVE,
        IGMP_V2_REPORT, Routed, igmp_v2_message, igmp_v3_query,
    },
};
use lb_user::{
    loader::{load_program, xdp_program},
    maps::{GroupConfig, LbMaps},
};

pub mod common;
use common::*;

/// The change a case must make to the server list or the group statistics.
#[derive(Debug)]
enum Change {
    None,
    /// Backend `addr` in group `group` now has these fields.
    Backend {
        group: u32,
        addr: Ipv4Addr,
        weight: u16,
        flags: u8,
        version: u8,
        announcements: u64,
    },
    Removed {
        group: u32,
        addr: Ipv4Addr,
    },
    Report {
        group: u32,
    },
    /// A leave counted for `group`; its sender, a registered backend, removed.
    Leave {
        group: u32,
        removes: Ipv4Addr,
    },
}

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    action: u32,
    counter: Counter,
    change: Change,
}

/// Everything a case may change, read before and after it.
#[derive(Debug, PartialEq)]
struct Snapshot {
    backends: Vec<(BackendKey, lb_common::BackendEntry)>,
    reports: Vec<(u64, u64)>,
    counters: Vec<(Counter, u64)>,
}

fn snapshot(maps: &LbMaps) -> Snapshot {
    let mut backends = maps.backends().unwrap();
    backends.sort_by_key(|(k, _)| (k.group_id, k.addr));
    Snapshot {
        backends,
        reports: (0..2)
            .map(|g| {
                let r = maps.group_reports(g).unwrap();
                (r.reports, r.leaves)
            })
            .collect(),
        counters: maps.counters().unwrap(),
    }
}

fn cases() -> Vec<Case> {
    use Change::*;
    let plain = |payload: &[u8]| Frame::udp(OTHER_BACKEND, LB, 2000, payload);
    let routed_report = |group: Ipv4Addr| {
        Routed::Report {
            group: group.octets(),
            sequence: 1,
        }
        .encode(BACKEND.octets(), Option::None)
    };
    vec![
        Case {
            name: "routed report counts for its group's liveness",
            frame: Frame::udp(BACKEND, GROUP, 2000, &routed_report(GROUP)).bytes(),
            action: XDP_DROP,
            counter: Counter::RoutedReport,
            change: Report { group: 0 },
        },
        Case {
            name: "routed report to the second group's port and address",
            frame: Frame::udp(BACKEND, GROUP2, 2001, &routed_report(GROUP2)).bytes(),
            action: XDP_DROP,
            counter: Counter::RoutedReport,
            change: Report { group: 1 },
        },
        Case {
            name: "routed report to a group on another group's port",
            frame: Frame::udp(BACKEND, GROUP, 2001, &routed_report(GROUP)).bytes(),
            action: XDP_PASS,
            counter: Counter::Ignored,
            change: None,
        },
        Case {
            name: "routed report naming another group",
            frame: Frame::udp(BACKEND, GROUP, 2000, &routed_report(GROUP2)).bytes(),
            action: XDP_DROP,
            counter: Counter::RoutedRefused,
            change: None,
        },
        Case {
            name: "routed report one byte short",
            frame: Frame::udp(BACKEND, GROUP, 2000, &routed_report(GROUP)[..27]).bytes(),
            action: XDP_DROP,
            counter: Counter::RoutedRefused,
            change: None,
        },
        Case {
            name: "another LB's routed query passes",
            frame: Frame::udp(
                OTHER_BACKEND,
                GROUP,
                2000,
                &Routed::Query {
                    lb: OTHER_BACKEND.octets(),
                    max_resp_ms: 1000,
                    sequence: 1,
                }
                .encode(OTHER_BACKEND.octets(), Option::None),
            )
            .bytes(),
            action: XDP_PASS,
            counter: Counter::Ignored,
            change: None,
        },
        Case {
            name: "v1 announcement registers with its weight",
            frame: Frame::announce(BACKEND, 2000, 0, 250, 7).bytes(),
            action: XDP_PASS,
            counter: Counter::AnnounceRegistered,
            change: Backend {
                group: 0,
                addr: BACKEND,
                weight: 250,
                flags: 0,
                version: 1,
                announcements: 1,
            },
        },
        Case {
            name: "second v1 announcement refreshes and sets DRAINING",
            frame: Frame::announce(BACKEND, 2000, FLAG_DRAINING, 250, 8).bytes(),
            action: XDP_DROP,
            counter: Counter::AnnounceAccepted,
            change: Backend {
                group: 0,
                addr: BACKEND,
                weight: 250,
                flags: FLAG_DRAINING,
                version: 1,
                announcements: 2,
            },
        },
        Case {
            name: "plain payload registers the source with defaults",
            frame: plain(b"hello").bytes(),
            action: XDP_PASS,
            counter: Counter::AnnounceRegistered,
            change: Backend {
                group: 0,
                addr: OTHER_BACKEND,
                weight: 100,
                flags: 0,
                version: 0,
                announcements: 1,
            },
        },
        Case {
            name: "empty payload registers the source with defaults",
            frame: plain(b"").bytes(),
            action: XDP_DROP,
            counter: Counter::AnnounceAccepted,
            change: Backend {
                group: 0,
                addr: OTHER_BACKEND,
                weight: 100,
                flags: 0,
                version: 0,
                announcements: 2,
            },
        },
        Case {
            name: "magic with an unknown version is a plain announcement",
            frame: plain(&{
                let mut p = AnnouncementV1 {
                    flags: FLAG_LEAVING,
                    weight: 5,
                    sequence: 1,
                    tag: 0,
                }
                .encode();
                p[4] = 2;
                p
            })
            .bytes(),
            action: XDP_DROP,
            counter: Counter::AnnounceAccepted,
            change: Backend {
                group: 0,
                addr: OTHER_BACKEND,
                weight: 100,
                flags: 0,
                version: 0,
                announcements: 3,
            },
        },
        Case {
            name: "LEAVING removes at once",
            frame: Frame::announce(OTHER_BACKEND, 2000, FLAG_LEAVING, 100, 9).bytes(),
            action: XDP_DROP,
            counter: Counter::AnnounceLeaving,
            change: Removed {
                group: 0,
                addr: OTHER_BACKEND,
            },
        },
        Case {
            name: "second group's port registers in that group",
            frame: Frame::announce(BACKEND, 2001, 0, 100, 10).bytes(),
            action: XDP_PASS,
            counter: Counter::AnnounceRegistered,
            change: Backend {
                group: 1,
                addr: BACKEND,
                weight: 100,
                flags: 0,
                version: 1,
                announcements: 1,
            },
        },
        Case {
            name: "IP options before the UDP header are skipped",
            frame: Frame::announce(OTHER_BACKEND, 2000, 0, 42, 11)
                .with(|f| f.options = vec![1, 1, 1, 0])
                .bytes(),
            action: XDP_PASS,
            counter: Counter::AnnounceRegistered,
            change: Backend {
                group: 0,
                addr: OTHER_BACKEND,
                weight: 42,
                flags: 0,
                version: 1,
                announcements: 1,
            },
        },
        Case {
            name: "wrong port passes untouched",
            frame: Frame::announce(STRANGER, 2002, 0, 1, 1).bytes(),
            action: XDP_PASS,
            counter: Counter::Ignored,
            change: None,
        },
        Case {
            name: "wrong destination passes untouched",
            frame: Frame::udp(STRANGER, Ipv4Addr::new(10, 0, 0, 99), 2000, b"x").bytes(),
            action: XDP_PASS,
            counter: Counter::Ignored,
            change: None,
        },
        Case {
            name: "first fragment is dropped, not registered",
            frame: Frame::announce(STRANGER, 2000, 0, 1, 1)
                .with(|f| f.frag = 0x2000)
                .bytes(),
            action: XDP_DROP,
            counter: Counter::AnnounceMalformed,
            change: None,
        },
        Case {
            name: "UDP length beyond the IP payload is dropped",
            frame: Frame::announce(STRANGER, 2000, 0, 1, 1)
                .with(|f| f.payload[4..6].copy_from_slice(&200u16.to_be_bytes()))
                .bytes(),
            action: XDP_DROP,
            counter: Counter::AnnounceMalformed,
            change: None,
        },
        Case {
            name: "truncated UDP header",
            frame: Frame::udp(STRANGER, LB, 2000, b"")
                .with(|f| f.payload.truncate(4))
                .bytes(),
            action: XDP_PASS,
            counter: Counter::Malformed,
            change: None,
        },
        Case {
            name: "IP total length beyond the frame",
            frame: Frame::announce(STRANGER, 2000, 0, 1, 1)
                .with(|f| f.truncate = 10)
                .bytes(),
            action: XDP_PASS,
            counter: Counter::Malformed,
            change: None,
        },
        Case {
            name: "truncated IPv4 header",
            frame: Frame::announce(STRANGER, 2000, 0, 1, 1).bytes()[..24].to_vec(),
            action: XDP_PASS,
            counter: Counter::Malformed,
            change: None,
        },
        Case {
            name: "multicast source is never registered",
            frame: Frame::announce(Ipv4Addr::new(224, 0, 0, 5), 2000, 0, 1, 1).bytes(),
            action: XDP_DROP,
            counter: Counter::AnnounceBadSource,
            change: None,
        },
        Case {
            name: "multicast source MAC is never registered",
            frame: Frame::announce(STRANGER, 2000, 0, 1, 1)
                .with(|f| f.src_mac[0] = 0x01)
                .bytes(),
            action: XDP_DROP,
            counter: Counter::AnnounceBadSource,
            change: None,
        },
        Case {
            name: "IGMPv2 report for the group",
            frame: Frame::igmp(
                igmp_v2_message(IGMP_V2_REPORT, 0, GROUP.octets()).to_vec(),
                GROUP,
            )
            .bytes(),
            action: XDP_PASS,
            counter: Counter::IgmpReport,
            change: Report { group: 0 },
        },
        Case {
            name: "IGMPv1 report for the second group",
            frame: Frame::igmp(
                igmp_v2_message(IGMP_V1_REPORT, 0, GROUP2.octets()).to_vec(),
                GROUP2,
            )
            .bytes(),
            action: XDP_PASS,
            counter: Counter::IgmpReport,
            change: Report { group: 1 },
        },
        Case {
            name: "IGMPv3 join report (change to exclude) after an unrelated record",
            frame: Frame::igmp(
                igmp_v3_report(&[(4, Ipv4Addr::new(239, 1, 1, 1), 2), (4, GROUP, 0)]),
                Ipv4Addr::new(224, 0, 0, 22),
            )
            .bytes(),
            action: XDP_PASS,
            counter: Counter::IgmpReport,
            change: Report { group: 0 },
        },
        Case {
            name: "IGMPv3 leave (change to include nothing) removes its sender",
            frame: Frame::igmp(
                igmp_v3_report(&[(3, GROUP, 0)]),
                Ipv4Addr::new(224, 0, 0, 22),
            )
            .with(|f| f.src = OTHER_BACKEND)
            .bytes(),
            action: XDP_PASS,
            counter: Counter::IgmpLeave,
            change: Leave {
                group: 0,
                removes: OTHER_BACKEND,
            },
        },
        Case {
            name: "IGMPv2 leave removes its sender from that group only",
            frame: Frame::igmp(
                igmp_v2_message(IGMP_V2_LEAVE, 0, GROUP.octets()).to_vec(),
                Ipv4Addr::new(224, 0, 0, 2),
            )
            .bytes(),
            action: XDP_PASS,
            counter: Counter::IgmpLeave,
            change: Leave {
                group: 0,
                removes: BACKEND,
            },
        },
        Case {
            name: "IGMPv3 report for other groups only",
            frame: Frame::igmp(
                igmp_v3_report(&[(2, Ipv4Addr::new(239, 1, 1, 1), 0)]),
                Ipv4Addr::new(224, 0, 0, 22),
            )
            .bytes(),
            action: XDP_PASS,
            counter: Counter::Ignored,
            change: None,
        },
        Case {
            name: "IGMPv3 report claiming more records than it holds",
            frame: Frame::igmp(
                {
                    let mut m = igmp_v3_report(&[(2, Ipv4Addr::new(239, 1, 1, 1), 0)]);
                    m[7] = 3;
                    m
                },
                Ipv4Addr::new(224, 0, 0, 22),
            )
            .bytes(),
            action: XDP_PASS,
            counter: Counter::Malformed,
            change: None,
        },
        Case {
            name: "IGMP query is not a report",
            frame: Frame::igmp(igmp_v2_message(IGMP_QUERY, 10, LB.octets()).to_vec(), GROUP)
                .bytes(),
            action: XDP_PASS,
            counter: Counter::Ignored,
            change: None,
        },
        Case {
            name: "IGMPv3-layout query is not a report",
            frame: Frame::igmp(igmp_v3_query(1, LB.octets(), 2, 1).to_vec(), GROUP).bytes(),
            action: XDP_PASS,
            counter: Counter::Ignored,
            change: None,
        },
        Case {
            name: "report for an unrelated group",
            frame: Frame::igmp(
                igmp_v2_message(IGMP_V2_REPORT, 0, [239, 9, 9, 9]).to_vec(),
                Ipv4Addr::new(239, 9, 9, 9),
            )
            .bytes(),
            action: XDP_PASS,
            counter: Counter::Ignored,
            change: None,
        },
        Case {
            name: "truncated IGMP message",
            frame: Frame::igmp(vec![0x16, 0, 0, 0], GROUP).bytes(),
            action: XDP_PASS,
            counter: Counter::Malformed,
            change: None,
        },
        Case {
            name: "ARP passes untouched",
            frame: Frame::udp(BACKEND, LB, 2000, b"")
                .with(|f| f.ether_type = 0x0806)
                .bytes(),
            action: XDP_PASS,
            counter: Counter::Ignored,
            change: None,
        },
        Case {
            name: "other IP protocols pass untouched",
            frame: Frame::ip(6, BACKEND, LB, vec![0; 20]).bytes(),
            action: XDP_PASS,
            counter: Counter::Ignored,
            change: None,
        },
    ]
}

fn expected_after(before: &Snapshot, case: &Case) -> Snapshot {
    let mut backends = before.backends.clone();
    let mut reports = before.reports.clone();
    let mut remove = |group: u32, addr: Ipv4Addr| {
        let key = BackendKey {
            group_id: group,
            addr: addr.octets(),
        };
        assert!(
            backends.iter().any(|(k, _)| *k == key),
            "{}: {addr} should be registered before",
            case.name
        );
        backends.retain(|(k, _)| *k != key);
    };
    match case.change {
        // Checked field by field by the caller.
        Change::None | Change::Backend { .. } => {}
        Change::Removed { group, addr } => remove(group, addr),
        Change::Report { group } => reports[group as usize].0 += 1,
        Change::Leave { group, removes } => {
            reports[group as usize].1 += 1;
            remove(group, removes);
        }
    }
    let counters = before
        .counters
        .iter()
        .map(|&(c, n)| (c, if c == case.counter { n + 1 } else { n }))
        .collect();
    Snapshot {
        backends,
        reports,
        counters,
    }
}

#[test]
fn packet_table() {
    lb_tests_require_root();
    let mut ebpf = load_program(LOAD, None).expect("load the XDP program (are you root?)");
    let mut maps = LbMaps::take(&mut ebpf).unwrap();
    maps.configure_groups(&[
        GroupConfig {
            group: GROUP.into(),
            port: 2000,
        },
        GroupConfig {
            group: GROUP2.into(),
            port: 2001,
        },
    ])
    .unwrap();
    let program = xdp_program(&mut ebpf).unwrap();
    for case in cases() {
        let before = snapshot(&maps);
        let started_ns = lb_host::system::monotonic_ns();
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(&case.frame),
                ..TestRunOptions::default()
            })
            .unwrap_or_else(|e| panic!("{}: test run failed: {e}", case.name));
        assert_eq!(result.return_value, case.action, "{}: action", case.name);
        let after = snapshot(&maps);
        let mut expected = expected_after(&before, &case);
        if let Change::Backend {
            group,
            addr,
            weight,
            flags,
            version,
            announcements,
        } = case.change
        {
            let key = BackendKey {
                group_id: group,
                addr: addr.octets(),
            };
            let (_, entry) = after
                .backends
                .iter()
                .find(|(k, _)| *k == key)
                .unwrap_or_else(|| panic!("{}: backend not in the list", case.name));
            assert_eq!(
                (
                    entry.weight,
                    entry.flags,
                    entry.version,
                    entry.announcements,
                    entry.mac
                ),
                (weight, flags, version, announcements, BACKEND_MAC),
                "{}: entry",
                case.name
            );
            assert_stamped_during(entry.last_seen_ns, started_ns, case.name);
            expected.backends.retain(|(k, _)| *k != key);
            expected.backends.push((key, *entry));
            expected.backends.sort_by_key(|(k, _)| (k.group_id, k.addr));
        }
        assert_eq!(after, expected, "{}: maps", case.name);
        println!("ok: {}", case.name);
    }
}

/// A heartbeat's stamp is the coarse clock of its run: at most
/// `COARSE_LAG_MAX_NS` before the run started, never after it ended.
fn assert_stamped_during(stamp_ns: u64, started_ns: u64, what: &str) {
    let ended_ns = lb_host::system::monotonic_ns();
    assert!(
        stamp_ns + COARSE_LAG_MAX_NS >= started_ns && stamp_ns <= ended_ns,
        "{what}: stamped {stamp_ns} ns, run from {started_ns} to {ended_ns} ns"
    );
}

/// XDP reads the coarse clock once per tick and CPU: its stamps follow
/// the clock across ticks, each one a reading that a CPU cached.
#[test]
fn heartbeats_are_stamped_with_the_coarse_clock_of_their_tick() {
    lb_tests_require_root();
    let mut lb = TestLb::with(LOAD);
    let key = BackendKey {
        group_id: 0,
        addr: backend(1).0.octets(),
    };
    for beat in 0..5 {
        let started_ns = lb_host::system::monotonic_ns();
        lb.announce(1, 0, 100);
        let (_, entry) = lb
            .maps
            .backends()
            .unwrap()
            .into_iter()
            .find(|(k, _)| *k == key)
            .expect("the backend is registered");
        assert_stamped_during(entry.last_seen_ns, started_ns, &format!("beat {beat}"));
        let cached = lb.maps.coarse_clocks().unwrap();
        assert!(
            cached.iter().any(|c| c.ns == entry.last_seen_ns),
            "beat {beat}: the stamp {} is no CPU's reading ({cached:?})",
            entry.last_seen_ns
        );
        // Longer than the lag: a stale reading would fail the next beat.
        std::thread::sleep(std::time::Duration::from_nanos(2 * COARSE_LAG_MAX_NS));
    }
}
