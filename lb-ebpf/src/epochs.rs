//! The change count (`BACKEND_EPOCH`): a flow remembers its backend's MAC
//! with the count it read before checking the server list, and skips that
//! lookup while the count has not moved. Whoever removes a backend, marks
//! it DOWN or sees its MAC change bumps the count after the change, so a
//! check that saw the old state always carries an old count.
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use crate::maps::BACKEND_EPOCH;

/// The current count.
#[inline(always)]
pub fn current() -> u32 {
    match BACKEND_EPOCH.get_ptr(0) {
        // SAFETY: a valid pointer into the array, to an aligned u32 that
        // others only change atomically. One aligned load is one
        // instruction (this target has no atomic load to select).
        Some(count) => unsafe { count.read_volatile() },
        // Never: the array has its one entry.
        None => 0,
    }
}

/// Bumps the count after a change to a backend.
#[inline(always)]
pub fn bump() {
    if let Some(count) = BACKEND_EPOCH.get_ptr_mut(0) {
        // SAFETY: as in `current`; lb-user bumps the same word atomically.
        // The core atomic types have no read-modify-write on this target;
        // unused, the intrinsic's result makes it BPF's atomic add.
        unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(count, 1) };
    }
}
