//! Per-CPU counters: no atomics and no contention on the per-packet path.
//! The totals per XDP action are derived from them in userspace, at no
//! per-packet cost.
use lb_common::{Counter, GroupReports};

use crate::maps::{COUNTERS, GROUP_REPORTS, TRAFFIC};

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot; only this CPU writes it while the program
        // runs (lb-user reads a copy the kernel takes).
        unsafe { *slot += 1 };
    }
}

/// The field of [`GroupReports`] an event moves.
#[derive(Clone, Copy)]
pub enum GroupEvent {
    Report,
    Leave,
    Announcement,
    Change,
}

/// Adds `n` to `event`'s count in this CPU's statistics of group
/// `group_id`.
#[inline(always)]
pub fn group_add(group_id: u32, event: GroupEvent, n: u64) {
    let Some(stats) = GROUP_REPORTS.get_ptr_mut(group_id) else {
        return;
    };
    // SAFETY: per-CPU slot, written only by this CPU, one packet at a
    // time; through the raw pointer, so that no reference outlives it.
    unsafe {
        let field: *mut u64 = match event {
            GroupEvent::Report => &raw mut (*stats).reports,
            GroupEvent::Leave => &raw mut (*stats).leaves,
            GroupEvent::Announcement => &raw mut (*stats).announcements,
            GroupEvent::Change => &raw mut (*stats).changes,
        };
        field.write(field.read() + n);
    }
}

/// What a membership report (IGMP or MLD) says of its sender.
pub enum Membership {
    Report,
    Leave,
}

/// Counts a report or leave for group `group_id`'s liveness. A leave runs
/// `leave`, which removes its sender if it can and says whether it did (a
/// change of the server list, counted too). Returns what `leave` said.
#[inline(always)]
pub fn membership(group_id: u32, membership: &Membership, leave: impl FnOnce() -> bool) -> bool {
    match membership {
        Membership::Report => {
            group_add(group_id, GroupEvent::Report, 1);
            false
        }
        Membership::Leave => {
            group_add(group_id, GroupEvent::Leave, 1);
            let removed = leave();
            if removed {
                group_add(group_id, GroupEvent::Change, 1);
            }
            removed
        }
    }
}

const _: () = assert!(core::mem::size_of::<GroupReports>() == 32);

/// Adds a packet of `bytes` (a new flow's first, with `new_flow`) to this
/// CPU's traffic of row `row` (a backend of a service).
#[inline(always)]
pub fn traffic_add(row: u32, bytes: u64, new_flow: bool) {
    // Rows come from the Maglev table and the connection table, which
    // lb-user fills with rows of the array: a miss is never.
    let Some(traffic) = TRAFFIC.get_ptr_mut(row) else {
        return;
    };
    // SAFETY: per-CPU slot; only this CPU writes it while the program runs
    // (lb-user reads a copy the kernel takes). Field by field through the
    // raw pointer: no reference to the slot is made.
    unsafe {
        (*traffic).packets += 1;
        (*traffic).bytes += bytes;
        (*traffic).new_flows += u64::from(new_flow);
    }
}
