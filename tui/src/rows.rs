//! The figures the dashboard shows, from the previous and the latest
//! snapshot of the same agent.
use kmesh_api::v1::Snapshot;

use crate::stats::{self, Interval, Stats};

#[derive(Clone, Debug, PartialEq)]
pub struct ServiceRow {
    pub name: String,
    pub vip: String,
    pub policy: String,
    pub stats: Stats,
    pub backends: Vec<BackendRow>,
}

impl ServiceRow {
    /// Names the row across snapshots: a name may be on several VIPs.
    pub fn id(&self) -> String {
        format!("{} {}", self.name, self.vip)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct BackendRow {
    pub address: String,
    pub weight: u32,
    /// The workload behind it (`namespace/workload`), when the mesh names one.
    pub workload: Option<String>,
    pub stats: Stats,
    /// New connections in the interval; `None` without a previous snapshot.
    pub opened_in_interval: Option<u64>,
}

impl ServiceRow {
    /// The fraction of new connections the policy should send to backend
    /// `i`: by weight, or evenly when no backend has one.
    pub fn configured_share(&self, i: usize) -> f64 {
        let total: u64 = self.backends.iter().map(|b| u64::from(b.weight)).sum();
        match total {
            0 => 1.0 / self.backends.len().max(1) as f64,
            _ => f64::from(self.backends[i].weight) / total as f64,
        }
    }
}

/// `before` must be an earlier snapshot of the same agent run (the caller
/// drops it when the agent restarted, which resets every counter).
pub fn services(before: Option<&Snapshot>, now: &Snapshot) -> Vec<ServiceRow> {
    let interval = interval(before, now);
    now.services
        .iter()
        .map(|service| {
            // A service may be on several VIPs under one name.
            let previous = before.and_then(|b| {
                b.services
                    .iter()
                    .find(|s| s.name == service.name && s.vip == service.vip)
            });
            let backends = service
                .backends
                .iter()
                .map(|backend| {
                    let previous = previous
                        .and_then(|p| p.backends.iter().find(|b| b.address == backend.address))
                        .map(|b| &b.outbound);
                    // A backend new to this snapshot (or back from expiry
                    // with old counters) has no interval to compare yet.
                    let stats = stats::compute(&backend.outbound, previous, previous.and(interval));
                    BackendRow {
                        address: backend.address.clone(),
                        weight: backend.weight,
                        workload: backend.workload.clone(),
                        opened_in_interval: stats.rates.map(|_| {
                            let before = previous.map_or(0, |p| p.opened);
                            backend.outbound.opened.saturating_sub(before)
                        }),
                        stats,
                    }
                })
                .collect();
            ServiceRow {
                name: service.name.clone(),
                vip: service.vip.clone(),
                policy: service.policy.clone(),
                stats: stats::compute(
                    &service.outbound,
                    previous.map(|p| &p.outbound),
                    previous.and(interval),
                ),
                backends,
            }
        })
        .collect()
}

/// The interval between two snapshots, when there is an earlier one.
pub fn interval<'a>(before: Option<&Snapshot>, now: &'a Snapshot) -> Option<Interval<'a>> {
    before.map(|b| Interval {
        seconds: seconds_between(b, now),
        bounds: (b.latency_bounds_us == now.latency_bounds_us)
            .then_some(&now.latency_bounds_us[..]),
    })
}

/// Time between two snapshots by the agent's monotonic uptime, so a
/// stepped wall clock cannot distort a rate; wall-clock time only if the
/// uptimes do not order (a restart, which the caller drops anyway).
fn seconds_between(before: &Snapshot, now: &Snapshot) -> f64 {
    let by_uptime = now.uptime_seconds - before.uptime_seconds;
    if by_uptime > 0.0 {
        by_uptime
    } else {
        now.taken_at_unix_ms.saturating_sub(before.taken_at_unix_ms) as f64 / 1000.0
    }
}

/// The agent's own figures: is the probe keeping up, and what does it cost.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Health {
    pub uptime_seconds: f64,
    pub events_per_s: Option<f64>,
    pub drops_total: u64,
    pub drops_per_s: Option<f64>,
    /// Of one CPU.
    pub cpu_percent: Option<f64>,
    pub resident_bytes: u64,
    pub lost_closes: u64,
    pub series: u64,
    pub series_limit: u64,
    pub reloads_failed: u64,
}

pub fn health(before: Option<&Snapshot>, now: &Snapshot) -> Health {
    let a = &now.agent;
    let seconds = before.map(|b| seconds_between(b, now)).filter(|s| *s > 0.0);
    let per_second = |delta: f64| seconds.map(|s| delta / s);
    let b = before.map(|b| &b.agent);
    Health {
        uptime_seconds: now.uptime_seconds,
        events_per_s: b
            .and_then(|b| per_second(a.events_total().saturating_sub(b.events_total()) as f64)),
        drops_total: a.ringbuf_drops,
        drops_per_s: b
            .and_then(|b| per_second(a.ringbuf_drops.saturating_sub(b.ringbuf_drops) as f64)),
        cpu_percent: b.and_then(|b| per_second((a.cpu_seconds - b.cpu_seconds).max(0.0) * 100.0)),
        resident_bytes: a.resident_bytes,
        lost_closes: a.lost_closes,
        series: a.series,
        series_limit: a.series_limit,
        reloads_failed: a.config_reloads_failed,
    }
}
