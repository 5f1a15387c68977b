//! A copy of the aggregator's figures for the exporters, taken under the
//! lock in a few microseconds per series; the exporters format and send it
//! after the lock is released, so a scrape or an OTLP export never holds up
//! the probe reader for longer than the copy.
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use super::{
    AgentStats, Aggregator, ConfiguredBackend, ConfiguredService, DistributionRef, SeriesCounts,
    SeriesKey, families::HISTOGRAMS, sketch::Sketch,
};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramView {
    pub count: u64,
    /// In recorded units (µs or bytes), as are min and max.
    pub sum: u64,
    pub min: u64,
    pub max: u64,
    /// Per-bucket counts at the family's bounds, +Inf last.
    pub buckets: Vec<u64>,
    /// Values recorded as 0.
    pub zeros: u64,
    /// The sketch of the positive values, when asked for (quantiles,
    /// exponential histograms): a copy of its few hundred bytes, read
    /// once the lock is released.
    pub sketch: Option<Sketch>,
}

impl HistogramView {
    pub fn of(d: DistributionRef<'_>, limits: &[u64], sketch: bool) -> Self {
        let count = d.count();
        Self {
            count,
            sum: d.sum,
            min: if count > 0 { d.min } else { 0 },
            max: d.max,
            buckets: d.buckets(limits),
            zeros: d.zeros(),
            sketch: sketch.then(|| d.sketch()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SeriesView {
    pub key: SeriesKey,
    /// Start of the series' cumulative values.
    pub created: SystemTime,
    pub counts: SeriesCounts,
    /// In the order of [`HISTOGRAMS`].
    pub histograms: Vec<HistogramView>,
}

#[derive(Clone, Debug)]
pub struct AggregateView {
    /// Sorted by series key.
    pub series: Vec<SeriesView>,
    pub agent: AgentStats,
    /// Every configured service, with or without backends, in VIP order.
    pub services: Vec<ConfiguredService>,
    pub configured: Vec<ConfiguredBackend>,
    pub max_series: usize,
    pub started_at: SystemTime,
    pub uptime: Duration,
}

impl AggregateView {
    /// Series of the configured backends and the unknown ones; the overflow
    /// series are not counted against the limit.
    pub fn regular_series(&self) -> usize {
        self.series.iter().filter(|s| !s.key.is_overflow()).count()
    }

    /// The VIP each (service, backend label) is reached by; a service on
    /// several ports has several VIPs, told apart by the backend's port.
    pub fn vips(&self) -> HashMap<(Arc<str>, Arc<str>), SocketAddr> {
        self.configured
            .iter()
            .map(|b| ((b.service.clone(), b.label.clone()), b.vip))
            .collect()
    }
}

impl Aggregator {
    /// Copies what the exporters need; `sketches` adds every family's
    /// sketch, which the exponential histograms are built from.
    pub fn view(&self, sketches: bool) -> AggregateView {
        let all: Vec<usize> = (0..HISTOGRAMS.len()).collect();
        self.view_with_sketches(if sketches { &all } else { &[] })
    }

    /// Copies what the exporters need, and the sketches of the `families`
    /// (positions in [`HISTOGRAMS`]) for quantiles.
    pub fn view_with_sketches(&self, families: &[usize]) -> AggregateView {
        let mut series: Vec<SeriesView> = self
            .series()
            .map(|(key, s)| SeriesView {
                key: key.clone(),
                created: s.created,
                counts: s.counts(),
                histograms: HISTOGRAMS
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        HistogramView::of(s.distribution(i), f.limits, families.contains(&i))
                    })
                    .collect(),
            })
            .collect();
        series.sort_by(|a, b| a.key.cmp(&b.key));
        AggregateView {
            series,
            agent: self.agent,
            services: self.labels().services().to_vec(),
            configured: self.labels().configured().to_vec(),
            max_series: self.limits().max_series,
            started_at: self.started_at(),
            uptime: self.uptime(),
        }
    }
}
