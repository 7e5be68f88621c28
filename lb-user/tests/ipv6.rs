//! The XDP program's IPv6 registration path (protocol §9), through
//! BPF_PROG_TEST_RUN: UDPv6 announcements to the LB's IPv6 address fill
//! the IPv6 server list, through a Hop-by-Hop header too, and MLD reports
//! and routed reports (version 2) count for their group's liveness. Each
//! case checks the action, the counter and the server list.
pub mod common;

use std::net::Ipv6Addr;

use common::*;
use lb_common::{
    BackendKey6, Counter, MacKey,
    mld::{MLD_DONE, MLD_V1_REPORT, MLD_V2_REPORT, mld_v1_message, mld_v1_query, mld_v2_query},
    wire::{AnnouncementV1, FLAG_DRAINING, FLAG_LEAVING, IGMP_V3_CHANGE_TO_INCLUDE, Routed},
};
use lb_user::loader::LoadParams;

/// The IPv6 group's id and port (group 0 is the IPv4 one, port 2000).
const GROUP6_ID: u32 = 1;
const PORT6: u16 = 2001;
const BACKEND6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const OTHER_BACKEND6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3);
const OTHER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];

fn lb(load: LoadParams) -> TestLb {
    let mut lb = TestLb::with(load);
    lb.maps
        .configure_ipv6_group(GROUP6_ID, GROUP6, PORT6)
        .unwrap();
    lb
}

/// A routed message (version 2) from the backend to the IPv6 group's port.
fn routed6(message: Routed<[u8; 16]>) -> Vec<u8> {
    Frame6::udp(
        BACKEND6,
        GROUP6,
        PORT6,
        &message.encode(BACKEND6.octets(), None),
    )
    .bytes()
}

/// The IPv6 server list as (address, weight, flags, announcements).
fn backends6(lb: &TestLb) -> Vec<(Ipv6Addr, u16, u8, u64)> {
    let mut list: Vec<_> = lb
        .maps
        .backends6()
        .unwrap()
        .into_iter()
        .map(|(k, e)| {
            assert_eq!(k.group_id, GROUP6_ID);
            (Ipv6Addr::from(k.addr), e.weight, e.flags, e.announcements)
        })
        .collect();
    list.sort();
    list
}

/// An MLDv2 report of `records` (type, group, sources).
fn mld_v2_report(records: &[(u8, Ipv6Addr, u16)]) -> Vec<u8> {
    let mut msg = vec![MLD_V2_REPORT, 0, 0, 0, 0, 0];
    msg.extend_from_slice(&(records.len() as u16).to_be_bytes());
    for &(kind, group, sources) in records {
        msg.extend_from_slice(&[kind, 0]);
        msg.extend_from_slice(&sources.to_be_bytes());
        msg.extend_from_slice(&group.octets());
        msg.extend(std::iter::repeat_n(0xab, 16 * usize::from(sources)));
    }
    msg
}

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    action: u32,
    counter: Counter,
    /// The IPv6 server list after the frame.
    list: Vec<(Ipv6Addr, u16, u8, u64)>,
    /// MLD reports counted for the IPv6 group after the frame.
    reports: u64,
}

