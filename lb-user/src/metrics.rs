//! Prometheus metrics of `lb-user run --metrics ADDR:PORT` (OpenMetrics
//! text through prometheus-client). Each scrape renders a fresh registry
//! from the pinned maps, as `status` reads them (so a removed backend's
//! series are gone with it), plus what only the control loop knows (its
//! pass durations, the tables it rebuilt), kept in `ControlMetrics`.
use std::sync::atomic::AtomicU64;

use lb_host::{metrics_server::register_process_metrics, status::StatusReport};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// A service, as labelled.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub vip: String,
    pub port: u16,
    pub proto: String,
}

/// A backend of a service, as labelled.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceBackendLabels {
    vip: String,
    port: u16,
    proto: String,
    address: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    group: String,
    address: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendStateLabels {
    group: String,
    address: String,
    /// `active`, `draining` or `down`.
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NextHopLabels {
    backend: String,
    reason: String,
}

type GaugeF64 = Gauge<f64, AtomicU64>;

/// What the control loop measures; cloned handles share the values.
#[derive(Clone, Debug)]
pub struct ControlMetrics {
    /// Duration of each control pass.
    pub pass_seconds: Histogram,
    /// Tables made active per service.
    pub rebuilds: Family<ServiceLabels, Counter>,
    /// Build and write time of each service's last table.
    pub last_rebuild_seconds: Family<ServiceLabels, GaugeF64>,
    /// From a change of a service's backends to the table with it active.
    pub change_seconds: Histogram,
}

impl Default for ControlMetrics {
    fn default() -> Self {
        Self {
            // 50 us to about 3 s.
            pass_seconds: Histogram::new(exponential_buckets(0.000_05, 3.0, 11)),
            rebuilds: Family::default(),
            last_rebuild_seconds: Family::default(),
            // 1 ms to about 8 s.
            change_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
        }
    }
}

/// One gauge family filled from `(labels, value)` pairs.
fn gauges<L>(values: impl IntoIterator<Item = (L, f64)>) -> Family<L, GaugeF64>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<L, GaugeF64>::default();
    for (labels, value) in values {
        family.get_or_create(&labels).set(value);
    }
    family
}

/// One counter family filled from `(labels, total)` pairs.
fn counters<L>(values: impl IntoIterator<Item = (L, u64)>) -> Family<L, Counter>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<L, Counter>::default();
    for (labels, value) in values {
        family.get_or_create(&labels).inc_by(value);
    }
    family
}

/// The exposition of one scrape: the status snapshot, the control loop's
/// own metrics and the process basics.
pub fn render(status: &StatusReport, control: &ControlMetrics) -> Result<String, std::fmt::Error> {
    let mut root = Registry::default();
    register_process_metrics(&mut root);
    let lb = root.sub_registry_with_prefix("xdp_lb");
    lb.register(
        "packets",
        "Packets the XDP program handled, by the reason it counted them under",
        counters(status.counters.iter().map(|(reason, &n)| {
            (
                ReasonLabels {
                    reason: reason.clone(),
                },
                n,
            )
        })),
    );
    lb.register(
        "gso_packets",
        "Packets the GSO program (tc, where XDP runs in generic mode) handled, by reason",
        counters(status.gso_counters.iter().map(|(reason, &n)| {
            (
                ReasonLabels {
                    reason: reason.clone(),
                },
                n,
            )
        })),
    );
    lb.register(
        "packets_by_action",
        "Packets the XDP program handled, by XDP action (drop, pass, tx)",
        counters(status.actions.iter().map(|(action, &n)| {
            (
                ActionLabels {
                    action: action.clone(),
                },
                n,
            )
        })),
    );
    register_groups(lb, status);
    register_backends(lb, status);
    register_services(lb, status, control);
    lb.register(
        "next_hop_errors",
        "Packets dropped for want of a next hop toward an IPIP backend",
        gauges(status.next_hop_errors.iter().map(|e| {
            (
                NextHopLabels {
                    backend: e.backend.to_string(),
                    reason: e.reason.clone(),
                },
                f64::from(e.drops),
            )
        })),
    );
    lb.register(
        "control_pass_seconds",
        "Duration of each pass of the control loop",
        control.pass_seconds.clone(),
    );
    let mut text = String::new();
    encode(&mut text, &root)?;
    Ok(text)
}

