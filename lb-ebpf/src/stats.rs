//! Per-CPU counters: no atomics and no contention on the per-packet path.
//! The totals per XDP action are derived from them in userspace, at no
//! per-packet cost.
use lb_common::{Counter, GroupReports};

use crate::maps::{COUNTERS, GROUP_REPORTS};

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot; only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}

/// This CPU's statistics of group `group_id`.
#[inline(always)]
pub fn group(group_id: u32) -> Option<&'static mut GroupReports> {
    let stats = GROUP_REPORTS.get_ptr_mut(group_id)?;
    // SAFETY: per-CPU slot, written only by this CPU, one packet at a time.
    Some(unsafe { &mut *stats })
}
