//! The aggregator's figures as OTLP metrics requests: cumulative monotonic
//! sums, a non-monotonic sum of open connections, and histograms (explicit
//! buckets as on `/metrics`, or base-2 exponential). Series are split over
//! requests of at most [`SERIES_PER_REQUEST`] series, so a large mesh stays
//! far below a receiver's 4 MiB gRPC message limit (a series is ~5 KiB).
//! Attribute names are in docs/metrics.md.
use std::{
    net::SocketAddr,
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
use crate::agent_stats::{AGENT_FAMILIES, AgentFigures, families::Kind};
use crate::aggregator::{
    CLOSE_REASONS, SeriesKey,
    families::{self, ACTIVE_HELP, ACTIVE_OTLP_NAME, CLOSE_COUNTERS, COUNTERS, HISTOGRAMS},
    istio,
    view::{AggregateView, HistogramView, SeriesView},
};

/// Series per request at most (~13 KiB each with explicit histograms and
/// Istio's 21 labels on every point), so a request stays under 1 MiB.
pub const SERIES_PER_REQUEST: usize = 64;

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

pub fn network_type(addr: &SocketAddr) -> &'static str {
    if addr.is_ipv4() { "ipv4" } else { "ipv6" }
}

/// Istio's labels of one series, with response flags `flags`.
fn istio_attributes(key: &SeriesKey, flags: &'static str) -> Vec<KeyValue> {
    istio::series_labels_with_flags(key, flags)
        .iter()
        .map(|(k, v)| kv(k, s(v)))
        .collect()
}

/// The attributes of one series besides Istio's labels; `vip` is the
/// address its clients dial.
fn network_attributes(key: &SeriesKey, vip: Option<SocketAddr>) -> Vec<KeyValue> {
    let mut attrs = vec![kv("network.transport", s("tcp"))];
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
    if let Some(vip) = vip {
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

fn sum(
    name: &str,
    help: &str,
    unit: &str,
    monotonic: bool,
    points: Vec<NumberDataPoint>,
) -> Metric {
    metric(
        name,
        help,
        unit,
        Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: CUMULATIVE,
            is_monotonic: monotonic,
        }),
    )
}

struct Series<'a> {
    view: &'a SeriesView,
    /// Istio's labels (no response flags) and the network attributes.
    attrs: Vec<KeyValue>,
    /// The network attributes alone, for points with response flags.
    network: Vec<KeyValue>,
    start: u64,
}

impl Series<'_> {
    /// The attributes of a point with response flags `flags`.
    fn attrs_with_flags(&self, flags: &'static str) -> Vec<KeyValue> {
        let mut attrs = istio_attributes(&self.view.key, flags);
        attrs.extend(self.network.iter().cloned());
        attrs
    }
}

/// Requests carrying every series, [`SERIES_PER_REQUEST`] at a time; the
/// agent-wide figures go with the first. Metrics without points are left out.
pub fn requests(
    view: &AggregateView,
    agent: &AgentFigures,
    resource: &[KeyValue],
    histograms: HistogramAggregation,
    now: SystemTime,
) -> Vec<ExportMetricsServiceRequest> {
    let now = nanos(now);
    let vips = view.vips();
    let series: Vec<Series<'_>> = view
        .series
        .iter()
        .map(|v| {
            let vip = vips
                .get(&(v.key.service.clone(), v.key.backend.clone()))
                .copied();
            let network = network_attributes(&v.key, vip);
            let mut attrs = istio_attributes(&v.key, istio::NO_FLAGS);
            attrs.extend(network.iter().cloned());
            Series {
                view: v,
                attrs,
                network,
                start: nanos(v.created),
            }
        })
        .collect();
    let mut requests: Vec<ExportMetricsServiceRequest> = series
        .chunks(SERIES_PER_REQUEST)
        .map(|chunk| request(resource, series_metrics(chunk, histograms, now)))
        .collect();
    let agent = agent_metrics(view, agent, now);
    match requests.first_mut() {
        Some(first) => first.resource_metrics[0].scope_metrics[0]
            .metrics
            .extend(agent),
        None => requests.push(request(resource, agent)),
    }
    requests
}

