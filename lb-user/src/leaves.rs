//! Confirming IGMP leaves when announcements are keyed (protocol §4.2): a leave
//! cannot be authenticated, so it only starts a confirmation, as IGMP's own
//! last-member query does. Free of I/O.
use lb_common::PendingLeave;

/// What to do with one pending leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaveVerdict {
    /// Query the group now: nothing has asked since the leave.
    Ask,
    /// Asked; the window is still open.
    Wait,
    /// An authenticated announcement arrived after the leave: the backend
    /// lives (the leave was forged, or stale); keep it.
    Refuted,
    /// Asked, and no announcement within the window: remove the backend.
    Confirmed,
    /// The backend is not registered any more; nothing to decide.
    Gone,
}

/// Judges `leave` from a backend whose announcement count is now
/// `announcements` (`None`: not registered), given the newest confirmation
/// query of its group sent at or after the leave (`asked_ns`), at `now_ns`,
/// with `window_ns` for the answer. Any move of the count refutes the
/// leave: an announcement came after it (or the backend was removed and
/// registered again, its count starting afresh).
pub fn judge(
    leave: &PendingLeave,
    announcements: Option<u64>,
    asked_ns: Option<u64>,
    now_ns: u64,
    window_ns: u64,
) -> LeaveVerdict {
    let Some(announcements) = announcements else {
        return LeaveVerdict::Gone;
    };
    if announcements != leave.announcements {
        return LeaveVerdict::Refuted;
    }
    match asked_ns.filter(|&asked| asked >= leave.leave_ns) {
        None => LeaveVerdict::Ask,
        Some(asked) if now_ns.saturating_sub(asked) < window_ns => LeaveVerdict::Wait,
        Some(_) => LeaveVerdict::Confirmed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u64 = 100;
    /// A leave at 10 ns from a backend that had announced 5 times.
    const LEAVE: PendingLeave = PendingLeave {
        leave_ns: 10,
        announcements: 5,
    };

    #[test]
    fn a_leave_is_asked_about_then_confirmed_after_a_silent_window() {
        assert_eq!(judge(&LEAVE, Some(5), None, 11, W), LeaveVerdict::Ask);
        // A query from before the leave does not count.
        assert_eq!(judge(&LEAVE, Some(5), Some(9), 11, W), LeaveVerdict::Ask);
        assert_eq!(judge(&LEAVE, Some(5), Some(12), 50, W), LeaveVerdict::Wait);
        assert_eq!(
            judge(&LEAVE, Some(5), Some(12), 112, W),
            LeaveVerdict::Confirmed
        );
    }

    #[test]
    fn an_announcement_after_the_leave_refutes_it_at_any_time() {
        assert_eq!(judge(&LEAVE, Some(6), None, 11, W), LeaveVerdict::Refuted);
        assert_eq!(
            judge(&LEAVE, Some(60), Some(12), 500, W),
            LeaveVerdict::Refuted
        );
        // Removed and registered again meanwhile: its count started afresh.
        assert_eq!(
            judge(&LEAVE, Some(1), Some(12), 500, W),
            LeaveVerdict::Refuted
        );
    }

    #[test]
    fn a_backend_already_gone_needs_nothing() {
        assert_eq!(judge(&LEAVE, None, Some(12), 500, W), LeaveVerdict::Gone);
    }
}
