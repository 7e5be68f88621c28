//! The coarse clock (CLOCK_MONOTONIC_COARSE), read through its helper once
//! per timer tick and CPU: jiffies are one inlined load, while the helper's
//! call costs about 10 ns, as much as a tenth of a heartbeat's whole path.
//! Jiffies advance just before the coarse clock at each tick, so a reading
//! lags the fine clock by up to two ticks instead of one
//! (`lb_common::COARSE_LAG_MAX_NS`).
use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns};
use lb_common::CoarseClock;

use crate::maps::COARSE_CLOCK;

/// The kernel's tick count (jiffies).
#[inline(always)]
pub fn jiffies() -> u64 {
    // SAFETY: helper without preconditions (inlined by the verifier).
    unsafe { bpf_jiffies64() }
}

/// CLOCK_MONOTONIC_COARSE ns, as read in the current tick.
#[inline(always)]
pub fn coarse_ns() -> u64 {
    let jiffies = jiffies();
    let Some(cached) = COARSE_CLOCK.get_ptr_mut(0) else {
        // Never: the array has its one entry.
        // SAFETY: helper without preconditions.
        return unsafe { bpf_ktime_get_coarse_ns() };
    };
    // SAFETY: per-CPU slot, written only by this CPU, one packet at a time.
    let cached = unsafe { &mut *cached };
    if cached.jiffies != jiffies {
        *cached = CoarseClock {
            jiffies,
            // SAFETY: helper without preconditions.
            ns: unsafe { bpf_ktime_get_coarse_ns() },
        };
    }
    cached.ns
}
