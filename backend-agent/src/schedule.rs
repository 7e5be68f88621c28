//! What the agent sends and when, free of I/O (protocol §4.2, §5): one
//! suppressible report per query round and one announcement per query to
//! the LB that sent it.
use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use tokio::time::Instant;

/// Something due at a point in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// The membership report; `routed` if a routed query asked for it, so
    /// that it must also go out as a routed report (protocol §4.4).
    Report {
        routed: bool,
    },
    Announce(IpAddr),
}

/// How a query arrived: as IGMP on the segment, or as a routed UDP query
/// that multicast routers replicated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Segment,
    Routed,
}

#[derive(Debug, Default)]
pub struct Schedule {
    /// When our membership report goes out, unless another member's comes first.
    report_at: Option<Instant>,
    /// A routed query asked for the pending report.
    report_routed: bool,
    /// Announcements waiting for their jitter, one per LB at most.
    announce_at: Vec<(Instant, IpAddr)>,
    /// Every LB that queried us: each gets a LEAVING announcement on exit.
    known_lbs: BTreeSet<IpAddr>,
}

impl Schedule {
    /// A query from `lb` that arrived `via`: report after `report_delay`
    /// (keeping an earlier pending one), announce to `lb` after
    /// `announce_delay`. Returns true if `lb` was not known before.
    pub fn on_query(
        &mut self,
        now: Instant,
        (lb, via): (IpAddr, Via),
        report_delay: Duration,
        announce_delay: Duration,
    ) -> bool {
        let report_at = now + report_delay;
        self.report_at = Some(self.report_at.map_or(report_at, |t| t.min(report_at)));
        self.report_routed |= via == Via::Routed;
        if !self.announce_at.iter().any(|&(_, a)| a == lb) {
            self.announce_at.push((now + announce_delay, lb));
        }
        self.known_lbs.insert(lb)
    }

    /// Another member reported for the group: ours is not needed (suppression).
    /// Returns true if a pending report was cancelled.
    pub fn on_report_heard(&mut self) -> bool {
        self.report_routed = false;
        self.report_at.take().is_some()
    }

    /// The next deadline, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.announce_at
            .iter()
            .map(|&(t, _)| t)
            .chain(self.report_at)
            .min()
    }

    /// Removes and returns everything due at `now`.
    pub fn take_due(&mut self, now: Instant) -> Vec<Due> {
        let mut due = Vec::new();
        if self.report_at.is_some_and(|t| t <= now) {
            self.report_at = None;
            due.push(Due::Report {
                routed: std::mem::take(&mut self.report_routed),
            });
        }
        self.announce_at.retain(|&(t, lb)| {
            if t <= now {
                due.push(Due::Announce(lb));
                false
            } else {
                true
            }
        });
        due
    }

    /// `lb` is known without a query (a predecessor's LB): it gets LEAVING
    /// on exit.
    pub fn know(&mut self, lb: IpAddr) {
        self.known_lbs.insert(lb);
    }

    pub fn known_lbs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.known_lbs.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LB1: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const LB2: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn query_schedules_one_report_and_one_announcement() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        assert!(s.on_query(t0, (LB1, Via::Segment), ms(80), ms(10)));
        assert_eq!(s.next_deadline(), Some(t0 + ms(10)));
        assert_eq!(s.take_due(t0 + ms(10)), vec![Due::Announce(LB1)]);
        assert_eq!(s.take_due(t0 + ms(79)), vec![]);
        assert_eq!(s.take_due(t0 + ms(80)), vec![Due::Report { routed: false }]);
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn hearing_another_report_suppresses_ours_but_not_the_announcement() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.on_query(t0, (LB1, Via::Segment), ms(80), ms(10));
        assert!(s.on_report_heard());
        assert!(!s.on_report_heard());
        assert_eq!(s.take_due(t0 + ms(100)), vec![Due::Announce(LB1)]);
    }

    #[test]
    fn two_lbs_get_one_announcement_each_and_share_the_report() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.on_query(t0, (LB1, Via::Segment), ms(80), ms(10));
        assert!(s.on_query(t0 + ms(5), (LB2, Via::Segment), ms(20), ms(10)));
        assert!(
            !s.on_query(t0 + ms(6), (LB1, Via::Segment), ms(90), ms(10)),
            "a repeated query is not a new LB"
        );
        let mut due = s.take_due(t0 + ms(30));
        due.sort_by_key(|d| format!("{d:?}"));
        assert_eq!(
            due,
            vec![
                Due::Announce(LB1),
                Due::Announce(LB2),
                Due::Report { routed: false }
            ]
        );
        assert_eq!(s.known_lbs().collect::<Vec<_>>(), vec![LB1, LB2]);
    }

    #[test]
    fn a_routed_query_asks_for_a_routed_report_until_one_is_heard() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.on_query(t0, (LB1, Via::Segment), ms(80), ms(10));
        s.on_query(t0, (LB1, Via::Routed), ms(90), ms(10));
        let due = s.take_due(t0 + ms(100));
        assert!(due.contains(&Due::Report { routed: true }), "{due:?}");
        s.on_query(t0 + ms(200), (LB1, Via::Routed), ms(80), ms(10));
        assert!(s.on_report_heard());
        s.on_query(t0 + ms(300), (LB1, Via::Segment), ms(80), ms(10));
        let due = s.take_due(t0 + ms(400));
        assert!(due.contains(&Due::Report { routed: false }), "{due:?}");
    }
}
