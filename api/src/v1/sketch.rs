//! A quantile sketch with a relative-error guarantee (DDSketch's mapping,
//! [`Mapping`], part of this version of the API): a positive value `v` is
//! counted in bin `i = ceil(log_γ(v))`, the bin that holds
//! `(γ^(i-1), γ^i]`, with `γ = (1 + α) / (1 - α)`. Reading a bin back as
//! `2γ^i / (γ + 1)` is within a relative `α` of every value the bin holds,
//! so every quantile read from a sketch is within `α` of the exact quantile
//! (before rounding to a whole unit). Zero has its own count.
//!
//! The mapping is fixed, so a bin's count only grows: the sketch of an
//! interval is the later snapshot minus the earlier one ([`Sketch::since`]),
//! and the sketches of several series add up ([`Sketch::merge`]).
use serde::{Deserialize, Serialize};

pub use kmesh_sketch::{Mapping, RELATIVE_ACCURACY};

/// A distribution's sketch as the admin API carries it: the count of
/// zeros, then the counts of bins `offset`, `offset + 1`, ... .
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sketch {
    /// The α the bins were made with ([`RELATIVE_ACCURACY`] today).
    pub relative_accuracy: f64,
    pub zero_count: u64,
    /// The bin of `counts[0]`. When an agent bounds a sketch's size it
    /// folds its lowest bins into this one, so a value below
    /// [`Mapping::upper`]`(offset)` reads as the lowest bin: only the
    /// lowest quantiles are affected.
    pub offset: i32,
    pub counts: Vec<u64>,
}

impl Default for Sketch {
    fn default() -> Self {
        Self::new(RELATIVE_ACCURACY)
    }
}

impl Sketch {
    pub fn new(relative_accuracy: f64) -> Self {
        Self {
            relative_accuracy,
            zero_count: 0,
            offset: 0,
            counts: Vec::new(),
        }
    }

    pub fn mapping(&self) -> Mapping {
        Mapping::new(self.relative_accuracy)
    }

    pub fn count(&self) -> u64 {
        self.zero_count + self.counts.iter().sum::<u64>()
    }

    /// Adds `n` values in bin `i`.
    pub fn add_to_bin(&mut self, i: i32, n: u64) {
        if self.counts.is_empty() {
            self.offset = i;
        } else if i < self.offset {
            let grow = (self.offset - i) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = i;
        }
        let at = (i - self.offset) as usize;
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0);
        }
        self.counts[at] += n;
    }

    /// Counts one value (clients build sketches for tests this way; the
    /// agent keeps a more compact form).
    pub fn record(&mut self, v: u64) {
        match v {
            0 => self.zero_count += 1,
            v => self.add_to_bin(self.mapping().index(v), 1),
        }
    }

    /// Bins with values, lowest first, as (bin, count).
    pub fn bins(&self) -> impl Iterator<Item = (i32, u64)> + '_ {
        (self.offset..)
            .zip(self.counts.iter().copied())
            .filter(|(_, c)| *c > 0)
    }

    /// Adds `other`'s values; `false` (and nothing added) when it was made
    /// with another α.
    pub fn merge(&mut self, other: &Sketch) -> bool {
        if other.relative_accuracy != self.relative_accuracy {
            return false;
        }
        self.zero_count += other.zero_count;
        for (i, c) in other.bins() {
            self.add_to_bin(i, c);
        }
        true
    }

    /// The values recorded after `earlier`, a snapshot of the same sketch:
    /// `None` when it cannot be one (another α, or a count went down, as
    /// after an agent restart). Bins of `earlier` below this one's lowest
    /// were folded into it since, and are subtracted from it.
    pub fn since(&self, earlier: &Sketch) -> Option<Sketch> {
        if earlier.relative_accuracy != self.relative_accuracy {
            return None;
        }
        let mut diff = self.clone();
        diff.zero_count = self.zero_count.checked_sub(earlier.zero_count)?;
        for (i, c) in earlier.bins() {
            let at = (i.max(self.offset) - self.offset) as usize;
            let slot = diff.counts.get_mut(at)?;
            *slot = slot.checked_sub(c)?;
        }
        Some(diff)
    }

    /// The q-quantile (0..=1): an estimate within α of the value of rank
    /// `floor(q * (count - 1))` (from 0) among the recorded values; `None`
    /// when the sketch is empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (n - 1) as f64).floor() as u64;
        if rank < self.zero_count {
            return Some(0.0);
        }
        let mut seen = self.zero_count;
        let mapping = self.mapping();
        for (i, c) in self.bins() {
            seen += c;
            if seen > rank {
                return Some(mapping.value(i));
            }
        }
        unreachable!("rank {rank} is below the count {n}")
    }
}

#[cfg(test)]
mod tests;
