//! Forwarding through BPF_PROG_TEST_RUN: VIP packets leave with XDP_TX and
//! the chosen backend's MAC; flows keep their backend; DRAINING backends
//! get no new flows; bad VIP packets are dropped and counted. Needs root.
use std::{collections::HashMap, net::Ipv4Addr};

use aya::maps::{MapData, MapInfo};
use lb_common::{
    Counter, FlowBucket, FlowKey, IPPROTO_TCP, ServiceKey, Traffic, flow_hash, map_name,
    wire::{FLAG_DOWN, FLAG_DRAINING, FLAG_LEAVING},
};

pub mod common;
use common::*;
use lb_user::{
    maps::TableKind,
    tables::{ServiceConfig, ServiceTables, TableParams},
};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
impl TestLb {
    /// Sends a SYN from CLIENT:sport; returns the backend MAC it went to.
    fn connect(&mut self, sport: u16) -> Option<[u8; 6]> {
        self.segment(sport, SYN)
    }

    /// Sends a segment of an established connection (ACK).
    fn send(&mut self, sport: u16) -> Option<[u8; 6]> {
        self.segment(sport, ACK)
    }

    /// Runs one segment and checks the whole frame that leaves: the input
    /// with the chosen backend's MAC as destination and the LB's as source,
    /// every other byte untouched. A new connection must land where the
    /// active Maglev table says.
    fn segment(&mut self, sport: u16, flags: u8) -> Option<[u8; 6]> {
        let frame = Frame::tcp(CLIENT, sport, VIP, 80, flags).bytes();
        let predicted = (flags == SYN).then(|| self.maglev_pick(sport));
        let (action, out) = self.run(&frame);
        match action {
            XDP_TX => {
                let mac: [u8; 6] = out[..6].try_into().unwrap();
                assert!(
                    self.backend_macs().contains(&mac),
                    "port {sport}: sent to {mac:02x?}, not a registered backend"
                );
                if let Some(predicted) = predicted {
                    assert_eq!(Some(mac), predicted, "port {sport}: not the Maglev pick");
                }
                assert_eq!(out, forwarded(&frame, mac), "port {sport}: output frame");
                Some(mac)
            }
            XDP_DROP => None,
            other => panic!("unexpected action {other}"),
        }
    }

    /// MACs of the backends that may receive traffic (not DOWN).
    fn backend_macs(&self) -> Vec<[u8; 6]> {
        self.maps
            .backends()
            .unwrap()
            .iter()
            .filter(|(_, e)| e.flags & FLAG_DOWN == 0)
            .map(|(_, e)| e.mac)
            .collect()
    }

    /// The backend MAC the active Maglev table gives CLIENT:sport -> VIP:80.
    fn maglev_pick(&self, sport: u16) -> Option<[u8; 6]> {
        let service = self
            .maps
            .service(TableKind::Current, &TCP_SERVICE)
            .unwrap()?;
        let entry = flow_hash(&client_flow(sport)) % service.active_size();
        let row = self
            .maps
            .maglev_entry(service.maglev_index(service.active_slot, entry))
            .unwrap();
        let addr = self.maps.rows().unwrap()[row as usize].addr;
        self.maps
            .backends()
            .unwrap()
            .into_iter()
            .find(|(k, _)| k.addr == addr)
            .map(|(_, e)| e.mac)
    }
}

/// The flow CLIENT:sport -> VIP:80 (TCP).
fn client_flow(sport: u16) -> FlowKey {
    FlowKey {
        src: CLIENT.octets(),
        dst: VIP.octets(),
        src_port: sport.to_be_bytes(),
        dst_port: 80u16.to_be_bytes(),
        proto: IPPROTO_TCP,
        _pad: [0; 3],
    }
}

/// `frame` as XDP sends it to the backend with `mac` (layer-2 DSR).
fn forwarded(frame: &[u8], mac: [u8; 6]) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[..6].copy_from_slice(&mac);
    out[6..12].copy_from_slice(&LB_MAC);
    out
}

