//! Random and mutated packets through the real program (BPF_PROG_TEST_RUN):
//! announcements (IPv4 and IPv6), IGMP, MLD and VIP traffic, with a key set. Checks, for every
//! packet or at the end, that nothing invalid is registered or forwarded
//! and that the counters add up. Deterministic (fixed seed). Needs root.
use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use lb_common::ServiceKey;
use lb_common::{
    Counter,
    mld::{MLD_DONE, MLD_V1_REPORT, MLD_V2_REPORT, mld_v1_message},
    siphash::{siphash24, tagged_message, tagged_message6},
    wire::{AnnouncementV1, FLAG_LEAVING, IGMP_V2_LEAVE, IGMP_V2_REPORT, Routed, igmp_v2_message},
};
use lb_user::{
    loader::LoadParams,
    tables::{ServiceConfig, ServiceTables, TableParams},
};

pub mod common;
use common::*;

const PACKETS: usize = 100_000;
const KEY: [u8; 16] = *b"fuzzing key 0123";
const SECOND: u64 = 1_000_000_000;
const ETH_HLEN: usize = 14;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// Does this frame carry, where XDP looks for it, an announcement whose tag
/// verifies under KEY? Such a frame may legitimately register its source.
fn carries_valid_tag(frame: &[u8]) -> Option<IpAddr> {
    if frame.get(12..14)? == [0x86, 0xdd] {
        return carries_valid_tag6(frame);
    }
    let ip = frame.get(14..)?;
    let header_len = usize::from(*ip.first()? & 0x0f) * 4;
    let src: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
    let payload = ip.get(header_len + 8..header_len + 8 + 24)?;
    let head: [u8; 16] = payload[..16].try_into().ok()?;
    let tag = u64::from_le_bytes(payload[16..24].try_into().ok()?);
    (siphash24(&KEY, &tagged_message(src, LB.octets(), &head)) == tag).then(|| src.into())
}

/// The same for an IPv6 frame (UDP right after the fixed header, or after
/// a Hop-by-Hop header).
fn carries_valid_tag6(frame: &[u8]) -> Option<IpAddr> {
    let ip = frame.get(14..)?;
    let src: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
    let upper = if *ip.get(6)? == 0 {
        40 + (usize::from(*ip.get(41)?) + 1) * 8
    } else {
        40
    };
    let payload = ip.get(upper + 8..upper + 8 + 24)?;
    let head: [u8; 16] = payload[..16].try_into().ok()?;
    let tag = u64::from_le_bytes(payload[16..24].try_into().ok()?);
    (siphash24(&KEY, &tagged_message6(src, LB6.octets(), &head)) == tag).then(|| src.into())
}

fn mutate(rng: &mut Rng, mut frame: Vec<u8>) -> Vec<u8> {
    match rng.below(4) {
        // Flip one to four random bytes.
        0 | 1 => {
            for _ in 0..=rng.below(4) {
                if !frame.is_empty() {
                    let at = rng.below(frame.len() as u64) as usize;
                    frame[at] ^= rng.byte() | 1;
                }
            }
        }
        // Cut it short, down to the Ethernet header: the kernel runs XDP on
        // nothing shorter (and BPF_PROG_TEST_RUN refuses it).
        2 => {
            let len =
                ETH_HLEN + rng.below(frame.len().saturating_sub(ETH_HLEN) as u64 + 1) as usize;
            frame.truncate(len);
        }
        // Leave it whole.
        _ => {}
    }
    frame
}

fn random_source(rng: &mut Rng) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 20 + rng.below(40) as u8)
}

fn random_source6(rng: &mut Rng) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 20 + rng.below(40) as u16)
}

/// An announcement's sequence within a minute of `now` either way.
fn sequence_near(rng: &mut Rng, now: u64) -> u64 {
    now.wrapping_add(rng.below(120 * SECOND))
        .wrapping_sub(60 * SECOND)
}

