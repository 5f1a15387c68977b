//! Prometheus text exposition of the aggregator. Names and labels are
//! documented in docs/metrics.md; the histograms are read out of the HDR
//! histograms at fixed bucket bounds chosen per quantity.
use std::sync::Arc;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};

use kmesh_common::map_capacity;

use crate::{
    agent_stats::{ControlStats, ExportHealth},
    aggregator::{
        CLOSE_REASONS, SeriesKey, SharedAggregator,
        families::{
            self, ACTIVE_HELP, ACTIVE_NAME, CLOSE_COUNTERS, COUNTERS, HISTOGRAMS, HistogramFamily,
        },
        view::{AggregateView, HistogramView, SeriesView},
    },
    process,
};

pub fn registry(
    aggregator: SharedAggregator,
    control: ControlStats,
    export_health: Arc<ExportHealth>,
) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(AggregatorCollector {
        aggregator,
        control,
        export_health,
    }));
    registry
}

struct AggregatorCollector {
    aggregator: SharedAggregator,
    control: ControlStats,
    export_health: Arc<ExportHealth>,
}

impl std::fmt::Debug for AggregatorCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AggregatorCollector")
    }
}

fn series_labels(key: &SeriesKey) -> [(&'static str, &str); 3] {
    [
        ("destination_service", &key.service),
        ("destination_backend", &key.backend),
        ("direction", key.direction.as_str()),
    ]
}

/// Buckets for the encoder: (upper bound, count in that bucket), +Inf last.
fn buckets(h: &HistogramView, family: &HistogramFamily) -> Vec<(f64, u64)> {
    family
        .bounds
        .iter()
        .copied()
        .chain([f64::MAX])
        .zip(h.buckets.iter().copied())
        .collect()
}

fn encode_histograms(
    encoder: &mut DescriptorEncoder,
    family: &HistogramFamily,
    index: usize,
    series: &[SeriesView],
) -> Result<(), std::fmt::Error> {
    let unit = match family.unit {
        families::Unit::Bytes => Unit::Bytes,
        _ => Unit::Seconds,
    };
    let mut metric =
        encoder.encode_descriptor(family.name, family.help, Some(&unit), MetricType::Histogram)?;
    for s in series {
        let h = &s.histograms[index];
        metric
            .encode_family(&series_labels(&s.key))?
            .encode_histogram::<NoLabelSet>(
                family.to_unit(h.sum),
                h.count,
                &buckets(h, family),
                None,
            )?;
    }
    Ok(())
}

fn encode_counter(metric: MetricEncoder<'_>, v: u64) -> Result<(), std::fmt::Error> {
    ConstCounter::new(v).encode(metric)
}

/// A family with no labels and one value.
fn encode_single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    match metric_type {
        MetricType::Counter => encode_counter(metric, v),
        _ => ConstGauge::new(v as i64).encode(metric),
    }
}

/// Counters of one family split by one label.
fn encode_labelled_counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(&[(&str, &str)], u64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in values {
        encode_counter(metric.encode_family(labels)?, *v)?;
    }
    Ok(())
}

impl Collector for AggregatorCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Read /proc before the lock, and copy the figures under it: the
        // probe reader waits on the same lock.
        let process = process::read_self();
        let view = self.aggregator.lock().view(false);
        let series = &view.series;

        for family in &COUNTERS {
            let mut metric =
                encoder.encode_descriptor(family.name, family.help, None, MetricType::Counter)?;
            for s in series {
                encode_counter(
                    metric.encode_family(&series_labels(&s.key))?,
                    (family.get)(&s.counts),
                )?;
            }
        }
        for family in &CLOSE_COUNTERS {
            let mut metric =
                encoder.encode_descriptor(family.name, family.help, None, MetricType::Counter)?;
            for s in series {
                for (i, (_, reason)) in CLOSE_REASONS.iter().enumerate() {
                    let v = (family.get)(&s.counts)[i];
                    if v == 0 {
                        continue;
                    }
                    let [a, b, c] = series_labels(&s.key);
                    let labels = [a, b, c, ("close_reason", reason)];
                    encode_counter(metric.encode_family(&labels)?, v)?;
                }
            }
        }
        let mut active =
            encoder.encode_descriptor(ACTIVE_NAME, ACTIVE_HELP, None, MetricType::Gauge)?;
        for s in series {
            ConstGauge::new(s.counts.active as i64)
                .encode(active.encode_family(&series_labels(&s.key))?)?;
        }
        for (index, family) in HISTOGRAMS.iter().enumerate() {
            encode_histograms(&mut encoder, family, index, series)?;
        }

        let mut weights = encoder.encode_descriptor(
            "kmesh_backend_weight",
            "Weight of each backend in the applied config; its share of new connections under the weighted policy is weight / sum of the service's weights.",
            None,
            MetricType::Gauge,
        )?;
        for b in &view.configured {
            let labels = [
                ("destination_service", &*b.service),
                ("destination_backend", &*b.label),
            ];
            ConstGauge::new(i64::from(b.weight)).encode(weights.encode_family(&labels)?)?;
        }

        self.encode_agent(&view, process, &mut encoder)
    }
}