#[test]
fn vip_packets_go_to_a_backend_with_xdp_tx_and_flows_stick() {
    let mut lb = TestLb::with(LOAD);
    // No backend yet: dropped and counted.
    assert_eq!(lb.connect(1000), None);
    assert_eq!(lb.counter(Counter::VipNoBackend), 1);

    lb.announce(1, 0, 100);
    lb.announce(2, 0, 100);
    let macs = [backend(1).1, backend(2).1];
    let first: HashMap<u16, [u8; 6]> = (2000..2200)
        .map(|p| (p, lb.connect(p).expect("forwarded")))
        .collect();
    assert!(first.values().all(|m| macs.contains(m)));
    for mac in macs {
        let n = first.values().filter(|m| **m == mac).count();
        assert!(
            (60..=140).contains(&n),
            "backend {mac:?} got {n} of 200 flows"
        );
    }
    assert_eq!(lb.counter(Counter::VipNewFlow), 200);

    // A third backend: old flows keep theirs, some new flows reach it.
    lb.announce(3, 0, 100);
    for (&port, &mac) in &first {
        assert_eq!(lb.send(port), Some(mac), "flow {port} moved");
    }
    assert_eq!(lb.counter(Counter::VipForwarded), 200);
    assert_eq!(lb.counter(Counter::VipNewFlow), 200);
    let third = (3000..3200)
        .filter(|&p| lb.connect(p) == Some(backend(3).1))
        .count();
    assert!(
        third > 30,
        "the new backend got only {third} of 200 new flows"
    );

    // DRAINING: its flows stay, it gets no new ones.
    lb.announce(1, FLAG_DRAINING, 100);
    for (&port, &mac) in &first {
        assert_eq!(
            lb.send(port),
            Some(mac),
            "flow {port} moved when backend 1 drained"
        );
    }
    // A SYN on a reused client port is a new connection: it never lands on
    // the draining backend even though an old entry points there.
    let reused: Vec<u16> = first
        .iter()
        .filter(|(_, m)| **m == backend(1).1)
        .map(|(p, _)| *p)
        .collect();
    assert!(!reused.is_empty());
    assert!(
        reused.iter().all(|&p| lb.connect(p) != Some(backend(1).1)),
        "a SYN followed a stale entry"
    );
    assert!(
        (4000..4200).all(|p| lb.connect(p) != Some(backend(1).1)),
        "a draining backend got a new flow"
    );

    // A backend that leaves: its flows move to the others at once.
    lb.announce(2, FLAG_LEAVING, 100);
    for (&port, &mac) in &first {
        if mac == backend(1).1 {
            continue; // re-pointed by the SYNs above
        }
        let now = lb.send(port).expect("forwarded");
        if mac == backend(2).1 {
            assert_ne!(
                now,
                backend(2).1,
                "flow {port} still goes to a removed backend"
            );
        } else {
            assert_eq!(now, mac);
        }
    }
}

/// The service's traffic and each backend's share of it, as `status` reads them.
fn traffic(lb: &TestLb) -> (Traffic, Vec<(Ipv4Addr, Traffic)>) {
    let status = lb_user::status::read(&lb.maps, 0).unwrap();
    let [service] = &status.services[..] else {
        panic!("one service: {:?}", status.services)
    };
    let traffic = |packets, bytes, new_flows| Traffic {
        packets,
        bytes,
        new_flows,
    };
    let backends = service
        .backends
        .iter()
        .map(|b| match b.address {
            std::net::IpAddr::V4(address) => (address, traffic(b.packets, b.bytes, b.new_flows)),
            other => panic!("an IPv6 backend in an IPv4 test: {other}"),
        })
        .collect();
    (
        traffic(service.packets, service.bytes, service.new_flows),
        backends,
    )
}

