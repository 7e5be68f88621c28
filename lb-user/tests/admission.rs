//! Packet tests of who may register: the allowlist, announcement keys
//! (tags, replay, clock skew, rotation), a full server list, keyed leaves
//! and keyed routed reports. The real XDP program through BPF_PROG_TEST_RUN;
//! needs root.
use std::net::Ipv4Addr;

use lb_common::{
    BackendKey, Counter,
    wire::{AnnouncementV1, FLAG_LEAVING, IGMP_V2_LEAVE, Routed, igmp_v2_message},
};
use lb_user::loader::LoadParams;

pub mod common;
use common::*;

#[test]
fn allowlist_drops_announcements_from_other_sources() {
    lb_tests_require_root();
    let mut lb = TestLb::with(LoadParams {
        allowlist_on: true,
        ..LOAD
    });
    lb.maps
        .allow(Ipv4Addr::new(10, 0, 0, 0).into(), 29)
        .unwrap();
    // Inside 10.0.0.0/29: registered.
    let frame = Frame::announce(BACKEND, 2000, 0, 100, 1).bytes();
    assert_eq!(lb.run(&frame).0, XDP_PASS);
    assert_eq!(lb.counter(Counter::AnnounceRegistered), 1);
    // Outside, even plain payloads: dropped, counted, not registered.
    for (src, payload) in [
        (STRANGER, &b"hello"[..]),
        (Ipv4Addr::new(10, 9, 9, 9), &b""[..]),
    ] {
        assert_eq!(
            lb.run(&Frame::udp(src, LB, 2000, payload).bytes()).0,
            XDP_DROP
        );
    }
    assert_eq!(lb.counter(Counter::AnnounceNotAllowed), 2);
    let registered: Vec<[u8; 4]> = lb
        .maps
        .backends()
        .unwrap()
        .iter()
        .map(|(k, _)| k.addr)
        .collect();
    assert_eq!(registered, vec![BACKEND.octets()]);
}

