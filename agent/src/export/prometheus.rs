//! Prometheus text exposition of the aggregator. Names and labels are
//! documented in docs/metrics.md; the histograms are the bucket counts the
//! aggregator keeps at fixed bounds chosen per quantity.
use std::sync::Arc;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};

use crate::{
    agent_stats::{AGENT_FAMILIES, AgentFigures, ControlStats, ExportHealth, families::Kind},
    aggregator::{
        CLOSE_REASONS, SharedAggregator,
        families::{
            self, ACTIVE_HELP, ACTIVE_NAME, CLOSE_COUNTERS, COUNTERS, HISTOGRAMS, HistogramFamily,
        },
        istio::{self, IstioCount, series_labels},
        view::{AggregateView, HistogramView, SeriesView},
    },
    export::MetricNames,
    process,
};

pub fn registry(
    aggregator: SharedAggregator,
    control: ControlStats,
    export_health: Arc<ExportHealth>,
    names: MetricNames,
) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(AggregatorCollector {
        aggregator,
        control,
        export_health,
        names,
    }));
    registry
}

struct AggregatorCollector {
    aggregator: SharedAggregator,
    control: ControlStats,
    export_health: Arc<ExportHealth>,
    names: MetricNames,
}

impl std::fmt::Debug for AggregatorCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AggregatorCollector")
    }
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

/// The TCP counters under Istio's names, with Istio's labels.
fn encode_istio_counters(
    encoder: &mut DescriptorEncoder,
    series: &[SeriesView],
) -> Result<(), std::fmt::Error> {
    for family in &istio::ISTIO_COUNTERS {
        let mut metric =
            encoder.encode_descriptor(family.name, family.help, None, MetricType::Counter)?;
        for s in series {
            match family.kind {
                // Istio splits closed connections by how they ended.
                IstioCount::Closed => {
                    for (flags, v) in istio::closed_by_flags(&s.key, &s.counts) {
                        let labels = istio::series_labels_with_flags(&s.key, flags);
                        encode_counter(metric.encode_family(&labels)?, v)?;
                    }
                }
                IstioCount::Opened | IstioCount::RequestBytes | IstioCount::ResponseBytes => {
                    let v = family.kind.value(&s.key, &s.counts);
                    encode_counter(metric.encode_family(&series_labels(&s.key))?, v)?;
                }
            }
        }
    }
    Ok(())
}

fn encode_counter(metric: MetricEncoder<'_>, v: u64) -> Result<(), std::fmt::Error> {
    ConstCounter::new(v).encode(metric)
}

fn encode_value(kind: Kind, metric: MetricEncoder<'_>, v: u64) -> Result<(), std::fmt::Error> {
    match kind {
        Kind::Counter => encode_counter(metric, v),
        Kind::Gauge => ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(metric),
    }
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
                for (i, (code, reason)) in CLOSE_REASONS.iter().enumerate() {
                    let v = (family.get)(&s.counts)[i];
                    if v == 0 {
                        continue;
                    }
                    let mut labels = istio::close_labels(&s.key, *code).to_vec();
                    labels.push(("close_reason", reason));
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
        if self.names == MetricNames::Istio {
            encode_istio_counters(&mut encoder, series)?;
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
        let figures = AgentFigures::new(view, *self.control.lock(), self.export_health.snapshot());
        for family in &AGENT_FAMILIES {
            let metric_type = match family.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
            };
            let mut metric =
                encoder.encode_descriptor(family.name, family.help, None, metric_type)?;
            let points = (family.points)(&figures);
            if family.labels.is_empty() {
                let v = points.first().map_or(0, |(_, v)| *v);
                encode_value(family.kind, metric, v)?;
                continue;
            }
            for (values, v) in points {
                let labels: Vec<(&str, &str)> = family
                    .labels
                    .iter()
                    .zip(values)
                    .map(|((label, _), value)| (*label, *value))
                    .collect();
                encode_value(family.kind, metric.encode_family(&labels)?, v)?;
            }
        }

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
                    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                    encode_value(Kind::Gauge, metric, v)?;
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