fn generate(rng: &mut Rng, now: u64) -> Vec<u8> {
    match rng.below(16) {
        0 | 1 => (0..ETH_HLEN as u64 + rng.below(200))
            .map(|_| rng.byte())
            .collect(),
        2..=4 => {
            let src = random_source(rng);
            let flags = if rng.below(8) == 0 { FLAG_LEAVING } else { 0 };
            let sequence = sequence_near(rng, now);
            let key = if rng.below(4) == 0 { [9; 16] } else { KEY };
            let payload = AnnouncementV1 {
                flags,
                weight: rng.next() as u16,
                sequence,
                tag: 0,
            }
            .encode_tagged(&key, src.octets(), LB.octets());
            mutate(rng, Frame::udp(src, LB, 2000, &payload).bytes())
        }
        5 | 6 => {
            let kind = [IGMP_V2_REPORT, IGMP_V2_LEAVE, 0x12, 0x22, 0x11][rng.below(5) as usize];
            let group = if rng.below(2) == 0 {
                GROUP
            } else {
                Ipv4Addr::from(rng.next() as u32)
            };
            let src = random_source(rng);
            mutate(
                rng,
                Frame::igmp(igmp_v2_message(kind, 0, group.octets()).to_vec(), group)
                    .with(|f| f.src = src)
                    .bytes(),
            )
        }
        10 => {
            let src = random_source6(rng);
            let flags = if rng.below(8) == 0 { FLAG_LEAVING } else { 0 };
            let key = if rng.below(4) == 0 { [9; 16] } else { KEY };
            let payload = AnnouncementV1 {
                flags,
                weight: rng.next() as u16,
                sequence: sequence_near(rng, now),
                tag: 0,
            }
            .encode_tagged6(&key, src.octets(), LB6.octets());
            let frame = Frame6::udp(src, LB6, PORT6, &payload);
            let frame = if rng.below(4) == 0 {
                frame.with(|f| f.hop_by_hop = vec![1, 4, 0, 0, 0, 0])
            } else {
                frame
            };
            mutate(rng, frame.bytes())
        }
        11 => {
            let group = if rng.below(2) == 0 {
                GROUP6
            } else {
                Ipv6Addr::from(u128::from(rng.next()))
            };
            let message = match rng.below(3) {
                0 => mld_v1_message(MLD_V1_REPORT, 0, group.octets()).to_vec(),
                1 => mld_v1_message(MLD_DONE, 0, group.octets()).to_vec(),
                _ => {
                    let mut msg = vec![
                        MLD_V2_REPORT,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        1,
                        rng.below(7) as u8,
                        0,
                        0,
                        0,
                    ];
                    msg.extend_from_slice(&group.octets());
                    msg
                }
            };
            mutate(rng, Frame6::mld(message, group).bytes())
        }
        12 => {
            let src = random_source6(rng);
            let key = if rng.below(4) == 0 { [9; 16] } else { KEY };
            let report = Routed::Report {
                group: GROUP6.octets(),
                sequence: sequence_near(rng, now),
            };
            let payload = report.encode(src.octets(), Some(&key));
            mutate(rng, Frame6::udp(src, GROUP6, PORT6, &payload).bytes())
        }
        13 | 14 => {
            // IPv6 clients of the IPv6 VIP, some with extension headers.
            let flags = [0x02, 0x10, 0x18, 0x11, 0x04][rng.below(5) as usize];
            let src = Ipv6Addr::from(u128::from(rng.next()) << 64 | u128::from(rng.next()));
            let frame = tcp6(src, rng.next() as u16, VIP6, 80, flags);
            let frame = match rng.below(6) {
                0 => frame.with(|f| f.hop_by_hop = vec![1, 4, 0, 0, 0, 0]),
                1 => frame.with(|f| f.next_header = 44),
                _ => frame,
            };
            mutate(rng, frame.bytes())
        }
        _ => {
            let flags = [0x02, 0x10, 0x18, 0x11, 0x04][rng.below(5) as usize];
            let frame = Frame::tcp(
                Ipv4Addr::from(rng.next() as u32),
                rng.next() as u16,
                VIP,
                80,
                flags,
            );
            mutate(rng, frame.bytes())
        }
    }
}

/// Every registered backend's address, both families.
fn registered(lb: &TestLb) -> Vec<IpAddr> {
    let v4 = lb.maps.backends().unwrap().into_iter();
    let v6 = lb.maps.backends6().unwrap().into_iter();
    v4.map(|(k, _)| IpAddr::from(k.addr))
        .chain(v6.map(|(k, _)| IpAddr::from(k.addr)))
        .collect()
}