#[test]
fn a_service_and_its_backends_count_the_packets_bytes_and_new_flows_they_carry() {
    let mut lb = TestLb::with(LOAD);
    lb.announce(1, 0, 100);
    lb.announce(2, 0, 100);
    let ip_bytes = (Frame::tcp(CLIENT, 2000, VIP, 80, ACK).bytes().len() - 14) as u64;
    let carried = |flows: u64| Traffic {
        packets: 3 * flows,
        bytes: 3 * flows * ip_bytes,
        new_flows: flows,
    };
    let mut on = HashMap::<[u8; 6], u64>::new();
    for port in 2000..2010 {
        let mac = lb.connect(port).expect("forwarded");
        lb.send(port).expect("forwarded");
        lb.send(port).expect("forwarded");
        *on.entry(mac).or_default() += 1;
    }
    let [(addr1, mac1), (addr2, mac2)] = [backend(1), backend(2)];
    let (flows1, flows2) = (on[&mac1], on[&mac2]);
    assert!(flows1 > 0 && flows2 > 0, "both backends got flows: {on:?}");
    assert_eq!(
        traffic(&lb),
        (
            carried(10),
            vec![(addr1, carried(flows1)), (addr2, carried(flows2))]
        )
    );

    // A packet to no backend is the service's drop, not its traffic; a
    // backend that leaves takes its row, not its share of the totals.
    lb.announce(1, FLAG_LEAVING, 100);
    lb.announce(2, FLAG_LEAVING, 100);
    assert_eq!(lb.connect(3000), None);
    assert_eq!(traffic(&lb), (carried(10), vec![]));
    // Back again: a row of its own, from zero.
    lb.announce(2, 0, 100);
    lb.connect(3001).expect("forwarded");
    lb.send(3001).expect("forwarded");
    lb.send(3001).expect("forwarded");
    assert_eq!(traffic(&lb), (carried(11), vec![(addr2, carried(1))]));
}

/// Established flows skip the server-list lookup while nothing changed
/// (`BACKEND_EPOCH`); every change that matters still reaches them at once.
#[test]
fn established_flows_follow_a_new_mac_and_leave_a_backend_the_control_plane_removed() {
    let mut lb = TestLb::with(LOAD);
    lb.announce(1, 0, 100);
    lb.announce(2, 0, 100);
    let flows: HashMap<u16, [u8; 6]> = (8000..8200)
        .map(|p| (p, lb.connect(p).expect("forwarded")))
        .collect();
    // Checked once more, so that every flow holds the current count.
    for (&port, &mac) in &flows {
        assert_eq!(lb.send(port), Some(mac));
    }

    // Backend 1 announces from another MAC (its NIC was replaced): its
    // flows follow at once, without a table rebuild.
    let (addr1, old_mac1) = backend(1);
    let new_mac1 = [0x02, 0xbe, 0, 0, 0, 0x71];
    let moved = Frame::announce(addr1, 2000, 0, 100, 2)
        .with(|f| f.src_mac = new_mac1)
        .bytes();
    assert_eq!(lb.run(&moved).0, XDP_DROP);
    for (&port, &mac) in &flows {
        let want = if mac == old_mac1 { new_mac1 } else { mac };
        assert_eq!(
            lb.send(port),
            Some(want),
            "flow {port} after the MAC change"
        );
    }

    // The control plane removes backend 2 (missed heartbeats): its flows
    // leave it before any rebuild; the stale table still picks it, so they
    // are dropped and counted.
    let (addr2, mac2) = backend(2);
    let key2 = lb_common::BackendKey {
        group_id: 0,
        addr: addr2.octets(),
    };
    lb.maps
        .remove_backend(&key2, lb_common::DepartureReason::MissedHeartbeats, 0)
        .unwrap();
    for (&port, &mac) in &flows {
        let now = lb.send(port);
        if mac == mac2 {
            assert_ne!(
                now,
                Some(mac2),
                "flow {port} still goes to a removed backend"
            );
        } else {
            assert_eq!(now, Some(new_mac1), "flow {port} moved off backend 1");
        }
    }
}

