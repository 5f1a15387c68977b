//! Who calls whom: two client workloads (their own pod IPs, their own
//! namespaces) call one service with two backend workloads, through the
//! real agent, and every series names both ends at both reporters with the
//! counts each client made. Then Kiali's TCP graph queries and the TCP
//! panels of Istio's workload dashboard run against a real Prometheus
//! scraping the agent under `--metric-names istio`, and return the pairs.
use std::collections::BTreeMap;

use kmesh_tests::{
    harness::{Metrics, Topology, privileged},
    prometheus::{self, Prometheus},
    protocol::request_len,
    workloads::{self, BATCH, CART_HOST, CART_V1, CART_V2, Pod, WEB},
};

const VIP: &str = "198.18.0.60:80";
/// Each client workload and the connections it makes a round.
const CLIENTS: [(Pod, u64); 2] = [(WEB, 30), (BATCH, 20)];
const BACKENDS: [Pod; 2] = [CART_V1, CART_V2];
const BACKEND_PORT: u16 = 8080;
/// Each client runs once per round, with scrapes between rounds: a rate
/// needs a series sampled on both sides of an increase.
const ROUNDS: u64 = 2;
const REQUEST_BYTES: u32 = 100;
const REPLY_BYTES: u32 = 300;

fn backend_addrs() -> Vec<String> {
    workloads::addresses(&BACKENDS, BACKEND_PORT)
}

fn mesh() -> String {
    let pods: Vec<Pod> = CLIENTS.iter().map(|c| c.0).chain(BACKENDS).collect();
    let backends = backend_addrs();
    let backends: Vec<&str> = backends.iter().map(String::as_str).collect();
    workloads::mesh(&pods, CART_HOST, VIP, &backends)
}

/// The pods' addresses, on the namespace's loopback.
fn add_pod_ips(topo: &Topology) {
    let ips: Vec<&str> = CLIENTS
        .iter()
        .map(|c| c.0.ip)
        .chain(BACKENDS.iter().map(|b| b.ip))
        .collect();
    workloads::add_addresses(topo, &ips);
}

/// `family`'s samples at `reporter` by (source_workload, destination_workload).
fn by_pair(m: &Metrics, family: &str, reporter: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for s in m.samples(family) {
        if s.labels.get("reporter").map(String::as_str) != Some(reporter) {
            continue;
        }
        let key = (
            s.labels["source_workload"].clone(),
            s.labels["destination_workload"].clone(),
        );
        *out.entry(key).or_default() += s.value;
    }
    out
}

