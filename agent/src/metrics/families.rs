//! What the per-series figures are called and how they are bucketed: one
//! table both exporters read, so `/metrics` and OTLP cannot drift apart.
use super::{Distribution, SeriesStats};

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
    pub get: fn(&SeriesStats) -> u64,
}

pub const COUNTERS: [CounterFamily; 4] = [
    CounterFamily {
        name: "kmesh_tcp_connections_opened",
        otlp_name: "kmesh.tcp.connections.opened",
        help: "TCP connections established.",
        unit: Unit::Connections,
        get: |s| s.opened,
    },
    CounterFamily {
        name: "kmesh_tcp_sent_bytes",
        otlp_name: "kmesh.tcp.sent",
        help: "Payload bytes sent and acknowledged by the peer.",
        unit: Unit::Bytes,
        get: |s| s.bytes_sent,
    },
    CounterFamily {
        name: "kmesh_tcp_received_bytes",
        otlp_name: "kmesh.tcp.received",
        help: "Payload bytes received.",
        unit: Unit::Bytes,
        get: |s| s.bytes_received,
    },
    CounterFamily {
        name: "kmesh_tcp_retransmits",
        otlp_name: "kmesh.tcp.retransmits",
        help: "TCP segments retransmitted.",
        unit: Unit::Segments,
        get: |s| s.retransmits,
    },
];

/// The two counters split by close reason.
pub struct CloseFamily {
    pub name: &'static str,
    pub otlp_name: &'static str,
    pub help: &'static str,
    /// By close reason index in [`super::CLOSE_REASONS`].
    pub get: fn(&SeriesStats) -> &[u64],
}

pub const CLOSE_COUNTERS: [CloseFamily; 2] = [
    CloseFamily {
        name: "kmesh_tcp_connections_closed",
        otlp_name: "kmesh.tcp.connections.closed",
        help: "TCP connections closed after being established, by close reason.",
        get: |s| &s.closed,
    },
    CloseFamily {
        name: "kmesh_tcp_connections_failed",
        otlp_name: "kmesh.tcp.connections.failed",
        help: "TCP connections that never got established, by reason.",
        get: |s| &s.failed,
    },
];

pub const ACTIVE_NAME: &str = "kmesh_tcp_connections_active";
pub const ACTIVE_OTLP_NAME: &str = "kmesh.tcp.connections.active";
pub const ACTIVE_HELP: &str = "TCP connections open now.";

pub struct HistogramFamily {
    /// Prometheus name, without the unit suffix.
    pub name: &'static str,
    pub otlp_name: &'static str,
    pub help: &'static str,
    pub unit: Unit,
    pub bounds: &'static [f64],
    /// Multiplies recorded values into `unit` (µs -> s).
    pub scale: f64,
    pub get: fn(&SeriesStats) -> &Distribution,
}

/// Connect latency and RTT: 25 µs (loopback, same node) to 10 s (SYN retries).
pub const LATENCY_BOUNDS_S: [f64; 17] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Connection lifetimes: 1 ms (a health check) to 1 h (pooled connections).
pub const DURATION_BOUNDS_S: [f64; 14] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
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

const US: f64 = 1e-6;

pub const HISTOGRAMS: [HistogramFamily; 6] = [
    HistogramFamily {
        name: "kmesh_tcp_connect_latency",
        otlp_name: "kmesh.tcp.connect.duration",
        help: "Time from connect() to established.",
        unit: Unit::Seconds,
        bounds: &LATENCY_BOUNDS_S,
        scale: US,
        get: |s| &s.connect_latency_us,
    },
    HistogramFamily {
        name: "kmesh_tcp_rtt",
        otlp_name: "kmesh.tcp.rtt",
        help: "Smoothed RTT of each connection at close.",
        unit: Unit::Seconds,
        bounds: &LATENCY_BOUNDS_S,
        scale: US,
        get: |s| &s.srtt_us,
    },
    HistogramFamily {
        name: "kmesh_tcp_min_rtt",
        otlp_name: "kmesh.tcp.min_rtt",
        help: "Minimum RTT seen by each connection.",
        unit: Unit::Seconds,
        bounds: &LATENCY_BOUNDS_S,
        scale: US,
        get: |s| &s.min_rtt_us,
    },
    HistogramFamily {
        name: "kmesh_tcp_connection_duration",
        otlp_name: "kmesh.tcp.connection.duration",
        help: "Connection lifetime, connect() or accept to close.",
        unit: Unit::Seconds,
        bounds: &DURATION_BOUNDS_S,
        scale: US,
        get: |s| &s.duration_us,
    },
    HistogramFamily {
        name: "kmesh_tcp_connection_sent",
        otlp_name: "kmesh.tcp.connection.sent",
        help: "Bytes sent per connection.",
        unit: Unit::Bytes,
        bounds: &BYTES_BOUNDS,
        scale: 1.0,
        get: |s| &s.conn_bytes_sent,
    },
    HistogramFamily {
        name: "kmesh_tcp_connection_received",
        otlp_name: "kmesh.tcp.connection.received",
        help: "Bytes received per connection.",
        unit: Unit::Bytes,
        bounds: &BYTES_BOUNDS,
        scale: 1.0,
        get: |s| &s.conn_bytes_received,
    },
];

/// Per-bucket (not cumulative) counts at each bound of `bounds`, then the
/// rest (+Inf) last: `bounds.len() + 1` counts, as OTLP wants them. Values
/// are in recorded units; `scale` turns them into the bounds' unit.
pub fn bucket_counts(d: &Distribution, bounds: &[f64], scale: f64) -> Vec<u64> {
    let mut out = Vec::with_capacity(bounds.len() + 1);
    let mut below = 0u64;
    for &bound in bounds {
        let limit = (bound / scale).floor() as u64;
        let cumulative = d.hist.count_between(0, limit).max(below);
        out.push(cumulative - below);
        below = cumulative;
    }
    out.push(d.hist.len().saturating_sub(below));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_split_counts_and_keep_the_rest_in_inf() {
        let mut d = Distribution::default();
        for v in [10, 30, 80, 200, 20_000_000] {
            d.record(v); // µs
        }
        let b = bucket_counts(&d, &LATENCY_BOUNDS_S, US);
        assert_eq!(b.len(), LATENCY_BOUNDS_S.len() + 1);
        assert_eq!(b.iter().sum::<u64>(), 5);
        assert_eq!(&b[..4], &[1, 1, 1, 1]); // 10, 30, 80, 200 µs
        assert_eq!(b.last(), Some(&1)); // 20 s, beyond 10 s
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
