//! Prometheus text exposition of the aggregator. Names and labels are
//! documented in docs/metrics.md; the histograms are read out of the HDR
//! histograms at fixed bucket bounds chosen per quantity.
use std::sync::{Arc, Mutex};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};

use crate::metrics::{Aggregator, CLOSE_REASONS, Distribution, SeriesKey, SeriesStats};

/// Connect latency and RTT: 25 µs to 10 s.
pub const LATENCY_BOUNDS_S: [f64; 17] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Connection lifetimes: 1 ms to 1 h.
pub const DURATION_BOUNDS_S: [f64; 14] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Bytes per connection: 64 B to 1 GiB, powers of 4.
pub const BYTES_BOUNDS: [f64; 13] = [
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
    268_435_456.0,
    1_073_741_824.0,
];

pub fn registry(aggregator: Arc<Mutex<Aggregator>>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(AggregatorCollector { aggregator }));
    registry
}

struct AggregatorCollector {
    aggregator: Arc<Mutex<Aggregator>>,
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

/// Buckets for the encoder: per-bucket (not cumulative) counts at each
/// bound, then the rest in +Inf. `scale` turns recorded units into the
/// exported unit (µs -> s).
fn buckets(d: &Distribution, bounds: &[f64], scale: f64) -> Vec<(f64, u64)> {
    let mut out = Vec::with_capacity(bounds.len() + 1);
    let mut below = 0u64;
    for &bound in bounds {
        let limit = (bound / scale).floor() as u64;
        let cumulative = d.hist.count_between(0, limit);
        out.push((bound, cumulative - below.min(cumulative)));
        below = cumulative.max(below);
    }
    out.push((f64::MAX, d.hist.len().saturating_sub(below)));
    out
}

type CounterOf = fn(&SeriesStats) -> u64;

type Family<'a> = (&'a SeriesKey, &'a Distribution);

fn encode_histograms(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Unit,
    series: &[Family<'_>],
    bounds: &[f64],
    scale: f64,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, Some(&unit), MetricType::Histogram)?;
    for (key, d) in series {
        let labels = series_labels(key);
        metric
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(
                d.sum as f64 * scale,
                d.hist.len(),
                &buckets(d, bounds, scale),
                None,
            )?;
    }
    Ok(())
}

fn encode_counter(metric: MetricEncoder<'_>, v: u64) -> Result<(), std::fmt::Error> {
    ConstCounter::new(v).encode(metric)
}

impl Collector for AggregatorCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let agg = self.aggregator.lock().unwrap_or_else(|p| p.into_inner());
        let mut series: Vec<_> = agg.series().collect();
        series.sort_by(|a, b| a.0.cmp(b.0));

        let counters: [(&str, &str, CounterOf); 4] = [
            (
                "kmesh_tcp_connections_opened",
                "TCP connections established.",
                |s| s.opened,
            ),
            (
                "kmesh_tcp_sent_bytes",
                "Bytes sent and acknowledged by the peer.",
                |s| s.bytes_sent,
            ),
            ("kmesh_tcp_received_bytes", "Bytes received.", |s| {
                s.bytes_received
            }),
            (
                "kmesh_tcp_retransmits",
                "TCP segments retransmitted.",
                |s| s.retransmits,
            ),
        ];
        for (name, help, get) in counters {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (key, stats) in &series {
                encode_counter(metric.encode_family(&series_labels(key))?, get(stats))?;
            }
        }

        for (name, help, failed) in [
            (
                "kmesh_tcp_connections_closed",
                "TCP connections closed after being established, by close reason.",
                false,
            ),
            (
                "kmesh_tcp_connections_failed",
                "TCP connections that never got established, by reason.",
                true,
            ),
        ] {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (key, stats) in &series {
                for (i, (_, reason)) in CLOSE_REASONS.iter().enumerate() {
                    let v = if failed {
                        stats.failed[i]
                    } else {
                        stats.closed[i]
                    };
                    if v == 0 {
                        continue;
                    }
                    let [a, b, c] = series_labels(key);
                    let labels = [a, b, c, ("close_reason", reason)];
                    encode_counter(metric.encode_family(&labels)?, v)?;
                }
            }
        }

