//! Per-CPU counters: no atomics and no contention on the per-packet path.
//! The totals per XDP action are derived from them in userspace, at no
//! per-packet cost.
use lb_common::Counter;

use crate::maps::COUNTERS;

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot; only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}
