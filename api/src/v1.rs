//! Version 1.
//!
//! - `GET /v1/snapshot` → [`Snapshot`]: every figure of the aggregator that
//!   feeds `/metrics`, per service and backend, plus the agent's health.
//!   Counters are totals since the agent started; a client takes two
//!   snapshots for rates, and the difference of two snapshots' `sketch`
//!   (or, from older agents, `buckets`) for quantiles over the interval.
//! - `GET /v1/connections?after=SEQ&limit=N` → [`ConnectionsPage`]: closed
//!   connections with a sequence number greater than `after`, oldest first
//!   (the agent keeps the most recent [`RECENT_CONNECTIONS`]).
//! - `GET /v1/model` → [`Model`]: the mesh in force and its provenance.
//!
//! Errors are a non-2xx status with an [`ErrorBody`].
mod model;
pub mod sketch;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use self::{model::*, sketch::Sketch};

pub const VERSION: &str = "v1";
pub const SNAPSHOT_PATH: &str = "/v1/snapshot";
pub const CONNECTIONS_PATH: &str = "/v1/connections";
/// Where the agent listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/kmesh-rs/admin.sock";
/// Closed connections the agent keeps for the feed.
pub const RECENT_CONNECTIONS: usize = 4096;
/// Most records one connections page carries.
pub const MAX_PAGE: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// A process in the agent's cgroup called connect().
    Outbound,
    /// A process in the agent's cgroup accepted.
    Inbound,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Always [`VERSION`].
    pub version: String,
    pub taken_at_unix_ms: u64,
    pub uptime_seconds: f64,
    /// Upper bounds (µs, inclusive) of the latency buckets in [`Distribution::buckets`]
    /// of connect latency and RTT; the last bucket is everything above.
    pub latency_bounds_us: Vec<u64>,
    pub agent: AgentHealth,
    /// Configured services, in config order of their VIPs.
    pub services: Vec<Service>,
    /// Series of destinations that are not configured (`unknown`) or over
    /// the series limit (`overflow`).
    pub other: Vec<Series>,
    /// Who calls whom: each source workload's traffic to each service.
    /// Older agents did not send it.
    #[serde(default)]
    pub calls: Vec<Call>,
}

/// The connections from one client workload to one service, over all its
/// backends, as one side saw them: `reporter` `source` (the client is in
/// the agent's cgroup) or `destination` (only the server is: a client on
/// another node, or outside the mesh). A pair seen from both sides on one
/// node is listed once, from the source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Call {
    pub reporter: String,
    /// `unknown` for a client outside the mesh.
    pub source_workload: String,
    pub source_namespace: String,
    pub destination_service: String,
    /// The destination workloads the connections reached.
    pub destination_workloads: Vec<String>,
    pub figures: Figures,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentHealth {
    pub events_established: u64,
    pub events_closed: u64,
    pub events_periodic: u64,
    pub events_malformed: u64,
    pub ringbuf_drops: u64,
    pub lost_closes: u64,
    pub config_reloads_ok: u64,
    pub config_reloads_failed: u64,
    pub series: u64,
    pub series_limit: u64,
    pub series_overflow: u64,
    /// User and system CPU time of the agent.
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
}

