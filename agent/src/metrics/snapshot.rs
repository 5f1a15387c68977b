//! A JSON view of the aggregator for people and scripts (`GET /v1/snapshot`).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Aggregator, CLOSE_REASONS, Direction, Distribution};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    pub uptime_seconds: f64,
    pub services_configured: u64,
    pub events_total: u64,
    pub ringbuf_drops: u64,
    pub config_reloads_ok: u64,
    pub config_reloads_failed: u64,
    pub series: Vec<SeriesSnapshot>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeriesSnapshot {
    pub service: String,
    pub backend: String,
    pub direction: Direction,
    pub opened: u64,
    pub closed: u64,
    pub failed: u64,
    pub active: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub retransmits: u64,
    /// Closed and failed connections by close reason.
    pub close_reasons: BTreeMap<String, u64>,
    pub connect_latency_us: Quantiles,
    pub srtt_us: Quantiles,
    pub min_rtt_us: Quantiles,
    pub duration_us: Quantiles,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Quantiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl From<&Distribution> for Quantiles {
    fn from(d: &Distribution) -> Self {
        let h = &d.hist;
        Self {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        }
    }
}

impl Aggregator {
    pub fn snapshot(&self) -> Snapshot {
        let mut series: Vec<SeriesSnapshot> = self
            .series()
            .map(|(key, s)| {
                let close_reasons = CLOSE_REASONS
                    .iter()
                    .enumerate()
                    .map(|(i, (_, name))| {
                        (name.to_string(), s.counts.closed[i] + s.counts.failed[i])
                    })
                    .filter(|(_, n)| *n > 0)
                    .collect();
                SeriesSnapshot {
                    service: key.service.to_string(),
                    backend: key.backend.to_string(),
                    direction: key.direction,
                    opened: s.counts.opened,
                    closed: s.counts.closed_total(),
                    failed: s.counts.failed_total(),
                    active: s.counts.active,
                    bytes_sent: s.counts.bytes_sent,
                    bytes_received: s.counts.bytes_received,
                    retransmits: s.counts.retransmits,
                    close_reasons,
                    connect_latency_us: (&s.connect_latency_us).into(),
                    srtt_us: (&s.srtt_us).into(),
                    min_rtt_us: (&s.min_rtt_us).into(),
                    duration_us: (&s.duration_us).into(),
                }
            })
            .collect();
        series.sort_by(|a, b| {
            (&a.service, &a.backend, a.direction).cmp(&(&b.service, &b.backend, b.direction))
        });
        let a = &self.agent;
        Snapshot {
            uptime_seconds: self.uptime().as_secs_f64(),
            services_configured: a.services,
            events_total: a.events_established + a.events_closed + a.events_periodic,
            ringbuf_drops: a.ringbuf_drops,
            config_reloads_ok: a.config_reloads_ok,
            config_reloads_failed: a.config_reloads_failed,
            series,
        }
    }
}
