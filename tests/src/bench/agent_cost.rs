//! What the agent itself costs: CPU and memory under a sustained
//! connection rate, in-kernel time per connection, memory with many
//! services and open connections, and where the ring buffer overflows.
use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context;

use super::{
    Bench, bpf_stats,
    load::{HeldReport, Load},
    proc_stats,
    report::{AgentCost, FlatOut, Memory, ProgramCost, RingBuffer},
    settled_records,
    topology::{ECHO_PORT, SERVER_IP, VIP, addr},
};
use crate::harness::{Agent, Proc};

const DROPS: &str = "kmesh_probe_ringbuf_dropped_events_total";
const DEFAULT_RINGBUF_BYTES: u32 = 256 * 1024;
const HOLD_PORT: u16 = 7002;

fn pid(agent: &Agent) -> u32 {
    agent.pid().expect("the agent runs")
}

/// A sustained connection rate with the probe on and the kernel
/// accounting each program's run time; then requests on one connection.
pub fn agent_cost(bench: &Bench) -> anyhow::Result<AgentCost> {
    let s = &bench.settings;
    // Programs loaded from here on are the agent's.
    let before = bpf_stats::loaded_ids();
    let agent = bench.start_agent(&Bench::mesh(), true, &[]);
    let _accounting = bpf_stats::Accounting::enable()?;
    let target = addr(VIP, ECHO_PORT);

    let records0 = settled_records(&agent);
    let drops0 = agent.metrics().value(DROPS, &[]);
    let cpu0 = proc_stats::cpu_seconds(pid(&agent))?;
    let runs0 = bpf_stats::runs_since(&before);
    // No warm-up: every connection the programs and the agent handled is counted.
    let load = bench.load(
        target,
        Load::Connections {
            workers: s.connection_workers,
            rate: s.cost_rate,
        },
        Duration::ZERO,
        s.cost_duration,
    )?;
    let runs1 = bpf_stats::runs_since(&before);
    let records1 = settled_records(&agent);
    let cpu1 = proc_stats::cpu_seconds(pid(&agent))?;
    let (_, peak_rss) = proc_stats::memory(pid(&agent))?;
    let drops1 = agent.metrics().value(DROPS, &[]);

    let runs2 = bpf_stats::runs_since(&before);
    let requests = bench.load(
        target,
        Load::RequestResponse {
            payload: 1,
            connections: 1,
        },
        Duration::ZERO,
        s.duration,
    )?;
    let runs3 = bpf_stats::runs_since(&before);

    let cpu = cpu1 - cpu0;
    let records = records1 - records0;
    Ok(AgentCost {
        target_rate: s.cost_rate,
        agent_cpu_seconds: cpu,
        agent_cpu_seconds_per_1000_connections: cpu * 1000.0 / load.ops.max(1) as f64,
        agent_peak_rss_bytes: peak_rss,
        events_per_second: records / load.seconds,
        events_per_connection: records / load.ops.max(1) as f64,
        dropped_events: drops1 - drops0,
        per_connection: ProgramCost::of(&bpf_stats::delta(&runs0, &runs1), load.ops),
        per_request: ProgramCost::of(&bpf_stats::delta(&runs2, &runs3), requests.ops),
        load,
    })
}

/// The VIP of service `i` of the memory run.
fn service_vip(i: usize) -> SocketAddr {
    SocketAddr::new(
        format!("198.19.{}.{}", 1 + i / 200, 1 + i % 200)
            .parse()
            .expect("a valid address"),
        80,
    )
}

