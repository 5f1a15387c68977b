//! The Grafana dashboards under `dashboards/`, checked against a real
//! Prometheus that scraped a real agent while real traffic went through the
//! mesh: every query of every panel and template variable must parse and
//! return data, every metric a dashboard names must be one the agent
//! exports, and every panel must query the `${datasource}` variable.
//!
//! The queries are read out of the dashboards in [`queries`] and checked
//! in [`check`]; this file makes the traffic they are checked against.
mod check;
mod queries;

use std::collections::{BTreeMap, BTreeSet};

use check::check_dashboard;
use kmesh_tests::{
    harness::{Metrics, Topology, echo_mesh, privileged},
    prometheus::{self, Prometheus},
    rotel::Rotel,
    workloads::{self, Pod},
};
use queries::{Dashboard, families, load_dashboards, substitute};

const VIP: &str = "198.18.0.40:80";
/// Weighted, served in the cgroup so the inbound side is observed too.
const BACKENDS: [(&str, u32); 3] = [
    ("127.0.0.2:8080", 35),
    ("127.0.0.3:8080", 25),
    ("127.0.0.4:8080", 20),
];
/// Resets every connection after the request: rst_sent / rst_received.
const RESETS: (&str, u32) = ("127.0.0.5:8080", 10);
/// Nothing listens here: connect_refused.
const REFUSES: (&str, u32) = ("127.0.0.6:8080", 10);
/// A second service, so per-service groupings have more than one line.
const OTHER_VIP: &str = "198.18.0.41:80";
const OTHER_BACKEND: &str = "127.0.0.7:8080";

/// Who calls whom: one client workload per service, by its pod address,
/// and the workloads behind the backends, so the service graph has names.
const ECHO_CLIENT: Pod = Pod::new("10.77.1.1", "front", "web");
const OTHER_CLIENT: Pod = Pod::new("10.77.2.1", "jobs", "batch");
const SERVERS: [Pod; 5] = [
    Pod::new("127.0.0.2", "shop", "echo"),
    Pod::new("127.0.0.3", "shop", "echo"),
    Pod::new("127.0.0.4", "shop", "echo"),
    Pod::new("127.0.0.5", "shop", "echo-flaky"),
    Pod::new("127.0.0.7", "bank", "ledger"),
];

const ECHO_CONNECTIONS: u64 = 200;
const OTHER_CONNECTIONS: u64 = 40;

/// The value each template variable prefers when its query offers it.
const PREFERRED: [(&str, &str); 1] = [("service", "echo")];

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    if !privileged("every_dashboard_query_returns_data_from_a_real_prometheus") {
        return;
    }
    let Some(bin) =
        prometheus::available("every_dashboard_query_returns_data_from_a_real_prometheus")
    else {
        return;
    };
    // Read them first: a dashboard that is not JSON fails before any setup.
    let dashboards = load_dashboards();

    let topo = Topology::new("dashboards");
    let served: Vec<&str> = BACKENDS.iter().map(|(b, _)| *b).collect();
    let _servers = topo.serve_in_cgroup(&served, false);
    let _resetting = topo.serve_in_cgroup(&[RESETS.0], true);
    let _other = topo.serve(&[OTHER_BACKEND], false);
    let mut weights = BACKENDS.to_vec();
    weights.extend([RESETS, REFUSES]);
    let pods = [&[ECHO_CLIENT, OTHER_CLIENT][..], &SERVERS].concat();
    workloads::add_addresses(&topo, &[ECHO_CLIENT.ip, OTHER_CLIENT.ip]);
    let echo = echo_mesh(VIP, "weighted", &weights)
        .replace("  - name: echo\n", "  - name: echo\n    namespace: shop\n");
    let mesh = format!(
        "{}{echo}  - name: ledger\n    namespace: bank\n    vip: {OTHER_VIP}\n    policy: round_robin\n    backends:\n      - address: {OTHER_BACKEND}\n",
        workloads::yaml(&pods),
    );
    // A collector, so the OTLP panels divide by exports that happened.
    let rotel = Rotel::start(&topo.workdir);
    let agent = topo.start_agent_with(
        &mesh,
        &[
            "--otlp-endpoint",
            &format!("http://{}", rotel.grpc),
            "--otlp-metrics-interval",
            "1s",
        ],
    );
    // Declared after the topology: dropped (killed, data removed) first.
    let prom = Prometheus::start(&bin, &topo.workdir, &[agent.addr])
        .unwrap_or_else(|e| panic!("starting prometheus: {e:#}"));
    // One scrape before any traffic, two after each round: every counter
    // has samples on both sides of an increase, so rates are not zero.
    prom.wait_for_scrapes(1).expect("first scrape");
    for round in 1..=2 {
        traffic(&topo, round);
        let m = agent.metrics_when(|m| settled(m, round));
        assert!(
            settled(&m, round),
            "round {round} not in /metrics:\n{}",
            m.0
        );
        prom.wait_for_more_scrapes(2)
            .expect("scrapes after the traffic");
    }
    let at = prometheus::unix_now();
    // Grafana's $__rate_interval is at least four scrape intervals; here it
    // also spans everything the test scraped, so every range holds it all.
    let window = prom.whole_range();
    let families = families(&agent.metrics());
    // The premise: rates over the window are not zero, so a panel showing
    // data is showing the traffic, not an idle series.
    for counter in [
        "kmesh_tcp_connections_opened_total",
        "kmesh_tcp_connections_failed_total",
        "kmesh_tcp_connect_latency_seconds_count",
    ] {
        let expr = format!("sum(rate({counter}{{destination_service=\"echo\"}}[{window}s]))");
        let rate = prom
            .query(&expr, Some(at))
            .unwrap_or_else(|e| panic!("{expr}: {e:#}"));
        assert!(
            rate.first().is_some_and(|s| s.value > 0.0),
            "{expr} = {rate:?}: the traffic did not reach prometheus"
        );
    }

    let mut failures = Vec::new();
    let mut checked = 0;
    for d in &dashboards {
        checked += check_dashboard(d, &prom, at, window, &families, &mut failures);
    }
    eprintln!(
        "checked {checked} queries in {} dashboards against prometheus at {} ({window}s ranges)",
        dashboards.len(),
        prom.addr
    );
    assert!(
        failures.is_empty(),
        "{} of {checked} dashboard queries failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    check_service_graph(&dashboards, &prom, at, window);
}

