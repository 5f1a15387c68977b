//! Delta ADS (`DeltaAggregatedResources`) on a real kernel: the in-test
//! server stands in for istiod and serves Envoy's four types incrementally
//! (and, last, ambient's Address across a restart); the agent, on its
//! default `--xds-protocol delta`, routes real connections by what it
//! took, and the server's log shows what it asked for and acknowledged.
use std::{path::PathBuf, time::Duration};

use envoy_types::pb::envoy::{
    config::cluster::v3::cluster::LbPolicy,
    service::discovery::v3::{DeltaDiscoveryResponse, Resource},
};
use kmesh_api::{client::AdminClient, v1};
use kmesh_tests::{
    ads::{self, ADDRESS_TYPE, AdsServer, DeltaLog},
    ambient_data,
    harness::{Agent, Topology, block_on, privileged},
    xds_data::{self, eds_cluster, endpoints, vip_listener},
};

const WAIT: Duration = Duration::from_secs(20);
const VIP: &str = "198.18.0.40:80";
const VIP2: &str = "198.18.0.41:80";
const CLUSTER: &str = "outbound|80||echo.test.svc.cluster.local";
const CLUSTER2: &str = "outbound|80||other.test.svc.cluster.local";
const A: &str = "127.0.0.2:8080";
const B: &str = "127.0.0.3:8080";
const C: &str = "127.0.0.4:8080";

fn model(agent: &Agent) -> v1::Model {
    block_on(AdminClient::new(&agent.admin_socket).model()).expect("GET /v1/model")
}

/// Every response sent has been answered (ACK or NACK), and there is one.
fn all_answered(log: &DeltaLog) -> bool {
    !log.responses.is_empty()
        && log.responses.iter().all(|r| {
            log.requests
                .iter()
                .any(|q| q.stream == r.stream && q.response_nonce == r.nonce)
        })
}

fn settle(server: &AdsServer) {
    server
        .wait_for_delta(|log| all_answered(log).then_some(()), WAIT)
        .expect("every delta response answered");
}

/// Waits for the answer to the latest response of `type_url`.
fn answer_to_latest(server: &AdsServer, type_url: &str) -> ads::DeltaRequest {
    server
        .wait_for_delta(
            |log| {
                let last = log.responses_of(type_url).last()?;
                log.requests
                    .iter()
                    .rev()
                    .find(|q| q.response_nonce == last.nonce)
                    .cloned()
            },
            WAIT,
        )
        .unwrap_or_else(|e| panic!("no answer to the latest {type_url} response: {e:#}"))
}

/// The routing seen by `n` connections to `vip`: backend → count.
fn routed(topo: &Topology, vip: &str, n: u64) -> std::collections::BTreeMap<String, u64> {
    let report = topo.client(vip, n, &["--concurrency", "2"]);
    report.backends.into_iter().collect()
}

fn one_service(server: &AdsServer, version: &str, backends: &[(&str, u32)]) {
    xds_data::serve_one_service(server, version, VIP, CLUSTER, backends);
}