/// The agent's memory idle on many services, then with many connections
/// open through them. The server stays outside the cgroup, so each
/// connection is tracked once (its client side).
pub fn memory(bench: &Bench) -> anyhow::Result<Memory> {
    let s = &bench.settings;
    let _server = bench.topo.serve(&[addr(SERVER_IP, HOLD_PORT)], &[], false);
    let mut mesh = String::from("services:\n");
    for i in 0..s.services {
        mesh.push_str(&format!(
            "  - name: svc-{i}\n    vip: {}\n    backends:\n      - address: {SERVER_IP}:{HOLD_PORT}\n",
            service_vip(i)
        ));
    }
    let agent = bench.start_agent(&mesh, true, &[]);
    std::thread::sleep(Duration::from_secs(1));
    let (rss_idle, _) = proc_stats::memory(pid(&agent))?;

    let targets: Vec<String> = (0..s.services)
        .map(|i| service_vip(i).to_string())
        .collect();
    let mut cmd = bench.in_client_pod("hold");
    cmd.args(["--count", &s.connections.to_string()]);
    for t in &targets {
        cmd.args(["--target", t]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting kmesh-bench hold")?;
    let stdout = child.stdout.take().expect("stdout");
    let holder = Proc(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("reading kmesh-bench hold's report")?;
    let held: HeldReport = serde_json::from_str(&line)
        .with_context(|| format!("kmesh-bench hold's report {line:?}"))?;
    anyhow::ensure!(
        held.failures == 0,
        "{} of {} connections failed to open; first: {}",
        held.failures,
        s.connections,
        held.first_error.as_deref().unwrap_or("?")
    );
    let active = |a: &Agent| a.metrics().value("kmesh_tcp_connections_active", &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while active(&agent) < held.opened as f64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let tracked = active(&agent);
    let (rss_tracking, peak) = proc_stats::memory(pid(&agent))?;
    drop(holder);
    Ok(Memory {
        services: s.services,
        connections: held.opened,
        tracked,
        rss_idle_bytes: rss_idle,
        rss_tracking_bytes: rss_tracking,
        peak_rss_bytes: peak,
    })
}

/// How many records the default ring buffer holds while the reader is
/// stopped, and whether flat-out connection loads overflow it while the
/// reader runs.
pub fn ring_buffer(bench: &Bench) -> anyhow::Result<RingBuffer> {
    let s = &bench.settings;
    let agent = bench.start_agent(&Bench::mesh(), true, &[]);
    let target = addr(VIP, ECHO_PORT);
    let flat_out = |workers| Load::Connections { workers, rate: 0.0 };

    let records0 = settled_records(&agent);
    let drops0 = agent.metrics().value(DROPS, &[]);
    let stopped = Stopped::new(pid(&agent))?;
    let stalled = bench.load(
        target,
        flat_out(s.connection_workers),
        Duration::ZERO,
        Duration::from_secs(1),
    );
    drop(stopped);
    let stalled = stalled?;
    let records1 = settled_records(&agent);
    let drops1 = wait_for_drops(&agent, drops0);

    let mut runs = Vec::new();
    for workers in [1, 2, 4] {
        let (r0, d0) = (settled_records(&agent), agent.metrics().value(DROPS, &[]));
        let load = bench.load(target, flat_out(workers), Duration::ZERO, s.duration)?;
        let r1 = settled_records(&agent);
        // The drop counter is published once a second.
        std::thread::sleep(Duration::from_millis(1100));
        let d1 = agent.metrics().value(DROPS, &[]);
        runs.push(FlatOut {
            workers,
            connections_per_second: load.rate,
            records_per_second: (r1 - r0) / load.seconds,
            dropped_records: d1 - d0,
        });
    }
    Ok(RingBuffer {
        ringbuf_bytes: DEFAULT_RINGBUF_BYTES,
        stalled_connections: stalled.ops,
        held_records: records1 - records0,
        dropped_records: drops1 - drops0,
        flat_out: runs,
    })
}

/// The drop counter is summed once a second; wait for it to move past
/// `from` (at most 3 s).
fn wait_for_drops(agent: &Agent, from: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let now = agent.metrics().value(DROPS, &[]);
        if now > from || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A process stopped with SIGSTOP until dropped (SIGCONT), so a failing
/// run never leaves the agent frozen.
struct Stopped(i32);

impl Stopped {
    fn new(pid: u32) -> anyhow::Result<Self> {
        let pid = pid as i32;
        // SAFETY: signalling the agent this run started.
        if unsafe { libc::kill(pid, libc::SIGSTOP) } != 0 {
            return Err(std::io::Error::last_os_error()).context("stopping the agent");
        }
        Ok(Self(pid))
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}