#[test]
fn fuzzed_packets_register_and_forward_nothing_invalid() {
    let mut lb = TestLb::new(
        LoadParams {
            auth_on: true,
            ..LOAD
        },
        TCP_SERVICE,
        // A prime with 100 entries for each of the 40 possible sources:
        // with a key, leaves no longer remove backends at once, so all of
        // them may be registered together.
        4001,
    );
    lb.maps.set_keys(&[KEY]).unwrap();
    lb.maps.configure_ipv6_group(1, GROUP6, PORT6).unwrap();
    // Beside TCP_SERVICE, TCP port 80 of an IPv6 VIP served by the IPv6 group.
    let service6 = ServiceConfig {
        key: ServiceKey {
            vip: VIP6.octets(),
            port: 80,
            proto: lb_common::IPPROTO_TCP,
            _pad: 0,
        },
        group_id: 1,
        group_ipv6: true,
    };
    let service = ServiceConfig {
        key: TCP_SERVICE,
        group_id: 0,
        group_ipv6: false,
    };
    lb.tables = ServiceTables::new(
        &mut lb.maps,
        &[service, service6],
        TableParams {
            min_size: 4001,
            reach: reach(LOAD),
            second_chance_window: SECOND_CHANCE_WINDOW,
        },
        Default::default(),
    )
    .unwrap();
    lb.sync_clock(30 * SECOND);
    let now = lb_host::system::realtime_ns();
    let counters_before: u64 = lb.maps.counters().unwrap().iter().map(|(_, n)| n).sum();

    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut legit_sources = HashSet::new();
    let (mut tx, mut registered_seen, mut registered6_seen) = (0u64, 0usize, 0usize);
    let mut tx6 = 0u64;
    for i in 0..PACKETS {
        let frame = generate(&mut rng, now);
        if let Some(src) = carries_valid_tag(&frame) {
            legit_sources.insert(src);
        }
        let (action, out) = lb.run(&frame);
        match action {
            XDP_TX => {
                tx += 1;
                tx6 += u64::from(out[12..14] == [0x86, 0xdd]);
                let v4 = lb.maps.backends().unwrap().into_iter().map(|(_, e)| e.mac);
                let v6 = lb.maps.backends6().unwrap().into_iter().map(|(_, e)| e.mac);
                let macs: Vec<[u8; 6]> = v4.chain(v6).collect();
                let dst: [u8; 6] = out[..6].try_into().unwrap();
                assert!(
                    macs.contains(&dst),
                    "packet {i}: forwarded to {dst:?}, not a registered backend"
                );
                assert_eq!(out[6..12], LB_MAC, "packet {i}: source MAC");
            }
            // XDP_PASS leaves the frame to the kernel exactly as it came.
            2 => assert_eq!(out, frame, "packet {i}: passed frame was modified"),
            1 => {}
            other => panic!("packet {i}: unexpected action {other}"),
        }
        // The control loop's pass: forwarding tables follow the server list.
        if i % 500 == 0 {
            lb.sync_tables();
        }
        // Whatever is registered was announced with a valid tag.
        if i % 100 == 0 {
            for addr in registered(&lb) {
                assert!(
                    legit_sources.contains(&addr),
                    "packet {i}: {addr} registered without a valid tag"
                );
                registered_seen += 1;
                registered6_seen += usize::from(addr.is_ipv6());
            }
        }
    }
    for addr in registered(&lb) {
        assert!(
            legit_sources.contains(&addr),
            "{addr} registered without a valid tag"
        );
    }
    assert!(registered6_seen > 0, "no IPv6 backend ever registered");
    assert!(tx6 > 0, "no IPv6 client's packet was ever forwarded");
    let counters = lb.maps.counters().unwrap();
    let total: u64 = counters.iter().map(|(_, n)| n).sum();
    assert_eq!(
        total - counters_before,
        PACKETS as u64,
        "every packet moves exactly one counter"
    );
    let get = |c: Counter| counters.iter().find(|(k, _)| *k == c).unwrap().1;
    println!(
        "{PACKETS} packets: {tx} forwarded ({tx6} IPv6), {} sources with valid tags, {registered_seen} registrations checked; \
         counters: {counters:?}",
        legit_sources.len()
    );
    // The run must exercise the interesting paths, or it proves little.
    for c in [
        Counter::AnnounceRegistered,
        Counter::AuthBadTag,
        Counter::AuthReplay,
        Counter::AuthStale,
        Counter::AuthMissing,
        Counter::Malformed,
        Counter::IgmpReport,
        Counter::MldReport,
        Counter::RoutedReport,
        Counter::RoutedRefused,
        Counter::VipNewFlow,
        Counter::VipExtensionHeaders,
    ] {
        assert!(get(c) > 0, "{c:?} never happened");
    }
}