impl AgentHealth {
    pub fn events_total(&self) -> u64 {
        self.events_established + self.events_closed + self.events_periodic + self.events_malformed
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    /// `address:port` clients dial.
    pub vip: String,
    /// `random`, `round_robin` or `weighted`.
    pub policy: String,
    /// The service as its clients see it: every backend's outbound figures
    /// added up (quantiles over all of them).
    pub outbound: Figures,
    pub backends: Vec<Backend>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Backend {
    pub address: String,
    pub weight: u32,
    /// The workload behind it (`namespace/workload`), when the mesh names
    /// one. Older agents did not send it.
    #[serde(default)]
    pub workload: Option<String>,
    /// Connections from clients in the cgroup to this backend.
    pub outbound: Figures,
    /// Connections this backend accepted, when it runs in the cgroup.
    pub inbound: Figures,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub service: String,
    pub backend: String,
    pub direction: Direction,
    pub figures: Figures,
}

/// Totals since the agent started (or the series was created).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub opened: u64,
    pub active: u64,
    /// Closed after being established.
    pub closed: u64,
    /// Never established (refused, timed out, unreachable).
    pub failed: u64,
    /// Closed by a reset, sent or received.
    pub resets: u64,
    /// Closed because the peer stopped answering. Older agents did not send
    /// it; it reads 0 from them.
    #[serde(default)]
    pub timeouts: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub retransmits: u64,
    /// Closed and failed connections by close reason.
    pub close_reasons: BTreeMap<String, u64>,
    pub connect_latency_us: Distribution,
    pub rtt_us: Distribution,
    pub duration_us: Distribution,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    /// Per-bucket counts at [`Snapshot::latency_bounds_us`] (+Inf last);
    /// empty for durations.
    pub buckets: Vec<u64>,
    /// Every value recorded, as a sketch with a 2% relative-error bound
    /// (`p50`, `p90` and `p99` are read from it): a client subtracts an
    /// earlier snapshot's ([`Sketch::since`]) for quantiles over the
    /// interval. Older agents did not send it; it reads `None` from them,
    /// and a client falls back to the buckets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sketch: Option<Sketch>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnectionsPage {
    /// Pass as `after` to get the records that follow.
    pub next_after: u64,
    /// Records after `after` that were no longer kept (the client fell more
    /// than [`RECENT_CONNECTIONS`] behind).
    pub missed: u64,
    pub records: Vec<Connection>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    pub seq: u64,
    pub closed_at_unix_ms: u64,
    pub direction: Direction,
    pub service: String,
    /// The VIP the client dialled, when it is known.
    pub vip: Option<String>,
    pub backend: String,
    /// The client's `address:port`.
    pub source: String,
    /// The client's and the server's workloads (`namespace/workload`, or
    /// `unknown`). Older agents did not send them.
    #[serde(default)]
    pub source_workload: Option<String>,
    #[serde(default)]
    pub destination_workload: Option<String>,
    pub duration_us: u64,
    /// Outbound only; 0 otherwise.
    pub connect_latency_us: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Smoothed and minimum RTT while the connection carried data: as the
    /// kernel had them when the close handshake began.
    pub srtt_us: u32,
    /// Older agents did not send it; it reads 0 from them.
    #[serde(default)]
    pub min_rtt_us: u32,
    pub retransmits: u32,
    /// `fin`, `rst_sent`, `rst_received`, `timeout`, `connect_refused`,
    /// `connect_failed`.
    pub close_reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// The p-quantile (0..=1) of the values between two readings of the same
/// bucket counts (`now` minus `before`), interpolated linearly inside the
/// bucket it falls in, as Prometheus' histogram_quantile does. `None` when
/// nothing was recorded in between. A value in the last (+Inf) bucket reads
/// as the last bound.
pub fn interval_quantile(bounds: &[u64], before: &[u64], now: &[u64], p: f64) -> Option<u64> {
    let delta: Vec<u64> = now
        .iter()
        .enumerate()
        .map(|(i, n)| n.saturating_sub(before.get(i).copied().unwrap_or(0)))
        .collect();
    let total: u64 = delta.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = p.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, count) in delta.iter().enumerate() {
        if *count > 0 && (below + count) as f64 >= rank {
            let Some(&upper) = bounds.get(i) else {
                return bounds.last().copied();
            };
            let lower = if i == 0 { 0 } else { bounds[i - 1] };
            let within = (rank - below as f64) / *count as f64;
            return Some(lower + ((upper - lower) as f64 * within).round() as u64);
        }
        below += count;
    }
    bounds.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_quantiles_interpolate_inside_the_bucket() {
        let bounds = [100, 200, 400];
        // Before: 10 in the first bucket. Since: 10 more there, 10 in (200, 400].
        let before = [10, 0, 0, 0];
        let now = [20, 0, 10, 0];
        assert_eq!(interval_quantile(&bounds, &before, &now, 0.5), Some(100));
        assert_eq!(interval_quantile(&bounds, &before, &now, 0.25), Some(50));
        assert_eq!(interval_quantile(&bounds, &before, &now, 0.99), Some(396));
        assert_eq!(interval_quantile(&bounds, &now, &now, 0.5), None);
        assert_eq!(
            interval_quantile(&bounds, &[0; 4], &[0, 0, 0, 5], 0.5),
            Some(400)
        );
    }

    #[test]
    fn distributions_from_older_agents_have_no_sketch() {
        let old = r#"{"count":2,"p50":40,"p90":40,"p99":41,"max":41,"buckets":[2,0]}"#;
        let d: Distribution = serde_json::from_str(old).unwrap();
        assert_eq!((d.count, d.p99, &d.sketch), (2, 41, &None));
        // And a distribution without one says nothing of it.
        assert!(!serde_json::to_string(&d).unwrap().contains("sketch"));
    }

    #[test]
    fn snapshots_round_trip_through_json() {
        let c = Connection {
            seq: 7,
            closed_at_unix_ms: 1,
            direction: Direction::Outbound,
            service: "reviews".into(),
            vip: Some("198.18.0.10:9080".into()),
            backend: "10.0.0.1:9080".into(),
            source: "10.0.9.9:40000".into(),
            source_workload: Some("front/web".into()),
            destination_workload: None,
            duration_us: 5,
            connect_latency_us: 1,
            bytes_sent: 2,
            bytes_received: 3,
            srtt_us: 4,
            min_rtt_us: 3,
            retransmits: 0,
            close_reason: "fin".into(),
        };
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"direction\":\"outbound\""), "{json}");
        assert_eq!(serde_json::from_str::<Connection>(&json).unwrap(), c);
    }
}