#[test]
fn authenticated_announcements() {
    lb_tests_require_root();
    const K1: [u8; 16] = [1; 16];
    const K2: [u8; 16] = [2; 16];
    const SECOND: u64 = 1_000_000_000;
    let mut lb = TestLb::with(LoadParams {
        auth_on: true,
        ..LOAD
    });
    lb.maps.set_keys(&[K1]).unwrap();
    lb.sync_clock(30 * SECOND);
    let now = lb_host::system::realtime_ns();
    // An announcement from `src`, tagged under `key` as if sent by `signer`.
    let tagged = |src: Ipv4Addr, signer: Ipv4Addr, key: &[u8; 16], flags: u8, sequence: u64| {
        let payload = AnnouncementV1 {
            flags,
            weight: 100,
            sequence,
            tag: 0,
        }
        .encode_tagged(key, signer.octets(), LB.octets());
        Frame::udp(src, LB, 2000, &payload).bytes()
    };
    let valid = tagged(BACKEND, BACKEND, &K1, 0, now);
    let mut flipped = valid.clone();
    let weight_at = valid.len() - 24 + 7;
    flipped[weight_at] ^= 1;
    let registered = |lb: &TestLb| -> Vec<Ipv4Addr> {
        lb.maps
            .backends()
            .unwrap()
            .iter()
            .map(|(k, _)| Ipv4Addr::from(k.addr))
            .collect()
    };
    // (name, keys to install first, frame, counter that moves, registered after)
    type AuthCase<'a> = (
        &'a str,
        Option<&'a [[u8; 16]]>,
        Vec<u8>,
        Counter,
        Vec<Ipv4Addr>,
    );
    let cases: Vec<AuthCase> = vec![
        (
            "valid tag registers",
            None,
            valid.clone(),
            Counter::AnnounceRegistered,
            vec![BACKEND],
        ),
        (
            "the same announcement again is a replay",
            None,
            valid.clone(),
            Counter::AuthReplay,
            vec![BACKEND],
        ),
        (
            "a lower sequence is a replay",
            None,
            tagged(BACKEND, BACKEND, &K1, 0, now - 1),
            Counter::AuthReplay,
            vec![BACKEND],
        ),
        (
            "wrong key",
            None,
            tagged(BACKEND, BACKEND, &K2, 0, now + 1),
            Counter::AuthBadTag,
            vec![BACKEND],
        ),
        (
            "flipped bit",
            None,
            flipped,
            Counter::AuthBadTag,
            vec![BACKEND],
        ),
        (
            "tag made for another source",
            None,
            tagged(OTHER_BACKEND, BACKEND, &K1, 0, now + 1),
            Counter::AuthBadTag,
            vec![BACKEND],
        ),
        (
            "stale timestamp",
            None,
            tagged(OTHER_BACKEND, OTHER_BACKEND, &K1, 0, now - 60 * SECOND),
            Counter::AuthStale,
            vec![BACKEND],
        ),
        (
            "timestamp from the future",
            None,
            tagged(OTHER_BACKEND, OTHER_BACKEND, &K1, 0, now + 60 * SECOND),
            Counter::AuthStale,
            vec![BACKEND],
        ),
        (
            "truncated payload",
            None,
            Frame::udp(
                OTHER_BACKEND,
                LB,
                2000,
                &valid[valid.len() - 24..valid.len() - 1],
            )
            .bytes(),
            Counter::AuthMissing,
            vec![BACKEND],
        ),
        (
            "plain payload",
            None,
            Frame::udp(OTHER_BACKEND, LB, 2000, b"hello").bytes(),
            Counter::AuthMissing,
            vec![BACKEND],
        ),
        (
            "second key accepted during rotation",
            Some(&[K1, K2]),
            tagged(OTHER_BACKEND, OTHER_BACKEND, &K2, 0, now + 2),
            Counter::AnnounceRegistered,
            vec![BACKEND, OTHER_BACKEND],
        ),
        (
            "first key still accepted",
            None,
            tagged(BACKEND, BACKEND, &K1, 0, now + 3),
            Counter::AnnounceAccepted,
            vec![BACKEND, OTHER_BACKEND],
        ),
        (
            "old key dropped after rotation",
            Some(&[K2]),
            tagged(BACKEND, BACKEND, &K1, 0, now + 4),
            Counter::AuthBadTag,
            vec![BACKEND, OTHER_BACKEND],
        ),
        (
            "authenticated LEAVING removes",
            None,
            tagged(OTHER_BACKEND, OTHER_BACKEND, &K2, FLAG_LEAVING, now + 5),
            Counter::AnnounceLeaving,
            vec![BACKEND],
        ),
        (
            "a replay cannot bring a removed backend back",
            None,
            tagged(OTHER_BACKEND, OTHER_BACKEND, &K2, 0, now + 2),
            Counter::AuthReplay,
            vec![BACKEND],
        ),
    ];
    for (name, keys, frame, counter, after) in cases {
        if let Some(keys) = keys {
            lb.maps.set_keys(keys).unwrap();
        }
        let before = lb.counter(counter);
        assert_eq!(lb.run(&frame).0, counter.action() as u32, "{name}: action");
        assert_eq!(
            lb.counter(counter),
            before + 1,
            "{name}: counter {counter:?}"
        );
        let mut got = registered(&lb);
        got.sort();
        assert_eq!(got, after, "{name}: registered backends");
        println!("ok: {name}");
    }
    let removed = BackendKey {
        group_id: 0,
        addr: OTHER_BACKEND.octets(),
    };
    assert_eq!(
        lb.maps.last_sequence(&removed).unwrap(),
        Some(now + 5),
        "the LEAVING's sequence outlives the backend"
    );
}

#[test]
fn a_full_server_list_rejects_newcomers_and_keeps_its_backends() {
    lb_tests_require_root();
    let mut lb = TestLb::with(LoadParams {
        max_backends: 2,
        ..LOAD
    });
    for i in 1..=2 {
        lb.announce(i, 0, 100);
    }
    // Strangers find the list full: dropped, counted, nobody evicted.
    for last in 100..110 {
        let frame = Frame::announce(Ipv4Addr::new(10, 0, 0, last), 2000, 0, 100, 1).bytes();
        assert_eq!(lb.run(&frame).0, XDP_DROP);
    }
    assert_eq!(lb.counter(Counter::AnnounceTableFull), 10);
    let mut registered: Vec<Ipv4Addr> = lb
        .maps
        .backends()
        .unwrap()
        .iter()
        .map(|(k, _)| Ipv4Addr::from(k.addr))
        .collect();
    registered.sort();
    assert_eq!(registered, vec![backend(1).0, backend(2).0]);
    // A registered backend still refreshes.
    lb.announce(1, 0, 100);
    assert_eq!(lb.counter(Counter::AnnounceAccepted), 1);
}

/// The key of the keyed tests below.
const KEY: [u8; 16] = [7; 16];

/// An LB whose announcements must carry a tag under `KEY`, with a clock
/// skew of 30 s.
fn keyed_lb() -> TestLb {
    let mut lb = TestLb::with(LoadParams {
        auth_on: true,
        ..LOAD
    });
    lb.maps.set_keys(&[KEY]).unwrap();
    lb.sync_clock(30_000_000_000);
    lb
}

