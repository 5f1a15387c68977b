//! Where a quantile sketch puts a value, and what a bin reads back as
//! (DDSketch's mapping): a value `v` >= 1 is counted in bin
//! `i = ceil(log_γ(v))`, which holds `(γ^(i-1), γ^i]`, with
//! `γ = (1 + α) / (1 - α)`; the bin reads as `2γ^i / (γ + 1)`, within a
//! relative `α` of every value it holds. The agent's aggregator records
//! with it and the admin API's sketches are read with it, so both live
//! here, apart from either (the aggregator knows no wire format). The
//! admin API's tests check the guarantee.

/// The α the agent makes its sketches with: 2%.
pub const RELATIVE_ACCURACY: f64 = 0.02;

/// Where values go and what a bin reads back as, for one `α`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mapping {
    alpha: f64,
    gamma: f64,
    ln_gamma: f64,
}

impl Mapping {
    /// `alpha` must be in (0, 1).
    pub fn new(alpha: f64) -> Self {
        let gamma = (1.0 + alpha) / (1.0 - alpha);
        Self {
            alpha,
            gamma,
            ln_gamma: gamma.ln(),
        }
    }

    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// The bin of a value > 0 (1 is in bin 0; u64::MAX in bin 1109 at 2%).
    pub fn index(&self, v: u64) -> i32 {
        ((v as f64).ln() / self.ln_gamma).ceil() as i32
    }

    /// The largest value bin `i` holds, `γ^i`.
    pub fn upper(&self, i: i32) -> f64 {
        (f64::from(i) * self.ln_gamma).exp()
    }

    /// What bin `i` reads as: the point within `α` of all its values,
    /// moved to the nearest whole number the bin holds (values are whole
    /// µs or bytes), which only brings it closer to them. A bin narrower
    /// than 1 holds at most one whole number, which it then reads exactly.
    pub fn value(&self, i: i32) -> f64 {
        let (lower, upper) = (self.upper(i - 1), self.upper(i));
        let mid = 2.0 * upper / (self.gamma + 1.0);
        let (first, last) = (lower.floor() + 1.0, upper.floor());
        if first <= last {
            mid.clamp(first, last)
        } else {
            mid
        }
    }
}
