//! Group liveness and the query schedule (protocol §5.1, §5.4), free of I/O.
use std::time::Duration;

/// Liveness parameters.
#[derive(Clone, Copy, Debug)]
pub struct LivenessParams {
    /// Query interval P.
    pub query_interval: Duration,
    /// Periods in a row without a report before the group is dead (R).
    pub robustness: u32,
}

/// What the caller must do after a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LivenessEvent {
    /// Nothing to do.
    Idle,
    /// Send a query now.
    Query,
    /// The group was just declared dead; queries stop.
    Died,
    /// A report revived a dead group; send a query now.
    Revived,
}

/// What the group was heard saying, as XDP counted it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Heard {
    /// Running total of membership reports for the group.
    pub reports: u64,
    /// Running total of the group's accepted announcements.
    pub announcements: u64,
}

/// Liveness of one group.
#[derive(Clone, Debug)]
pub struct GroupLiveness {
    params: LivenessParams,
    alive: bool,
    silent_periods: u32,
    /// Report total when the current period started.
    reports_at_period_start: u64,
    /// Announcement total when the current period started.
    announcements_at_period_start: u64,
    /// Monotonic ns when the current period started.
    period_start_ns: u64,
    /// Monotonic ns of the next query; `None` before the first one.
    next_query_ns: Option<u64>,
    /// A period ended with announcements but no report; cleared by
    /// `take_hidden_reports`.
    hidden_reports: Option<bool>,
}

impl GroupLiveness {
    /// A group starts alive and queries at once (protocol §5.1).
    pub fn new(params: LivenessParams, heard: Heard) -> Self {
        Self {
            params,
            alive: true,
            silent_periods: 0,
            reports_at_period_start: heard.reports,
            announcements_at_period_start: heard.announcements,
            period_start_ns: 0,
            next_query_ns: None,
            hidden_reports: None,
        }
    }

    /// True once, the first time a period ended with announcements from
    /// the group's backends but no membership report: something on the
    /// path (a snooping switch) hides reports from the LB.
    pub fn take_hidden_reports(&mut self) -> bool {
        if self.hidden_reports == Some(true) {
            self.hidden_reports = Some(false);
            return true;
        }
        false
    }

    pub fn is_alive(&self) -> bool {
        self.alive
    }

    pub fn silent_periods(&self) -> u32 {
        self.silent_periods
    }

    /// Called often (every control tick) with what XDP heard from the group.
    /// A period counts as silent only with neither a report nor an accepted
    /// announcement (protocol §5.4); only a report revives a dead group.
    pub fn poll(&mut self, now_ns: u64, heard: Heard) -> LivenessEvent {
        let period_ns = u64::try_from(self.params.query_interval.as_nanos()).unwrap_or(u64::MAX);
        let reported = heard.reports != self.reports_at_period_start;
        if !self.alive {
            if !reported {
                return LivenessEvent::Idle;
            }
            self.alive = true;
            self.silent_periods = 0;
            self.start_period(now_ns, heard);
            self.next_query_ns = Some(now_ns.saturating_add(period_ns));
            return LivenessEvent::Revived;
        }
        let Some(due) = self.next_query_ns else {
            self.start_period(now_ns, heard);
            self.next_query_ns = Some(now_ns.saturating_add(period_ns));
            return LivenessEvent::Query;
        };
        if now_ns < due {
            return LivenessEvent::Idle;
        }
        // A period ended: was the group heard during it?
        let announced = heard.announcements != self.announcements_at_period_start;
        if announced && !reported && self.hidden_reports.is_none() {
            self.hidden_reports = Some(true);
        }
        self.silent_periods = if reported || announced {
            0
        } else {
            self.silent_periods + 1
        };
        self.start_period(now_ns, heard);
        if self.silent_periods >= self.params.robustness {
            self.alive = false;
            self.next_query_ns = None;
            return LivenessEvent::Died;
        }
        // Keep the cadence, but never burst to catch up after a stall.
        let next = due.saturating_add(period_ns);
        self.next_query_ns = Some(if next <= now_ns {
            now_ns.saturating_add(period_ns)
        } else {
            next
        });
        LivenessEvent::Query
    }

