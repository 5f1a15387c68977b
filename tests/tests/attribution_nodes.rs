//! Who calls whom across two nodes: two client workloads on node A call a
//! service whose two backend workloads run on node B, each node with its
//! own agent (own cgroup, bpffs directory and network namespace), both
//! given every workload of the mesh as a cluster's workload discovery
//! gives each node. A real Prometheus scrapes both agents under
//! `--metric-names istio`: node A reports the client's end
//! (`reporter="source"`), node B the server's (`reporter="destination"`),
//! each naming both workloads, and per pair of workloads the two ends agree
//! with each other and with what each client did.
use std::collections::BTreeMap;

use kmesh_tests::{
    harness::{Agent, Metrics, privileged},
    nodes::TwoNodes,
    prometheus::{self, Prometheus},
    protocol::request_len,
    workloads::{self, BATCH, CART_HOST, CART_V1, CART_V2, Pod, WEB},
};

const VIP: &str = "198.18.0.61:80";
/// Each client workload on node A and the connections it makes a round.
const CLIENTS: [(Pod, u64); 2] = [(WEB.on_node("node-a"), 30), (BATCH.on_node("node-a"), 20)];
/// The service's backend workloads, on node B.
const BACKENDS: [Pod; 2] = [CART_V1.on_node("node-b"), CART_V2.on_node("node-b")];
const BACKEND_PORT: u16 = 8080;
/// Scrapes between rounds: the range query sees each round as a step.
const ROUNDS: u64 = 2;
const REQUEST_BYTES: u32 = 100;
/// Longer than the server's id line, so every reply is exactly this long.
const REPLY_BYTES: u32 = 300;
/// Every series a node's agent exports carries its node's reporter only.
const REPORTERS: [(&str, &str); 2] = [("node-a", "source"), ("node-b", "destination")];

fn clients() -> Vec<Pod> {
    CLIENTS.iter().map(|c| c.0).collect()
}

/// Connections a round makes in all.
fn per_round() -> u64 {
    CLIENTS.iter().map(|c| c.1).sum()
}

fn start_agent(nodes: &TwoNodes, node: &str, mesh: &str) -> Agent {
    let topo = if node == "node-a" { &nodes.a } else { &nodes.b };
    topo.start_agent_with(mesh, &["--metric-names", "istio", "--node-name", node])
}

/// Waits until `agent` has counted `n` closed connections as `reporter`.
fn closed_as(agent: &Agent, reporter: &str, n: u64) -> Metrics {
    let closed = |m: &Metrics| {
        m.value(
            "istio_tcp_connections_closed_total",
            &[("reporter", reporter)],
        )
    };
    let m = agent.metrics_when(|m| closed(m) as u64 == n);
    assert_eq!(closed(&m) as u64, n, "{reporter}:\n{}", m.0);
    m
}

/// `family` summed by (source_workload, destination_workload), by reporter,
/// as Prometheus holds it at `at`.
fn by_reporter(
    prom: &Prometheus,
    family: &str,
    at: f64,
) -> BTreeMap<String, BTreeMap<(String, String), f64>> {
    let expr = format!("sum by (reporter, source_workload, destination_workload) ({family})");
    let samples = prom
        .query(&expr, Some(at))
        .unwrap_or_else(|e| panic!("{expr}: {e:#}"));
    let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for s in samples {
        out.entry(s.labels["reporter"].clone()).or_default().push(s);
    }
    out.into_iter()
        .map(|(reporter, samples)| (reporter, prometheus::by_workload_pair(&samples)))
        .collect()
}