#[test]
fn delta_adds_updates_and_removes_and_the_kernel_follows() {
    if !privileged("delta_adds_updates_and_removes_and_the_kernel_follows") {
        return;
    }
    let topo = Topology::new("delta-crud");
    let _backends = topo.serve(&[A, B, C], false);
    let server = AdsServer::start().unwrap();
    one_service(&server, "1", &[(A, 1)]);
    let agent = topo.start_agent_xds(server.addr(), &[]);
    settle(&server);

    // Clusters and listeners open the stream as wildcards, with the node;
    // the endpoints follow by the name the cluster gives.
    let log = server.delta_log();
    let first: Vec<&str> = log
        .requests
        .iter()
        .filter(|r| r.response_nonce.is_empty())
        .map(|r| r.type_url.as_str())
        .collect();
    assert_eq!(
        first,
        [ads::CLUSTER_TYPE, ads::LISTENER_TYPE, ads::ENDPOINT_TYPE],
        "{}",
        log.summary()
    );
    assert!(log.requests[0].subscribe.is_empty());
    let node = log.requests[0].node.as_ref().expect("the node first");
    assert!(node.id.starts_with("sidecar~"), "{node:?}");
    let eds = log
        .requests
        .iter()
        .find(|r| r.type_url == ads::ENDPOINT_TYPE)
        .unwrap();
    assert_eq!(eds.subscribe, [CLUSTER]);
    assert_eq!(routed(&topo, VIP, 20).get(A), Some(&20));
    let xds = model(&agent).source.xds.unwrap();
    assert!(xds.synced && xds.connected, "{xds:?}");
    assert!(
        agent.log().contains("delta xDS stream open"),
        "{}",
        agent.log()
    );

    // Update: B and C replace A; the push carries that one assignment.
    let before = server.delta_log().responses.len();
    server.set(
        ads::ENDPOINT_TYPE,
        "2",
        vec![endpoints(CLUSTER, &[(B, 1), (C, 1)])],
    );
    let ack = answer_to_latest(&server, ads::ENDPOINT_TYPE);
    assert!(ack.error.is_none(), "{ack:?}");
    let log = server.delta_log();
    let pushed: Vec<&ads::DeltaResponse> = log.responses[before..].iter().collect();
    assert_eq!(pushed.len(), 1, "{}", log.summary());
    assert_eq!(pushed[0].resources, [CLUSTER]);
    let got = routed(&topo, VIP, 40);
    assert_eq!(got.get(A), None, "{got:?}");
    assert_eq!(got.values().sum::<u64>(), 40, "{got:?}");

    // Add a second service: its cluster, listener and endpoints.
    server.set(
        ads::CLUSTER_TYPE,
        "3",
        vec![
            eds_cluster(CLUSTER, LbPolicy::Random),
            eds_cluster(CLUSTER2, LbPolicy::Random),
        ],
    );
    server.set(
        ads::ENDPOINT_TYPE,
        "3",
        vec![
            endpoints(CLUSTER, &[(B, 1), (C, 1)]),
            endpoints(CLUSTER2, &[(A, 1)]),
        ],
    );
    server.set(
        ads::LISTENER_TYPE,
        "3",
        vec![vip_listener(VIP, CLUSTER), vip_listener(VIP2, CLUSTER2)],
    );
    settle(&server);
    let sub = server
        .delta_log()
        .requests
        .iter()
        .any(|r| r.type_url == ads::ENDPOINT_TYPE && r.subscribe == [CLUSTER2]);
    assert!(sub, "{}", server.delta_log().summary());
    assert_eq!(routed(&topo, VIP2, 10).get(A), Some(&10));

    // Remove the first service's listener: a removal, and its VIP is no
    // longer routed; the other one is.
    server.set(ads::LISTENER_TYPE, "4", vec![vip_listener(VIP2, CLUSTER2)]);
    let ack = answer_to_latest(&server, ads::LISTENER_TYPE);
    assert!(ack.error.is_none(), "{ack:?}");
    let last = server
        .delta_log()
        .responses_of(ads::LISTENER_TYPE)
        .last()
        .cloned()
        .unwrap();
    assert_eq!(last.removed, [VIP.replace(':', "_")]);
    assert!(last.resources.is_empty());
    assert_eq!(topo.client(VIP, 5, &[]).ok, 0);
    assert_eq!(routed(&topo, VIP2, 10).get(A), Some(&10));
    let m = model(&agent);
    let vips: Vec<&str> = m.services.iter().map(|s| s.vip.as_str()).collect();
    assert_eq!(vips, [VIP2]);
}

