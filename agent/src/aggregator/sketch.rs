//! The aggregator's quantile sketch: [`kmesh_sketch`]'s mapping (2%
//! relative error at any value) over [`Counters`], so a bin costs about a
//! byte. The admin API ships its bins ([`Sketch::dense`]) for kmesh-top to
//! read quantiles from; the OTLP exponential histograms are built from
//! what the bins read as ([`Sketch::bins`]).
//!
//! Its size is bounded: it keeps at most [`MAX_BINS`] bins, and when a new
//! value would make it span more, the lowest bins are folded into the
//! lowest one kept (DDSketch's collapsing store). 512 bins at 2% span a
//! factor of 8·10^8, from 1 µs to 13 minutes, so this only happens to a
//! series whose values reach across nearly that whole range, and then only
//! quantiles below the folded bin are affected: they read as its value.
use std::sync::LazyLock;

use kmesh_sketch::{Mapping, RELATIVE_ACCURACY};

use super::counters::{Counters, CountersRef, Store};

/// Bins a sketch keeps at most.
pub const MAX_BINS: u16 = 512;

static MAPPING: LazyLock<Mapping> = LazyLock::new(|| Mapping::new(RELATIVE_ACCURACY));

/// Positive values only: the zero count is kept by the caller (beside its
/// bucket counts, where it costs a byte).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sketch {
    bins: Counters,
}

/// Counts `v` > 0 in the sketch whose bins are `bins` (kept wherever the
/// caller keeps them: a series keeps all its counters in one block).
pub fn record_in(bins: &mut impl Store, v: u64) {
    debug_assert!(v > 0, "zeros are counted apart");
    // Bins of values >= 1 are 0..=1109 at 2%: u16.
    let mut i = MAPPING.index(v.max(1)) as u16;
    if let Some((lo, hi)) = bins.counters().span() {
        let floor = hi.saturating_sub(MAX_BINS - 1);
        if i < floor {
            // Below what the sketch still keeps: the lowest bin.
            i = floor;
        } else if i > hi && i - lo >= MAX_BINS {
            bins.add(i, 1);
            bins.fold_below(i - (MAX_BINS - 1));
            return;
        }
    }
    bins.add(i, 1);
}

impl Sketch {
    /// A copy of the sketch whose bins are `bins`.
    pub fn copy_of(bins: CountersRef<'_>) -> Self {
        Self {
            bins: Counters::copy_of(bins),
        }
    }

    /// Counts `v` > 0.
    pub fn record(&mut self, v: u64) {
        record_in(&mut self.bins, v);
    }

    /// Bins with values, lowest first, as (value the bin reads as, count).
    pub fn bins(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.bins
            .iter()
            .filter(|(_, c)| *c > 0)
            .map(|(i, c)| (MAPPING.value(i32::from(i)), c))
    }

    /// The bin of the first count, and the counts of it and every bin
    /// above up to the last with values (as the admin API carries them).
    pub fn dense(&self) -> (i32, Vec<u64>) {
        match self.bins.span() {
            Some((lo, _)) => (i32::from(lo), self.bins.iter().map(|(_, c)| c).collect()),
            None => (0, Vec::new()),
        }
    }

    /// The α the bins were made with.
    pub fn relative_accuracy(&self) -> f64 {
        RELATIVE_ACCURACY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_in_one_bin_count_together() {
        let mut s = Sketch::default();
        for v in [1u64, 7, 40, 41, 41, 900, 12_345, 3_000_000, 3_000_001] {
            s.record(v);
        }
        let read: Vec<(f64, u64)> = s.bins().collect();
        // 40 and 41 share a bin, as do 3000000 and 3000001.
        assert_eq!(read.len(), 6, "{read:?}");
        assert_eq!((read[0], read[1]), ((1.0, 1), (7.0, 1)));
        assert_eq!(read[2].1, 3);
        assert!((read[2].0 - 40.5).abs() < 0.02 * 41.0, "{read:?}");
        let (offset, counts) = s.dense();
        assert_eq!(offset, 0, "1 is in bin 0");
        assert_eq!(counts.len() as i32, MAPPING.index(3_000_001) + 1);
        assert_eq!(counts.iter().sum::<u64>(), 9);
    }

    #[test]
    fn a_sketch_spanning_more_than_its_bins_folds_the_lowest() {
        let mut s = Sketch::default();
        // 1 µs to 1 h spans 554 bins at 2%.
        for v in [1u64, 2, 5, 1_000, 1_000_000, 3_600_000_000] {
            s.record(v);
        }
        let (offset, counts) = s.dense();
        assert_eq!(counts.len(), usize::from(MAX_BINS));
        assert_eq!(offset, MAPPING.index(3_600_000_000) - 511);
        // 1 and 2 now read as the lowest bin kept (just under 5); the rest
        // hold, within 2%.
        let read: Vec<(f64, u64)> = s.bins().collect();
        assert_eq!(read.iter().map(|(_, c)| c).sum::<u64>(), 6);
        assert_eq!(read[0].1, 2);
        assert!(read[0].0 > 4.5 && read[0].0 < 5.0, "{read:?}");
        assert_eq!(read[1], (5.0, 1));
        for ((got, _), v) in read[2..].iter().zip([1_000.0, 1e6, 3.6e9]) {
            assert!((got - v).abs() <= 0.02 * v, "{got} for {v}");
        }
        // A value below the kept bins goes to the lowest.
        s.record(1);
        assert_eq!(s.dense().1[0], 3);
        assert_eq!(s.dense().1.len(), usize::from(MAX_BINS));
    }
}
