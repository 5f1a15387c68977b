//! What a benchmark run found, as JSON and as the table it prints.
use std::{collections::BTreeMap, fmt::Write};

use serde::{Deserialize, Serialize};

use super::{bpf_stats::ProgramRuns, load::LoadReport};

/// The four ways a connection can go from client to server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// (a) straight to the backend's address, no programs attached: the floor.
    Direct,
    /// (b) through the VIP, routed by kmesh-rs, the probe on.
    KmeshProbe,
    /// (c) through the VIP, routed by kmesh-rs, the probe off (--routing-only).
    KmeshRoutingOnly,
    /// (d) through the VIP, captured into a proxy in each pod (HAProxy, TCP).
    Sidecars,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [
        Scenario::Direct,
        Scenario::KmeshProbe,
        Scenario::KmeshRoutingOnly,
        Scenario::Sidecars,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Scenario::Direct => "(a) direct",
            Scenario::KmeshProbe => "(b) kmesh+probe",
            Scenario::KmeshRoutingOnly => "(c) kmesh routing",
            Scenario::Sidecars => "(d) 2 sidecars",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// 1-byte requests echoed over one persistent connection.
    RequestResponse1B,
    /// 1 KiB requests echoed over one persistent connection.
    RequestResponse1KiB,
    /// A new connection per 1-byte request.
    NewConnections,
    /// One connection writing flat out.
    Bulk,
}

impl Measure {
    pub const ALL: [Measure; 4] = [
        Measure::RequestResponse1B,
        Measure::RequestResponse1KiB,
        Measure::NewConnections,
        Measure::Bulk,
    ];
}

/// One load of one scenario in one repetition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    pub scenario: Scenario,
    pub measure: Measure,
    pub repetition: usize,
    pub report: LoadReport,
    /// CPU the mesh's user-space processes (the agent, or both proxies)
    /// used during the load, warm-up included, and the load's wall time.
    pub mesh_cpu_seconds: f64,
    pub wall_seconds: f64,
}

impl Sample {
    /// Milliseconds of the mesh's user-space CPU per 1000 operations
    /// (requests or connections), from the load's rate over its whole run.
    pub fn mesh_cpu_ms_per_1000(&self) -> f64 {
        let ops = self.report.rate * self.wall_seconds;
        if ops > 0.0 {
            self.mesh_cpu_seconds * 1e6 / ops
        } else {
            f64::NAN
        }
    }
}

/// CPU spent in the agent's programs, per connection or request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProgramCost {
    /// Program name -> (ns, runs) per operation.
    pub per_op: BTreeMap<String, PerOp>,
    /// Sum over the routing programs (cgroup/connect, getpeername).
    pub routing_ns: f64,
    /// Sum over the probe's programs (sock_ops, tracepoint).
    pub probe_ns: f64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct PerOp {
    pub ns: f64,
    pub runs: f64,
}

impl ProgramCost {
    pub fn of(runs: &BTreeMap<String, ProgramRuns>, ops: u64) -> Self {
        let ops = ops.max(1) as f64;
        let mut cost = Self::default();
        for (name, r) in runs {
            let per = PerOp {
                ns: r.run_ns as f64 / ops,
                runs: r.runs as f64 / ops,
            };
            if name.starts_with("observe_") {
                cost.probe_ns += per.ns;
            } else {
                cost.routing_ns += per.ns;
            }
            cost.per_op.insert(name.clone(), per);
        }
        cost
    }
}

/// The agent under a sustained connection rate, probe on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AgentCost {
    pub target_rate: f64,
    pub load: LoadReport,
    pub agent_cpu_seconds: f64,
    pub agent_cpu_seconds_per_1000_connections: f64,
    pub agent_peak_rss_bytes: u64,
    /// Probe records read by the agent per second, and per connection
    /// (both ends of each connection are in the mesh).
    pub events_per_second: f64,
    pub events_per_connection: f64,
    pub dropped_events: f64,
    pub per_connection: ProgramCost,
    /// The same programs per request on a persistent connection.
    pub per_request: ProgramCost,
}

/// Agent memory with many services and many open connections.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Memory {
    pub services: usize,
    pub connections: usize,
    /// What the agent counted as open.
    pub tracked: f64,
    pub rss_idle_bytes: u64,
    pub rss_tracking_bytes: u64,
    pub peak_rss_bytes: u64,
}

