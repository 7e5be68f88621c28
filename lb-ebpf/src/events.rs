//! Rare data-path events, logged through aya-log the moment they happen:
//! a backend registered, a backend removed by LEAVING or by an IGMP leave,
//! a newcomer refused by a full server list. lb-user forwards the records
//! to its log. Each CPU writes at most `RECORDS_PER_SECOND` records a
//! second, so a flood cannot fill the log ring; the records held back are
//! reported when the next second opens. Never called on the per-packet
//! fast path: a refresh, a forwarded packet or a rejected announcement
//! only moves a counter.
use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::XdpContext};
use aya_log_ebpf::{info, warn};
use lb_common::{BackendKey, BackendKey6, Departure, DepartureReason};

use crate::maps::{DEPARTURES, DEPARTURES6, GROUP_STATUS, LOG_BUDGET};

/// Records one CPU may write in a second.
const RECORDS_PER_SECOND: u32 = 32;
const SECOND_NS: u64 = 1_000_000_000;

/// Whether a record may be written now; a record held back is counted.
#[inline(always)]
fn allowed(ctx: &XdpContext) -> bool {
    let Some(budget) = LOG_BUDGET.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU slot, written only by this CPU while the program runs.
    let budget = unsafe { &mut *budget };
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if now.wrapping_sub(budget.window_start_ns) >= SECOND_NS {
        let held_back = budget.suppressed;
        budget.window_start_ns = now;
        budget.written = 0;
        budget.suppressed = 0;
        if held_back > 0 {
            warn!(
                ctx,
                "{} data-path log records held back in the last second (rate limit)", held_back
            );
            budget.written = 1;
        }
    }
    if budget.written >= RECORDS_PER_SECOND {
        budget.suppressed += 1;
        return false;
    }
    budget.written += 1;
    true
}

/// The multicast address of a group, as lb-user configured it.
#[inline(always)]
fn group_addr(group_id: u32) -> [u8; 4] {
    // IPv4 groups are held IPv4-mapped: the last four bytes.
    GROUP_STATUS.get(group_id).map_or([0; 4], |g| {
        let [.., a, b, c, d] = g.group_addr;
        [a, b, c, d]
    })
}

/// An IPv6 group's address, for the log.
#[inline(always)]
fn group_addr6(group_id: u32) -> [u8; 16] {
    GROUP_STATUS.get(group_id).map_or([0; 16], |g| g.group_addr)
}

/// A new backend entered the server list.
#[inline(always)]
pub fn registered(ctx: &XdpContext, key: &BackendKey, mac: [u8; 6], weight: u16) {
    if allowed(ctx) {
        info!(
            ctx,
            "backend {:i} registered in group {:i} (mac {:mac}, weight {})",
            key.addr,
            group_addr(key.group_id),
            mac,
            weight
        );
    }
}

/// Why and when a backend leaves now, for `status`.
#[inline(always)]
fn departure(why: DepartureReason) -> Departure {
    Departure {
        // SAFETY: helper without preconditions.
        left_ns: unsafe { bpf_ktime_get_ns() },
        reason: why as u32,
        _pad: 0,
    }
}

/// A backend left the server list: remembered for `status`, and logged.
#[inline(always)]
pub fn removed(ctx: &XdpContext, key: &BackendKey, why: DepartureReason) {
    // An LRU: the oldest departure makes room.
    let _ = DEPARTURES.insert(key, &departure(why), 0);
    if allowed(ctx) {
        info!(
            ctx,
            "backend {:i} removed from group {:i}: {}",
            key.addr,
            group_addr(key.group_id),
            why.name()
        );
    }
}

/// A newcomer was refused because the server list is full.
#[inline(always)]
pub fn table_full(ctx: &XdpContext, key: &BackendKey) {
    if allowed(ctx) {
        warn!(
            ctx,
            "server list full: backend {:i} not registered in group {:i} (raise --max-backends)",
            key.addr,
            group_addr(key.group_id)
        );
    }
}

/// A new IPv6 backend entered the server list (protocol §9).
#[inline(always)]
pub fn registered6(ctx: &XdpContext, key: &BackendKey6, mac: [u8; 6], weight: u16) {
    if allowed(ctx) {
        info!(
            ctx,
            "backend {:i} registered in group {:i} (mac {:mac}, weight {})",
            key.addr,
            group_addr6(key.group_id),
            mac,
            weight
        );
    }
}

/// An IPv6 backend left the server list: remembered for `status`, and logged.
#[inline(always)]
pub fn removed6(ctx: &XdpContext, key: &BackendKey6, why: DepartureReason) {
    let _ = DEPARTURES6.insert(key, &departure(why), 0);
    if allowed(ctx) {
        info!(
            ctx,
            "backend {:i} removed from group {:i}: {}",
            key.addr,
            group_addr6(key.group_id),
            why.name()
        );
    }
}

/// An IPv6 newcomer was refused because the server list is full.
#[inline(always)]
pub fn table_full6(ctx: &XdpContext, key: &BackendKey6) {
    if allowed(ctx) {
        warn!(
            ctx,
            "server list full: backend {:i} not registered in group {:i} (raise --max-backends)",
            key.addr,
            group_addr6(key.group_id)
        );
    }
}
