//! What the per-series figures are called and how they are bucketed: one
//! table both exporters read, so `/metrics` and OTLP cannot drift apart.
use super::SeriesCounts;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Bytes,
    Connections,
    Segments,
}

impl Unit {
    /// The unit as UCUM, which OTLP uses.
    pub fn ucum(self) -> &'static str {
        match self {
            Unit::Seconds => "s",
            Unit::Bytes => "By",
            Unit::Connections => "{connection}",
            Unit::Segments => "{segment}",
        }
    }
}

pub struct CounterFamily {
    /// Prometheus name, without `_total`.
    pub name: &'static str,
    pub otlp_name: &'static str,
    pub help: &'static str,
    pub unit: Unit,
    pub get: fn(&SeriesCounts) -> u64,
}

pub const COUNTERS: [CounterFamily; 4] = [
    CounterFamily {
        name: "kmesh_tcp_connections_opened",
        otlp_name: "kmesh.tcp.connections.opened",
        help: "TCP connections established.",
        unit: Unit::Connections,
        get: |c| c.opened,
    },
    CounterFamily {
        name: "kmesh_tcp_sent_bytes",
        otlp_name: "kmesh.tcp.sent",
        help: "Payload bytes sent and acknowledged by the peer.",
        unit: Unit::Bytes,
        get: |c| c.bytes_sent,
    },
    CounterFamily {
        name: "kmesh_tcp_received_bytes",
        otlp_name: "kmesh.tcp.received",
        help: "Payload bytes received.",
        unit: Unit::Bytes,
        get: |c| c.bytes_received,
    },
    CounterFamily {
        name: "kmesh_tcp_retransmits",
        otlp_name: "kmesh.tcp.retransmits",
        help: "TCP segments retransmitted.",
        unit: Unit::Segments,
        get: |c| c.retransmits,
    },
];

/// The two counters split by close reason.
pub struct CloseFamily {
    pub name: &'static str,
    pub otlp_name: &'static str,
    pub help: &'static str,
    /// By close reason index in [`super::CLOSE_REASONS`].
    pub get: fn(&SeriesCounts) -> &[u64],
}

pub const CLOSE_COUNTERS: [CloseFamily; 2] = [
    CloseFamily {
        name: "kmesh_tcp_connections_closed",
        otlp_name: "kmesh.tcp.connections.closed",
        help: "TCP connections closed after being established, by close reason.",
        get: |c| &c.closed,
    },
    CloseFamily {
        name: "kmesh_tcp_connections_failed",
        otlp_name: "kmesh.tcp.connections.failed",
        help: "TCP connections that never got established, by reason.",
        get: |c| &c.failed,
    },
];

pub const ACTIVE_NAME: &str = "kmesh_tcp_connections_active";
pub const ACTIVE_OTLP_NAME: &str = "kmesh.tcp.connections.active";
pub const ACTIVE_HELP: &str = "TCP connections open now.";

impl HistogramFamily {
    /// A recorded value in the exported unit; a division, so that whole
    /// microseconds give the shortest decimal seconds (40 µs is 4e-5 s).
    pub fn to_unit(&self, v: u64) -> f64 {
        v as f64 / self.per_unit
    }
}

pub struct HistogramFamily {
    /// Prometheus name, without the unit suffix.
    pub name: &'static str,
    pub otlp_name: &'static str,
    pub help: &'static str,
    pub unit: Unit,
    /// Bucket upper bounds in `unit`, as exported.
    pub bounds: &'static [f64],
    /// The same bounds in recorded units (integers, so no float rounding
    /// decides which bucket a value falls in).
    pub limits: &'static [u64],
    /// Recorded units per exported unit (1e6 µs per s).
    pub per_unit: f64,
}

/// Connect latency and RTT: 25 µs (loopback, same node) to 10 s (SYN retries).
pub const LATENCY_BOUNDS_S: [f64; 17] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 10.0,
];
pub const LATENCY_LIMITS_US: [u64; 17] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];
/// Connection lifetimes: 1 ms (a health check) to 1 h (pooled connections).
pub const DURATION_BOUNDS_S: [f64; 14] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
pub const DURATION_LIMITS_US: [u64; 14] = [
    1_000,
    5_000,
    10_000,
    50_000,
    100_000,
    500_000,
    1_000_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
    900_000_000,
    3_600_000_000,
];
/// Bytes per connection: 64 B to 1 GiB, powers of 4.
pub const BYTES_BOUNDS: [f64; 13] = [
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
    268_435_456.0,
    1_073_741_824.0,
];

pub const BYTES_LIMITS: [u64; 13] = [
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262_144,
    1_048_576,
    4_194_304,
    16_777_216,
    67_108_864,
    268_435_456,
    1_073_741_824,
];

const US_PER_S: f64 = 1e6;