/// A flow is forwarded without a service lookup while nothing changed; a
/// later instance whose configuration drops the service ends its flows.
#[test]
fn a_service_the_next_instance_drops_forwards_no_more() {
    let mut lb = TestLb::with(LOAD);
    lb.announce(1, 0, 100);
    for port in 9000..9050 {
        assert!(lb.connect(port).is_some());
        assert!(lb.send(port).is_some());
    }
    let https = ServiceKey {
        port: 443,
        ..TCP_SERVICE
    };
    let configs = [ServiceConfig {
        key: https,
        group_id: 0,
        group_ipv6: false,
    }];
    ServiceTables::new(
        &mut lb.maps,
        &configs,
        TableParams {
            min_size: 1009,
            reach: reach(LOAD),
            second_chance_window: std::time::Duration::from_secs(600),
        },
        Default::default(),
    )
    .unwrap();
    assert!(
        lb.maps
            .service(TableKind::Current, &TCP_SERVICE)
            .unwrap()
            .is_none()
    );
    let ignored = lb.counter(Counter::Ignored);
    for port in 9000..9050 {
        let frame = Frame::tcp(CLIENT, port, VIP, 80, ACK).bytes();
        assert_eq!(lb.run(&frame).0, XDP_PASS, "flow {port} still forwarded");
    }
    assert_eq!(lb.counter(Counter::Ignored), ignored + 50);
}

#[test]
fn a_down_backend_gets_no_traffic_and_its_flows_move() {
    let mut lb = TestLb::with(LOAD);
    for i in 1..=3 {
        lb.announce(i, 0, 100);
    }
    let (down_addr, down_mac) = backend(3);
    let flows: HashMap<u16, [u8; 6]> = (5000..5300)
        .map(|p| (p, lb.connect(p).expect("forwarded")))
        .collect();
    let on_down: Vec<u16> = flows
        .iter()
        .filter(|(_, m)| **m == down_mac)
        .map(|(p, _)| *p)
        .collect();
    assert!(!on_down.is_empty(), "no flow reached backend 3");

    // DOWN seen by XDP, tables not rebuilt yet: its flows no longer reach
    // it; the stale table's pick for them is it, so they are dropped and
    // counted, never delivered to a failed service.
    let down = Frame::announce(down_addr, 2000, FLAG_DOWN, 100, 2)
        .with(|f| f.src_mac = down_mac)
        .bytes();
    assert_eq!(lb.run(&down).0, XDP_DROP);
    let no_backend = lb.counter(Counter::VipNoBackend);
    for &port in &on_down {
        assert_eq!(
            lb.send(port),
            None,
            "flow {port} still reaches a DOWN backend"
        );
    }
    assert_eq!(
        lb.counter(Counter::VipNoBackend),
        no_backend + on_down.len() as u64
    );

    // After the rebuild its flows move to the others, the others' stay,
    // and no new flow reaches it.
    lb.announce(3, FLAG_DOWN, 100);
    for (&port, &mac) in &flows {
        let now = lb.send(port).expect("forwarded");
        if mac == down_mac {
            assert_ne!(now, down_mac, "flow {port} on a DOWN backend");
        } else {
            assert_eq!(now, mac, "flow {port} moved off a healthy backend");
        }
    }
    assert!(
        (6000..6300).all(|p| lb.connect(p) != Some(down_mac)),
        "a DOWN backend got a new flow"
    );
    let status = lb.maps.backend(&lb_common::BackendKey {
        group_id: 0,
        addr: down_addr.octets(),
    });
    assert!(
        status.unwrap().is_some(),
        "a DOWN backend stays in the server list"
    );

    // Up again: new flows reach it.
    lb.announce(3, 0, 100);
    assert!(
        (7000..7300).any(|p| lb.connect(p) == Some(down_mac)),
        "a recovered backend got no new flow"
    );
}

