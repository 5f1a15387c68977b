//! Retries of the OTLP exporters: waits from [`Backoff`] (1 s doubling up
//! to a cap), and a collector that stays down logs once a minute rather
//! than once an export.
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::backoff::Backoff;

const FIRST_RETRY: Duration = Duration::from_secs(1);
const REPEAT_LOG: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct ExportRetry {
    backoff: Backoff,
    last_logged: Option<Instant>,
}

impl ExportRetry {
    /// Retries wait 1 s, 2 s, 4 s ... up to `max`.
    pub fn new(max: Duration) -> Self {
        Self {
            backoff: Backoff::new(FIRST_RETRY, max),
            last_logged: None,
        }
    }

    /// Records a failure; returns how long to wait before the next try.
    pub fn failed(&mut self, signal: &str, error: &dyn std::fmt::Display) -> Duration {
        let wait = self.backoff.failed();
        let now = Instant::now();
        if self
            .last_logged
            .is_none_or(|t| now.duration_since(t) >= REPEAT_LOG)
        {
            self.last_logged = Some(now);
            warn!(signal, failures = self.backoff.failures(), "{error}");
        }
        wait
    }

    pub fn succeeded(&mut self, signal: &str, endpoint: &str) {
        if self.backoff.failures() > 0 {
            info!(
                signal,
                endpoint,
                failures = self.backoff.failures(),
                "OTLP export recovered"
            );
        }
        self.backoff.succeeded();
        self.last_logged = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_start_over_after_a_success() {
        let mut r = ExportRetry::new(Duration::from_secs(5));
        let waits: Vec<u64> = (0..5)
            .map(|_| r.failed("metrics", &"down").as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
        r.succeeded("metrics", "http://c:4317");
        assert_eq!(r.failed("metrics", &"down"), Duration::from_secs(1));
    }
}