#[test]
fn each_node_reports_its_end_of_a_call_between_workloads_on_two_nodes() {
    let test = "each_node_reports_its_end_of_a_call_between_workloads_on_two_nodes";
    if !privileged(test) {
        return;
    }
    let Some(bin) = prometheus::available(test) else {
        return;
    };
    let nodes = TwoNodes::new("attr2");
    let client_ips: Vec<&str> = CLIENTS.iter().map(|c| c.0.ip).collect();
    let backend_ips: Vec<&str> = BACKENDS.iter().map(|b| b.ip).collect();
    nodes.place_pods(&client_ips, &backend_ips);
    let backends = workloads::addresses(&BACKENDS, BACKEND_PORT);
    let backends: Vec<&str> = backends.iter().map(String::as_str).collect();
    let _servers = nodes.b.serve_in_cgroup(&backends, false);
    // One mesh for both nodes: every workload of the cluster, wherever it runs.
    let pods: Vec<Pod> = clients().into_iter().chain(BACKENDS).collect();
    let mesh = workloads::mesh(&pods, CART_HOST, VIP, &backends);
    let agent_a = start_agent(&nodes, "node-a", &mesh);
    let agent_b = start_agent(&nodes, "node-b", &mesh);
    let instance = BTreeMap::from([
        (agent_a.addr.to_string(), "node-a"),
        (agent_b.addr.to_string(), "node-b"),
    ]);
    let prom = Prometheus::start(&bin, &nodes.a.workdir, &[agent_a.addr, agent_b.addr])
        .unwrap_or_else(|e| panic!("starting prometheus: {e:#}"));
    prom.wait_for_scrapes(1)
        .expect("first scrape of both agents");
    let start = prometheus::unix_now();

    for round in 1..=ROUNDS {
        for (client, n) in &CLIENTS {
            workloads::call_from(&nodes.a, client, VIP, *n, REQUEST_BYTES, REPLY_BYTES);
        }
        let done = round * per_round();
        let (ma, mb) = (
            closed_as(&agent_a, "source", done),
            closed_as(&agent_b, "destination", done),
        );
        // Each node saw its own end only.
        assert_eq!(
            ma.value(
                "istio_tcp_connections_opened_total",
                &[("reporter", "destination")]
            ),
            0.0,
            "node A accepted nothing:\n{}",
            ma.0
        );
        assert_eq!(
            mb.value(
                "istio_tcp_connections_opened_total",
                &[("reporter", "source")]
            ),
            0.0,
            "node B connected nowhere:\n{}",
            mb.0
        );
        prom.wait_for_more_scrapes(2)
            .expect("scrapes after the round");
    }
    let at = prometheus::unix_now();

    // Which node reports which end, and every label of every series.
    let series = prom
        .wait_for_series("istio_tcp_connections_opened_total")
        .expect("opened series");
    assert_eq!(
        series.len(),
        2 * CLIENTS.len() * BACKENDS.len(),
        "{series:#?}"
    );
    for s in &series {
        let l = &s.labels;
        let node = instance
            .get(&l["instance"])
            .unwrap_or_else(|| panic!("a series from an unknown target: {l:?}"));
        let reporter = REPORTERS.iter().find(|r| r.0 == *node).unwrap().1;
        assert_eq!(l["reporter"], reporter, "{node}: {l:?}");
        let client = workloads::find(&clients(), &l["source_workload"])
            .copied()
            .unwrap_or_else(|| panic!("a series from an unknown source: {l:?}"));
        let backend = workloads::find(&BACKENDS, &l["destination_workload"])
            .unwrap_or_else(|| panic!("a series to an unknown workload: {l:?}"));
        let addr = format!("{}:{BACKEND_PORT}", backend.ip);
        assert_eq!(l["destination_backend"], addr, "{l:?}");
        workloads::assert_istio_labels(l, &client, backend, CART_HOST);
    }

    // Per pair, what each client did, the same at both ends. Istio's
    // received bytes are the requests and its sent bytes the replies,
    // whichever end reports them; kmesh's own counters keep each side's
    // sent and received.
    let request = request_len(REQUEST_BYTES) as f64;
    let reply = f64::from(REPLY_BYTES);
    let connections = workloads::round_robin_pairs(&CLIENTS, &BACKENDS, ROUNDS);
    let times = |per: f64| -> BTreeMap<(String, String), f64> {
        connections
            .iter()
            .map(|(k, n)| (k.clone(), *n as f64 * per))
            .collect()
    };
    let families = [
        ("istio_tcp_connections_opened_total", 1.0, 1.0),
        ("istio_tcp_connections_closed_total", 1.0, 1.0),
        ("istio_tcp_received_bytes_total", request, request),
        ("istio_tcp_sent_bytes_total", reply, reply),
        ("kmesh_tcp_sent_bytes_total", request, reply),
        ("kmesh_tcp_received_bytes_total", reply, request),
    ];
    for (family, at_source, at_destination) in families {
        let seen = by_reporter(&prom, family, at);
        let expected = BTreeMap::from([
            ("destination".to_string(), times(at_destination)),
            ("source".to_string(), times(at_source)),
        ]);
        assert_eq!(seen, expected, "{family} by reporter and pair");
    }

    // As a graph panel draws it: the opened connections at each end climb
    // a round at a time, and never fall back.
    let expr = "sum by (reporter) (istio_tcp_connections_opened_total)";
    let drawn = prom
        .query_range(expr, start, at, 1)
        .unwrap_or_else(|e| panic!("{expr}: {e:#}"));
    assert_eq!(drawn.len(), 2, "{drawn:#?}");
    for s in &drawn {
        let values: Vec<f64> = s.points.iter().map(|p| p.1).collect();
        assert!(
            values.windows(2).all(|w| w[0] <= w[1]),
            "{:?} fell back: {values:?}",
            s.labels
        );
        for round in 1..=ROUNDS {
            let done = (round * per_round()) as f64;
            assert!(
                values.contains(&done),
                "{:?} never showed round {round} ({done}): {values:?}",
                s.labels
            );
        }
        assert_eq!(values.last(), Some(&((ROUNDS * per_round()) as f64)));
    }

    // Kiali's graph of the service's namespace: node B names every source
    // (no unknown ones), node A every pair, both clients from outside.
    let window = prom.whole_range();
    let [unknown, external, internal] = prometheus::kiali_tcp_graph("shop", window).map(|expr| {
        let samples = prom
            .query(&expr, Some(at))
            .unwrap_or_else(|e| panic!("{expr}: {e:#}"));
        prometheus::by_workload_pair(&samples)
    });
    assert!(unknown.is_empty(), "unknown sources: {unknown:?}");
    let pairs: Vec<&(String, String)> = connections.keys().collect();
    assert_eq!(external.keys().collect::<Vec<_>>(), pairs);
    assert!(external.values().all(|v| *v > 0.0), "{external:?}");
    assert!(internal.is_empty(), "{internal:?}");

    // Each node's admin API (kmesh-top's source) names both workloads of
    // each connection it saw: one end of every connection each.
    let all = ROUNDS * per_round();
    for (node, agent) in [("node-a", &agent_a), ("node-b", &agent_b)] {
        let feed = agent.connections();
        assert_eq!(feed.len() as u64, all, "{node}: {feed:#?}");
        workloads::assert_connections_named(&feed, &clients(), &BACKENDS, BACKEND_PORT);
    }
}
