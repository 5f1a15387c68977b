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

    /// A reading of `clock`, as the kernel gives it.
    fn read(clock: libc::clockid_t) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: ts is a valid timespec for clock_gettime to fill.
        assert_eq!(unsafe { libc::clock_gettime(clock, &raw mut ts) }, 0);
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    /// A CLOCK_MONOTONIC stamp (the clock of `bpf_ktime_get_ns()`) taken
    /// between two wall-clock readings converts to a time between them.
    /// No tolerance: the stamp is taken before the `WallClock` reads its
    /// two clocks, so the converted time is late by at most the gap
    /// between those reads, which lies inside the bracket too. A clock
    /// other than CLOCK_MONOTONIC (CLOCK_REALTIME, or CLOCK_BOOTTIME on a
    /// machine that has been suspended) lands outside.
    #[test]
    fn a_monotonic_stamp_converts_to_a_time_between_the_wall_readings_around_it() {
        for _ in 0..1000 {
            let before = SystemTime::now();
            let stamp = read(libc::CLOCK_MONOTONIC);
            let clock = WallClock::now();
            let after = SystemTime::now();
            let at = clock.at(stamp);
            assert!(
                before <= at && at <= after,
                "{at:?} is not between {before:?} and {after:?}"
            );
        }
    }
}