/// Positions in [`HISTOGRAMS`], and in a series view's histograms.
pub const CONNECT_LATENCY: usize = 0;
pub const RTT: usize = 1;
pub const MIN_RTT: usize = 2;
pub const DURATION: usize = 3;
pub const SENT: usize = 4;
pub const RECEIVED: usize = 5;

pub const HISTOGRAMS: [HistogramFamily; 6] = [
    HistogramFamily {
        name: "kmesh_tcp_connect_latency",
        otlp_name: "kmesh.tcp.connect.duration",
        help: "Time from connect() to established.",
        unit: Unit::Seconds,
        bounds: &LATENCY_BOUNDS_S,
        limits: &LATENCY_LIMITS_US,
        per_unit: US_PER_S,
    },
    HistogramFamily {
        name: "kmesh_tcp_rtt",
        otlp_name: "kmesh.tcp.rtt",
        help: "Smoothed RTT of each connection at close.",
        unit: Unit::Seconds,
        bounds: &LATENCY_BOUNDS_S,
        limits: &LATENCY_LIMITS_US,
        per_unit: US_PER_S,
    },
    HistogramFamily {
        name: "kmesh_tcp_min_rtt",
        otlp_name: "kmesh.tcp.min_rtt",
        help: "Minimum RTT seen by each connection.",
        unit: Unit::Seconds,
        bounds: &LATENCY_BOUNDS_S,
        limits: &LATENCY_LIMITS_US,
        per_unit: US_PER_S,
    },
    HistogramFamily {
        name: "kmesh_tcp_connection_duration",
        otlp_name: "kmesh.tcp.connection.duration",
        help: "Connection lifetime, connect() or accept to close.",
        unit: Unit::Seconds,
        bounds: &DURATION_BOUNDS_S,
        limits: &DURATION_LIMITS_US,
        per_unit: US_PER_S,
    },
    HistogramFamily {
        name: "kmesh_tcp_connection_sent",
        otlp_name: "kmesh.tcp.connection.sent",
        help: "Bytes sent per connection.",
        unit: Unit::Bytes,
        bounds: &BYTES_BOUNDS,
        limits: &BYTES_LIMITS,
        per_unit: 1.0,
    },
    HistogramFamily {
        name: "kmesh_tcp_connection_received",
        otlp_name: "kmesh.tcp.connection.received",
        help: "Bytes received per connection.",
        unit: Unit::Bytes,
        bounds: &BYTES_BOUNDS,
        limits: &BYTES_LIMITS,
        per_unit: 1.0,
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregator::Distribution;

    #[test]
    fn buckets_split_counts_and_keep_the_rest_in_inf() {
        let mut d = Distribution::default();
        for v in [10, 25, 26, 80, 200, 20_000_000] {
            d.record(v, &LATENCY_LIMITS_US); // µs
        }
        let d = d.read();
        let b = d.buckets(&LATENCY_LIMITS_US);
        assert_eq!(b.len(), LATENCY_LIMITS_US.len() + 1);
        // A bound is inclusive: 25 µs is in the first bucket, 26 µs is not.
        assert_eq!(&b[..4], &[2, 1, 1, 1]);
        assert_eq!(b.last(), Some(&1)); // 20 s, beyond 10 s
        assert_eq!((d.min, d.max, d.sum), (10, 20_000_000, 20_000_341));
    }

    #[test]
    fn exported_bounds_and_recorded_limits_agree() {
        for f in &HISTOGRAMS {
            assert_eq!(f.bounds.len(), f.limits.len(), "{}", f.name);
            for (b, l) in f.bounds.iter().zip(f.limits) {
                assert_eq!(f.to_unit(*l), *b, "{}", f.name);
            }
        }
    }

    #[test]
    fn positions_name_their_families() {
        assert_eq!(
            HISTOGRAMS[CONNECT_LATENCY].name,
            "kmesh_tcp_connect_latency"
        );
        assert_eq!(HISTOGRAMS[RTT].name, "kmesh_tcp_rtt");
        assert_eq!(HISTOGRAMS[MIN_RTT].name, "kmesh_tcp_min_rtt");
        assert_eq!(HISTOGRAMS[DURATION].name, "kmesh_tcp_connection_duration");
        assert_eq!(HISTOGRAMS[SENT].name, "kmesh_tcp_connection_sent");
        assert_eq!(HISTOGRAMS[RECEIVED].name, "kmesh_tcp_connection_received");
    }

    #[test]
    fn names_are_unique_across_families() {
        let mut names: Vec<&str> = COUNTERS
            .iter()
            .map(|c| c.otlp_name)
            .chain(CLOSE_COUNTERS.iter().map(|c| c.otlp_name))
            .chain(HISTOGRAMS.iter().map(|h| h.otlp_name))
            .chain([ACTIVE_OTLP_NAME])
            .collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
