//! Figures as short text: every table cell is at most 7 columns wide, so the
//! services table fits an 80-column terminal.

/// A time in microseconds: `850µs`, `1.59ms`, `12.3ms`, `123ms`, `1.23s`,
/// `12.3s`, `123s`.
pub fn micros(us: u64) -> String {
    let (ms, s) = (us as f64 / 1e3, us as f64 / 1e6);
    match us {
        0..1_000 => format!("{us}µs"),
        1_000..9_995 => format!("{ms:.2}ms"),
        9_995..99_950 => format!("{ms:.1}ms"),
        99_950..999_500 => format!("{ms:.0}ms"),
        999_500..9_995_000 => format!("{s:.2}s"),
        9_995_000..99_950_000 => format!("{s:.1}s"),
        _ => format!("{s:.0}s"),
    }
}

/// A count per second: `0`, `0.5`, `12.3`, `123`, `1.2k`, `12k`, `1.2M`.
pub fn rate(per_second: f64) -> String {
    scaled(per_second, 1000.0, ["", "k", "M", "G"])
}

/// Bytes (or bytes per second) in binary multiples: `512`, `1.5K`, `12M`.
pub fn bytes(value: f64) -> String {
    scaled(value, 1024.0, ["", "K", "M", "G"])
}

fn scaled(mut value: f64, step: f64, units: [&str; 4]) -> String {
    if value == 0.0 {
        return "0".into();
    }
    let mut unit = 0;
    while value >= 999.5 && unit + 1 < units.len() {
        value /= step;
        unit += 1;
    }
    let suffix = units[unit];
    if value < 9.95 && (unit > 0 || value.fract() != 0.0) {
        format!("{value:.1}{suffix}")
    } else {
        format!("{value:.0}{suffix}")
    }
}

/// `HH:MM:SS.mmm` in UTC: the feed shows when a connection closed without a
/// time-zone database.
pub fn utc_time_of_day(unix_ms: u64) -> String {
    let ms = unix_ms % 86_400_000;
    let (h, m, s, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!("{h:02}:{m:02}:{s:02}.{milli:03}")
}

/// An uptime: `42s`, `12m03s`, `5h02m`, `3d04h`.
pub fn uptime(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d{:02}h", s / 86_400, s / 3600 % 24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_stay_within_seven_columns_and_round_sensibly() {
        assert_eq!(micros(850), "850µs");
        assert_eq!(micros(1592), "1.59ms");
        assert_eq!(micros(9_996), "10.0ms");
        assert_eq!(micros(12_345), "12.3ms");
        assert_eq!(micros(123_456), "123ms");
        assert_eq!(micros(999_600), "1.00s");
        for us in [
            0,
            999,
            1000,
            9_994,
            99_949,
            99_951,
            999_499,
            9_999_999,
            9_999_999_999,
        ] {
            assert!(micros(us).chars().count() <= 6, "{us} -> {}", micros(us));
        }
    }

    #[test]
    fn rates_and_bytes_scale() {
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(0.5), "0.5");
        assert_eq!(rate(50.0), "50");
        assert_eq!(rate(1234.0), "1.2k");
        assert_eq!(rate(12_345.0), "12k");
        assert_eq!(bytes(512.0), "512");
        assert_eq!(bytes(1536.0), "1.5K");
        assert_eq!(bytes(3.0 * 1024.0 * 1024.0), "3.0M");
        assert_eq!(bytes(999.7), "1.0K");
    }

    #[test]
    fn clock_and_uptime() {
        assert_eq!(utc_time_of_day(86_400_000 * 3 + 3_723_004), "01:02:03.004");
        assert_eq!(uptime(3725.0), "1h02m");
        assert_eq!(uptime(59.9), "59s");
    }
}
