//! Retry pacing: waits that double from a first delay up to a cap, and
//! start over after a success. The xDS client jitters them, so agents
//! restarted together do not reconnect together.
use std::{
    hash::{BuildHasher, Hasher},
    time::Duration,
};

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    jitter: bool,
    failures: u32,
}

impl Backoff {
    /// Waits of `first`, twice that, ... up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            jitter: false,
            failures: 0,
        }
    }

    /// Each wait is drawn at random from the upper half of its un-jittered
    /// value.
    pub fn jittered(mut self) -> Self {
        self.jitter = true;
        self
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a failure; returns how long to wait before the next try.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        // 2^16 times any sensible first delay is past any cap.
        let exp = (self.failures - 1).min(16);
        let ceiling = self.first.saturating_mul(2u32.pow(exp)).min(self.max);
        if !self.jitter {
            return ceiling;
        }
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let half = ceiling / 2;
        half + Duration::from_nanos(random % (half.as_nanos() as u64).max(1))
    }

    /// Starts the waits over.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_start_over_after_a_success() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let waits: Vec<u64> = (0..5).map(|_| b.failed().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
        assert_eq!(b.failures(), 5);
        b.succeeded();
        assert_eq!(b.failed(), Duration::from_secs(1));
    }

    #[test]
    fn jittered_waits_stay_in_the_upper_half_and_vary() {
        let first = Duration::from_millis(500);
        let max = Duration::from_secs(30);
        let mut b = Backoff::new(first, max).jittered();
        let ceilings_ms = [500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000];
        for ceiling in ceilings_ms.map(Duration::from_millis) {
            let wait = b.failed();
            assert!(
                wait >= ceiling / 2 && wait <= ceiling,
                "{ceiling:?}: {wait:?}"
            );
        }
        let spread: BTreeSet<Duration> = (0..20)
            .map(|_| Backoff::new(first, max).jittered().failed())
            .collect();
        assert!(spread.len() > 1, "no jitter");
    }
}