#[test]
fn bad_vip_packets_are_dropped_and_other_traffic_passes() {
    let mut lb = TestLb::with(LOAD);
    lb.announce(1, 0, 100);
    let cases: Vec<(&str, Vec<u8>, u32, Counter)> = vec![
        (
            "fragment to the VIP",
            Frame::tcp(CLIENT, 1, VIP, 80, SYN)
                .with(|f| f.frag = 0x2000)
                .bytes(),
            XDP_DROP,
            Counter::VipMalformed,
        ),
        (
            "later fragment to the VIP",
            Frame::tcp(CLIENT, 1, VIP, 80, SYN)
                .with(|f| f.frag = 0x0010)
                .bytes(),
            XDP_DROP,
            Counter::VipMalformed,
        ),
        (
            "IP options to the VIP",
            Frame::tcp(CLIENT, 1, VIP, 80, SYN)
                .with(|f| f.options = vec![1, 1, 1, 0])
                .bytes(),
            XDP_DROP,
            Counter::VipMalformed,
        ),
        (
            "TCP header of 2 bytes",
            Frame::tcp(CLIENT, 1, VIP, 80, SYN)
                .with(|f| f.payload.truncate(2))
                .bytes(),
            XDP_DROP,
            Counter::VipMalformed,
        ),
        (
            "TCP header of 8 bytes (ports, no flags)",
            Frame::tcp(CLIENT, 1, VIP, 80, SYN)
                .with(|f| f.payload.truncate(8))
                .bytes(),
            XDP_DROP,
            Counter::VipMalformed,
        ),
        (
            "TCP header of 13 bytes (one short of the flags)",
            Frame::tcp(CLIENT, 1, VIP, 80, SYN)
                .with(|f| f.payload.truncate(13))
                .bytes(),
            XDP_DROP,
            Counter::VipMalformed,
        ),
        (
            "TCP header of 19 bytes",
            Frame::tcp(CLIENT, 1, VIP, 80, ACK)
                .with(|f| f.payload.truncate(19))
                .bytes(),
            XDP_DROP,
            Counter::VipMalformed,
        ),
        (
            "TCP header cut by the frame, not by the IP length",
            Frame::tcp(CLIENT, 1, VIP, 80, SYN)
                .with(|f| f.truncate = 7)
                .bytes(),
            XDP_PASS,
            Counter::Malformed,
        ),
        (
            "UDP header of 4 bytes to the VIP",
            Frame::udp(CLIENT, VIP, 80, b"")
                .with(|f| f.payload.truncate(4))
                .bytes(),
            XDP_DROP,
            Counter::VipMalformed,
        ),
        (
            "another port of the VIP",
            Frame::tcp(CLIENT, 1, VIP, 81, SYN).bytes(),
            XDP_PASS,
            Counter::Ignored,
        ),
        (
            "UDP to a TCP service",
            Frame::udp(CLIENT, VIP, 80, b"x").bytes(),
            XDP_PASS,
            Counter::Ignored,
        ),
        (
            "ICMP to the VIP",
            Frame::ip(1, CLIENT, VIP, vec![8, 0, 0, 0, 0, 0, 0, 0]).bytes(),
            XDP_PASS,
            Counter::Ignored,
        ),
        (
            "TCP to a non-VIP address",
            Frame::tcp(CLIENT, 1, LB, 80, SYN).bytes(),
            XDP_PASS,
            Counter::Ignored,
        ),
    ];
    for (name, frame, action, counter) in cases {
        let before = lb.counter(counter);
        let flows = lb.maps.flow_count().unwrap();
        let (got, out) = lb.run(&frame);
        assert_eq!(got, action, "{name}: action");
        assert_eq!(lb.counter(counter), before + 1, "{name}: counter");
        assert_eq!(
            lb.maps.flow_count().unwrap(),
            flows,
            "{name}: no flow created"
        );
        assert_eq!(out, frame, "{name}: frame left untouched");
        println!("ok: {name}");
    }
}

