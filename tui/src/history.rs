//! The last [`SAMPLES`] intervals of one series, for sparklines.
use std::collections::VecDeque;

/// One minute at the default one-second interval.
pub const SAMPLES: usize = 60;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// New connections per second, one sample per interval.
    pub opened_per_s: VecDeque<f64>,
    /// Connect-latency p99 (µs) of each interval; `None` when nothing
    /// connected in it, so the sparkline shows a gap rather than a fake 0.
    pub latency_p99_us: VecDeque<Option<u64>>,
}

impl History {
    pub fn push(&mut self, opened_per_s: f64, latency_p99_us: Option<u64>) {
        push_bounded(&mut self.opened_per_s, opened_per_s);
        push_bounded(&mut self.latency_p99_us, latency_p99_us);
    }
}

fn push_bounded<T>(samples: &mut VecDeque<T>, value: T) {
    if samples.len() == SAMPLES {
        samples.pop_front();
    }
    samples.push_back(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_samples() {
        let mut history = History::default();
        for i in 0..(SAMPLES as u64 + 5) {
            history.push(i as f64, Some(i * 10));
        }
        assert_eq!(history.opened_per_s.len(), SAMPLES);
        assert_eq!(history.opened_per_s.front(), Some(&5.0));
        assert_eq!(
            history.latency_p99_us.back(),
            Some(&Some((SAMPLES as u64 + 4) * 10))
        );
    }
}
