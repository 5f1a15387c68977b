use super::*;

/// splitmix64: a small deterministic generator, so a failing case can be
/// replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A value of any magnitude from 1 to 10^`decades`, log-uniform.
    fn magnitude(&mut self, decades: f64) -> u64 {
        (10f64.powf(self.unit() * decades)) as u64
    }
}

fn sketch_of(values: &[u64]) -> Sketch {
    let mut s = Sketch::default();
    for v in values {
        s.record(*v);
    }
    s
}

fn exact(sorted: &[u64], q: f64) -> u64 {
    sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
}

fn assert_within_alpha(estimate: f64, exact: u64, context: &str) {
    let bound = RELATIVE_ACCURACY * exact as f64 * (1.0 + 1e-9);
    assert!(
        (estimate - exact as f64).abs() <= bound,
        "{context}: estimate {estimate} of {exact} is off by more than 2%"
    );
}

#[test]
fn every_quantile_is_within_alpha_of_the_exact_one_over_random_data() {
    for seed in 0..300u64 {
        let mut rng = Rng(seed);
        let n = 1 + (rng.next() % 3000) as usize;
        // Every case mixes magnitudes differently: one cluster, several
        // decades, or nineteen (the whole u64 range), with some zeros.
        let decades = [2.0, 6.0, 12.0, 19.0][(seed % 4) as usize];
        let base = rng.magnitude(4.0);
        let mut values: Vec<u64> = (0..n)
            .map(|_| match rng.next() % 20 {
                0 => 0,
                1..=9 => base.saturating_add(rng.magnitude(1.0)),
                _ => rng.magnitude(decades),
            })
            .collect();
        let s = sketch_of(&values);
        values.sort_unstable();
        assert_eq!(s.count(), n as u64);
        let fixed = [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0];
        let random: Vec<f64> = (0..20).map(|_| rng.unit()).collect();
        for q in fixed.iter().chain(&random) {
            let estimate = s.quantile(*q).expect("not empty");
            assert_within_alpha(estimate, exact(&values, *q), &format!("seed {seed}, q {q}"));
        }
    }
}

// The mapping is kmesh-sketch's; it is tested here, beside the sketches
// it reads, with the same generator.
#[test]
fn every_value_reads_back_within_alpha() {
    let m = Mapping::new(RELATIVE_ACCURACY);
    let mut rng = Rng(7);
    let samples = (1..5000u64).chain((0..20_000).map(|_| rng.magnitude(19.0).max(1)));
    for v in samples.chain([u64::MAX, 1 << 63, 25, 26, 1000]) {
        let i = m.index(v);
        assert!(
            m.upper(i - 1) < v as f64 && v as f64 <= m.upper(i) * (1.0 + 1e-12),
            "{v} in bin {i}"
        );
        assert_within_alpha(m.value(i), v, &format!("value {v}"));
    }
}

#[test]
fn small_whole_numbers_read_exactly() {
    // Below 1/α the bins are narrower than 1: each holds one whole number.
    let m = Mapping::new(RELATIVE_ACCURACY);
    for v in 1..=24u64 {
        assert_eq!(m.value(m.index(v)), v as f64, "{v}");
    }
    assert_eq!(m.index(1), 0);
}
#[test]
fn quantiles_take_the_lower_nearest_rank_and_zeros_count() {
    let s = sketch_of(&[0, 0, 5, 7, 10]);
    assert_eq!(s.quantile(0.0), Some(0.0));
    assert_eq!(s.quantile(0.25), Some(0.0), "rank 1 of 0..=4");
    assert_eq!(s.quantile(0.5), Some(5.0));
    assert_eq!(s.quantile(0.99), Some(7.0), "rank 3");
    assert_eq!(s.quantile(1.0), Some(10.0));
    assert_eq!(Sketch::default().quantile(0.5), None);
}

#[test]
fn merged_sketches_equal_the_sketch_of_all_values() {
    let (a, b) = ([3u64, 900, 900, 12_000_000], [0u64, 1, 50, 900, 1 << 40]);
    let mut merged = sketch_of(&a);
    assert!(merged.merge(&sketch_of(&b)));
    let all: Vec<u64> = a.iter().chain(&b).copied().collect();
    let whole = sketch_of(&all);
    assert_eq!(merged.count(), whole.count());
    assert_eq!(merged.zero_count, whole.zero_count);
    assert_eq!(
        merged.bins().collect::<Vec<_>>(),
        whole.bins().collect::<Vec<_>>()
    );
    assert!(!merged.merge(&Sketch::new(0.01)), "another α does not add");
}

#[test]
fn a_later_snapshot_minus_an_earlier_one_is_the_interval() {
    let earlier_values = [0u64, 40, 40, 41, 5000];
    let later_values = [0u64, 0, 17, 40, 900, 900, 901, 3_000_000];
    let earlier = sketch_of(&earlier_values);
    let mut later = earlier.clone();
    for v in later_values {
        later.record(v);
    }
    let interval = later.since(&earlier).expect("a later snapshot");
    let expected = sketch_of(&later_values);
    assert_eq!(interval.count(), expected.count());
    assert_eq!(interval.zero_count, 2);
    assert_eq!(
        interval.bins().collect::<Vec<_>>(),
        expected.bins().collect::<Vec<_>>()
    );
    assert_eq!(interval.quantile(0.5), expected.quantile(0.5));
    assert_eq!(later.since(&later).map(|s| s.count()), Some(0));
}

#[test]
fn bins_folded_since_the_earlier_snapshot_are_subtracted_from_the_lowest() {
    // The agent folded every bin up to 1000's into 1000's between the two
    // snapshots: the earlier 40s are now counted there.
    let earlier = sketch_of(&[40, 40, 2000]);
    let m = earlier.mapping();
    let mut later = Sketch::default();
    later.add_to_bin(m.index(1000), 2 + 3); // the two 40s, three new ones
    later.add_to_bin(m.index(2000), 1 + 4);
    let interval = later.since(&earlier).expect("a later snapshot");
    assert_eq!(
        interval.bins().collect::<Vec<_>>(),
        [(m.index(1000), 3), (m.index(2000), 4)]
    );
}

#[test]
fn counts_that_went_down_are_not_an_interval() {
    let earlier = sketch_of(&[40, 40, 2000]);
    assert_eq!(sketch_of(&[40, 2000]).since(&earlier), None);
    assert_eq!(Sketch::default().since(&earlier), None);
    assert_eq!(sketch_of(&[40, 40, 2000]).since(&Sketch::new(0.01)), None);
}

#[test]
fn sketches_round_trip_through_json() {
    let s = sketch_of(&[0, 3, 900, 901, 70_000]);
    let json = serde_json::to_string(&s).unwrap();
    assert!(json.contains("\"relative_accuracy\":0.02"), "{json}");
    assert_eq!(serde_json::from_str::<Sketch>(&json).unwrap(), s);
}