/// The table follows the backend count: 3,000 backends want 300,000
/// entries, so the table grows to 524,287, built on a thread while the
/// old table keeps serving, then swapped in whole.
#[test]
fn the_table_grows_with_the_backends_and_large_ones_are_built_off_the_loop() {
    use std::net::Ipv4Addr;
    let load = lb_user::loader::LoadParams {
        // Every 10.x address is on the segment: forwarded at layer 2.
        segment_prefix_len: 8,
        max_backends: 4096,
        ..LOAD
    };
    let mut lb = TestLb::new(load, TCP_SERVICE, 1009);
    for i in 0..3000u32 {
        let [_, _, hi, lo] = i.to_be_bytes();
        let frame = Frame::announce(Ipv4Addr::from(0x0a05_0000 + i), 2000, 0, 100, 1)
            .with(|f| f.src_mac = [2, 0xbb, 0, 0, hi, lo])
            .bytes();
        assert_eq!(lb.run(&frame).0, XDP_PASS, "registered, up to lb-user");
    }
    let backends = lb.maps.backends().unwrap();
    assert_eq!(backends.len(), 3000);
    lb.sync_tables();
    let service = lb
        .maps
        .service(TableKind::Current, &TCP_SERVICE)
        .unwrap()
        .unwrap();
    assert_eq!(
        service.active_size(),
        1009,
        "the large table is built off the control loop, the old one serves meanwhile"
    );
    lb.tables
        .settle(
            &mut lb.maps,
            &backends,
            &[],
            std::time::Duration::from_secs(60),
        )
        .unwrap();
    let service = lb
        .maps
        .service(TableKind::Current, &TCP_SERVICE)
        .unwrap()
        .unwrap();
    assert_eq!(service.active_size(), 524_287);
    // The batched read of the active table (status's digest) is the table.
    let table = lb.maps.active_table(&service).unwrap();
    assert_eq!(table.len(), 524_287);
    for entry in (0..100).chain(524_187..524_287) {
        let one = lb
            .maps
            .maglev_entry(service.maglev_index(service.active_slot, entry))
            .unwrap();
        assert_eq!(table[entry as usize], one, "entry {entry}");
    }
    let macs: Vec<[u8; 6]> = backends.iter().map(|(_, e)| e.mac).collect();
    for port in 6000..6100 {
        let mac = lb.connect(port).expect("forwarded");
        assert!(macs.contains(&mac), "port {port}: not a registered backend");
    }
}

/// The connection table holds flows up to its capacity: flows from
/// distinct clients filling it to a share of `max_flows`, then one more
/// packet of each, which must find its entry (a miss would count as a new
/// flow). Up to the capacity every flow stays; beyond it, at least as many
/// as an LRU of that capacity would keep (the most recent `max_flows`).
#[test]
fn the_connection_table_keeps_flows_up_to_its_capacity() {
    lb_tests_require_root();
    for percent in [50, 90, 100, 150, 200] {
        let mut lb = TestLb::with(LOAD);
        for i in 0..3 {
            lb.announce(i, 0, 100);
        }
        let flows = LOAD.max_flows * percent / 100;
        let client = |i: u32| Ipv4Addr::from(0x0a40_0000 + i);
        for i in 0..flows {
            lb.run(&Frame::tcp(client(i), 40000, VIP, 80, SYN).bytes());
        }
        let before = lb.counter(Counter::VipForwarded);
        for i in 0..flows {
            lb.run(&Frame::tcp(client(i), 40000, VIP, 80, ACK).bytes());
        }
        let kept = lb.counter(Counter::VipForwarded) - before;
        println!("{percent}% of the capacity ({flows} flows): {kept} kept");
        let least = flows.min(LOAD.max_flows);
        assert!(
            kept >= u64::from(least),
            "{percent}% of the capacity: {kept} of {flows} flows kept, fewer than {least}"
        );
    }
}

