//! What the agent-wide figures are called and how they are split: one table
//! both exporters read, so `/metrics` and OTLP carry the same figures with
//! the same help text (docs/metrics.md lists them).
use kmesh_common::map_capacity;

use super::{ControlFigures, ExportHealthSnapshot};
use crate::aggregator::{AgentStats, view::AggregateView};

/// Every agent-wide figure at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct AgentFigures {
    /// The probe reader's and the aggregator's counters.
    pub probe: AgentStats,
    /// Series the aggregator holds, overflow series excluded.
    pub series: u64,
    pub series_limit: u64,
    pub control: ControlFigures,
    pub export: ExportHealthSnapshot,
}

impl AgentFigures {
    pub fn new(
        view: &AggregateView,
        control: ControlFigures,
        export: ExportHealthSnapshot,
    ) -> Self {
        Self {
            probe: view.agent,
            series: view.regular_series() as u64,
            series_limit: view.max_series as u64,
            control,
            export,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (OTLP: a cumulative monotonic sum).
    Counter,
    /// A value now (OTLP: a gauge).
    Gauge,
}

/// One value of a family: its label values, in the order of
/// [`AgentFamily::labels`], and the value.
pub type Point = (&'static [&'static str], u64);

pub struct AgentFamily {
    /// Prometheus name (counters without `_total`).
    pub name: &'static str,
    pub otlp_name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    /// UCUM, as OTLP states it.
    pub unit: &'static str,
    /// What the family is split by: (Prometheus label, OTLP attribute).
    pub labels: &'static [(&'static str, &'static str)],
    pub points: fn(&AgentFigures) -> Vec<Point>,
}

pub const AGENT_FAMILIES: [AgentFamily; 14] = [
    AgentFamily {
        name: "kmesh_probe_events",
        otlp_name: "kmesh.probe.events",
        help: "Probe records read from the ring buffer, by kind.",
        kind: Kind::Counter,
        unit: "{record}",
        labels: &[("kind", "kmesh.record.kind")],
        points: |f| {
            let p = &f.probe;
            vec![
                (&["established"], p.events_established),
                (&["closed"], p.events_closed),
                (&["periodic"], p.events_periodic),
                (&["malformed"], p.events_malformed),
            ]
        },
    },
    AgentFamily {
        name: "kmesh_probe_ringbuf_dropped_events",
        otlp_name: "kmesh.probe.ringbuf.dropped",
        help: "Probe records lost because the ring buffer was full.",
        kind: Kind::Counter,
        unit: "{record}",
        labels: &[],
        points: |f| vec![(&[], f.probe.ringbuf_drops)],
    },
    AgentFamily {
        name: "kmesh_route_refused_connects",
        otlp_name: "kmesh.route.refused_connects",
        help: "connect()s to a service VIP refused with EPERM instead of sent to an address nothing serves: no_backends (the service has none), backend_missing (its backends were replaced twice during one connect()).",
        kind: Kind::Counter,
        unit: "{connect}",
        labels: &[("reason", "kmesh.refused.reason")],
        points: |f| {
            let p = &f.probe;
            vec![
                (&["no_backends"], p.refused_no_backends),
                (&["backend_missing"], p.refused_backend_missing),
            ]
        },
    },
    AgentFamily {
        name: "kmesh_probe_lost_closes",
        otlp_name: "kmesh.probe.lost_closes",
        help: "Connections the agent closed itself: the kernel no longer had them and their close record never arrived (ring buffer full).",
        kind: Kind::Counter,
        unit: "{connection}",
        labels: &[],
        points: |f| vec![(&[], f.probe.lost_closes)],
    },
    AgentFamily {
        name: "kmesh_config_reloads",
        otlp_name: "kmesh.config.reloads",
        help: "Mesh config loads, by result; a failed one keeps the previous config.",
        kind: Kind::Counter,
        unit: "{reload}",
        labels: &[("result", "kmesh.result")],
        points: |f| {
            vec![
                (&["success"], f.control.config_reloads_ok),
                (&["failure"], f.control.config_reloads_failed),
            ]
        },
    },
    AgentFamily {
        name: "kmesh_services",
        otlp_name: "kmesh.services",
        help: "Services in the applied mesh config.",
        kind: Kind::Gauge,
        unit: "{service}",
        labels: &[],
        points: |f| vec![(&[], f.control.services)],
    },
    AgentFamily {
        name: "kmesh_metric_series",
        otlp_name: "kmesh.metric_series",
        help: "Label sets (service, backend, direction) the aggregator holds, overflow series excluded.",
        kind: Kind::Gauge,
        unit: "{series}",
        labels: &[],
        points: |f| vec![(&[], f.series)],
    },
    AgentFamily {
        name: "kmesh_metric_series_limit",
        otlp_name: "kmesh.metric_series.limit",
        help: "Most label sets the aggregator keeps (--max-series); connections beyond go to the overflow series.",
        kind: Kind::Gauge,
        unit: "{series}",
        labels: &[],
        points: |f| vec![(&[], f.series_limit)],
    },
    AgentFamily {
        name: "kmesh_metric_series_overflow",
        otlp_name: "kmesh.metric_series.overflow",
        help: "Connections counted in the overflow series because the series limit was reached.",
        kind: Kind::Counter,
        unit: "{connection}",
        labels: &[],
        points: |f| vec![(&[], f.probe.series_overflow)],
    },
    AgentFamily {
        name: "kmesh_metric_series_expired",
        otlp_name: "kmesh.metric_series.expired",
        help: "Series removed after their service or backend left the config.",
        kind: Kind::Counter,
        unit: "{series}",
        labels: &[],
        points: |f| vec![(&[], f.probe.series_expired)],
    },
    AgentFamily {
        name: "kmesh_map_entries",
        otlp_name: "kmesh.map.entries",
        help: "Entries in the routing maps.",
        kind: Kind::Gauge,
        unit: "{entry}",
        labels: &[("map", "kmesh.map")],
        points: |f| {
            vec![
                (&["services"], f.control.map_services),
                (&["backends"], f.control.map_backends),
            ]
        },
    },
    AgentFamily {
        name: "kmesh_map_max_entries",
        otlp_name: "kmesh.map.max_entries",
        help: "Capacity of the routing maps.",
        kind: Kind::Gauge,
        unit: "{entry}",
        labels: &[("map", "kmesh.map")],
        points: |_| {
            vec![
                (&["services"], u64::from(map_capacity::SERVICES)),
                (&["backends"], u64::from(map_capacity::BACKENDS)),
            ]
        },
    },
    AgentFamily {
        name: "kmesh_otlp_exports",
        otlp_name: "kmesh.otlp.exports",
        help: "OTLP export requests, by signal and result; failures are also logged with the endpoint and reason.",
        kind: Kind::Counter,
        unit: "{request}",
        labels: &[("signal", "kmesh.otlp.signal"), ("result", "kmesh.result")],
        points: |f| {
            let e = &f.export;
            vec![
                (&["metrics", "success"], e.metrics_exports_ok),
                (&["metrics", "failure"], e.metrics_exports_failed),
                (&["traces", "success"], e.traces_exports_ok),
                (&["traces", "failure"], e.traces_exports_failed),
            ]
        },
    },
    AgentFamily {
        name: "kmesh_otlp_spans",
        otlp_name: "kmesh.otlp.spans",
        help: "Connection spans by outcome: exported, sampled_out, queue_full (dropped: the queue was full), export_failed (dropped after every retry failed), untracked (not followed: too many open connections).",
        kind: Kind::Counter,
        unit: "{span}",
        labels: &[("outcome", "kmesh.span.outcome")],
        points: |f| {
            let e = &f.export;
            vec![
                (&["exported"], e.spans_exported),
                (&["sampled_out"], e.spans_sampled_out),
                (&["queue_full"], e.spans_queue_full),
                (&["export_failed"], e.spans_export_failed),
                (&["untracked"], e.spans_untracked),
            ]
        },
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_point_has_a_value_for_each_label() {
        let figures = AgentFigures::default();
        for family in &AGENT_FAMILIES {
            let points = (family.points)(&figures);
            assert!(!points.is_empty(), "{}", family.name);
            for (values, _) in points {
                assert_eq!(values.len(), family.labels.len(), "{}", family.name);
            }
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = AGENT_FAMILIES.iter().map(|f| f.name).collect();
        let mut otlp: Vec<&str> = AGENT_FAMILIES.iter().map(|f| f.otlp_name).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        otlp.sort_unstable();
        otlp.dedup();
        assert_eq!((names.len(), otlp.len()), (n, n));
    }
}
