//! Authenticated announcements (protocol §4.3): a SipHash-2-4 tag under one of
//! up to two keys, a sequence above the backend's last accepted one, and a
//! sequence within the allowed skew of the LB's wall clock.
use aya_ebpf::helpers::bpf_ktime_get_ns;
use lb_common::{
    Counter, MAX_AUTH_KEYS,
    siphash::siphash24,
    wire::{ANNOUNCE_OFF_SEQUENCE, ANNOUNCE_OFF_TAG, ANNOUNCE_V1_LEN},
};

use crate::{
    maps::{AUTH_CLOCK, AUTH_KEYS},
    server_list::ServerKey,
};

/// Accepts `payload` from `key`'s backend or says which check failed. On
/// success the sequence is remembered, so the same payload is not
/// accepted twice.
#[inline(always)]
pub fn verify<K: ServerKey>(key: &K, payload: &[u8; ANNOUNCE_V1_LEN]) -> Result<(), Counter> {
    let mut head = [0u8; 16];
    head.copy_from_slice(&payload[..ANNOUNCE_OFF_TAG]);
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&payload[ANNOUNCE_OFF_TAG..]);
    if !key.tag_matches(&head, u64::from_le_bytes(tag)) {
        return Err(Counter::AuthBadTag);
    }
    let mut sequence = [0u8; 8];
    sequence.copy_from_slice(&payload[ANNOUNCE_OFF_SEQUENCE..ANNOUNCE_OFF_TAG]);
    let sequence = u64::from_be_bytes(sequence);
    if !is_fresh(sequence) {
        return Err(Counter::AuthStale);
    }
    if key.last_sequence().is_some_and(|last| sequence <= last) {
        return Err(Counter::AuthReplay);
    }
    // An LRU entry that cannot be written leaves the backend unprotected
    // against replay: refuse rather than accept.
    if !key.set_last_sequence(sequence) {
        return Err(Counter::AuthReplay);
    }
    Ok(())
}

/// Whether `tag` is the SipHash of `message` under one of the active keys.
#[inline(always)]
pub fn tag_matches(message: &[u8], tag: u64) -> bool {
    let mut valid = false;
    for slot in 0..MAX_AUTH_KEYS {
        if let Some(k) = AUTH_KEYS.get(slot)
            && k.active != 0
            && siphash24(&k.key, message) == tag
        {
            valid = true;
        }
    }
    valid
}

/// Whether a sender's wall-clock `sequence` is within the allowed skew
/// of the LB's clock (no clock yet: nothing is).
#[inline(always)]
pub fn is_fresh(sequence: u64) -> bool {
    let Some(clock) = AUTH_CLOCK.get(0) else {
        return false;
    };
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() }.wrapping_add(clock.wall_offset_ns);
    sequence.abs_diff(now) <= clock.max_skew_ns
}