fn register_groups(lb: &mut Registry, status: &StatusReport) {
    let label = |g: &lb_host::status::GroupReport| GroupLabels {
        group: g.group.to_string(),
    };
    let groups = &status.groups;
    lb.register(
        "group_alive",
        "1 while the group is alive (reports or announcements heard), 0 when dead",
        gauges(
            groups
                .iter()
                .map(|g| (label(g), f64::from(u8::from(g.state == "alive")))),
        ),
    );
    lb.register(
        "group_silent_periods",
        "Query periods in a row without a report or announcement",
        gauges(
            groups
                .iter()
                .map(|g| (label(g), f64::from(g.silent_periods))),
        ),
    );
    lb.register(
        "group_backends",
        "Registered backends",
        gauges(groups.iter().map(|g| (label(g), g.backends.len() as f64))),
    );
    lb.register(
        "group_queries_sent",
        "Queries sent",
        counters(groups.iter().map(|g| (label(g), g.queries_sent))),
    );
    lb.register(
        "group_reports",
        "Membership reports heard (IGMP and routed)",
        counters(groups.iter().map(|g| (label(g), g.reports))),
    );
    lb.register(
        "group_leaves",
        "IGMP leaves heard",
        counters(groups.iter().map(|g| (label(g), g.leaves))),
    );
}

fn register_backends(lb: &mut Registry, status: &StatusReport) {
    let backends = || {
        status.groups.iter().flat_map(|g| {
            g.backends.iter().map(move |b| {
                (
                    BackendLabels {
                        group: g.group.to_string(),
                        address: b.address.to_string(),
                    },
                    b,
                )
            })
        })
    };
    lb.register(
        "backend_registered",
        "1 for each registered backend, labelled with its state (active, draining, down)",
        gauges(backends().map(|(l, b)| {
            (
                BackendStateLabels {
                    group: l.group,
                    address: l.address,
                    state: b.state.clone(),
                },
                1.0,
            )
        })),
    );
    lb.register(
        "backend_weight",
        "Announced weight",
        gauges(backends().map(|(l, b)| (l, f64::from(b.weight)))),
    );
    lb.register(
        "backend_misses",
        "Consecutive heartbeat misses",
        gauges(backends().map(|(l, b)| (l, f64::from(b.misses)))),
    );
    lb.register(
        "backend_announcements",
        "Announcements accepted since the backend registered",
        counters(backends().map(|(l, b)| (l, b.announcements))),
    );
}

