//! The aggregator as one OTLP metrics request: cumulative monotonic sums,
//! a gauge of open connections, and histograms read out of the HDR
//! histograms (explicit buckets as on `/metrics`, or base-2 exponential).
//! Attribute names are in docs/metrics.md.
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value},
    metrics::v1::{
        AggregationTemporality, ExponentialHistogram, Gauge, Histogram, HistogramDataPoint, Metric,
        NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point,
    },
};

use super::{exponential, settings::HistogramAggregation};
use crate::metrics::{
    Aggregator, CLOSE_REASONS, Direction, SeriesKey, SeriesStats,
    families::{self, ACTIVE_HELP, ACTIVE_OTLP_NAME, CLOSE_COUNTERS, COUNTERS, HISTOGRAMS},
};

const CUMULATIVE: i32 = AggregationTemporality::Cumulative as i32;

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
}

pub fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn s(v: &str) -> Value {
    Value::StringValue(v.to_string())
}

/// Istio's `reporter`: who observed the connection.
pub fn reporter(direction: Direction) -> &'static str {
    match direction {
        Direction::Outbound => "source",
        Direction::Inbound => "destination",
    }
}

pub fn network_type(addr: &SocketAddr) -> &'static str {
    if addr.is_ipv4() { "ipv4" } else { "ipv6" }
}

/// Attributes of one series; `vips` maps a service name to the address clients dial.
fn series_attributes(key: &SeriesKey, vips: &HashMap<Arc<str>, SocketAddr>) -> Vec<KeyValue> {
    let mut attrs = vec![
        kv("destination_service", s(&key.service)),
        kv("reporter", s(reporter(key.direction))),
        kv("network.transport", s("tcp")),
    ];
    if key.is_overflow() {
        attrs.push(kv("otel.metric.overflow", Value::BoolValue(true)));
    }
    if let Ok(backend) = key.backend.parse::<SocketAddr>() {
        attrs.push(kv("network.type", s(network_type(&backend))));
        attrs.push(kv("network.peer.address", s(&backend.ip().to_string())));
        attrs.push(kv(
            "network.peer.port",
            Value::IntValue(backend.port().into()),
        ));
    }
    if let Some(vip) = vips.get(&key.service) {
        attrs.push(kv("server.address", s(&vip.ip().to_string())));
        attrs.push(kv("server.port", Value::IntValue(vip.port().into())));
    }
    attrs
}

fn metric(name: &str, help: &str, unit: &str, data: Data) -> Metric {
    Metric {
        name: name.to_string(),
        description: help.to_string(),
        unit: unit.to_string(),
        metadata: Vec::new(),
        data: Some(data),
    }
}

fn number(attributes: Vec<KeyValue>, start: u64, now: u64, v: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: now,
        exemplars: Vec::new(),
        flags: 0,
        value: Some(number_data_point::Value::AsInt(
            i64::try_from(v).unwrap_or(i64::MAX),
        )),
    }
}

fn monotonic_sum(name: &str, help: &str, unit: &str, points: Vec<NumberDataPoint>) -> Metric {
    metric(
        name,
        help,
        unit,
        Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: CUMULATIVE,
            is_monotonic: true,
        }),
    )
}

struct Series<'a> {
    key: &'a SeriesKey,
    stats: &'a SeriesStats,
    attrs: Vec<KeyValue>,
    start: u64,
}

