//! IGMP parsers: an IGMP message, and an IPv4 packet as a raw socket delivers it.
#![no_main]
use lb_common::wire::{IgmpMessage, internet_checksum, parse_igmp};
use lb_host::igmp_socket::parse_ip_igmp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_igmp(data) {
        // Only a whole message with a valid checksum is believed.
        IgmpMessage::Query { .. } | IgmpMessage::Report { .. } => {
            assert_eq!(internet_checksum(data), 0)
        }
        IgmpMessage::Other => {}
    }
    if parse_ip_igmp(data).is_some() {
        assert_eq!(data[9], 2, "not IGMP");
    }
});
