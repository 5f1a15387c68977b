//! How long an xDS update takes to be in force: from the ADS server sending
//! a response to the agent's ACK, which the agent sends only after the
//! kernel maps hold the update. Run as root:
//!
//!     cargo build --release --bins && cargo bench -p kmesh-tests --bench xds_update
//!
//! The mesh is the DeathStarBench sidecar dump (122 services) plus one test
//! service. Baseline: the same endpoints re-sent under a new version (decode,
//! translate, an apply that writes nothing). Change: one service's endpoint
//! weights changed (the same, plus a new backend generation in the maps).
use std::{path::PathBuf, time::Duration};

use envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy;
use kmesh_tests::{
    ads::{self, AdsServer},
    harness::Topology,
    xds_data::{self, eds_cluster, endpoints, vip_listener},
};

const ROUNDS: usize = 50;
const VIP: &str = "198.18.0.30:80";
const CLUSTER: &str = "outbound|80||bench.test.svc.cluster.local";
const WAIT: Duration = Duration::from_secs(15);

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("xds_update needs root (network namespaces, cgroups, eBPF)");
        std::process::exit(1);
    }
    let topo = Topology::new("bench-xds");
    let backends = ["127.0.0.2:8080", "127.0.0.3:8080"];
    let _served = topo.serve(&backends, false);
    let server = AdsServer::start().expect("ADS server");
    let dump = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/xds/istio-1.18-sidecar-deathstarbench.config_dump.json");
    let mut resources = xds_data::read_file(&dump);
    let weights = |a: u32, b: u32| endpoints(CLUSTER, &[(backends[0], a), (backends[1], b)]);
    let mut push = |t: &str, extra| {
        let list = resources.get_mut(t).expect("every type");
        list.retain(|(n, _)| !n.starts_with(CLUSTER) && n != &VIP.replace(':', "_"));
        list.push(extra);
    };
    push(
        ads::CLUSTER_TYPE,
        eds_cluster(CLUSTER, LbPolicy::RoundRobin),
    );
    push(ads::LISTENER_TYPE, vip_listener(VIP, CLUSTER));
    push(ads::ENDPOINT_TYPE, weights(1, 1));
    xds_data::serve_all(&server, "0", &resources);
    let _agent = topo.start_agent_xds(server.addr(), &["--xds-protocol", "sotw"]);
    server
        .wait_for_ack(ads::ENDPOINT_TYPE, "0", WAIT)
        .expect("first sync");

    let endpoints_of = |resources: &xds_data::ResourceMap, own| {
        let mut list = resources[ads::ENDPOINT_TYPE].clone();
        list.retain(|(n, _)| n != CLUSTER);
        list.push(own);
        list
    };
    let (mut baseline, mut change) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let same = format!("same-{round}");
        server.set(
            ads::ENDPOINT_TYPE,
            &same,
            endpoints_of(&resources, weights(1, 1)),
        );
        baseline.push(push_to_ack(&server, &same));
        let changed = format!("changed-{round}");
        server.set(
            ads::ENDPOINT_TYPE,
            &changed,
            endpoints_of(&resources, weights(round as u32 + 1, 1)),
        );
        change.push(push_to_ack(&server, &changed));
        // Back to 1:1, so the next baseline re-sends what is in force.
        let back = format!("back-{round}");
        server.set(
            ads::ENDPOINT_TYPE,
            &back,
            endpoints_of(&resources, weights(1, 1)),
        );
        push_to_ack(&server, &back);
    }
    println!(
        "xDS endpoint update, pushed -> in the kernel -> ACKed ({ROUNDS} rounds, 123 services, 122 cluster load assignments per push)"
    );
    let b = report("baseline: same endpoints, new version", &mut baseline);
    let c = report("change: one service's weights", &mut change);
    println!("change / baseline (p50): {:.2}", c / b);
}

/// The time from the response carrying `version` to its ACK.
fn push_to_ack(server: &AdsServer, version: &str) -> Duration {
    let ack = server
        .wait_for_ack(ads::ENDPOINT_TYPE, version, WAIT)
        .expect("the update is ACKed");
    let log = server.log();
    let sent = log.answers(&ack).expect("the response the ACK answers");
    ack.at.duration_since(sent.at)
}

/// Prints p50, p90, p99 and max; returns p50 in microseconds.
fn report(what: &str, samples: &mut [Duration]) -> f64 {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "  {what:<40} p50 {:>9.3?}  p90 {:>9.3?}  p99 {:>9.3?}  max {:>9.3?}",
        at(0.5),
        at(0.9),
        at(0.99),
        samples[samples.len() - 1]
    );
    at(0.5).as_secs_f64() * 1e6
}
