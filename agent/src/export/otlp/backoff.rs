//! Retry pacing and failure logging shared by the OTLP exporters: retries
//! back off exponentially, and a collector that stays down logs once a
//! minute rather than once an export.
use std::time::{Duration, Instant};

use tracing::{info, warn};

const FIRST_RETRY: Duration = Duration::from_secs(1);
const REPEAT_LOG: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Backoff {
    failures: u32,
    max: Duration,
    last_logged: Option<Instant>,
}

impl Backoff {
    /// Retries wait 1 s, 2 s, 4 s ... up to `max`.
    pub fn new(max: Duration) -> Self {
        Self {
            failures: 0,
            max,
            last_logged: None,
        }
    }

    #[cfg(test)]
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a failure; returns how long to wait before the next try.
    pub fn failed(&mut self, signal: &str, error: &dyn std::fmt::Display) -> Duration {
        self.failures += 1;
        let now = Instant::now();
        if self
            .last_logged
            .is_none_or(|t| now.duration_since(t) >= REPEAT_LOG)
        {
            self.last_logged = Some(now);
            warn!(signal, failures = self.failures, "{error}");
        }
        let exp = self.failures.saturating_sub(1).min(16);
        (FIRST_RETRY * 2u32.pow(exp)).min(self.max)
    }

    pub fn succeeded(&mut self, signal: &str, endpoint: &str) {
        if self.failures > 0 {
            info!(
                signal,
                endpoint,
                failures = self.failures,
                "OTLP export recovered"
            );
        }
        self.failures = 0;
        self.last_logged = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset_on_success() {
        let mut b = Backoff::new(Duration::from_secs(5));
        let delays: Vec<u64> = (0..5)
            .map(|_| b.failed("metrics", &"down").as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
        b.succeeded("metrics", "http://c:4317");
        assert_eq!(b.failures(), 0);
        assert_eq!(b.failed("metrics", &"down"), Duration::from_secs(1));
    }
}
