//! What one series (a service or a backend) did between two snapshots.
//!
//! Counters in a snapshot are totals since the agent started, so a rate is
//! the difference of two snapshots over the time between them. Quantiles are
//! over the same interval, from the difference of the two snapshots'
//! sketches (within 2% of the exact quantile), or of their bucket counts
//! from an agent that sends no sketch (interpolated between the bucket
//! bounds, so much coarser); when nothing was recorded in the interval they
//! fall back to the snapshot's own quantiles since the agent started, and
//! say so.
use kmesh_api::v1::{Distribution, Figures, Sketch, interval_quantile};

/// A latency quantile and the window it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantile {
    pub us: u64,
    /// Over everything since the agent started, not just the last interval.
    pub cumulative: bool,
}

/// Per-second rates over the last interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    pub opened: f64,
    pub bytes_in: f64,
    pub bytes_out: f64,
    pub retransmits: f64,
    pub failed: f64,
    pub resets: f64,
    pub timeouts: f64,
}

impl Rates {
    pub fn bytes(&self) -> f64 {
        self.bytes_in + self.bytes_out
    }

    pub fn errors(&self) -> f64 {
        self.failed + self.resets + self.timeouts
    }
}

/// Counts since the series began (the agent started, or first saw the
/// service or backend): what is left to read once the traffic stops and
/// every rate is 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub opened: u64,
    pub closed: u64,
    pub failed: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub active: u64,
    pub totals: Totals,
    /// `None` until there are two snapshots to compare.
    pub rates: Option<Rates>,
    pub latency_p50: Option<Quantile>,
    pub latency_p90: Option<Quantile>,
    pub latency_p99: Option<Quantile>,
    pub rtt_p99: Option<Quantile>,
    /// Connect-latency p99 of the interval alone (no fallback), for history.
    pub interval_latency_p99: Option<u64>,
}

/// The interval between two snapshots of the same agent.
#[derive(Clone, Copy, Debug)]
pub struct Interval<'a> {
    pub seconds: f64,
    /// The bucket bounds of both snapshots; `None` when they differ (the
    /// agent was reconfigured), which leaves sketches, or else only
    /// cumulative quantiles.
    pub bounds: Option<&'a [u64]>,
}

/// `before` is the same series in the previous snapshot, if it was there and
/// the agent has not restarted since.
pub fn compute(now: &Figures, before: Option<&Figures>, interval: Option<Interval>) -> Stats {
    let empty = Figures::default();
    let (rates, window) = match (interval, before) {
        (Some(i), before) if i.seconds > 0.0 => {
            let before = before.unwrap_or(&empty);
            (
                Some(rates(now, before, i.seconds)),
                Some((before, i.bounds)),
            )
        }
        _ => (None, None),
    };
    let quantile = |pick: fn(&Figures) -> &Distribution, p: f64| {
        let dist = pick(now);
        let recent = window.and_then(|(before, bounds)| between(pick(before), dist, bounds, p));
        match recent {
            Some(us) => Some(Quantile {
                us,
                cumulative: false,
            }),
            None if dist.count > 0 => Some(Quantile {
                us: cumulative_quantile(dist, p),
                cumulative: true,
            }),
            None => None,
        }
    };
    Stats {
        active: now.active,
        totals: Totals {
            opened: now.opened,
            closed: now.closed,
            failed: now.failed,
            bytes_in: now.bytes_received,
            bytes_out: now.bytes_sent,
        },
        rates,
        latency_p50: quantile(latency, 0.5),
        latency_p90: quantile(latency, 0.9),
        latency_p99: quantile(latency, 0.99),
        rtt_p99: quantile(rtt, 0.99),
        interval_latency_p99: window
            .and_then(|(before, bounds)| between(latency(before), latency(now), bounds, 0.99)),
    }
}

/// The p-quantile of the values recorded between two readings of one
/// distribution; `None` when there were none, or nothing tells.
fn between(
    before: &Distribution,
    now: &Distribution,
    bounds: Option<&[u64]>,
    p: f64,
) -> Option<u64> {
    if let Some(later) = &now.sketch {
        // A series new since `before` reads as empty there.
        let earlier = match &before.sketch {
            Some(s) => Some(s.clone()),
            None if before.count == 0 => Some(Sketch::new(later.relative_accuracy)),
            None => None,
        };
        if let Some(since) = earlier.and_then(|e| later.since(&e)) {
            return since.quantile(p).map(|v| v.round() as u64);
        }
    }
    bounds.and_then(|bounds| interval_quantile(bounds, &before.buckets, &now.buckets, p))
}

fn latency(f: &Figures) -> &Distribution {
    &f.connect_latency_us
}

fn rtt(f: &Figures) -> &Distribution {
    &f.rtt_us
}

fn rates(now: &Figures, before: &Figures, seconds: f64) -> Rates {
    let per_second =
        |pick: fn(&Figures) -> u64| pick(now).saturating_sub(pick(before)) as f64 / seconds;
    Rates {
        opened: per_second(|f| f.opened),
        bytes_in: per_second(|f| f.bytes_received),
        bytes_out: per_second(|f| f.bytes_sent),
        retransmits: per_second(|f| f.retransmits),
        failed: per_second(|f| f.failed),
        resets: per_second(|f| f.resets),
        timeouts: per_second(|f| f.timeouts),
    }
}

