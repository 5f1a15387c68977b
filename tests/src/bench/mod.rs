//! `kmesh-bench`: what a connection costs with no mesh, with kmesh-rs (probe
//! on and off) and with a proxy in each pod, measured side by side in one
//! run so that ratios hold on a noisy machine; then what the agent itself
//! costs (CPU, memory, ring buffer).
pub mod agent_cost;
pub mod bpf_stats;
pub mod datapath;
pub mod load;
pub mod proc_stats;
pub mod report;
pub mod series;
pub mod sidecar;
pub mod topology;
pub mod xds_delta;

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::Context;
use load::{Load, LoadReport};
use report::Scenario;
use topology::{BenchTopology, ECHO_PORT, SERVER_IP, SINK_PORT, VIP, addr};

use crate::harness::{Agent, Proc, target_bin};

/// What to run and for how long.
#[derive(Debug, Clone)]
pub struct Settings {
    pub repetitions: usize,
    /// Recorded time of each load.
    pub duration: Duration,
    /// Time each load runs before recording (caches, connection set-up).
    pub warmup: Duration,
    pub scenarios: Vec<Scenario>,
    /// Threads opening connections in the connection-rate load.
    pub connection_workers: usize,
    /// Sustained connection rate of the agent-cost run, per second.
    pub cost_rate: f64,
    pub cost_duration: Duration,
    /// Services and open connections of the memory run.
    pub services: usize,
    pub connections: usize,
    pub agent_cost: bool,
    pub memory: bool,
    pub ring_buffer: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            repetitions: 5,
            duration: Duration::from_secs(2),
            warmup: Duration::from_millis(300),
            scenarios: Scenario::ALL.to_vec(),
            connection_workers: 2,
            cost_rate: 2000.0,
            cost_duration: Duration::from_secs(10),
            services: 1000,
            connections: 10_000,
            agent_cost: true,
            memory: true,
            ring_buffer: true,
        }
    }
}

/// The topology, the servers and the settings of one run.
pub struct Bench {
    pub settings: Settings,
    pub topo: BenchTopology,
    _servers: Proc,
}

impl Bench {
    pub fn new(settings: Settings) -> Self {
        let topo = BenchTopology::new();
        let servers = topo.serve(
            &[addr(SERVER_IP, ECHO_PORT)],
            &[addr(SERVER_IP, SINK_PORT)],
            true,
        );
        Self {
            settings,
            topo,
            _servers: servers,
        }
    }

    /// The two services of the data-path runs: echo and sink behind the VIP.
    pub fn mesh() -> String {
        let mut y = String::from("services:\n");
        for (name, port) in [("echo", ECHO_PORT), ("sink", SINK_PORT)] {
            y.push_str(&format!(
                "  - name: {name}\n    vip: {VIP}:{port}\n    policy: random\n    backends:\n      - address: {SERVER_IP}:{port}\n        weight: 1\n"
            ));
        }
        y
    }

    /// Starts the agent on `mesh`; with `observe` false, routing only.
    pub fn start_agent(&self, mesh: &str, observe: bool, extra: &[&str]) -> Agent {
        let mut flags = extra.to_vec();
        if !observe {
            flags.push("--routing-only");
        }
        self.topo.client.start_agent_with(mesh, &flags)
    }

    /// `kmesh-bench <subcommand>` placed in the client pod: its network
    /// namespace and the cgroup.
    pub fn in_client_pod(&self, subcommand: &str) -> Command {
        let mut cmd = Command::new(target_bin("kmesh-bench"));
        cmd.args(["--netns", &self.topo.client.netns, "--cgroup"])
            .arg(&self.topo.client.cgroup)
            .arg(subcommand);
        cmd
    }

    /// Runs `load` from the client pod (its namespace and the cgroup);
    /// fails if any operation failed, since the path is then broken.
    pub fn load(
        &self,
        target: SocketAddr,
        load: Load,
        warmup: Duration,
        duration: Duration,
    ) -> anyhow::Result<LoadReport> {
        let out = self
            .in_client_pod("load")
            .args(["--target", &target.to_string(), "--spec"])
            .arg(serde_json::to_string(&load)?)
            .args(["--warmup-ms", &warmup.as_millis().to_string()])
            .args(["--duration-ms", &duration.as_millis().to_string()])
            .stderr(Stdio::inherit())
            .output()
            .context("running kmesh-bench load")?;
        anyhow::ensure!(
            out.status.success(),
            "kmesh-bench load failed ({})",
            out.status
        );
        let report: LoadReport =
            serde_json::from_slice(&out.stdout).context("reading the load's report")?;
        if report.failures > 0 {
            anyhow::bail!(
                "{} of {} operations to {target} failed; first: {}",
                report.failures,
                report.failures + report.ops,
                report.first_error.as_deref().unwrap_or("?")
            );
        }
        Ok(report)
    }
}

/// Polls the agent's probe-record counter until it stops moving for half a
/// second (the reader has caught up), at most 10 s; returns the last count.
pub fn settled_records(agent: &Agent) -> f64 {
    let mut last = agent.metrics().value("kmesh_probe_events_total", &[]);
    let mut still = 0;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        let now = agent.metrics().value("kmesh_probe_events_total", &[]);
        if now == last {
            still += 1;
            if still == 5 {
                break;
            }
        } else {
            still = 0;
            last = now;
        }
    }
    last
}