#[test]
fn a_nack_keeps_the_last_good_version_of_that_resource_only() {
    if !privileged("a_nack_keeps_the_last_good_version_of_that_resource_only") {
        return;
    }
    let topo = Topology::new("delta-nack");
    let _backends = topo.serve(&[A, B, C], false);
    let server = AdsServer::start().unwrap();
    server.set(
        ads::CLUSTER_TYPE,
        "1",
        vec![
            eds_cluster(CLUSTER, LbPolicy::Random),
            eds_cluster(CLUSTER2, LbPolicy::Random),
        ],
    );
    server.set(
        ads::ENDPOINT_TYPE,
        "1",
        vec![
            endpoints(CLUSTER, &[(A, 1)]),
            endpoints(CLUSTER2, &[(A, 1)]),
        ],
    );
    server.set(
        ads::LISTENER_TYPE,
        "1",
        vec![vip_listener(VIP, CLUSTER), vip_listener(VIP2, CLUSTER2)],
    );
    server.set(ads::ROUTE_TYPE, "1", vec![]);
    let agent = topo.start_agent_xds(server.addr(), &[]);
    settle(&server);

    // One response: CLUSTER to B with weight 0 (Envoy refuses it), CLUSTER2
    // to C (good).
    let as_resource = |(name, any): (String, _), version: &str| Resource {
        name,
        version: version.into(),
        resource: Some(any),
        ..Default::default()
    };
    server.push_delta_raw(DeltaDiscoveryResponse {
        type_url: ads::ENDPOINT_TYPE.into(),
        resources: vec![
            as_resource(endpoints(CLUSTER, &[(B, 0)]), "bad"),
            as_resource(endpoints(CLUSTER2, &[(C, 1)]), "2"),
        ],
        ..Default::default()
    });
    let nack = server
        .wait_for_delta(|log| log.nack().cloned(), WAIT)
        .unwrap();
    let message = nack.error.unwrap().message;
    assert!(
        message.contains(CLUSTER) && !message.contains(CLUSTER2),
        "{message}"
    );
    // The refused one keeps its last good version; the other applies.
    assert_eq!(routed(&topo, VIP, 10).get(A), Some(&10));
    assert_eq!(routed(&topo, VIP2, 10).get(C), Some(&10));
    let m = model(&agent);
    let xds = m.source.xds.as_ref().unwrap();
    assert_eq!(xds.nacks, 1, "{xds:?}");
    assert!(
        m.rejected.iter().any(|r| r.name == CLUSTER),
        "{:?}",
        m.rejected
    );

    // A removal of a name never sent: ignored, as Envoy ignores it
    // (an ACK, nothing changes).
    server.push_delta_raw(DeltaDiscoveryResponse {
        type_url: ads::CLUSTER_TYPE.into(),
        removed_resources: vec!["outbound|80||never-sent.test.svc.cluster.local".into()],
        ..Default::default()
    });
    let ack = answer_to_latest(&server, ads::CLUSTER_TYPE);
    assert!(ack.error.is_none(), "{ack:?}");
    assert_eq!(routed(&topo, VIP, 10).get(A), Some(&10));
    assert_eq!(routed(&topo, VIP2, 10).get(C), Some(&10));
}

#[test]
fn a_reconnect_sends_initial_versions_and_receives_only_what_changed() {
    if !privileged("a_reconnect_sends_initial_versions_and_receives_only_what_changed") {
        return;
    }
    let topo = Topology::new("delta-reconnect");
    let _backends = topo.serve(&[A, B], false);
    let mut server = AdsServer::start().unwrap();
    one_service(&server, "1", &[(A, 1)]);
    let agent = topo.start_agent_xds(server.addr(), &[]);
    settle(&server);

    server.stop();
    // While istiod is away the endpoints change; the agent routes by what
    // it has.
    server.set(ads::ENDPOINT_TYPE, "2", vec![endpoints(CLUSTER, &[(B, 1)])]);
    assert_eq!(routed(&topo, VIP, 20).get(A), Some(&20));
    server.restart().unwrap();
    server
        .wait_for_delta(
            |log| (log.streams == 2 && all_answered(log)).then_some(()),
            Duration::from_secs(40),
        )
        .unwrap();
    let log = server.delta_log();
    let held = |url: &str| {
        log.requests_of(2, url)
            .next()
            .unwrap_or_else(|| panic!("no {url} request on the new stream: {}", log.summary()))
            .clone()
    };
    // Every type opens with what it holds.
    let cds = held(ads::CLUSTER_TYPE);
    assert_eq!(
        cds.initial_versions.get(CLUSTER).map(String::as_str),
        Some("1")
    );
    let eds = held(ads::ENDPOINT_TYPE);
    assert_eq!(eds.subscribe, [CLUSTER]);
    assert_eq!(
        eds.initial_versions.get(CLUSTER).map(String::as_str),
        Some("1")
    );
    assert!(
        held(ads::LISTENER_TYPE)
            .initial_versions
            .contains_key(&VIP.replace(':', "_"))
    );
    // Only what changed comes back.
    let on_new: Vec<(&str, usize)> = log
        .responses
        .iter()
        .filter(|r| r.stream == 2)
        .map(|r| (r.type_url.as_str(), r.resources.len()))
        .collect();
    let carried: usize = on_new.iter().map(|(_, n)| n).sum();
    assert_eq!(carried, 1, "{on_new:?}");
    let eds_response = log.responses_of(ads::ENDPOINT_TYPE).last().unwrap();
    assert_eq!(
        (eds_response.stream, &eds_response.resources[..]),
        (2, &[CLUSTER.to_string()][..])
    );
    assert_eq!(routed(&topo, VIP, 20).get(B), Some(&20));
    assert_eq!(model(&agent).source.xds.unwrap().connects, 2);
}

