//! Prometheus metrics of `backend-agent --metrics ADDR:PORT`: what the
//! agent heard and sent, its service state, and its IPIP decapsulation
//! counters. The families live as long as the agent; each scrape renders
//! them, the decapsulation counters read at that moment, and the process
//! basics.
use std::net::IpAddr;

use lb_host::metrics_server::register_process_metrics;
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{decap::DecapCounters, schedule::Via};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    lb: String,
    /// `segment` (IGMP) or `routed` (UDP through routers).
    via: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    /// `igmp` or `routed`.
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LbLabels {
    lb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// The agent's metrics; cloned handles share the values.
#[derive(Clone, Debug, Default)]
pub struct AgentMetrics {
    queries: Family<QueryLabels, Counter>,
    reports_sent: Family<KindLabels, Counter>,
    reports_suppressed: Counter,
    announcements: Family<LbLabels, Counter>,
    service_state: Family<StateLabels, Gauge>,
    transitions: Family<StateLabels, Counter>,
    draining: Gauge,
}

impl AgentMetrics {
    pub fn query(&self, lb: IpAddr, via: Via) {
        let via = match via {
            Via::Segment => "segment",
            Via::Routed => "routed",
        };
        self.queries
            .get_or_create(&QueryLabels {
                lb: lb.to_string(),
                via: via.to_owned(),
            })
            .inc();
    }

    /// A report sent: `kind` is `igmp` or `mld` on the segment, `routed`
    /// through routers.
    pub fn report_sent(&self, kind: &str) {
        self.reports_sent
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub fn report_suppressed(&self) {
        self.reports_suppressed.inc();
    }

    pub fn announced(&self, lb: IpAddr) {
        self.announcements
            .get_or_create(&LbLabels { lb: lb.to_string() })
            .inc();
    }

    /// The service state (`up`, `down`, `unchecked`); a transition if `changed`.
    pub fn service(&self, state: &str, changed: bool) {
        self.service_state.clear();
        self.service_state
            .get_or_create(&StateLabels {
                state: state.to_owned(),
            })
            .set(1);
        if changed {
            self.transitions
                .get_or_create(&StateLabels {
                    state: state.to_owned(),
                })
                .inc();
        }
    }

    pub fn draining(&self, draining: bool) {
        self.draining.set(i64::from(draining));
    }

    /// The exposition of one scrape.
    pub fn render(&self, decap: Option<&DecapCounters>) -> Result<String, String> {
        let mut root = Registry::default();
        register_process_metrics(&mut root);
        let agent = root.sub_registry_with_prefix("xdp_lb_agent");
        agent.register(
            "queries",
            "LB queries heard, by LB and path",
            self.queries.clone(),
        );
        agent.register(
            "reports_sent",
            "Membership reports sent (igmp or mld on the segment, routed through routers)",
            self.reports_sent.clone(),
        );
        agent.register(
            "reports_suppressed",
            "Reports not sent because another member's was heard first",
            self.reports_suppressed.clone(),
        );
        agent.register(
            "announcements_sent",
            "Announcements sent, by LB",
            self.announcements.clone(),
        );
        agent.register(
            "service_state",
            "1 for the service's current state (up, down, or unchecked without --check)",
            self.service_state.clone(),
        );
        agent.register(
            "service_transitions",
            "Service state changes, by the state entered",
            self.transitions.clone(),
        );
        agent.register(
            "draining",
            "1 while draining (SIGUSR1)",
            self.draining.clone(),
        );
        if let Some(decap) = decap {
            let packets = Family::<ReasonLabels, Counter>::default();
            for (reason, n) in decap.read().map_err(|e| format!("{e:#}"))? {
                packets
                    .get_or_create(&ReasonLabels {
                        reason: reason.to_owned(),
                    })
                    .inc_by(n);
            }
            agent.register(
                "decap_packets",
                "Packets seen by the IPIP decapsulation program, by what it did",
                packets,
            );
        }
        let mut text = String::new();
        encode(&mut text, &root).map_err(|e| e.to_string())?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_family_is_in_the_operations_page() {
        let exposition = AgentMetrics::default().render(None).unwrap();
        assert!(exposition.matches("# TYPE ").count() > 5, "{exposition}");
        let missing = lb_host::metrics_server::families_missing_from(
            &exposition,
            include_str!("../../docs/operations.md"),
        );
        assert!(
            missing.is_empty(),
            "docs/operations.md does not list {missing:?}"
        );
    }
}
