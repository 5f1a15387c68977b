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

use hdrhistogram::Histogram;

use super::{
    AgentStats, Aggregator, ConfiguredBackend, ConfiguredService, Distribution, SIGFIGS,
    SeriesCounts, SeriesKey, families::HISTOGRAMS,
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
    /// (value, count) of every HDR bucket with values, in recorded units;
    /// only filled when asked for (exponential histograms need them).
    pub recorded: Vec<(u64, u64)>,
    /// The HDR histogram itself, when asked for: quantiles across series
    /// are merged from it once the lock is released. Cloning is a copy of
    /// memory, several times cheaper under the lock than walking the
    /// buckets for `recorded`.
    pub hdr: Option<Histogram<u64>>,
}

impl HistogramView {
    pub fn of(d: &Distribution, recorded: bool, hdr: bool) -> Self {
        let h = &d.hist;
        Self {
            count: d.count(),
            sum: d.sum,
            min: if d.count() > 0 { d.min } else { 0 },
            max: d.max,
            buckets: d.buckets().to_vec(),
            recorded: if recorded {
                h.iter_recorded()
                    .map(|v| {
                        let mid = h.median_equivalent(v.value_iterated_to());
                        (mid, v.count_at_value())
                    })
                    .collect()
            } else {
                Vec::new()
            },
            hdr: hdr.then(|| h.clone()),
        }
    }
}

impl HistogramView {
    /// The HDR histograms of `parts` (views taken with them) as one, for
    /// quantiles across series.
    pub fn merged_hdr(parts: &[&HistogramView]) -> Histogram<u64> {
        let mut hdrs = parts.iter().filter_map(|p| p.hdr.as_ref());
        let mut merged = hdrs
            .next()
            .cloned()
            .unwrap_or_else(|| Histogram::new(SIGFIGS).expect("2 significant figures is valid"));
        for h in hdrs {
            // Auto-resizing histograms of the same precision always add.
            let _ = merged.add(h);
        }
        merged
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
    /// Copies what the exporters need; `recorded` adds the HDR buckets the
    /// exponential histograms are built from.
    pub fn view(&self, recorded: bool) -> AggregateView {
        self.copy(recorded, &[])
    }

    /// Copies what the exporters need, and the HDR histograms of the
    /// `families` (positions in [`HISTOGRAMS`]) for quantiles across series.
    pub fn view_with_hdr(&self, families: &[usize]) -> AggregateView {
        self.copy(false, families)
    }

    fn copy(&self, recorded: bool, hdr_families: &[usize]) -> AggregateView {
        let mut series: Vec<SeriesView> = self
            .series()
            .map(|(key, s)| SeriesView {
                key: key.clone(),
                created: s.created,
                counts: s.counts,
                histograms: HISTOGRAMS
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        HistogramView::of((f.get)(s), recorded, hdr_families.contains(&i))
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
