//! Announcement keys and the allowlist (protocol §4.3).

/// Keys accepted at once (rotation without downtime).
pub const MAX_AUTH_KEYS: u32 = 2;

/// One announcement key.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AuthKey {
    pub key: [u8; 16],
    /// 1 if this slot holds a key.
    pub active: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<AuthKey>() == 24);

/// What XDP needs to judge an announcement's timestamp.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AuthClock {
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC, in ns (wrapping).
    pub wall_offset_ns: u64,
    /// Largest accepted distance between a sequence and the LB's clock.
    pub max_skew_ns: u64,
}
const _: () = assert!(core::mem::size_of::<AuthClock>() == 16);

/// Most `--allow` prefixes.
pub const MAX_ALLOW_PREFIXES: u32 = 1024;