fn request(resource: &[KeyValue], metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
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

fn series_metrics(
    series: &[Series<'_>],
    histograms: HistogramAggregation,
    now: u64,
) -> Vec<Metric> {
    let mut metrics = Vec::new();
    for family in &COUNTERS {
        let points = series
            .iter()
            .map(|x| number(x.attrs.clone(), x.start, now, (family.get)(&x.view.counts)))
            .collect();
        metrics.push(sum(
            family.otlp_name,
            family.help,
            family.unit.ucum(),
            true,
            points,
        ));
    }
    for family in &CLOSE_COUNTERS {
        let mut points = Vec::new();
        for x in series {
            for (i, (code, reason)) in CLOSE_REASONS.iter().enumerate() {
                let v = (family.get)(&x.view.counts)[i];
                if v == 0 {
                    continue;
                }
                let flags = istio::response_flags(*code, x.view.key.direction);
                let mut attrs = x.attrs_with_flags(flags);
                attrs.push(kv("kmesh.close_reason", s(reason)));
                points.push(number(attrs, x.start, now, v));
            }
        }
        let unit = families::Unit::Connections.ucum();
        metrics.push(sum(family.otlp_name, family.help, unit, true, points));
    }
    // Open connections go up and down: a non-monotonic sum, which (unlike a
    // gauge) can be added up across attributes downstream.
    let active = series
        .iter()
        .map(|x| number(x.attrs.clone(), x.start, now, x.view.counts.active))
        .collect();
    let unit = families::Unit::Connections.ucum();
    metrics.push(sum(ACTIVE_OTLP_NAME, ACTIVE_HELP, unit, false, active));
    for (index, family) in HISTOGRAMS.iter().enumerate() {
        let data = match histograms {
            HistogramAggregation::Explicit => Data::Histogram(Histogram {
                data_points: series
                    .iter()
                    .map(|x| {
                        let h = &x.view.histograms[index];
                        explicit_point(h, family, x.attrs.clone(), x.start, now)
                    })
                    .collect(),
                aggregation_temporality: CUMULATIVE,
            }),
            HistogramAggregation::Exponential => Data::ExponentialHistogram(ExponentialHistogram {
                data_points: series
                    .iter()
                    .map(|x| {
                        let h = &x.view.histograms[index];
                        exponential::data_point(h, family.per_unit, x.attrs.clone(), x.start, now)
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
    metrics.retain(has_points);
    metrics
}

fn has_points(m: &Metric) -> bool {
    match &m.data {
        Some(Data::Sum(s)) => !s.data_points.is_empty(),
        Some(Data::Histogram(h)) => !h.data_points.is_empty(),
        Some(Data::ExponentialHistogram(h)) => !h.data_points.is_empty(),
        Some(Data::Gauge(g)) => !g.data_points.is_empty(),
        _ => false,
    }
}

fn explicit_point(
    h: &HistogramView,
    family: &families::HistogramFamily,
    attributes: Vec<KeyValue>,
    start: u64,
    now: u64,
) -> HistogramDataPoint {
    let scaled = |v: u64| family.to_unit(v);
    HistogramDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: now,
        count: h.count,
        sum: Some(scaled(h.sum)),
        bucket_counts: h.buckets.clone(),
        explicit_bounds: family.bounds.to_vec(),
        exemplars: Vec::new(),
        flags: 0,
        min: (h.count > 0).then(|| scaled(h.min)),
        max: (h.count > 0).then(|| scaled(h.max)),
    }
}

/// The agent's own figures ([`AGENT_FAMILIES`]), so an OTLP-only user sees
/// lost records, failed reloads and full maps too.
fn agent_metrics(view: &AggregateView, agent: &AgentFigures, now: u64) -> Vec<Metric> {
    let start = nanos(view.started_at);
    AGENT_FAMILIES
        .iter()
        .map(|family| {
            let points = (family.points)(agent)
                .into_iter()
                .map(|(values, v)| {
                    let attrs = family
                        .labels
                        .iter()
                        .zip(values)
                        .map(|((_, key), value)| kv(key, s(value)))
                        .collect();
                    number(attrs, start, now, v)
                })
                .collect();
            match family.kind {
                Kind::Counter => sum(family.otlp_name, family.help, family.unit, true, points),
                Kind::Gauge => metric(
                    family.otlp_name,
                    family.help,
                    family.unit,
                    Data::Gauge(Gauge {
                        data_points: points,
                    }),
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
