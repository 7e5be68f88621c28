//! IPv6 services through BPF_PROG_TEST_RUN (protocol §9): an IPv6 VIP
//! served by IPv6 backends, and an IPv4 VIP served by them, at layer 2.
//! Each case checks the action, the whole frame that leaves, the counter
//! and the flow's row.
pub mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::*;
use lb_common::Counter;

/// The frame as layer-2 DSR sends it: to `mac`, from the LB; the rest as
/// it came.
fn to_backend(frame: &[u8], mac: [u8; 6]) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[..6].copy_from_slice(&mac);
    out[6..12].copy_from_slice(&LB_MAC);
    out
}

/// The MAC of one of the three backends, if `frame` went to one.
fn which_backend(frame: &[u8]) -> Option<u8> {
    (0..3).find(|&i| frame[..6] == backend6(i).1)
}

#[test]
fn an_ipv6_vip_is_served_by_ipv6_backends_at_layer_2() {
    lb_tests_require_root();
    let mut lb = TestLb::serving_ipv6_backends(VIP6.into());
    let mut seen = [0u32; 3];
    for sport in 40000..40300 {
        let syn = tcp6(CLIENT6, sport, VIP6, 80, 0x02).bytes();
        let new_flows = lb.counter(Counter::VipNewFlow);
        let (action, out) = lb.run(&syn);
        assert_eq!(action, XDP_TX, "port {sport}");
        let i = which_backend(&out).expect("a backend's MAC");
        assert_eq!(out, to_backend(&syn, backend6(i).1), "only the MACs change");
        assert_eq!(lb.counter(Counter::VipNewFlow), new_flows + 1);
        // The flow's next packet goes to the same backend, from its entry.
        let ack = tcp6(CLIENT6, sport, VIP6, 80, 0x10).bytes();
        let forwarded = lb.counter(Counter::VipForwarded);
        let (action, out) = lb.run(&ack);
        assert_eq!((action, which_backend(&out)), (XDP_TX, Some(i)));
        assert_eq!(lb.counter(Counter::VipForwarded), forwarded + 1);
        seen[usize::from(i)] += 1;
    }
    assert!(
        seen.iter().all(|&n| (70..=130).contains(&n)),
        "300 flows over 3 equal backends: {seen:?}"
    );
    let status = lb_user::status::read(&lb.maps, 0).unwrap();
    let [service] = &status.services[..] else {
        panic!("one service: {:?}", status.services)
    };
    assert_eq!(service.vip, IpAddr::from(VIP6));
    assert_eq!(service.new_flows, 300);
    assert_eq!(
        service.backends.len(),
        3,
        "each backend's row carried its flows"
    );
    assert!(service.backends.iter().all(|b| b.address.is_ipv6()));
}

#[test]
fn an_ipv6_packet_to_a_vip_with_extension_headers_is_dropped_and_counted() {
    lb_tests_require_root();
    let mut lb = TestLb::serving_ipv6_backends(VIP6.into());
    let with_hop_by_hop = tcp6(CLIENT6, 40000, VIP6, 80, 0x02)
        .with(|f| f.hop_by_hop = vec![1, 4, 0, 0, 0, 0])
        .bytes();
    let dropped = lb.counter(Counter::VipExtensionHeaders);
    assert_eq!(lb.run(&with_hop_by_hop).0, XDP_DROP);
    assert_eq!(lb.counter(Counter::VipExtensionHeaders), dropped + 1);
    // A fragment header (44) left as the next header.
    let fragment = Frame6::ip(44, CLIENT6, VIP6, vec![6, 0, 0, 1, 0, 0, 0, 1]).bytes();
    assert_eq!(lb.run(&fragment).0, XDP_DROP);
    assert_eq!(lb.counter(Counter::VipExtensionHeaders), dropped + 2);
    // A cut TCP header.
    let cut = Frame6::ip(6, CLIENT6, VIP6, vec![0x9c, 0x40, 0, 80]).bytes();
    let malformed = lb.counter(Counter::VipMalformed);
    assert_eq!(lb.run(&cut).0, XDP_DROP);
    assert_eq!(lb.counter(Counter::VipMalformed), malformed + 1);
    // ICMPv6 to the VIP (a Neighbour Solicitation) is the stack's.
    let icmp = Frame6::ip(58, CLIENT6, VIP6, vec![135, 0, 0, 0, 0, 0, 0, 0]).bytes();
    assert_eq!(lb.run(&icmp).0, XDP_PASS);
}

#[test]
fn an_ipv4_vip_is_served_by_ipv6_backends_at_layer_2() {
    lb_tests_require_root();
    let vip = Ipv4Addr::new(10, 0, 0, 101);
    let mut lb = TestLb::serving_ipv6_backends(vip.into());
    let syn = Frame::tcp(CLIENT, 40000, vip, 80, 0x02).bytes();
    let new_flows = lb.counter(Counter::VipNewFlow);
    let (action, out) = lb.run(&syn);
    assert_eq!(action, XDP_TX);
    let i = which_backend(&out).expect("an IPv6 backend's MAC");
    assert_eq!(out, to_backend(&syn, backend6(i).1));
    assert_eq!(lb.counter(Counter::VipNewFlow), new_flows + 1);
    let ack = Frame::tcp(CLIENT, 40000, vip, 80, 0x10).bytes();
    let (action, out) = lb.run(&ack);
    assert_eq!((action, which_backend(&out)), (XDP_TX, Some(i)));
}