#[test]
fn every_series_names_both_workloads_and_kiali_draws_the_pairs() {
    if !privileged("every_series_names_both_workloads_and_kiali_draws_the_pairs") {
        return;
    }
    let Some(bin) =
        prometheus::available("every_series_names_both_workloads_and_kiali_draws_the_pairs")
    else {
        return;
    };
    let topo = Topology::new("attribution");
    add_pod_ips(&topo);
    let backends = backend_addrs();
    let backends: Vec<&str> = backends.iter().map(String::as_str).collect();
    let _servers = topo.serve_in_cgroup(&backends, false);
    let agent = topo.start_agent_with(&mesh(), &["--metric-names", "istio"]);
    let prom = Prometheus::start(&bin, &topo.workdir, &[agent.addr])
        .unwrap_or_else(|e| panic!("starting prometheus: {e:#}"));
    prom.wait_for_scrapes(1).expect("first scrape");

    let request = request_len(REQUEST_BYTES) as f64;
    for _ in 0..ROUNDS {
        for (client, n) in &CLIENTS {
            workloads::call_from(&topo, client, VIP, *n, REQUEST_BYTES, REPLY_BYTES);
        }
        prom.wait_for_more_scrapes(2)
            .expect("scrapes after the traffic");
    }
    let total: u64 = CLIENTS.iter().map(|c| c.1).sum::<u64>() * ROUNDS;
    let m = agent.metrics_when(|m| {
        m.value(
            "istio_tcp_connections_closed_total",
            &[("reporter", "destination")],
        ) as u64
            == total
            && m.value(
                "istio_tcp_connections_closed_total",
                &[("reporter", "source")],
            ) as u64
                == total
    });

    let expected = workloads::round_robin_pairs(&CLIENTS, &BACKENDS, ROUNDS);
    for reporter in ["source", "destination"] {
        let opened = by_pair(&m, "istio_tcp_connections_opened_total", reporter);
        let received = by_pair(&m, "istio_tcp_received_bytes_total", reporter);
        let sent = by_pair(&m, "istio_tcp_sent_bytes_total", reporter);
        assert_eq!(opened.len(), expected.len(), "{reporter}: {opened:?}");
        for (key, n) in &expected {
            assert_eq!(opened[key], *n as f64, "{reporter} opened {key:?}");
            // Istio's received bytes are the requests, sent the responses,
            // whichever side reports them.
            assert_eq!(
                received[key],
                *n as f64 * request,
                "{reporter} received {key:?}"
            );
            assert!(
                sent[key] >= *n as f64 * f64::from(REPLY_BYTES),
                "{reporter} sent {key:?}: {}",
                sent[key]
            );
        }
    }
    // Every label of a pair's series at both reporters.
    let clients: Vec<Pod> = CLIENTS.iter().map(|c| c.0).collect();
    for s in m.samples("kmesh_tcp_connections_opened_total") {
        let l = &s.labels;
        let client = workloads::find(&clients, &l["source_workload"])
            .unwrap_or_else(|| panic!("a series from an unknown source: {l:?}"));
        let backend = workloads::find(&BACKENDS, &l["destination_workload"])
            .unwrap_or_else(|| panic!("a series to an unknown workload: {l:?}"));
        let addr = format!("{}:{BACKEND_PORT}", backend.ip);
        assert_eq!(l["destination_backend"], addr, "{l:?}");
        workloads::assert_istio_labels(l, client, backend, CART_HOST);
    }

    // The admin API (kmesh-top's source): who calls whom, and each
    // connection's workloads.
    let snapshot = agent.snapshot();
    let calls: Vec<(String, String, Vec<String>, u64)> = snapshot
        .calls
        .iter()
        .map(|c| {
            (
                c.reporter.clone(),
                format!("{}/{}", c.source_namespace, c.source_workload),
                c.destination_workloads.clone(),
                c.figures.opened,
            )
        })
        .collect();
    let both = vec!["shop/cart-v1".to_string(), "shop/cart-v2".to_string()];
    assert_eq!(
        calls,
        [
            (
                "source".into(),
                "front/web".into(),
                both.clone(),
                30 * ROUNDS
            ),
            ("source".into(), "jobs/batch".into(), both, 20 * ROUNDS),
        ],
        "{:#?}",
        snapshot.calls
    );
    let backends = &snapshot.services[0].backends;
    let workloads: Vec<Option<&str>> = backends.iter().map(|b| b.workload.as_deref()).collect();
    assert_eq!(workloads, [Some("shop/cart-v1"), Some("shop/cart-v2")]);
    let feed = agent.connections();
    assert_eq!(
        feed.len() as u64,
        2 * total,
        "both sides of every connection"
    );
    workloads::assert_connections_named(&feed, &clients, &BACKENDS, BACKEND_PORT);

    prom.wait_for_more_scrapes(2)
        .expect("scrapes after the last figures");
    let at = prometheus::unix_now();
    let window = prom.whole_range();
    let pairs = |expr: &str| {
        let samples = prom
            .query(expr, Some(at))
            .unwrap_or_else(|e| panic!("{expr}: {e:#}"));
        prometheus::by_workload_pair(&samples)
    };
    let kiali = |ns: &str| prometheus::kiali_tcp_graph(ns, window);
    let all_pairs: Vec<(String, String)> = expected.keys().cloned().collect();
    // The service's namespace: no unknown sources, both clients from outside.
    let [unknown, external, internal] = kiali("shop").map(|q| pairs(&q));
    eprintln!("kiali graph of namespace shop, external traffic: {external:?}");
    assert!(unknown.is_empty(), "unknown sources: {unknown:?}");
    assert_eq!(external.keys().cloned().collect::<Vec<_>>(), all_pairs);
    assert!(external.values().all(|v| *v > 0.0), "{external:?}");
    assert!(internal.is_empty(), "{internal:?}");
    // A client's namespace: its own pairs, as internal traffic.
    let [_, _, web] = kiali("front").map(|q| pairs(&q));
    let web_pairs: Vec<(String, String)> = web.keys().cloned().collect();
    assert_eq!(
        web_pairs,
        [
            ("web".to_string(), "cart-v1".to_string()),
            ("web".to_string(), "cart-v2".to_string())
        ]
    );

    // Istio's workload dashboard, "Incoming TCP by source" and the inbound
    // TCP stat, with $qrep=destination, $namespace=shop, $workload=cart-v1
    // and the source filters at "All".
    let by_source = prom
        .query(
            "sum(irate(istio_tcp_sent_bytes_total{reporter=~\"destination\", destination_workload=~\"cart-v1\", destination_workload_namespace=~\"shop\", source_workload=~\".*\", source_workload_namespace=~\".*\"}[1m])) by (source_workload, source_workload_namespace)",
            Some(at),
        )
        .expect("istio dashboard query");
    let mut sources: Vec<(String, String)> = by_source
        .iter()
        .map(|s| {
            (
                s.labels["source_workload"].clone(),
                s.labels["source_workload_namespace"].clone(),
            )
        })
        .collect();
    sources.sort();
    assert_eq!(
        sources,
        [
            ("batch".to_string(), "jobs".to_string()),
            ("web".to_string(), "front".to_string())
        ]
    );
    let stat = prom
        .query(
            &format!("sum(increase(istio_tcp_sent_bytes_total{{reporter=~\"destination\", destination_workload_namespace=~\"shop\", destination_workload=~\"cart-v1\"}}[{window}s])) + sum(increase(istio_tcp_received_bytes_total{{reporter=~\"destination\", destination_workload_namespace=~\"shop\", destination_workload=~\"cart-v1\"}}[{window}s]))"),
            Some(at),
        )
        .expect("istio dashboard stat");
    assert!(
        stat.first().is_some_and(|s| s.value > 0.0),
        "cart-v1's TCP bytes: {stat:?}"
    );
}