#[test]
fn ipv6_announcements_and_mld_reports() {
    lb_tests_require_root();
    let mut lb = lb(LOAD);
    let other_group = Ipv6Addr::new(0xff15, 0, 0, 0, 0, 0, 0, 0x99);
    let through_hop_by_hop = Frame6::announce(OTHER_BACKEND6, PORT6, 0, 7, 1)
        .with(|f| f.hop_by_hop = vec![1, 4, 0, 0, 0, 0])
        .with(|f| f.src_mac = OTHER_MAC)
        .bytes();
    let cases = [
        Case {
            name: "a v1 announcement registers with its weight",
            frame: Frame6::announce(BACKEND6, PORT6, 0, 250, 1).bytes(),
            action: XDP_PASS,
            counter: Counter::AnnounceRegistered,
            list: vec![(BACKEND6, 250, 0, 1)],
            reports: 0,
        },
        Case {
            name: "the next refreshes it and sets DRAINING",
            frame: Frame6::announce(BACKEND6, PORT6, FLAG_DRAINING, 250, 2).bytes(),
            action: XDP_DROP,
            counter: Counter::AnnounceAccepted,
            list: vec![(BACKEND6, 250, FLAG_DRAINING, 2)],
            reports: 0,
        },
        Case {
            name: "through a Hop-by-Hop header",
            frame: through_hop_by_hop,
            action: XDP_PASS,
            counter: Counter::AnnounceRegistered,
            list: vec![(BACKEND6, 250, FLAG_DRAINING, 2), (OTHER_BACKEND6, 7, 0, 1)],
            reports: 0,
        },
        Case {
            name: "LEAVING removes it",
            frame: Frame6::announce(OTHER_BACKEND6, PORT6, FLAG_LEAVING, 7, 2)
                .with(|f| f.src_mac = OTHER_MAC)
                .bytes(),
            action: XDP_DROP,
            counter: Counter::AnnounceLeaving,
            list: vec![(BACKEND6, 250, FLAG_DRAINING, 2)],
            reports: 0,
        },
        Case {
            name: "to another address: not for the LB",
            frame: Frame6::announce(OTHER_BACKEND6, PORT6, 0, 7, 3)
                .with(|f| f.dst = OTHER_BACKEND6)
                .bytes(),
            action: XDP_PASS,
            counter: Counter::Ignored,
            list: vec![(BACKEND6, 250, FLAG_DRAINING, 2)],
            reports: 0,
        },
        Case {
            name: "to a port of no group",
            frame: Frame6::announce(OTHER_BACKEND6, 2999, 0, 7, 3).bytes(),
            action: XDP_PASS,
            counter: Counter::Ignored,
            list: vec![(BACKEND6, 250, FLAG_DRAINING, 2)],
            reports: 0,
        },
        Case {
            name: "to the IPv4 group's port",
            frame: Frame6::announce(OTHER_BACKEND6, 2000, 0, 7, 3).bytes(),
            action: XDP_PASS,
            counter: Counter::Ignored,
            list: vec![(BACKEND6, 250, FLAG_DRAINING, 2)],
            reports: 0,
        },
        Case {
            name: "from a link-local source",
            frame: Frame6::announce(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 3), PORT6, 0, 7, 3)
                .bytes(),
            action: XDP_DROP,
            counter: Counter::AnnounceBadSource,
            list: vec![(BACKEND6, 250, FLAG_DRAINING, 2)],
            reports: 0,
        },
        Case {
            name: "a UDP length past the payload",
            frame: Frame6::announce(OTHER_BACKEND6, PORT6, 0, 7, 3)
                .with(|f| f.payload[5] += 1)
                .bytes(),
            action: XDP_DROP,
            counter: Counter::AnnounceMalformed,
            list: vec![(BACKEND6, 250, FLAG_DRAINING, 2)],
            reports: 0,
        },
        Case {
            name: "a payload length past the frame",
            frame: Frame6::announce(OTHER_BACKEND6, PORT6, 0, 7, 3)
                .with(|f| f.payload_len_extra = 1)
                .bytes(),
            action: XDP_PASS,
            counter: Counter::Malformed,
            list: vec![(BACKEND6, 250, FLAG_DRAINING, 2)],
            reports: 0,
        },
        Case {
            name: "a truncated UDP header",
            frame: Frame6::ip(17, OTHER_BACKEND6, LB6, vec![0; 4]).bytes(),
            action: XDP_PASS,
            counter: Counter::Malformed,
            list: vec![(BACKEND6, 250, FLAG_DRAINING, 2)],
            reports: 0,
        },
        Case {
            name: "a Hop-by-Hop header longer than the payload",
            frame: Frame6::announce(OTHER_BACKEND6, PORT6, 0, 7, 3)
                .with(|f| f.hop_by_hop = vec![1, 4, 0, 0, 0, 0])
                .with(|f| f.payload.clear())
                .bytes()
                .into_iter()
                .enumerate()
                // Claims 16 bytes of options where the packet has 8.
                .map(|(i, b)| if i == 14 + 40 + 1 { 1 } else { b })
                .collect(),
            action: XDP_PASS,
            counter: Counter::Malformed,
            list: vec![(BACKEND6, 250, FLAG_DRAINING, 2)],
            reports: 0,
        },
        Case {
            name: "another extension header first: not parsed",
            frame: Frame6::announce(OTHER_BACKEND6, PORT6, 0, 7, 3)
                .with(|f| f.next_header = 43)
                .bytes(),
            action: XDP_PASS,
            counter: Counter::Ignored,
            list: vec![(BACKEND6, 250, FLAG_DRAINING, 2)],
            reports: 0,
        },
        Case {
            name: "an MLDv1 report for the group",
            frame: Frame6::mld(
                mld_v1_message(MLD_V1_REPORT, 0, GROUP6.octets()).to_vec(),
                GROUP6,
            )
            .bytes(),
            action: XDP_PASS,
            counter: Counter::MldReport,
            list: vec![(BACKEND6, 250, FLAG_DRAINING, 2)],
            reports: 1,
        },
        Case {
            name: "an MLDv2 report whose second record is the group",
            frame: Frame6::mld(
                mld_v2_report(&[(4, other_group, 1), (4, GROUP6, 0)]),
                "ff02::16".parse().unwrap(),
            )
            .bytes(),
            action: XDP_PASS,
            counter: Counter::MldReport,
            list: vec![(BACKEND6, 250, FLAG_DRAINING, 2)],
            reports: 2,
        },
        Case {
            name: "a Done from a MAC no backend announces from",
            frame: Frame6::mld(
                mld_v1_message(MLD_DONE, 0, GROUP6.octets()).to_vec(),
                GROUP6,
            )
            .with(|f| f.src_mac = [0x02, 0, 0, 0, 0, 0x09])
            .bytes(),
            action: XDP_PASS,
            counter: Counter::MldLeaveUntied,
            list: vec![(BACKEND6, 250, FLAG_DRAINING, 2)],
            reports: 2,
        },
        Case {
            name: "a Done for another group",
            frame: Frame6::mld(
                mld_v1_message(MLD_DONE, 0, other_group.octets()).to_vec(),
                GROUP6,
            )
            .bytes(),
            action: XDP_PASS,
            counter: Counter::Ignored,
            list: vec![(BACKEND6, 250, FLAG_DRAINING, 2)],
            reports: 2,
        },
        Case {
            name: "another LB's MLDv2 query: passed, counts for nothing",
            frame: Frame6::mld(
                mld_v2_query(1000, OTHER_BACKEND6.octets(), 2, 125).to_vec(),
                GROUP6,
            )
            .bytes(),
            action: XDP_PASS,
            counter: Counter::Ignored,
            list: vec![(BACKEND6, 250, FLAG_DRAINING, 2)],
            reports: 2,
        },
        Case {
            name: "an MLDv1 query: the same",
            frame: Frame6::mld(mld_v1_query(1000, OTHER_BACKEND6.octets()).to_vec(), GROUP6)
                .bytes(),
            action: XDP_PASS,
            counter: Counter::Ignored,
            list: vec![(BACKEND6, 250, FLAG_DRAINING, 2)],
            reports: 2,
        },
        Case {
            name: "a truncated MLD message",
            frame: Frame6::mld(vec![MLD_V1_REPORT, 0, 0], GROUP6).bytes(),
            action: XDP_PASS,
            counter: Counter::Malformed,
            list: vec![(BACKEND6, 250, FLAG_DRAINING, 2)],
            reports: 2,
        },
        Case {
            name: "an MLDv2 leave (CHANGE_TO_INCLUDE, no sources) from its MAC removes it",
            frame: Frame6::mld(
                mld_v2_report(&[(IGMP_V3_CHANGE_TO_INCLUDE, GROUP6, 0)]),
                "ff02::16".parse().unwrap(),
            )
            .bytes(),
            action: XDP_PASS,
            counter: Counter::MldLeave,
            list: vec![],
            reports: 2,
        },
        Case {
            name: "a Done from that MAC again: nothing left to remove",
            frame: Frame6::mld(
                mld_v1_message(MLD_DONE, 0, GROUP6.octets()).to_vec(),
                GROUP6,
            )
            .bytes(),
            action: XDP_PASS,
            counter: Counter::MldLeaveUntied,
            list: vec![],
            reports: 2,
        },
        Case {
            name: "a routed report (v2) to the group counts for its liveness",
            frame: routed6(Routed::Report {
                group: GROUP6.octets(),
                sequence: 1,
            }),
            action: XDP_DROP,
            counter: Counter::RoutedReport,
            list: vec![],
            reports: 3,
        },
        Case {
            name: "a routed report naming another group",
            frame: routed6(Routed::Report {
                group: other_group.octets(),
                sequence: 2,
            }),
            action: XDP_DROP,
            counter: Counter::RoutedRefused,
            list: vec![],
            reports: 3,
        },
        Case {
            name: "a v1 routed report to an IPv6 group",
            frame: Frame6::udp(
                BACKEND6,
                GROUP6,
                PORT6,
                &Routed::Report {
                    group: [239, 192, 0, 1],
                    sequence: 3,
                }
                .encode([10, 0, 0, 2], None),
            )
            .bytes(),
            action: XDP_DROP,
            counter: Counter::RoutedRefused,
            list: vec![],
            reports: 3,
        },
        Case {
            name: "a routed report cut short",
            frame: Frame6::udp(
                BACKEND6,
                GROUP6,
                PORT6,
                &Routed::Report {
                    group: GROUP6.octets(),
                    sequence: 4,
                }
                .encode(BACKEND6.octets(), None)[..39],
            )
            .bytes(),
            action: XDP_DROP,
            counter: Counter::RoutedRefused,
            list: vec![],
            reports: 3,
        },
        Case {
            name: "another LB's routed query: left to the stack",
            frame: routed6(Routed::Query {
                lb: OTHER_BACKEND6.octets(),
                max_resp_ms: 100,
                sequence: 5,
            }),
            action: XDP_PASS,
            counter: Counter::Ignored,
            list: vec![],
            reports: 3,
        },
    ];
    for case in cases {
        let before = lb.counter(case.counter);
        assert_eq!(lb.run(&case.frame).0, case.action, "{}: action", case.name);
        assert_eq!(
            lb.counter(case.counter),
            before + 1,
            "{}: counter {:?}",
            case.name,
            case.counter
        );
        assert_eq!(backends6(&lb), case.list, "{}: server list", case.name);
        let reports = lb.maps.group_reports(GROUP6_ID).unwrap().reports;
        assert_eq!(reports, case.reports, "{}: MLD reports", case.name);
        println!("ok: {}", case.name);
    }
    assert!(
        lb.maps.backends().unwrap().is_empty(),
        "nothing reached the IPv4 server list"
    );
    let note = |mac| MacKey {
        group_id: GROUP6_ID,
        mac,
        _pad: [0; 2],
    };
    assert_eq!(
        lb.maps.mac_backend6(&note(BACKEND_MAC)).unwrap(),
        Some(BACKEND6.octets()),
        "the MAC a backend of the LB's /64 registered from names it"
    );
    assert_eq!(
        lb.maps.mac_backend6(&note(OTHER_MAC)).unwrap(),
        None,
        "a backend outside it (fd00::3) announces from a router's MAC: not tied"
    );
    assert_eq!(
        lb.maps.group_reports(GROUP6_ID).unwrap().leaves,
        3,
        "leaves of the group"
    );
}

