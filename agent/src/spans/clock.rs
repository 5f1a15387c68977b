//! The probe stamps records with `bpf_ktime_get_ns()`, CLOCK_MONOTONIC;
//! spans need wall-clock times.
use std::time::{Duration, SystemTime};

pub struct WallClock {
    /// Wall-clock time at monotonic zero.
    epoch: SystemTime,
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl WallClock {
    pub fn now() -> Self {
        let mono = Duration::from_nanos(monotonic_ns());
        Self {
            epoch: SystemTime::now()
                .checked_sub(mono)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        }
    }

    pub fn at(&self, monotonic_ns: u64) -> SystemTime {
        self.epoch + Duration::from_nanos(monotonic_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_on_the_monotonic_clock_is_now_on_the_wall() {
        let clock = WallClock::now();
        let skew = clock
            .at(monotonic_ns())
            .duration_since(SystemTime::now())
            .unwrap_or_else(|e| e.duration());
        assert!(skew < Duration::from_millis(50), "{skew:?}");
    }
}