fn register_services(lb: &mut Registry, status: &StatusReport, control: &ControlMetrics) {
    let label = |s: &lb_host::status::ServiceReport| ServiceLabels {
        vip: s.vip.to_string(),
        port: s.port,
        proto: s.proto.clone(),
    };
    lb.register(
        "service_table_size",
        "Entries of the service's active Maglev table",
        gauges(
            status
                .services
                .iter()
                .map(|s| (label(s), f64::from(s.table_size))),
        ),
    );
    for (name, help, value) in [
        (
            "service_packets",
            "Client packets forwarded to the service's backends",
            (|s| s.packets) as fn(&lb_host::status::ServiceReport) -> u64,
        ),
        (
            "service_bytes",
            "Bytes of the client packets forwarded to the service's backends (IP header and payload, as they arrived)",
            |s| s.bytes,
        ),
        (
            "service_new_flows",
            "Client packets that started a flow of the service (a Maglev pick)",
            |s| s.new_flows,
        ),
    ] {
        lb.register(
            name,
            help,
            counters(status.services.iter().map(|s| (label(s), value(s)))),
        );
    }
    let per_backend = || {
        status.services.iter().flat_map(move |s| {
            s.backends.iter().map(move |b| {
                let labels = ServiceBackendLabels {
                    vip: s.vip.to_string(),
                    port: s.port,
                    proto: s.proto.clone(),
                    address: b.address.to_string(),
                };
                (labels, b)
            })
        })
    };
    for (name, help, value) in [
        (
            "backend_packets",
            "Client packets of the service forwarded to the backend",
            (|b| b.packets) as fn(&lb_host::status::BackendTraffic) -> u64,
        ),
        (
            "backend_bytes",
            "Bytes of the service's client packets forwarded to the backend (IP header and payload, as they arrived)",
            |b| b.bytes,
        ),
        (
            "backend_new_flows",
            "Flows of the service the backend got (Maglev picks)",
            |b| b.new_flows,
        ),
    ] {
        lb.register(
            name,
            help,
            counters(per_backend().map(|(l, b)| (l, value(b)))),
        );
    }
    lb.register(
        "backend_weight_share",
        "The share of the service's new flows the backend's weight asks for (0 when its table does not name it: draining, down)",
        gauges(per_backend().map(|(l, b)| (l, b.weight_share))),
    );
    lb.register(
        "service_rebuilds",
        "Forwarding tables made active since start",
        control.rebuilds.clone(),
    );
    lb.register(
        "service_last_rebuild_seconds",
        "Build and write time of the service's last table",
        control.last_rebuild_seconds.clone(),
    );
    lb.register(
        "table_change_seconds",
        "From a change of a service's backends (an announcement or removal, as XDP stamped it) to the table that has it being active",
        control.change_seconds.clone(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An exposition with one of everything, so that every family has a
    /// series.
    fn every_family() -> String {
        let status: StatusReport = serde_json::from_str(
            r#"{"groups": [{"group": "239.192.0.1", "port": 2000, "state": "alive",
                "silent_periods": 0, "queries_sent": 1, "reports": 1, "leaves": 0,
                "backends": [{"address": "10.0.0.2", "mac": "02:00:00:00:00:02",
                    "misses": 0, "last_seen_ms": 1, "weight": 100, "state": "active",
                    "announcements": 1, "sequence": 1}],
                "departed": []}],
              "services": [{"vip": "10.0.0.100", "port": 80, "proto": "tcp",
                "group": "239.192.0.1", "table_size": 65537, "active_slot": 0,
                "table_digest": "0", "backends": [{"address": "10.0.0.2",
                    "packets": 1, "bytes": 60, "new_flows": 1, "weight_share": 1.0}]}],
              "counters": {"ignored": 1}, "actions": {"pass": 1},
              "gso_counters": {"gso_wrapped": 1},
              "next_hop_errors": [{"backend": "10.1.0.2", "reason": "no route",
                "drops": 1, "last_ms_ago": 1}]}"#,
        )
        .unwrap();
        let control = ControlMetrics::default();
        let service = ServiceLabels {
            vip: "10.0.0.100".into(),
            port: 80,
            proto: "tcp".into(),
        };
        control.rebuilds.get_or_create(&service).inc();
        control
            .last_rebuild_seconds
            .get_or_create(&service)
            .set(0.001);
        render(&status, &control).unwrap()
    }

    #[test]
    fn every_metric_family_is_in_the_operations_page() {
        let exposition = every_family();
        assert!(exposition.matches("# TYPE ").count() > 10, "{exposition}");
        let missing = lb_host::metrics_server::families_missing_from(
            &exposition,
            include_str!("../../docs/operations.md"),
        );
        assert!(
            missing.is_empty(),
            "docs/operations.md does not list {missing:?}"
        );
    }

    /// The shipped dashboard and alert rules query only what lb-user exports.
    #[test]
    fn the_dashboard_and_the_alert_rules_query_exported_families() {
        let exposition = every_family();
        for (file, text) in [
            (
                "deploy/grafana/xdp-lb.json",
                include_str!("../../deploy/grafana/xdp-lb.json"),
            ),
            (
                "deploy/prometheus/alerts.yml",
                include_str!("../../deploy/prometheus/alerts.yml"),
            ),
        ] {
            let missing = lb_host::metrics_server::names_not_exported(
                text,
                &["xdp_lb_", "process_"],
                &exposition,
            );
            assert!(
                missing.is_empty(),
                "{file} queries {missing:?}, which lb-user does not export"
            );
            assert!(text.contains("xdp_lb_"), "{file} queries nothing");
        }
    }
}