#[test]
fn ambient_reconnect_offers_what_it_holds_and_keeps_routing_meanwhile() {
    if !privileged("ambient_reconnect_offers_what_it_holds_and_keeps_routing_meanwhile") {
        return;
    }
    const REVIEWS_VIP: &str = "10.96.224.224:9080";
    const POD: &str = "cluster-default//Pod/bookinfo/";
    const REVIEWS: [(&str, &str); 3] = [
        ("reviews-v1-5fc87d67c-r67vp", "127.0.0.2"),
        ("reviews-v2-f6d449f65-v2qx7", "127.0.0.3"),
        ("reviews-v3-76f75877b9-g6ds7", "127.0.0.4"),
    ];
    let topo = Topology::new("delta-ambient");
    let backends: Vec<String> = REVIEWS.iter().map(|(_, ip)| format!("{ip}:9080")).collect();
    let refs: Vec<&str> = backends.iter().map(String::as_str).collect();
    let _servers = topo.serve(&refs, false);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/xds/istio-1.24-ambient-ztunnel.config_dump.json");
    let mut all = ambient_data::read_dump(&path);
    for (pod, ip) in REVIEWS {
        ambient_data::readdress(&mut all, &format!("{POD}{pod}"), ip.parse().unwrap());
    }
    let mut server = AdsServer::start().unwrap();
    server.set_delta(ADDRESS_TYPE, "v1", ambient_data::resources(&all));
    let agent = topo.start_agent_xds(server.addr(), &["--xds-mode", "ambient"]);
    server.wait_for_delta_ack(WAIT).unwrap();
    let total = server.delta_log().responses[0].resources.len();

    server.stop();
    let n = 30;
    let report = topo.client(REVIEWS_VIP, n, &["--concurrency", "2"]);
    assert_eq!(
        report.ok, n,
        "routing stopped with the server: {:?}",
        report.failures
    );
    // One workload goes away meanwhile.
    let v3 = format!("{POD}{}", REVIEWS[2].0);
    all.remove(&v3).expect("reviews-v3 in the dump");
    server.set_delta(ADDRESS_TYPE, "v2", ambient_data::resources(&all));
    server.restart().unwrap();
    server
        .wait_for_delta(
            |log| (log.streams == 2 && all_answered(log)).then_some(()),
            Duration::from_secs(40),
        )
        .unwrap();
    let log = server.delta_log();
    let first = log.requests_of(2, ADDRESS_TYPE).next().unwrap();
    assert_eq!(first.initial_versions.len(), total, "{}", log.summary());
    let back = log.responses.iter().find(|r| r.stream == 2).unwrap();
    assert!(
        back.resources.is_empty(),
        "nothing unchanged is sent again: {back:?}"
    );
    assert_eq!(back.removed, [v3], "the workload gone is removed");
    let report = topo.client(REVIEWS_VIP, n, &["--concurrency", "2"]);
    assert_eq!(report.ok, n, "{:?}", report.failures);
    assert_eq!(
        report.backends.get("127.0.0.4:9080"),
        None,
        "{:?}",
        report.backends
    );
    assert_eq!(model(&agent).source.xds.unwrap().connects, 2);
}