/// The connection table of `lb`'s program, opened by id beside `LbMaps`
/// (which offers no way to write it).
/// A SYN flood that fills the table many times over pushes out its own
/// entries, not established connections: after it, and after a backend
/// joins (which moves some Maglev picks), every established flow keeps its
/// backend through its entry.
#[test]
fn a_syn_flood_does_not_evict_established_flows() {
    lb_tests_require_root();
    let mut lb = TestLb::with(LOAD);
    for i in 0..3 {
        lb.announce(i, 0, 100);
    }
    let ports = 2000..2064;
    let mut backends = HashMap::new();
    for port in ports.clone() {
        lb.connect(port).expect("forwarded");
        backends.insert(port, lb.send(port).expect("forwarded"));
    }
    let flood = 3 * LOAD.max_flows;
    let spoofed = |i: u32| Ipv4Addr::from(0x0a80_0000 + i);
    let (mut legit, mut legit_kept) = (0, 0);
    for i in 0..flood {
        lb.run(&Frame::tcp(spoofed(i), 40000, VIP, 80, SYN).bytes());
        // Every 64th: a legitimate connection opens during the flood.
        if i % 64 == 0 {
            let port = 10_000 + (i / 64) as u16;
            lb.connect(port).expect("a new connection during the flood");
            let before = lb.counter(Counter::VipForwarded);
            lb.send(port).expect("its first ACK");
            legit += 1;
            legit_kept += lb.counter(Counter::VipForwarded) - before;
        }
    }
    println!(
        "{flood} spoofed SYNs into a table of {} flows; {legit} connections opened during the flood, {legit_kept} of them found their entry at their ACK",
        LOAD.max_flows
    );
    lb.announce(3, 0, 100);
    let new_flows = lb.counter(Counter::VipNewFlow);
    for port in ports {
        assert_eq!(lb.send(port), Some(backends[&port]), "flow {port} moved");
    }
    assert_eq!(
        lb.counter(Counter::VipNewFlow),
        new_flows,
        "an established flow lost its entry to the flood"
    );
    assert_eq!(
        legit_kept, legit,
        "a connection opened during the flood lost its entry"
    );
}

fn flow_table(lb: &mut TestLb) -> aya::maps::Array<aya::maps::MapData, FlowBucket> {
    let ids = lb.program().info().unwrap().map_ids().unwrap().unwrap();
    let id = ids
        .into_iter()
        .find(|&id| MapInfo::from_id(id).unwrap().name_as_str() == Some(map_name::FLOWS))
        .expect("the program uses FLOWS");
    aya::maps::Array::try_from(aya::maps::Map::Array(MapData::from_id(id).unwrap())).unwrap()
}

/// A slot whose backend does not match its check (two CPUs wrote it at
/// once: one flow's key and check, another's backend) is no entry: the
/// packet takes the Maglev pick, never the torn backend, and the flow is
/// recorded whole again.
#[test]
fn a_torn_connection_table_slot_is_no_entry() {
    let mut lb = TestLb::with(LOAD);
    lb.announce(1, 0, 100);
    lb.announce(2, 0, 100);
    let port = (7000..7100)
        .find(|&p| lb.connect(p) == Some(backend(1).1))
        .expect("a flow on backend 1");
    let key = client_flow(port).words();
    let mut table = flow_table(&mut lb);
    let (index, mut bucket) = (0..table.len())
        .map(|i| (i, table.get(&i, 0).unwrap()))
        .find(|(_, b)| b.ways.iter().any(|s| s.key == key))
        .expect("the flow's slot");
    let slot = bucket.ways.iter_mut().find(|s| s.key == key).unwrap();
    let rows = lb.maps.rows().unwrap();
    let row2 = rows.iter().position(|r| r.addr == backend(2).0.octets());
    slot.flow.row = row2.expect("backend 2 has a row") as u32;
    slot.flow.mac = backend(2).1;
    table.set(index, &bucket, 0).unwrap();

    let new_flows = lb.counter(Counter::VipNewFlow);
    assert_eq!(
        lb.send(port),
        Some(backend(1).1),
        "the torn backend was used"
    );
    assert_eq!(lb.counter(Counter::VipNewFlow), new_flows + 1, "not a miss");
    let forwarded = lb.counter(Counter::VipForwarded);
    assert_eq!(lb.send(port), Some(backend(1).1));
    assert_eq!(
        lb.counter(Counter::VipForwarded),
        forwarded + 1,
        "not recorded whole"
    );
}