fn cumulative_quantile(dist: &Distribution, p: f64) -> u64 {
    if p <= 0.5 {
        dist.p50
    } else if p <= 0.9 {
        dist.p90
    } else {
        dist.p99
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(opened: u64, latency_buckets: Vec<u64>) -> Figures {
        Figures {
            opened,
            active: 3,
            connect_latency_us: Distribution {
                count: latency_buckets.iter().sum(),
                p50: 11,
                p90: 22,
                p99: 33,
                max: 44,
                buckets: latency_buckets,
                // As from an agent that sends no sketch.
                sketch: None,
            },
            ..Figures::default()
        }
    }

    /// Figures whose connect latencies are `values`, with their sketch.
    fn sketched(opened: u64, values: &[u64]) -> Figures {
        let mut sketch = Sketch::default();
        for v in values {
            sketch.record(*v);
        }
        let mut f = figures(opened, vec![values.len() as u64, 0, 0, 0]);
        f.connect_latency_us.sketch = Some(sketch);
        f
    }

    fn within_2_percent(q: Option<Quantile>, exact: u64) -> bool {
        q.is_some_and(|q| !q.cumulative && q.us.abs_diff(exact) as f64 <= 0.02 * exact as f64)
    }

    #[test]
    fn sketches_give_the_quantiles_of_the_interval_alone() {
        let bounds = [100, 200, 400];
        let earlier: Vec<u64> = (0..100).map(|_| 5_000).collect();
        // In the interval: 1..=100 µs once each, after 100 slow ones.
        let later: Vec<u64> = earlier.iter().copied().chain(1..=100).collect();
        let interval = Interval {
            seconds: 1.0,
            bounds: Some(&bounds),
        };
        let stats = compute(
            &sketched(200, &later),
            Some(&sketched(100, &earlier)),
            Some(interval),
        );
        // Ranks 49, 89 and 98 of 1..=100: 50, 90 and 99 µs, where the
        // buckets would have said 50, 90 and 99 of a 0-100 µs bucket only
        // by luck of the interpolation.
        assert!(within_2_percent(stats.latency_p50, 50), "{stats:?}");
        assert!(within_2_percent(stats.latency_p90, 90), "{stats:?}");
        assert!(within_2_percent(stats.latency_p99, 99), "{stats:?}");
        assert!(
            stats
                .interval_latency_p99
                .is_some_and(|us| us.abs_diff(99) <= 2)
        );
    }

    #[test]
    fn a_series_new_in_the_interval_counts_from_nothing() {
        let interval = Interval {
            seconds: 1.0,
            bounds: None,
        };
        let now = sketched(3, &[700, 800, 900]);
        let stats = compute(&now, Some(&Figures::default()), Some(interval));
        assert!(within_2_percent(stats.latency_p50, 800), "{stats:?}");
    }

    #[test]
    fn sketches_that_went_down_fall_back_to_the_buckets() {
        // Not a later reading of the same sketch (the counts went down):
        // the buckets decide.
        let bounds = [100, 200, 400];
        let before = sketched(100, &[5_000, 5_000]);
        let mut now = sketched(150, &[5_000]);
        now.connect_latency_us.buckets = vec![12, 0, 0, 0];
        let interval = Interval {
            seconds: 1.0,
            bounds: Some(&bounds),
        };
        let stats = compute(&now, Some(&before), Some(interval));
        assert_eq!(
            stats.latency_p50,
            Some(Quantile {
                us: 50,
                cumulative: false
            })
        );
    }

    #[test]
    fn rates_and_quantiles_cover_the_interval() {
        let bounds = [100, 200, 400];
        let before = figures(100, vec![10, 0, 0, 0]);
        let now = figures(150, vec![10, 50, 0, 0]);
        let interval = Interval {
            seconds: 2.0,
            bounds: Some(&bounds),
        };
        let stats = compute(&now, Some(&before), Some(interval));
        assert_eq!(stats.rates.unwrap().opened, 25.0);
        assert_eq!(
            stats.latency_p50,
            Some(Quantile {
                us: 150,
                cumulative: false
            })
        );
        assert_eq!(stats.interval_latency_p99, Some(199));
        assert_eq!(stats.rtt_p99, None);
    }

    #[test]
    fn an_idle_interval_falls_back_to_the_cumulative_quantiles() {
        let bounds = [100, 200, 400];
        let same = figures(100, vec![10, 0, 0, 0]);
        let interval = Interval {
            seconds: 1.0,
            bounds: Some(&bounds),
        };
        let stats = compute(&same, Some(&same), Some(interval));
        assert_eq!(stats.rates.unwrap().opened, 0.0);
        assert_eq!(
            stats.latency_p99,
            Some(Quantile {
                us: 33,
                cumulative: true
            })
        );
        assert_eq!(
            stats.latency_p90,
            Some(Quantile {
                us: 22,
                cumulative: true
            })
        );
        assert_eq!(stats.interval_latency_p99, None);
    }

    #[test]
    fn a_single_snapshot_has_no_rates_but_has_cumulative_quantiles() {
        let stats = compute(&figures(5, vec![5, 0, 0, 0]), None, None);
        assert_eq!(stats.rates, None);
        assert_eq!(
            stats.latency_p50,
            Some(Quantile {
                us: 11,
                cumulative: true
            })
        );
    }
}
