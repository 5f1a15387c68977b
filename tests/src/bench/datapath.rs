//! The side-by-side run: every scenario, every load, repeated, with the
//! scenarios interleaved so that a noisy moment hits all of them alike.
use std::time::Instant;

use super::{
    Bench,
    load::Load,
    proc_stats,
    report::{Measure, Results, Sample, Scenario},
    sidecar::Sidecars,
    topology::{ECHO_PORT, SERVER_IP, SINK_PORT, VIP, addr},
};
use crate::harness::Agent;

/// What a scenario keeps running while its loads run; dropping it stops them.
#[derive(Default)]
struct InPath {
    agent: Option<Agent>,
    sidecars: Option<Sidecars>,
}

impl InPath {
    /// The user-space processes of the mesh: the agent or the proxies.
    fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.agent.iter().filter_map(Agent::pid).collect();
        pids.extend(self.sidecars.iter().flat_map(Sidecars::pids));
        pids
    }

    fn cpu_seconds(&self) -> anyhow::Result<f64> {
        self.pids().into_iter().map(proc_stats::cpu_seconds).sum()
    }
}

fn enter(bench: &Bench, scenario: Scenario) -> anyhow::Result<InPath> {
    let mesh = Bench::mesh();
    Ok(match scenario {
        Scenario::Direct => InPath::default(),
        Scenario::KmeshProbe | Scenario::KmeshRoutingOnly => InPath {
            agent: Some(bench.start_agent(&mesh, scenario == Scenario::KmeshProbe, &[])),
            sidecars: None,
        },
        Scenario::Sidecars => InPath {
            agent: None,
            sidecars: Some(Sidecars::start(&bench.topo)?),
        },
    })
}

fn load_of(measure: Measure, workers: usize) -> (Load, u16) {
    match measure {
        Measure::RequestResponse1B => (
            Load::RequestResponse {
                payload: 1,
                connections: 1,
            },
            ECHO_PORT,
        ),
        Measure::RequestResponse1KiB => (
            Load::RequestResponse {
                payload: 1024,
                connections: 1,
            },
            ECHO_PORT,
        ),
        Measure::NewConnections => (Load::Connections { workers, rate: 0.0 }, ECHO_PORT),
        Measure::Bulk => (Load::Bulk, SINK_PORT),
    }
}

pub fn run(bench: &Bench, results: &mut Results) -> anyhow::Result<()> {
    let s = &bench.settings;
    for repetition in 0..s.repetitions {
        // Each repetition starts at another scenario, so none always runs
        // first (after a pause) or right after the proxies.
        let n = s.scenarios.len();
        let order = (0..n).map(|i| s.scenarios[(i + repetition) % n]);
        for scenario in order {
            let in_path = enter(bench, scenario)?;
            // The floor dials the backend; everything else the service.
            let ip = if scenario == Scenario::Direct {
                SERVER_IP
            } else {
                VIP
            };
            for measure in Measure::ALL {
                let (load, port) = load_of(measure, s.connection_workers);
                let cpu0 = in_path.cpu_seconds()?;
                let started = Instant::now();
                let report = bench
                    .load(addr(ip, port), load, s.warmup, s.duration)
                    .map_err(|e| anyhow::anyhow!("{} {measure:?}: {e:#}", scenario.label()))?;
                let wall_seconds = started.elapsed().as_secs_f64();
                let mesh_cpu_seconds = in_path.cpu_seconds()? - cpu0;
                let figures = if measure == Measure::Bulk {
                    format!("{:.2} Gbit/s", report.rate * 8.0 / 1e9)
                } else {
                    format!(
                        "{:.0}/s p50 {:.1} µs p99 {:.1} µs",
                        report.rate, report.latency.p50, report.latency.p99
                    )
                };
                eprintln!(
                    "run {}/{} {} {measure:?}: {figures}",
                    repetition + 1,
                    s.repetitions,
                    scenario.label(),
                );
                results.samples.push(Sample {
                    scenario,
                    measure,
                    repetition,
                    report,
                    mesh_cpu_seconds,
                    wall_seconds,
                });
            }
            drop(in_path);
        }
    }
    Ok(())
}