    fn start_period(&mut self, now_ns: u64, heard: Heard) {
        self.reports_at_period_start = heard.reports;
        self.announcements_at_period_start = heard.announcements;
        self.period_start_ns = now_ns;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// `n` reports so far, no announcement.
    fn only_reports(n: u64) -> Heard {
        Heard {
            reports: n,
            announcements: 0,
        }
    }

    fn liveness(robustness: u32) -> GroupLiveness {
        GroupLiveness::new(
            LivenessParams {
                query_interval: Duration::from_millis(200),
                robustness,
            },
            Heard::default(),
        )
    }

    /// Polls every 10 ms from `from` to `to` (exclusive) with a fixed report
    /// total, returning the events that were not idle with their times.
    fn run(l: &mut GroupLiveness, from: u64, to: u64, reports: u64) -> Vec<(u64, LivenessEvent)> {
        (from..to)
            .step_by(10)
            .map(|t| (t, l.poll(t * MS, only_reports(reports))))
            .filter(|(_, e)| *e != LivenessEvent::Idle)
            .collect()
    }

    #[test]
    fn queries_at_once_then_every_period() {
        let mut l = liveness(2);
        let mut reports = 0;
        let mut queries = vec![];
        for t in (0..1000).step_by(10) {
            // A report arrives after every query.
            if l.poll(t * MS, only_reports(reports)) == LivenessEvent::Query {
                queries.push(t);
                reports += 1;
            }
        }
        assert_eq!(queries, vec![0, 200, 400, 600, 800]);
        assert!(l.is_alive());
    }

    #[test]
    fn dies_after_r_silent_periods_and_stops_querying() {
        let mut l = liveness(2);
        let events = run(&mut l, 0, 1000, 0);
        assert_eq!(
            events,
            vec![
                (0, LivenessEvent::Query),
                (200, LivenessEvent::Query),
                (400, LivenessEvent::Died)
            ]
        );
        assert!(!l.is_alive());
    }

    #[test]
    fn robustness_one_is_the_original_method() {
        let mut l = liveness(1);
        let events = run(&mut l, 0, 1000, 0);
        assert_eq!(
            events,
            vec![(0, LivenessEvent::Query), (200, LivenessEvent::Died)]
        );
    }

    #[test]
    fn one_report_in_a_period_resets_the_silence() {
        let mut l = liveness(2);
        assert_eq!(run(&mut l, 0, 210, 0).len(), 2);
        assert_eq!(l.silent_periods(), 1);
        assert_eq!(run(&mut l, 210, 410, 1), vec![(400, LivenessEvent::Query)]);
        assert_eq!(l.silent_periods(), 0);
    }

    #[test]
    fn any_report_revives_a_dead_group_at_once() {
        let mut l = liveness(2);
        run(&mut l, 0, 1000, 0);
        assert!(!l.is_alive());
        assert_eq!(l.poll(5000 * MS, only_reports(1)), LivenessEvent::Revived);
        assert!(l.is_alive());
        // Next query one period later.
        assert_eq!(
            run(&mut l, 5010, 5210, 1),
            vec![(5200, LivenessEvent::Query)]
        );
    }

    #[test]
    fn a_stall_does_not_burst_queries() {
        let mut l = liveness(3);
        assert_eq!(l.poll(0, only_reports(0)), LivenessEvent::Query);
        assert_eq!(l.poll(1000 * MS, only_reports(1)), LivenessEvent::Query);
        assert_eq!(l.poll(1010 * MS, only_reports(1)), LivenessEvent::Idle);
        assert_eq!(l.poll(1200 * MS, only_reports(2)), LivenessEvent::Query);
    }

    #[test]
    fn announcements_keep_a_group_alive_when_reports_are_hidden() {
        let mut l = liveness(2);
        let mut hidden = 0;
        for t in (0u64..2000).step_by(10) {
            // Every backend announces 50 ms after each query; no report
            // ever reaches the LB (a snooping switch hides them).
            let heard = Heard {
                reports: 0,
                announcements: (t + 150) / 200,
            };
            let heard = if t < 50 { only_reports(0) } else { heard };
            assert_ne!(l.poll(t * MS, heard), LivenessEvent::Died, "at {t} ms");
            hidden += u32::from(l.take_hidden_reports());
        }
        assert!(l.is_alive());
        assert_eq!(hidden, 1, "the hidden reports are reported once");
    }

    #[test]
    fn an_old_announcement_does_not_keep_a_group_alive() {
        let mut l = liveness(2);
        let stale = Heard {
            reports: 0,
            announcements: 1,
        };
        let events: Vec<_> = (0..1000)
            .step_by(10)
            .map(|t| (t, l.poll(t * MS + 2, stale)))
            .filter(|(_, e)| *e != LivenessEvent::Idle)
            .collect();
        assert_eq!(
            events,
            vec![
                (0, LivenessEvent::Query),
                (200, LivenessEvent::Query),
                (400, LivenessEvent::Died)
            ]
        );
    }
}