        let mut active = encoder.encode_descriptor(
            "kmesh_tcp_connections_active",
            "TCP connections open now.",
            None,
            MetricType::Gauge,
        )?;
        for (key, stats) in &series {
            ConstGauge::new(stats.active as i64)
                .encode(active.encode_family(&series_labels(key))?)?;
        }

        let pick = |f: fn(&SeriesStats) -> &Distribution| -> Vec<Family<'_>> {
            series.iter().map(|(k, s)| (*k, f(s))).collect()
        };
        let us = 1e-6;
        encode_histograms(
            &mut encoder,
            "kmesh_tcp_connect_latency",
            "Time from connect() to established.",
            Unit::Seconds,
            &pick(|s| &s.connect_latency_us),
            &LATENCY_BOUNDS_S,
            us,
        )?;
        encode_histograms(
            &mut encoder,
            "kmesh_tcp_rtt",
            "Smoothed RTT of each connection at close.",
            Unit::Seconds,
            &pick(|s| &s.srtt_us),
            &LATENCY_BOUNDS_S,
            us,
        )?;
        encode_histograms(
            &mut encoder,
            "kmesh_tcp_min_rtt",
            "Minimum RTT seen by each connection.",
            Unit::Seconds,
            &pick(|s| &s.min_rtt_us),
            &LATENCY_BOUNDS_S,
            us,
        )?;
        encode_histograms(
            &mut encoder,
            "kmesh_tcp_connection_duration",
            "Connection lifetime, connect() or accept to close.",
            Unit::Seconds,
            &pick(|s| &s.duration_us),
            &DURATION_BOUNDS_S,
            us,
        )?;
        encode_histograms(
            &mut encoder,
            "kmesh_tcp_connection_sent",
            "Bytes sent per connection.",
            Unit::Bytes,
            &pick(|s| &s.conn_bytes_sent),
            &BYTES_BOUNDS,
            1.0,
        )?;
        encode_histograms(
            &mut encoder,
            "kmesh_tcp_connection_received",
            "Bytes received per connection.",
            Unit::Bytes,
            &pick(|s| &s.conn_bytes_received),
            &BYTES_BOUNDS,
            1.0,
        )?;

        let a = agg.agent;
        let mut events = encoder.encode_descriptor(
            "kmesh_probe_events",
            "Probe records read from the ring buffer, by kind.",
            None,
            MetricType::Counter,
        )?;
        for (kind, v) in [
            ("established", a.events_established),
            ("closed", a.events_closed),
            ("periodic", a.events_periodic),
            ("malformed", a.events_malformed),
        ] {
            encode_counter(events.encode_family(&[("kind", kind)])?, v)?;
        }
        encode_counter(
            encoder.encode_descriptor(
                "kmesh_probe_ringbuf_dropped_events",
                "Probe records lost because the ring buffer was full.",
                None,
                MetricType::Counter,
            )?,
            a.ringbuf_drops,
        )?;
        let mut reloads = encoder.encode_descriptor(
            "kmesh_config_reloads",
            "Mesh config loads, by result; a failed one keeps the previous config.",
            None,
            MetricType::Counter,
        )?;
        encode_counter(
            reloads.encode_family(&[("result", "success")])?,
            a.config_reloads_ok,
        )?;
        encode_counter(
            reloads.encode_family(&[("result", "failure")])?,
            a.config_reloads_failed,
        )?;
        ConstGauge::new(a.services as i64).encode(encoder.encode_descriptor(
            "kmesh_services",
            "Services in the applied mesh config.",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_split_counts_and_keep_the_rest_in_inf() {
        let mut d = Distribution::default();
        for v in [10, 30, 80, 200, 20_000_000] {
            d.record(v); // µs
        }
        let b = buckets(&d, &LATENCY_BOUNDS_S, 1e-6);
        assert_eq!(b.len(), LATENCY_BOUNDS_S.len() + 1);
        assert_eq!(b.iter().map(|(_, c)| c).sum::<u64>(), 5);
        assert_eq!(b[0], (0.000_025, 1)); // 10 µs
        assert_eq!(b[1], (0.000_05, 1)); // 30 µs
        assert_eq!(b[2], (0.000_1, 1)); // 80 µs
        assert_eq!(b[3], (0.000_25, 1)); // 200 µs
        assert_eq!(b.last().unwrap().1, 1); // 20 s, beyond 10 s
    }
}
