//! `kmesh-bench series`: what a series costs the agent, in this process
//! through the agent's library (no kernel needed): an aggregator is filled
//! with N series of realistic close records
//! ([`kmesh_agent::aggregator::synthetic`]) and the process's resident
//! memory is read before and after; then `/metrics` is rendered and the
//! OTLP metrics requests are built from it, as the agent's exporters do.
use std::{
    sync::Arc,
    time::{Instant, SystemTime},
};

use kmesh_agent::{
    agent_stats::{AgentFigures, ControlFigures, ControlStats, ExportHealth},
    aggregator::{
        Aggregator, SeriesLimits, SharedAggregator,
        synthetic::{self, Spread},
    },
    export::{
        otlp::{metrics::requests, settings::HistogramAggregation},
        prometheus,
    },
};
use prost::Message;
use serde::{Deserialize, Serialize};

use super::proc_stats;

/// Backends per service of the made-up mesh.
const BACKENDS_PER_SERVICE: usize = 100;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeriesCost {
    pub series: usize,
    pub connections_per_series: usize,
    /// Resident memory the series added, per series (VmRSS after minus
    /// before, so the allocator's own overhead and spare capacity count).
    pub rss_bytes_per_series: f64,
    /// What the series' structures hold, counted exactly: map slots,
    /// boxed figures and the counters they own.
    pub accounted_bytes_per_series: f64,
    pub rss_after_bytes: u64,
    /// Recording the close records, per record.
    pub record_ns: f64,
    /// A scrape: the copy under the lock and the text format.
    pub scrape_seconds: f64,
    pub scrape_bytes: usize,
    /// The copy under the lock and building the OTLP requests, explicit
    /// and exponential histograms; protobuf size of the explicit ones.
    pub otlp_explicit_seconds: f64,
    pub otlp_exponential_seconds: f64,
    pub otlp_explicit_bytes: usize,
}

fn resident() -> anyhow::Result<u64> {
    Ok(proc_stats::memory(std::process::id())?.0)
}

/// Fills an aggregator with `series` series of `per_series` connections
/// each and measures it.
pub fn measure(series: usize, per_series: usize) -> anyhow::Result<SeriesCost> {
    let (mesh, routes) = synthetic::mesh(series, BACKENDS_PER_SERVICE);
    let ids = mesh.services.keys().copied().zip(1u32..);
    let mut agg = Aggregator::new(SeriesLimits {
        max_series: series,
        ..SeriesLimits::default()
    });
    agg.update_labels(&mesh, ids);
    let mut spread = Spread::new(1);
    // Fill the ring of recent connections first: it is there whatever the
    // series count, and must not count as theirs.
    let (first_id, first) = routes[0];
    for _ in 0..kmesh_api::v1::RECENT_CONNECTIONS {
        agg.record(&spread.close(first_id, first));
    }
    let before = resident()?;
    let started = Instant::now();
    for _ in 0..per_series {
        for &(id, backend) in &routes {
            agg.record(&spread.close(id, backend));
        }
    }
    let record_ns = started.elapsed().as_nanos() as f64 / (series * per_series) as f64;
    let after = resident()?;
    let accounted: usize = agg
        .series()
        .map(|(_, s)| {
            size_of::<kmesh_agent::aggregator::SeriesKey>()
                + size_of::<usize>()
                + size_of_val(s)
                + s.heap_bytes()
        })
        .sum();

    let aggregator = SharedAggregator::new(agg);
    let registry = prometheus::registry(
        aggregator.clone(),
        ControlStats::default(),
        Arc::new(ExportHealth::default()),
        kmesh_agent::export::MetricNames::Kmesh,
    );
    let started = Instant::now();
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &registry)?;
    let scrape_seconds = started.elapsed().as_secs_f64();

    let otlp = |histograms: HistogramAggregation| {
        let started = Instant::now();
        let view = aggregator
            .lock()
            .view(histograms == HistogramAggregation::Exponential);
        let agent = AgentFigures::new(&view, ControlFigures::default(), Default::default());
        let built = requests(&view, &agent, &[], histograms, SystemTime::now());
        let seconds = started.elapsed().as_secs_f64();
        (
            seconds,
            built.iter().map(|r| r.encoded_len()).sum::<usize>(),
        )
    };
    let (otlp_explicit_seconds, otlp_explicit_bytes) = otlp(HistogramAggregation::Explicit);
    let (otlp_exponential_seconds, _) = otlp(HistogramAggregation::Exponential);
    Ok(SeriesCost {
        series,
        connections_per_series: per_series,
        rss_bytes_per_series: after.saturating_sub(before) as f64 / series as f64,
        accounted_bytes_per_series: accounted as f64 / series as f64,
        rss_after_bytes: after,
        record_ns,
        scrape_seconds,
        scrape_bytes: body.len(),
        otlp_explicit_seconds,
        otlp_exponential_seconds,
        otlp_explicit_bytes,
    })
}

/// The table `kmesh-bench series` prints.
pub fn table(costs: &[SeriesCost]) -> String {
    let mut out = String::from(
        "series   conns/series  RSS/series  accounted/series  RSS after  record   scrape (size)         OTLP explicit (size)  OTLP exponential\n",
    );
    for c in costs {
        out += &format!(
            "{:<8} {:<13} {:<11} {:<17} {:<10} {:<8} {:<21} {:<21} {:.2} s\n",
            c.series,
            c.connections_per_series,
            format!("{:.0} B", c.rss_bytes_per_series),
            format!("{:.0} B", c.accounted_bytes_per_series),
            format!("{} MiB", c.rss_after_bytes >> 20),
            format!("{:.0} ns", c.record_ns),
            format!("{:.2} s ({} MiB)", c.scrape_seconds, c.scrape_bytes >> 20),
            format!(
                "{:.2} s ({} MiB)",
                c.otlp_explicit_seconds,
                c.otlp_explicit_bytes >> 20
            ),
            c.otlp_exponential_seconds,
        );
    }
    out
}