/// When the probe's ring buffer overflows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RingBuffer {
    pub ringbuf_bytes: u32,
    /// Connections made while the agent was stopped (SIGSTOP).
    pub stalled_connections: u64,
    /// Records found in the buffer once it resumed: what the buffer holds.
    pub held_records: f64,
    pub dropped_records: f64,
    /// Flat-out connection loads with the reader running.
    pub flat_out: Vec<FlatOut>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FlatOut {
    pub workers: usize,
    pub connections_per_second: f64,
    pub records_per_second: f64,
    pub dropped_records: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    /// When and where: RFC 3339 time, kernel release, CPUs.
    pub date: String,
    pub kernel: String,
    pub cpus: usize,
    pub command: String,
    pub samples: Vec<Sample>,
    pub agent_cost: Option<AgentCost>,
    pub memory: Option<Memory>,
    pub ring_buffer: Option<RingBuffer>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl Results {
    /// The median over repetitions of one figure of one scenario's measure.
    pub fn median(&self, scenario: Scenario, measure: Measure, f: fn(&Sample) -> f64) -> f64 {
        median(
            self.samples
                .iter()
                .filter(|s| s.scenario == scenario && s.measure == measure)
                .map(f)
                .collect(),
        )
    }

    /// The headline table: each figure per scenario with its ratio to (a).
    pub fn table(&self) -> String {
        type Row = (&'static str, Measure, fn(&Sample) -> f64);
        let rr1 = Measure::RequestResponse1B;
        let rr1k = Measure::RequestResponse1KiB;
        let conn = Measure::NewConnections;
        let rows: [Row; 17] = [
            ("rr 1 B p50 µs", rr1, |s| s.report.latency.p50),
            ("rr 1 B p90 µs", rr1, |s| s.report.latency.p90),
            ("rr 1 B p99 µs", rr1, |s| s.report.latency.p99),
            ("rr 1 B p99.9 µs", rr1, |s| s.report.latency.p999),
            ("rr 1 B mesh CPU ms/1k", rr1, Sample::mesh_cpu_ms_per_1000),
            ("rr 1 KiB p50 µs", rr1k, |s| s.report.latency.p50),
            ("rr 1 KiB p90 µs", rr1k, |s| s.report.latency.p90),
            ("rr 1 KiB p99 µs", rr1k, |s| s.report.latency.p99),
            ("rr 1 KiB p99.9 µs", rr1k, |s| s.report.latency.p999),
            ("new conn/s", conn, |s| s.report.rate),
            ("new conn p50 µs", conn, |s| s.report.latency.p50),
            ("new conn p90 µs", conn, |s| s.report.latency.p90),
            ("new conn p99 µs", conn, |s| s.report.latency.p99),
            ("new conn p99.9 µs", conn, |s| s.report.latency.p999),
            (
                "new conn mesh CPU ms/1k",
                conn,
                Sample::mesh_cpu_ms_per_1000,
            ),
            ("bulk Gbit/s", Measure::Bulk, |s| s.report.rate * 8.0 / 1e9),
            ("bulk mesh CPU % core", Measure::Bulk, |s| {
                100.0 * s.mesh_cpu_seconds / s.wall_seconds
            }),
        ];
        let ran: Vec<Scenario> = Scenario::ALL
            .into_iter()
            .filter(|s| self.samples.iter().any(|x| x.scenario == *s))
            .collect();
        let mut out = String::new();
        let _ = write!(out, "{:<24}", "median of runs");
        for &s in &ran {
            let _ = write!(out, "{:>22}", s.label());
        }
        out.push('\n');
        for (label, measure, f) in rows {
            let floor = self.median(Scenario::Direct, measure, f);
            let _ = write!(out, "{label:<24}");
            for &s in &ran {
                let v = self.median(s, measure, f);
                // (a) has no mesh: its CPU row is 0, a ratio to it means nothing.
                let cell = if s == Scenario::Direct || !floor.is_finite() || floor == 0.0 {
                    figure(v)
                } else {
                    format!("{} ({:.2}x)", figure(v), v / floor)
                };
                let _ = write!(out, "{cell:>22}");
            }
            out.push('\n');
        }
        if let Some(c) = &self.agent_cost {
            let _ = writeln!(
                out,
                "\nagent at {:.0} new conn/s (probe on, both ends observed), {:.1} s:",
                c.load.rate, c.load.seconds
            );
            let _ = writeln!(
                out,
                "  agent CPU {:.3} s per 1000 connections ({:.1}% of a core), peak RSS {:.1} MiB",
                c.agent_cpu_seconds_per_1000_connections,
                100.0 * c.agent_cpu_seconds / c.load.seconds,
                mib(c.agent_peak_rss_bytes)
            );
            let _ = writeln!(
                out,
                "  probe records {:.0}/s ({:.2} per connection), {} dropped",
                c.events_per_second, c.events_per_connection, c.dropped_events
            );
            let _ = writeln!(
                out,
                "  in-kernel CPU per connection: routing {:.0} ns, probe {:.0} ns; per request on an open connection: routing {:.0} ns, probe {:.0} ns",
                c.per_connection.routing_ns,
                c.per_connection.probe_ns,
                c.per_request.routing_ns,
                c.per_request.probe_ns
            );
            for (name, p) in &c.per_connection.per_op {
                let _ = writeln!(
                    out,
                    "    {name:<16} {:>7.0} ns/conn ({:.2} runs, {:.0} ns each)",
                    p.ns,
                    p.runs,
                    if p.runs > 0.0 { p.ns / p.runs } else { 0.0 }
                );
            }
        }
        if let Some(m) = &self.memory {
            let _ = writeln!(
                out,
                "\nagent memory: {} services idle {:.1} MiB; with {} connections open ({:.0} tracked) {:.1} MiB ({:.0} bytes per connection)",
                m.services,
                mib(m.rss_idle_bytes),
                m.connections,
                m.tracked,
                mib(m.rss_tracking_bytes),
                (m.rss_tracking_bytes as f64 - m.rss_idle_bytes as f64)
                    / m.connections.max(1) as f64
            );
        }
        if let Some(r) = &self.ring_buffer {
            let _ = writeln!(
                out,
                "\nring buffer ({} KiB): holds {:.0} records with the reader stopped ({} connections made, {:.0} records dropped)",
                r.ringbuf_bytes / 1024,
                r.held_records,
                r.stalled_connections,
                r.dropped_records
            );
            for f in &r.flat_out {
                let _ = writeln!(
                    out,
                    "  {} workers flat out: {:.0} conn/s, {:.0} records/s read, {:.0} dropped",
                    f.workers, f.connections_per_second, f.records_per_second, f.dropped_records
                );
            }
        }
        out
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Three significant figures, without exponent noise.
fn figure(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