pub fn request(
    agg: &Aggregator,
    resource: &[KeyValue],
    histograms: HistogramAggregation,
    now: SystemTime,
) -> ExportMetricsServiceRequest {
    let now = nanos(now);
    let vips: HashMap<Arc<str>, SocketAddr> = agg
        .labels()
        .configured()
        .iter()
        .map(|b| (b.service.clone(), b.vip))
        .collect();
    let mut series: Vec<Series<'_>> = agg
        .series()
        .map(|(key, stats)| Series {
            key,
            stats,
            attrs: series_attributes(key, &vips),
            start: nanos(stats.created),
        })
        .collect();
    series.sort_by(|a, b| a.key.cmp(b.key));

    let mut metrics = Vec::new();
    for family in &COUNTERS {
        let points = series
            .iter()
            .map(|x| number(x.attrs.clone(), x.start, now, (family.get)(x.stats)))
            .collect();
        metrics.push(monotonic_sum(
            family.otlp_name,
            family.help,
            family.unit.ucum(),
            points,
        ));
    }
    for family in &CLOSE_COUNTERS {
        let mut points = Vec::new();
        for x in &series {
            for (i, (_, reason)) in CLOSE_REASONS.iter().enumerate() {
                let v = (family.get)(x.stats)[i];
                if v == 0 {
                    continue;
                }
                let mut attrs = x.attrs.clone();
                attrs.push(kv("kmesh.close_reason", s(reason)));
                points.push(number(attrs, x.start, now, v));
            }
        }
        metrics.push(monotonic_sum(
            family.otlp_name,
            family.help,
            families::Unit::Connections.ucum(),
            points,
        ));
    }
    let active = series
        .iter()
        .map(|x| number(x.attrs.clone(), x.start, now, x.stats.active))
        .collect();
    metrics.push(metric(
        ACTIVE_OTLP_NAME,
        ACTIVE_HELP,
        families::Unit::Connections.ucum(),
        Data::Gauge(Gauge {
            data_points: active,
        }),
    ));
    for family in &HISTOGRAMS {
        let data = match histograms {
            HistogramAggregation::Explicit => Data::Histogram(Histogram {
                data_points: series
                    .iter()
                    .map(|x| explicit_point(x, family, now))
                    .collect(),
                aggregation_temporality: CUMULATIVE,
            }),
            HistogramAggregation::Exponential => Data::ExponentialHistogram(ExponentialHistogram {
                data_points: series
                    .iter()
                    .map(|x| {
                        exponential::data_point(
                            (family.get)(x.stats),
                            family.scale,
                            x.attrs.clone(),
                            x.start,
                            now,
                        )
                    })
                    .collect(),
                aggregation_temporality: CUMULATIVE,
            }),
        };
        metrics.push(metric(
            family.otlp_name,
            family.help,
            family.unit.ucum(),
            data,
        ));
    }
    metrics.extend(agent_metrics(agg, now));

    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                attributes: resource.to_vec(),
                dropped_attributes_count: 0,
                entity_refs: Vec::new(),
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "kmesh-agent".to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    attributes: Vec::new(),
                    dropped_attributes_count: 0,
                }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn explicit_point(
    x: &Series<'_>,
    family: &families::HistogramFamily,
    now: u64,
) -> HistogramDataPoint {
    let d = (family.get)(x.stats);
    let count = d.hist.len();
    let scaled = |v: u64| v as f64 * family.scale;
    HistogramDataPoint {
        attributes: x.attrs.clone(),
        start_time_unix_nano: x.start,
        time_unix_nano: now,
        count,
        sum: Some(scaled(d.sum)),
        bucket_counts: families::bucket_counts(d, family.bounds, family.scale),
        explicit_bounds: family.bounds.to_vec(),
        exemplars: Vec::new(),
        flags: 0,
        min: (count > 0).then(|| scaled(d.hist.min())),
        max: (count > 0).then(|| scaled(d.hist.max())),
    }
}

/// Probe and aggregator health, so an OTLP-only user sees lost records too.
fn agent_metrics(agg: &Aggregator, now: u64) -> Vec<Metric> {
    let a = agg.agent;
    let start = nanos(agg.started_at());
    let point = |attrs: Vec<KeyValue>, v| number(attrs, start, now, v);
    vec![
        monotonic_sum(
            "kmesh.probe.events",
            "Probe records read from the ring buffer, by kind.",
            "{record}",
            [
                ("established", a.events_established),
                ("closed", a.events_closed),
                ("periodic", a.events_periodic),
                ("malformed", a.events_malformed),
            ]
            .into_iter()
            .map(|(kind, v)| point(vec![kv("kmesh.record.kind", s(kind))], v))
            .collect(),
        ),
        monotonic_sum(
            "kmesh.probe.ringbuf.dropped",
            "Probe records lost because the ring buffer was full.",
            "{record}",
            vec![point(Vec::new(), a.ringbuf_drops)],
        ),
        monotonic_sum(
            "kmesh.metric_series.overflow",
            "Connections counted in the overflow series because the series limit was reached.",
            "{connection}",
            vec![point(Vec::new(), a.series_overflow)],
        ),
    ]
}

#[cfg(test)]
mod tests;
