//! Heartbeat aging (protocol §3, §5.2, §5.3), free of I/O.
//!
//! XDP owns `last_seen_ns`; this logic only reads it, so a heartbeat that
//! lands while a pass runs is seen by the next pass instead of being
//! overwritten.
use std::time::Duration;

use lb_common::AgingState;

/// Aging parameters.
#[derive(Clone, Copy, Debug)]
pub struct AgingParams {
    /// Heartbeat timeout T.
    pub timeout: Duration,
    /// A backend with more than this many consecutive misses is removed (N).
    pub max_misses: u32,
}

/// What one pass decides for one backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgingVerdict {
    /// First seen by the control plane.
    Registered(AgingState),
    /// Still registered; `state` is the new aging state.
    Keep(AgingState),
    /// More than N consecutive misses.
    Remove { misses: u32 },
}

/// Ages one backend whose last accepted announcement was at `last_seen_ns`,
/// at monotonic time `now_ns`.
pub fn age(
    previous: Option<AgingState>,
    last_seen_ns: u64,
    now_ns: u64,
    params: AgingParams,
) -> AgingVerdict {
    let timeout_ns = u64::try_from(params.timeout.as_nanos())
        .unwrap_or(u64::MAX)
        .max(1);
    let (mut state, registered) = match previous {
        // Any announcement restarts the timer and resets the count.
        Some(state) if last_seen_ns == state.seen_ns => (state, false),
        Some(_) | None => (
            AgingState {
                timer_start_ns: last_seen_ns,
                seen_ns: last_seen_ns,
                misses: 0,
                _pad: 0,
                registered_ns: previous.map_or(0, |p| p.registered_ns),
            },
            previous.is_none(),
        ),
    };
    // Each full timeout without a heartbeat is one miss; the timer restarts
    // at the moment it expired, so a late pass does not stretch the period.
    let elapsed = now_ns.saturating_sub(state.timer_start_ns);
    if elapsed > timeout_ns {
        let expired = (elapsed - 1) / timeout_ns;
        state.misses = state
            .misses
            .saturating_add(u32::try_from(expired).unwrap_or(u32::MAX));
        state.timer_start_ns += expired * timeout_ns;
    }
    if state.misses > params.max_misses {
        AgingVerdict::Remove {
            misses: state.misses,
        }
    } else if registered {
        AgingVerdict::Registered(state)
    } else {
        AgingVerdict::Keep(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const PARAMS: AgingParams = AgingParams {
        timeout: Duration::from_millis(400),
        max_misses: 3,
    };

    fn state(verdict: AgingVerdict) -> AgingState {
        match verdict {
            AgingVerdict::Registered(s) | AgingVerdict::Keep(s) => s,
            AgingVerdict::Remove { .. } => panic!("removed: {verdict:?}"),
        }
    }

    #[test]
    fn new_backend_is_registered_with_no_miss() {
        let v = age(None, 1000 * MS, 1010 * MS, PARAMS);
        assert_eq!(
            v,
            AgingVerdict::Registered(AgingState {
                timer_start_ns: 1000 * MS,
                seen_ns: 1000 * MS,
                misses: 0,
                _pad: 0,
                registered_ns: 0,
            })
        );
    }

    #[test]
    fn one_miss_per_timeout_and_removal_only_after_more_than_n() {
        let mut s = state(age(None, 0, 0, PARAMS));
        // Passes every 50 ms with no heartbeat: misses at 400, 800, 1200, 1600 ms.
        let mut removed_at = None;
        for step in 1..=40u64 {
            let now = step * 50 * MS;
            match age(Some(s), 0, now, PARAMS) {
                AgingVerdict::Keep(next) => {
                    assert_eq!(u64::from(next.misses), (now - 1) / (400 * MS));
                    s = next;
                }
                AgingVerdict::Remove { misses } => {
                    assert_eq!(misses, 4);
                    removed_at = Some(now);
                    break;
                }
                AgingVerdict::Registered(_) => panic!("registered twice"),
            }
        }
        // Four misses need more than 4 * T = 1600 ms.
        assert_eq!(removed_at, Some(1650 * MS));
    }

    #[test]
    fn heartbeat_resets_misses_and_restarts_timer() {
        let s = state(age(None, 0, 0, PARAMS));
        let s = state(age(Some(s), 0, 900 * MS, PARAMS));
        assert_eq!(s.misses, 2);
        let s = state(age(Some(s), 950 * MS, 960 * MS, PARAMS));
        assert_eq!(s.misses, 0);
        assert_eq!(s.timer_start_ns, 950 * MS);
        let s = state(age(Some(s), 950 * MS, 1350 * MS, PARAMS));
        assert_eq!(s.misses, 0, "exactly T is not past T");
        let s = state(age(Some(s), 950 * MS, 1351 * MS, PARAMS));
        assert_eq!(s.misses, 1);
    }

    /// The registration time an announcement's age gave is the backend's
    /// for as long as it stays: heartbeats keep it.
    #[test]
    fn a_heartbeat_keeps_the_learned_registration_time() {
        let mut s = state(age(None, 0, 0, PARAMS));
        s.registered_ns = 7;
        let s = state(age(Some(s), 950 * MS, 960 * MS, PARAMS));
        assert_eq!(s.registered_ns, 7);
    }

    #[test]
    fn late_pass_counts_every_elapsed_timeout() {
        let s = state(age(None, 0, 0, PARAMS));
        assert_eq!(
            age(Some(s), 0, 2000 * MS, PARAMS),
            AgingVerdict::Remove { misses: 4 }
        );
        let s = state(age(Some(s), 0, 1000 * MS, PARAMS));
        assert_eq!((s.misses, s.timer_start_ns), (2, 800 * MS));
    }

    #[test]
    fn heartbeat_during_pass_is_seen_by_next_pass() {
        let s = state(age(None, 0, 0, PARAMS));
        // A pass computed misses from an old snapshot; the entry has since
        // been refreshed by XDP: the next pass resets, nothing is lost.
        let stale = state(age(Some(s), 0, 1300 * MS, PARAMS));
        assert_eq!(stale.misses, 3);
        let s = state(age(Some(stale), 1301 * MS, 1302 * MS, PARAMS));
        assert_eq!(s.misses, 0);
    }
}