#[test]
fn with_a_key_a_leave_only_asks_for_confirmation() {
    lb_tests_require_root();
    let mut lb = keyed_lb();
    let payload = AnnouncementV1 {
        flags: 0,
        weight: 100,
        sequence: lb_host::system::realtime_ns(),
        tag: 0,
    }
    .encode_tagged(&KEY, BACKEND.octets(), LB.octets());
    assert_eq!(
        lb.run(&Frame::udp(BACKEND, LB, 2000, &payload).bytes()).0,
        XDP_PASS
    );
    let key = BackendKey {
        group_id: 0,
        addr: BACKEND.octets(),
    };
    let leaves = [
        (
            "IGMPv2 leave",
            Frame::igmp(
                igmp_v2_message(IGMP_V2_LEAVE, 0, GROUP.octets()).to_vec(),
                Ipv4Addr::new(224, 0, 0, 2),
            ),
        ),
        (
            "IGMPv3 change to include nothing",
            Frame::igmp(
                igmp_v3_report(&[(3, GROUP, 0)]),
                Ipv4Addr::new(224, 0, 0, 22),
            ),
        ),
    ];
    for (name, frame) in leaves {
        let before = lb.counter(Counter::IgmpLeave);
        let (action, out) = lb.run(&frame.bytes());
        assert_eq!(action, XDP_PASS, "{name}: action");
        assert_eq!(out, frame.bytes(), "{name}: passed untouched");
        assert_eq!(
            lb.counter(Counter::IgmpLeave),
            before + 1,
            "{name}: counter"
        );
        assert!(
            lb.maps.backend(&key).unwrap().is_some(),
            "{name}: a leave removed a keyed backend at once"
        );
        let pending = lb.maps.pending_leaves::<BackendKey>().unwrap();
        assert_eq!(pending.len(), 1, "{name}: one leave waits for confirmation");
        assert_eq!(pending[0].0, key);
        lb.maps.remove_pending_leave(&key).unwrap();
    }
    // A leave from a source that is not registered waits for nothing.
    let stranger = Frame::igmp(
        igmp_v2_message(IGMP_V2_LEAVE, 0, GROUP.octets()).to_vec(),
        Ipv4Addr::new(224, 0, 0, 2),
    )
    .with(|f| f.src = STRANGER);
    assert_eq!(lb.run(&stranger.bytes()).0, XDP_PASS);
    assert!(lb.maps.pending_leaves::<BackendKey>().unwrap().is_empty());
}

#[test]
fn with_a_key_only_verified_fresh_routed_reports_count() {
    lb_tests_require_root();
    let mut lb = keyed_lb();
    let now = lb_host::system::realtime_ns();
    let report = |key: &[u8; 16], signer: Ipv4Addr, sequence: u64| {
        let payload = Routed::Report {
            group: GROUP.octets(),
            sequence,
        }
        .encode(signer.octets(), Some(key));
        Frame::udp(BACKEND, GROUP, 2000, &payload).bytes()
    };
    let cases = [
        (
            "valid tag",
            report(&KEY, BACKEND, now),
            Counter::RoutedReport,
            1,
        ),
        (
            "the same report again (no replay check)",
            report(&KEY, BACKEND, now),
            Counter::RoutedReport,
            1,
        ),
        (
            "another key",
            report(&[8; 16], BACKEND, now),
            Counter::RoutedRefused,
            0,
        ),
        (
            "tagged for another source",
            report(&KEY, OTHER_BACKEND, now),
            Counter::RoutedRefused,
            0,
        ),
        (
            "a minute old",
            report(&KEY, BACKEND, now - 60_000_000_000),
            Counter::RoutedRefused,
            0,
        ),
        (
            "no tag",
            Frame::udp(
                BACKEND,
                GROUP,
                2000,
                &Routed::Report {
                    group: GROUP.octets(),
                    sequence: now,
                }
                .encode(BACKEND.octets(), None),
            )
            .bytes(),
            Counter::RoutedRefused,
            0,
        ),
    ];
    for (name, frame, counter, counted) in cases {
        let reports = lb.maps.group_reports(0).unwrap().reports;
        let before = lb.counter(counter);
        assert_eq!(lb.run(&frame).0, counter.action() as u32, "{name}: action");
        assert_eq!(lb.counter(counter), before + 1, "{name}: counter");
        assert_eq!(
            lb.maps.group_reports(0).unwrap().reports,
            reports + counted,
            "{name}: counted for liveness"
        );
    }
}
