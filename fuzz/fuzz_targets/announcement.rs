//! The announcement parser: whatever it accepts encodes back to the same bytes.
#![no_main]
use lb_common::wire::{ANNOUNCE_V1_LEN, AnnouncementV1};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(announcement) = AnnouncementV1::parse(data) {
        assert_eq!(announcement.encode()[..], data[..ANNOUNCE_V1_LEN]);
    }
});
