//! What one endpoint change costs the agent, state of the world against
//! delta: a mesh of N services (a VIP listener, an EDS cluster and its
//! assignment each) is synced, then one service's assignment changes, R
//! times. Measured per push: the agent's CPU time (user + system, from
//! /proc) and the time from the server's push to the agent's ACK, which
//! the agent sends only once the kernel maps hold the change.
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy;
use serde::Serialize;

use super::proc_stats;
use crate::{
    ads::{self, AdsServer},
    harness::Topology,
    xds_data::{eds_cluster, endpoints, vip_listener},
};

#[derive(Debug, Serialize)]
pub struct PushCost {
    pub protocol: String,
    pub services: usize,
    pub pushes: usize,
    /// The agent's CPU time over all the pushes, per push (procfs counts
    /// in clock ticks, too coarse for one push).
    pub agent_cpu_ms: f64,
    /// The median over the pushes.
    pub push_to_kernel_ms: f64,
    /// The first sync of the whole mesh.
    pub first_sync_ms: f64,
}

fn cluster(i: usize) -> String {
    format!("outbound|80||svc-{i}.bench.svc.cluster.local")
}

fn vip(i: usize) -> String {
    format!("198.18.{}.{}:80", 100 + i / 250, 1 + i % 250)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs one protocol (`sotw` or `delta`) at `services`, `pushes` times.
pub fn measure(protocol: &str, services: usize, pushes: usize) -> anyhow::Result<PushCost> {
    const BACKENDS: [&str; 2] = ["127.0.0.2:8080", "127.0.0.3:8080"];
    let wait = Duration::from_secs(120);
    let topo = Topology::new("bench-delta");
    let server = AdsServer::start()?;
    let assignments = |changed: usize, backend: &str| {
        (0..services)
            .map(|i| {
                let b = if i == changed { backend } else { BACKENDS[0] };
                endpoints(&cluster(i), &[(b, 1)])
            })
            .collect::<Vec<_>>()
    };
    server.set(
        ads::CLUSTER_TYPE,
        "0",
        (0..services)
            .map(|i| eds_cluster(&cluster(i), LbPolicy::Random))
            .collect(),
    );
    server.set(ads::ENDPOINT_TYPE, "0", assignments(usize::MAX, ""));
    server.set(
        ads::LISTENER_TYPE,
        "0",
        (0..services)
            .map(|i| vip_listener(&vip(i), &cluster(i)))
            .collect(),
    );
    server.set(ads::ROUTE_TYPE, "0", vec![]);
    let started = Instant::now();
    let agent = topo.start_agent_xds(server.addr(), &["--xds-protocol", protocol]);
    let pid = agent
        .pid()
        .ok_or_else(|| anyhow::anyhow!("the agent has no pid"))?;
    let delta = protocol == "delta";
    let synced = |what: &str| -> anyhow::Result<()> {
        if delta {
            server.wait_for_delta(
                |log| {
                    let last = log.responses_of(ads::ENDPOINT_TYPE).last()?;
                    log.requests
                        .iter()
                        .any(|q| q.response_nonce == last.nonce && q.error.is_none())
                        .then_some(())
                },
                wait,
            )
        } else {
            server
                .wait_for_ack(ads::ENDPOINT_TYPE, what, wait)
                .map(|_| ())
        }
    };
    synced("0")?;
    let first_sync_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut latency = Vec::new();
    let before_cpu = proc_stats::cpu_seconds(pid)?;
    for round in 1..=pushes {
        let version = round.to_string();
        // One service's backend flips between the two; the others stay.
        let endpoints = assignments(round % services, BACKENDS[round % 2]);
        let pushed = Instant::now();
        server.set(ads::ENDPOINT_TYPE, &version, endpoints);
        synced(&version)?;
        latency.push(pushed.elapsed().as_secs_f64() * 1e3);
    }
    // The ACK is the agent's last act of a push.
    let cpu = (proc_stats::cpu_seconds(pid)? - before_cpu) * 1e3 / pushes as f64;
    drop(agent);
    Ok(PushCost {
        protocol: protocol.to_string(),
        services,
        pushes,
        agent_cpu_ms: cpu,
        push_to_kernel_ms: median(latency),
        first_sync_ms,
    })
}

pub fn table(costs: &[PushCost]) -> String {
    let mut out = String::from(
        "protocol  services  pushes  agent CPU/push (ms)  push->kernel (ms)  first sync (ms)\n",
    );
    for c in costs {
        out.push_str(&format!(
            "{:<9} {:>8}  {:>6}  {:>19.2}  {:>17.2}  {:>15.0}\n",
            c.protocol, c.services, c.pushes, c.agent_cpu_ms, c.push_to_kernel_ms, c.first_sync_ms
        ));
    }
    out
}
