//! The key-file parser: accepts exactly 32 hex digits, and they round-trip.
#![no_main]
use lb_host::cli::parse_key;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = parse_key(text) {
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, text.to_ascii_lowercase());
    }
});
