//! A series' sketch as an OTLP base-2 exponential histogram: the largest
//! scale (finest buckets, at most 20) whose bucket range holds every
//! recorded value in [`MAX_BUCKETS`] buckets, as the SDK's default does.
//! Each sketch bin is placed by the value it reads as, which is within 2%
//! of every value it holds: a bucket's count may include values up to 2%
//! outside it. (The sketch's bins, a factor 1.0408 wide, do not line up
//! with any base-2 scale; a scale-4 sketch that would have lined up reads
//! quantiles within 2.2%, not 2%.)
use opentelemetry_proto::tonic::{
    common::v1::KeyValue,
    metrics::v1::{ExponentialHistogramDataPoint, exponential_histogram_data_point::Buckets},
};

use crate::aggregator::view::HistogramView;

pub const MAX_BUCKETS: i64 = 160;
const MAX_SCALE: i32 = 20;
const MIN_SCALE: i32 = -10;

/// Index of the bucket (base^i, base^(i+1)] holding `x` > 0, base = 2^(2^-scale).
fn index(x: f64, scale: i32) -> i64 {
    (x.log2() * 2f64.powi(scale)).ceil() as i64 - 1
}

pub fn data_point(
    h: &HistogramView,
    per_unit: f64,
    attributes: Vec<KeyValue>,
    start: u64,
    now: u64,
) -> ExponentialHistogramDataPoint {
    let positive: Vec<(f64, u64)> = h
        .sketch
        .iter()
        .flat_map(|s| s.bins())
        .map(|(v, count)| (v / per_unit, count))
        .collect();
    let zero_count = h.zeros;
    let (scale, buckets) = match (positive.first(), positive.last()) {
        (Some(&(lo, _)), Some(&(hi, _))) => {
            let scale = (MIN_SCALE..=MAX_SCALE)
                .rev()
                .find(|&s| index(hi, s) - index(lo, s) < MAX_BUCKETS)
                .unwrap_or(MIN_SCALE);
            let offset = index(lo, scale);
            let mut counts = vec![0u64; (index(hi, scale) - offset + 1) as usize];
            for (x, c) in &positive {
                counts[(index(*x, scale) - offset) as usize] += c;
            }
            (
                scale,
                Some(Buckets {
                    offset: offset as i32,
                    bucket_counts: counts,
                }),
            )
        }
        _ => (0, None),
    };
    let count = h.count;
    ExponentialHistogramDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: now,
        count,
        sum: Some(h.sum as f64 / per_unit),
        scale,
        zero_count,
        positive: buckets,
        negative: None,
        flags: 0,
        exemplars: Vec::new(),
        min: (count > 0).then(|| h.min as f64 / per_unit),
        max: (count > 0).then(|| h.max as f64 / per_unit),
        zero_threshold: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregator::{Distribution, families::BYTES_LIMITS};

    fn view(values: &[u64]) -> HistogramView {
        let mut d = Distribution::default();
        for v in values {
            d.record(*v, &BYTES_LIMITS);
        }
        HistogramView::of(d.read(), &BYTES_LIMITS, true)
    }

    fn base(scale: i32) -> f64 {
        2f64.powf(2f64.powi(-scale))
    }

    #[test]
    fn indices_follow_the_spec_at_known_points() {
        // Bucket i holds (base^i, base^(i+1)]: powers of two sit at the top
        // of a bucket.
        assert_eq!(
            [1.0, 2.0, 3.0, 4.0, 4.5].map(|x| index(x, 0)),
            [-1, 0, 1, 1, 2]
        );
        assert_eq!([2.0, 2.5, 4.0].map(|x| index(x, 1)), [1, 2, 3]);
        assert_eq!([0.5, 0.25].map(|x| index(x, 0)), [-2, -3]);
        assert_eq!(index(16.0, -1), 1, "scale -1: base 4, (4, 16] is bucket 1");
    }

    #[test]
    fn every_value_lands_in_the_bucket_that_bounds_it() {
        let values = [0u64, 0, 17, 40, 41, 900, 12_345, 3_000_000];
        let p = data_point(&view(&values), 1e6, Vec::new(), 1, 2);
        assert_eq!(p.count, values.len() as u64);
        assert_eq!(p.zero_count, 2);
        assert_eq!((p.min, p.max), (Some(0.0), Some(3.0)));
        let b = p.positive.expect("positive buckets");
        assert!(b.bucket_counts.len() as i64 <= MAX_BUCKETS);
        assert_eq!(b.bucket_counts.iter().sum::<u64>(), 6);
        let base = base(p.scale);
        for v in values.iter().filter(|v| **v > 0) {
            let x = *v as f64 / 1e6;
            let i = index(x, p.scale);
            let (lower, upper) = (base.powi(i as i32), base.powi(i as i32 + 1));
            // The sketch keeps values within 2%: allow that on the edges.
            assert!(
                x > lower * 0.98 && x <= upper * 1.02,
                "{x} in ({lower}, {upper}]"
            );
            assert!(b.bucket_counts[(i - i64::from(b.offset)) as usize] > 0);
        }
    }

    #[test]
    fn one_value_gets_the_finest_scale_and_no_value_no_buckets() {
        let p = data_point(&view(&[50, 50]), 1.0, Vec::new(), 1, 2);
        assert_eq!(p.scale, MAX_SCALE);
        assert_eq!(p.positive.map(|b| b.bucket_counts), Some(vec![2]));
        let p = data_point(&view(&[]), 1.0, Vec::new(), 1, 2);
        assert_eq!((p.count, p.positive), (0, None));
    }
}
