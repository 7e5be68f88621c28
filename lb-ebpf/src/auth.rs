//! Authenticated announcements (protocol §4.3): a SipHash-2-4 tag under one of
//! up to two keys, a sequence above the backend's last accepted one, and a
//! sequence within the allowed skew of the LB's wall clock.
use aya_ebpf::{bindings::BPF_ANY, helpers::bpf_ktime_get_ns};
use lb_common::{
    BackendKey, Counter, MAX_AUTH_KEYS,
    siphash::{TAGGED_LEN, siphash24, tagged_message},
    wire::{ANNOUNCE_OFF_SEQUENCE, ANNOUNCE_OFF_TAG, ANNOUNCE_V1_LEN},
};

use crate::maps::{AUTH_CLOCK, AUTH_KEYS, LAST_SEQUENCE, LB_ADDR};

/// Accepts `payload` from `key.addr` or says which check failed. On
/// success the sequence is remembered, so the same payload is not
/// accepted twice.
#[inline(always)]
pub fn verify(key: &BackendKey, payload: &[u8; ANNOUNCE_V1_LEN]) -> Result<(), Counter> {
    let mut head = [0u8; 16];
    head.copy_from_slice(&payload[..ANNOUNCE_OFF_TAG]);
    let message = tagged_message(key.addr, LB_ADDR.load(), &head);
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&payload[ANNOUNCE_OFF_TAG..]);
    if !tag_matches(&message, u64::from_le_bytes(tag)) {
        return Err(Counter::AuthBadTag);
    }
    let mut sequence = [0u8; 8];
    sequence.copy_from_slice(&payload[ANNOUNCE_OFF_SEQUENCE..ANNOUNCE_OFF_TAG]);
    let sequence = u64::from_be_bytes(sequence);
    if !is_fresh(sequence) {
        return Err(Counter::AuthStale);
    }
    // SAFETY: copied out at once.
    if let Some(&last) = unsafe { LAST_SEQUENCE.get(key) }
        && sequence <= last
    {
        return Err(Counter::AuthReplay);
    }
    // An LRU entry that cannot be written leaves the backend unprotected
    // against replay: refuse rather than accept.
    LAST_SEQUENCE
        .insert(key, &sequence, u64::from(BPF_ANY))
        .map_err(|_| Counter::AuthReplay)
}

/// Whether `tag` is the SipHash of `message` under one of the active keys.
#[inline(always)]
pub fn tag_matches(message: &[u8; TAGGED_LEN], tag: u64) -> bool {
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