/// The service graph's node-graph panel draws exactly who called whom:
/// each client workload → the service it called → the workloads behind it,
/// and every edge ends at a node (Grafana refuses an edge to a missing one).
fn check_service_graph(dashboards: &[Dashboard], prom: &Prometheus, at: f64, window: u64) {
    let graph = dashboards
        .iter()
        .find(|d| d.file == "kmesh-service-graph.json")
        .expect("the service graph dashboard");
    let panel = graph.json["panels"]
        .as_array()
        .and_then(|panels| panels.iter().find(|p| p["type"] == "nodeGraph"))
        .expect("a nodeGraph panel");
    let vars: BTreeMap<String, String> =
        [("__rate_interval".to_string(), format!("{window}s"))].into();
    let frame = |ref_id: &str| -> BTreeMap<String, f64> {
        let target = panel["targets"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["refId"] == ref_id))
            .unwrap_or_else(|| panic!("no {ref_id} query"));
        assert_eq!(target["format"], "table", "{ref_id}: Grafana reads a table");
        let expr = substitute(
            target["expr"].as_str().unwrap(),
            &vars,
            &mut BTreeSet::new(),
        );
        prom.query(&expr, Some(at))
            .unwrap_or_else(|e| panic!("{ref_id}: {e:#}"))
            .into_iter()
            .map(|s| (s.labels["id"].clone(), s.value))
            .collect()
    };
    let (nodes, edges) = (frame("nodes"), frame("edges"));
    for id in edges.keys() {
        let (source, target) = id.split_once(" -> ").expect("source -> target");
        assert!(
            nodes.contains_key(source) && nodes.contains_key(target),
            "edge {id} ends outside the nodes {nodes:?}"
        );
    }
    for edge in [
        "workload:front/web -> service:shop/echo",
        "service:shop/echo -> workload:shop/echo",
        "service:shop/echo -> workload:shop/echo-flaky",
        "workload:jobs/batch -> service:bank/ledger",
        "service:bank/ledger -> workload:bank/ledger",
    ] {
        assert!(
            edges.get(edge).is_some_and(|rate| *rate > 0.0),
            "no traffic on {edge}: {edges:?}"
        );
    }
    assert!(
        !edges.keys().any(|e| e.starts_with("workload:unknown")),
        "every client was named: {edges:?}"
    );
}

/// One round of traffic to both services; checks the failures the test
/// relies on happened.
fn traffic(topo: &Topology, round: u64) {
    let echo = topo.client(
        VIP,
        ECHO_CONNECTIONS,
        &[
            "--concurrency",
            "4",
            "--request-bytes",
            "300",
            "--reply-bytes",
            "5000",
            "--source",
            ECHO_CLIENT.ip,
        ],
    );
    for (kind, why) in [("reset", RESETS.0), ("refused", REFUSES.0)] {
        assert!(
            echo.failures.get(kind).copied().unwrap_or(0) > 0,
            "round {round}: no {kind} connection through {why}: {echo:?}"
        );
    }
    assert!(echo.ok > 0, "round {round}: {echo:?}");
    let other = topo.client(OTHER_VIP, OTHER_CONNECTIONS, &["--source", OTHER_CLIENT.ip]);
    assert_eq!(other.ok, OTHER_CONNECTIONS, "round {round}: {other:?}");
}

/// Whether /metrics shows every connection of `rounds` rounds, both sides.
fn settled(m: &Metrics, rounds: u64) -> bool {
    let ended = |service: &str, direction: &str| {
        let l = [("destination_service", service), ("direction", direction)];
        m.value("kmesh_tcp_connections_closed_total", &l)
            + m.value("kmesh_tcp_connections_failed_total", &l)
    };
    let echo_opened = m.value(
        "kmesh_tcp_connections_opened_total",
        &[("destination_service", "echo"), ("direction", "outbound")],
    );
    ended("echo", "outbound") >= (rounds * ECHO_CONNECTIONS) as f64
        && ended("echo", "inbound") >= echo_opened
        && ended("ledger", "outbound") >= (rounds * OTHER_CONNECTIONS) as f64
}

/// The series of the backend that refuses every connection: it has no
/// connect latency, RTT or duration, so a quantile of them is NaN.
fn never_completes(labels: &BTreeMap<String, String>) -> bool {
    labels.get("destination_backend").map(String::as_str) == Some(REFUSES.0)
}
