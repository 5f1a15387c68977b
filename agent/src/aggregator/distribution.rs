//! One quantity's distribution in a series: the counts of the exported
//! buckets (what Prometheus and OTLP's explicit histograms show, kept as
//! values arrive so an export never re-buckets), a quantile sketch for
//! everything else, and what neither keeps exactly (sum, min, max).
use super::{counters::Counters, sketch::Sketch};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Distribution {
    /// In recorded units (µs or bytes), as are min and max.
    pub sum: u64,
    /// `u64::MAX` until a value arrives.
    pub min: u64,
    pub max: u64,
    /// Counter 0 counts zeros (the sketch holds positive values only);
    /// counter `b + 1` bucket `b` of the family's limits, +Inf last. One
    /// set of counters, so the zeros cost a byte, not a word.
    counts: Counters,
    sketch: Sketch,
}

impl Default for Distribution {
    fn default() -> Self {
        Self {
            sum: 0,
            min: u64::MAX,
            max: 0,
            counts: Counters::default(),
            sketch: Sketch::default(),
        }
    }
}

impl Distribution {
    /// Records `v` in the bucket of `limits` (inclusive upper limits, in
    /// recorded units) that holds it, and in the sketch.
    pub fn record(&mut self, v: u64, limits: &[u64]) {
        self.sum = self.sum.saturating_add(v);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        let bucket = limits.partition_point(|&l| l < v);
        self.counts.add(bucket as u16 + 1, 1);
        match v {
            0 => self.counts.add(0, 1),
            v => self.sketch.record(v),
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

    /// The positive values.
    pub fn sketch(&self) -> &Sketch {
        &self.sketch
    }

    /// Bytes this distribution owns on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.counts.heap_bytes() + self.sketch.heap_bytes()
    }
}