impl AggregatorCollector {
    fn encode_agent(
        &self,
        view: &AggregateView,
        process: Result<process::ProcessStats, process::ProcessStatsError>,
        encoder: &mut DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let a = view.agent;
        let control = *self.control.lock();
        let mut events = encoder.encode_descriptor(
            "kmesh_probe_events",
            "Probe records read from the ring buffer, by kind.",
            None,
            MetricType::Counter,
        )?;
        for (kind, v) in a.events_by_kind() {
            encode_counter(events.encode_family(&[("kind", kind)])?, v)?;
        }
        encode_single(
            encoder,
            "kmesh_probe_ringbuf_dropped_events",
            "Probe records lost because the ring buffer was full.",
            MetricType::Counter,
            a.ringbuf_drops,
        )?;
        encode_single(
            encoder,
            "kmesh_probe_lost_closes",
            "Connections the agent closed itself: the kernel no longer had them and their close record never arrived (ring buffer full).",
            MetricType::Counter,
            a.lost_closes,
        )?;
        encode_labelled_counters(
            encoder,
            "kmesh_config_reloads",
            "Mesh config loads, by result; a failed one keeps the previous config.",
            &[
                (&[("result", "success")], control.config_reloads_ok),
                (&[("result", "failure")], control.config_reloads_failed),
            ],
        )?;
        encode_single(
            encoder,
            "kmesh_services",
            "Services in the applied mesh config.",
            MetricType::Gauge,
            control.services,
        )?;

        let regular = view.regular_series();
        encode_single(
            encoder,
            "kmesh_metric_series",
            "Label sets (service, backend, direction) the aggregator holds, overflow series excluded.",
            MetricType::Gauge,
            regular as u64,
        )?;
        encode_single(
            encoder,
            "kmesh_metric_series_limit",
            "Most label sets the aggregator keeps (--max-series); connections beyond go to the overflow series.",
            MetricType::Gauge,
            view.max_series as u64,
        )?;
        encode_single(
            encoder,
            "kmesh_metric_series_overflow",
            "Connections counted in the overflow series because the series limit was reached.",
            MetricType::Counter,
            a.series_overflow,
        )?;
        encode_single(
            encoder,
            "kmesh_metric_series_expired",
            "Series removed after their service or backend left the config.",
            MetricType::Counter,
            a.series_expired,
        )?;

        let mut entries = encoder.encode_descriptor(
            "kmesh_map_entries",
            "Entries in the routing maps.",
            None,
            MetricType::Gauge,
        )?;
        for (map, v) in [
            ("services", control.map_services),
            ("backends", control.map_backends),
        ] {
            ConstGauge::new(v as i64).encode(entries.encode_family(&[("map", map)])?)?;
        }
        let mut capacity = encoder.encode_descriptor(
            "kmesh_map_max_entries",
            "Capacity of the routing maps.",
            None,
            MetricType::Gauge,
        )?;
        for (map, v) in [
            ("services", map_capacity::SERVICES),
            ("backends", map_capacity::BACKENDS),
        ] {
            ConstGauge::new(i64::from(v)).encode(capacity.encode_family(&[("map", map)])?)?;
        }

        let h = self.export_health.snapshot();
        encode_labelled_counters(
            encoder,
            "kmesh_otlp_exports",
            "OTLP export requests, by signal and result; failures are also logged with the endpoint and reason.",
            &[
                (
                    &[("signal", "metrics"), ("result", "success")],
                    h.metrics_exports_ok,
                ),
                (
                    &[("signal", "metrics"), ("result", "failure")],
                    h.metrics_exports_failed,
                ),
                (
                    &[("signal", "traces"), ("result", "success")],
                    h.traces_exports_ok,
                ),
                (
                    &[("signal", "traces"), ("result", "failure")],
                    h.traces_exports_failed,
                ),
            ],
        )?;
        encode_labelled_counters(
            encoder,
            "kmesh_otlp_spans",
            "Connection spans by outcome: exported, sampled_out, queue_full (dropped: the queue was full), export_failed (dropped after every retry failed), untracked (not followed: too many open connections).",
            &[
                (&[("outcome", "exported")], h.spans_exported),
                (&[("outcome", "sampled_out")], h.spans_sampled_out),
                (&[("outcome", "queue_full")], h.spans_queue_full),
                (&[("outcome", "export_failed")], h.spans_export_failed),
                (&[("outcome", "untracked")], h.spans_untracked),
            ],
        )?;

        match process {
            Ok(p) => {
                let metric = encoder.encode_descriptor(
                    "process_cpu_seconds",
                    "User and system CPU time the agent used.",
                    None,
                    MetricType::Counter,
                )?;
                ConstCounter::new(p.cpu_seconds).encode(metric)?;
                for (name, help, v) in [
                    (
                        "process_resident_memory_bytes",
                        "Resident memory of the agent.",
                        p.resident_bytes,
                    ),
                    (
                        "process_virtual_memory_bytes",
                        "Virtual memory of the agent.",
                        p.virtual_bytes,
                    ),
                    (
                        "process_open_fds",
                        "Open file descriptors of the agent.",
                        p.open_fds,
                    ),
                ] {
                    encode_single(encoder, name, help, MetricType::Gauge, v)?;
                }
                let metric = encoder.encode_descriptor(
                    "process_start_time_seconds",
                    "Start time of the agent since the Unix epoch.",
                    None,
                    MetricType::Gauge,
                )?;
                ConstGauge::new(p.start_time_seconds).encode(metric)?;
            }
            Err(e) => tracing::warn!(error = %e, "process_* metrics left out of this scrape"),
        }
        Ok(())
    }
}