/// With a key, an IPv6 announcement registers only under a tag over the
/// IPv6 addresses, and is not accepted twice; an MLD leave from its MAC
/// removes nothing but is held for confirmation.
#[test]
fn with_a_key_ipv6_announcements_need_their_tag() {
    lb_tests_require_root();
    const KEY: [u8; 16] = [7; 16];
    let mut lb = lb(LoadParams {
        auth_on: true,
        ..LOAD
    });
    lb.maps.set_keys(&[KEY]).unwrap();
    lb.sync_clock(30 * 1_000_000_000);
    let sequence = lb_host::system::realtime_ns();
    let announcement = AnnouncementV1 {
        flags: 0,
        weight: 100,
        sequence,
        tag: 0,
    };
    let signed = announcement.encode_tagged6(&KEY, BACKEND6.octets(), LB6.octets());
    let frame = |payload: &[u8]| Frame6::udp(BACKEND6, LB6, PORT6, payload).bytes();
    let cases = [
        (
            "under another key",
            announcement.encode_tagged6(&[8; 16], BACKEND6.octets(), LB6.octets()),
            Counter::AuthBadTag,
        ),
        (
            "tagged as from another source",
            announcement.encode_tagged6(&KEY, OTHER_BACKEND6.octets(), LB6.octets()),
            Counter::AuthBadTag,
        ),
        ("tagged right", signed, Counter::AnnounceRegistered),
        ("the same again", signed, Counter::AuthReplay),
    ];
    for (name, payload, counter) in cases {
        let before = lb.counter(counter);
        assert_eq!(
            lb.run(&frame(&payload)).0,
            counter.action() as u32,
            "{name}: action"
        );
        assert_eq!(lb.counter(counter), before + 1, "{name}: counter");
    }
    let report = Routed::Report {
        group: GROUP6.octets(),
        sequence,
    };
    let routed = [
        (
            "a routed report without a tag",
            None,
            Counter::RoutedRefused,
        ),
        (
            "a routed report under another key",
            Some(&[8; 16]),
            Counter::RoutedRefused,
        ),
        (
            "a routed report tagged right",
            Some(&KEY),
            Counter::RoutedReport,
        ),
    ];
    for (name, key, counter) in routed {
        let payload = report.encode(BACKEND6.octets(), key);
        let frame = Frame6::udp(BACKEND6, GROUP6, PORT6, &payload).bytes();
        let before = lb.counter(counter);
        assert_eq!(lb.run(&frame).0, counter.action() as u32, "{name}: action");
        assert_eq!(lb.counter(counter), before + 1, "{name}: counter");
    }
    let leave = Frame6::mld(
        mld_v1_message(MLD_DONE, 0, GROUP6.octets()).to_vec(),
        GROUP6,
    );
    assert_eq!(lb.run(&leave.bytes()).0, XDP_PASS);
    assert_eq!(
        lb.counter(Counter::MldLeave),
        1,
        "with a key a leave from the backend's MAC is held"
    );
    let key = BackendKey6 {
        group_id: GROUP6_ID,
        addr: BACKEND6.octets(),
    };
    let held: Vec<_> = lb
        .maps
        .pending_leaves::<BackendKey6>()
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        held,
        vec![key],
        "held for lb-user's confirmation, not removed"
    );
    let keys: Vec<_> = lb
        .maps
        .backends6()
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, vec![key]);
    assert_eq!(
        lb.maps.last_sequence6(&key).unwrap(),
        Some(sequence),
        "remembered"
    );
}

/// With `--allow`, only IPv6 sources in its IPv6 prefixes register.
#[test]
fn with_an_allowlist_only_its_ipv6_prefixes_register() {
    lb_tests_require_root();
    let mut lb = lb(LoadParams {
        allowlist_on: true,
        ..LOAD
    });
    lb.maps
        .allow("2001:db8::".parse::<Ipv6Addr>().unwrap().into(), 64)
        .unwrap();
    lb.maps
        .allow(std::net::Ipv4Addr::new(10, 0, 0, 0).into(), 8)
        .unwrap();
    let cases = [
        (BACKEND6, Counter::AnnounceRegistered),
        (OTHER_BACKEND6, Counter::AnnounceNotAllowed),
    ];
    for (src, counter) in cases {
        let frame = Frame6::announce(src, PORT6, 0, 100, 1).bytes();
        let before = lb.counter(counter);
        assert_eq!(lb.run(&frame).0, counter.action() as u32, "{src}: action");
        assert_eq!(lb.counter(counter), before + 1, "{src}: counter");
    }
    assert_eq!(backends6(&lb), vec![(BACKEND6, 100, 0, 1)]);
}
