//! One quantity's distribution in a series: the counts of the exported
//! buckets (what Prometheus and OTLP's explicit histograms show, kept as
//! values arrive so an export never re-buckets), a quantile sketch for
//! everything else, and what neither keeps exactly (sum, min, max).
//!
//! The two sets of counters live wherever their owner keeps them: a series
//! keeps all of its distributions' counters in one block
//! ([`super::SeriesStats`]); a [`Distribution`] keeps its own.
use super::{
    counters::{Counters, CountersRef, Store},
    sketch::{self, Sketch},
};

/// What a distribution keeps exactly. In recorded units (µs or bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extremes {
    pub sum: u64,
    /// `u64::MAX` until a value arrives.
    pub min: u64,
    pub max: u64,
}

impl Default for Extremes {
    fn default() -> Self {
        Self {
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

/// Records `v`: in `extremes`, in the counter of `counts` for the bucket of
/// `limits` (inclusive upper limits, in recorded units) that holds it, and
/// a zero in counter 0 of `counts`. Counter 0 counts zeros (the sketch
/// holds positive values only); counter `b + 1` bucket `b`, +Inf last. One
/// set of counters, so the zeros cost a byte, not a word. Returns whether
/// `v` goes to the sketch too.
pub fn record_counts(
    extremes: &mut Extremes,
    counts: &mut impl Store,
    v: u64,
    limits: &[u64],
) -> bool {
    extremes.sum = extremes.sum.saturating_add(v);
    extremes.min = extremes.min.min(v);
    extremes.max = extremes.max.max(v);
    let bucket = limits.partition_point(|&l| l < v);
    counts.add(bucket as u16 + 1, 1);
    if v == 0 {
        counts.add(0, 1);
    }
    v > 0
}

/// A distribution read where it is kept.
#[derive(Clone, Copy, Debug)]
pub struct DistributionRef<'a> {
    pub sum: u64,
    /// `u64::MAX` until a value arrives.
    pub min: u64,
    pub max: u64,
    counts: CountersRef<'a>,
    bins: CountersRef<'a>,
}

impl<'a> DistributionRef<'a> {
    pub fn new(extremes: Extremes, counts: CountersRef<'a>, bins: CountersRef<'a>) -> Self {
        Self {
            sum: extremes.sum,
            min: extremes.min,
            max: extremes.max,
            counts,
            bins,
        }
    }

    pub fn count(&self) -> u64 {
        self.counts
            .iter()
            .filter(|(i, _)| *i > 0)
            .map(|(_, c)| c)
            .sum()
    }

    /// Values recorded as 0.
    pub fn zeros(&self) -> u64 {
        self.counts.get(0)
    }

    /// Per-bucket counts at `limits` (the ones recorded with), +Inf last.
    pub fn buckets(&self, limits: &[u64]) -> Vec<u64> {
        (1..=limits.len() as u16 + 1)
            .map(|i| self.counts.get(i))
            .collect()
    }

    /// A copy of the sketch of the positive values.
    pub fn sketch(&self) -> Sketch {
        Sketch::copy_of(self.bins)
    }
}

/// A distribution that keeps its own counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Distribution {
    extremes: Extremes,
    counts: Counters,
    bins: Counters,
}

impl Distribution {
    /// Records `v` in the bucket of `limits` that holds it, and in the sketch.
    pub fn record(&mut self, v: u64, limits: &[u64]) {
        if record_counts(&mut self.extremes, &mut self.counts, v, limits) {
            sketch::record_in(&mut self.bins, v);
        }
    }

    /// This distribution, read as a series's are.
    pub fn read(&self) -> DistributionRef<'_> {
        DistributionRef::new(self.extremes, self.counts.counters(), self.bins.counters())
    }
}
