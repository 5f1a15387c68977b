//! The agent in ambient mode: the in-test ADS server stands in for istiod
//! and serves Istio ambient's workload discovery (`istio.workload.Address`
//! over delta xDS) made from a real ztunnel 1.24 config dump; the agent
//! routes real connections to a VIP of the dump.
use std::{path::PathBuf, time::Duration};

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, Resource};
use kmesh_agent::xds::ambient::proto::{Address, Workload, address};
use kmesh_api::{client::AdminClient, v1};
use kmesh_tests::{
    ads::{ADDRESS_TYPE, AdsServer},
    ambient_data::{self, Addresses},
    harness::{Agent, Topology, block_on, privileged},
};

const WAIT: Duration = Duration::from_secs(20);
const REVIEWS_VIP: &str = "10.96.224.224:9080";
const POD: &str = "cluster-default//Pod/bookinfo/";
const REVIEWS: [(&str, &str); 3] = [
    ("reviews-v1-5fc87d67c-r67vp", "127.0.0.2"),
    ("reviews-v2-f6d449f65-v2qx7", "127.0.0.3"),
    ("reviews-v3-76f75877b9-g6ds7", "127.0.0.4"),
];

fn dump() -> Addresses {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/xds/istio-1.24-ambient-ztunnel.config_dump.json");
    let mut all = ambient_data::read_dump(&path);
    // The reviews pods move into the test's namespace, as in xds.rs.
    for (pod, ip) in REVIEWS {
        ambient_data::readdress(&mut all, &format!("{POD}{pod}"), ip.parse().unwrap());
    }
    all
}

fn model(agent: &Agent) -> v1::Model {
    block_on(AdminClient::new(&agent.admin_socket).model()).expect("GET /v1/model")
}

fn reviews(m: &v1::Model) -> Vec<(String, Option<String>)> {
    let s = m
        .services
        .iter()
        .find(|s| s.vip == REVIEWS_VIP)
        .expect("reviews in the model");
    s.backends
        .iter()
        .map(|b| (b.address.clone(), b.workload.clone()))
        .collect()
}

fn workload_resource(uid: &str, bytes: Vec<u8>) -> Resource {
    let w = Workload {
        uid: uid.into(),
        namespace: "hostile".into(),
        addresses: vec![bytes],
        ..Workload::default()
    };
    let a = Address {
        r#type: Some(address::Type::Workload(Box::new(w))),
    };
    Resource {
        name: if uid.is_empty() {
            "nameless".into()
        } else {
            uid.into()
        },
        version: "h1".into(),
        resource: Some(ambient_data::any(&a)),
        ..Default::default()
    }
}

#[test]
fn ambient_workload_discovery_routes_a_dump_vip_and_survives_hostile_updates() {
    if !privileged("ambient_workload_discovery_routes_a_dump_vip_and_survives_hostile_updates") {
        return;
    }
    let topo = Topology::new("ambient");
    let backends: Vec<String> = REVIEWS.iter().map(|(_, ip)| format!("{ip}:9080")).collect();
    let refs: Vec<&str> = backends.iter().map(String::as_str).collect();
    let _servers = topo.serve(&refs, false);
    let server = AdsServer::start().unwrap();
    let mut all = dump();
    server.set_delta(ADDRESS_TYPE, "v1", ambient_data::resources(&all));
    let agent = topo.start_agent_xds(server.addr(), &["--xds-mode", "ambient"]);
    server.wait_for_delta_ack(WAIT).unwrap();

    // The first request: wildcard, with a ztunnel node.
    let log = server.delta_log();
    let first = &log.requests[0];
    assert_eq!(first.type_url, ADDRESS_TYPE);
    assert!(first.subscribe.is_empty() && first.initial_versions.is_empty());
    let node = first.node.as_ref().expect("the node on the first request");
    assert!(
        node.id.starts_with("ztunnel~") && node.has_metadata,
        "{node:?}"
    );
    assert_eq!(log.responses[0].resources.len(), 87);

    let m = model(&agent);
    assert_eq!(m.workloads.len(), 48);
    assert_eq!(m.services.len(), 53);
    let xds = m.source.xds.as_ref().unwrap();
    assert!(
        xds.connected && xds.synced && xds.mode == "ambient",
        "{xds:?}"
    );
    assert_eq!(xds.resources, 87);
    let expected: Vec<(String, Option<String>)> = REVIEWS
        .iter()
        .map(|(pod, ip)| (format!("{ip}:9080"), Some(format!("{POD}{pod}"))))
        .collect();
    assert_eq!(reviews(&m), expected);
    let v2 = m
        .workloads
        .iter()
        .find(|w| w.uid == format!("{POD}{}", REVIEWS[1].0))
        .unwrap();
    assert_eq!(
        (v2.canonical_name.as_str(), v2.canonical_revision.as_str()),
        ("reviews", "v2")
    );

    let n = 300;
    let report = topo.client(REVIEWS_VIP, n, &["--concurrency", "4"]);
    assert_eq!(report.ok, n, "failures: {:?}", report.failures);
    for b in &backends {
        let got = *report.backends.get(b).unwrap_or(&0);
        assert!(
            (60..=140).contains(&got),
            "{b}: {got} of {n}: {:?}",
            report.backends
        );
    }

    // Hostile resources: refused by name (NACK), the rest applied, nothing
    // in force lost.
    server.push_delta_raw(DeltaDiscoveryResponse {
        type_url: ADDRESS_TYPE.into(),
        resources: vec![
            workload_resource("", vec![10, 9, 9, 1]),
            workload_resource("hostile/bad-ip", vec![10, 9, 9]),
            workload_resource("hostile/twice", vec![10, 9, 9, 2]),
            workload_resource("hostile/twice", vec![10, 9, 9, 3]),
            workload_resource("hostile/fine", vec![10, 9, 9, 4]),
        ],
        ..Default::default()
    });
    let nack = server
        .wait_for_delta(|log| log.nack().and_then(|r| r.error.clone()), WAIT)
        .unwrap();
    for what in [
        "no uid",
        "\"hostile/bad-ip\"",
        "3 bytes",
        "\"hostile/twice\"",
        "more than once",
    ] {
        assert!(nack.message.contains(what), "{what}: {}", nack.message);
    }
    assert!(!nack.message.contains("hostile/fine"), "{}", nack.message);
    let m = model(&agent);
    assert_eq!(m.workloads.len(), 49, "the valid one is applied");
    assert_eq!(reviews(&m).len(), 3);
    assert!(m.rejected.iter().any(|r| r.name == "hostile/bad-ip"));

    // A removed workload takes its backend with it.
    all.remove(&format!("{POD}{}", REVIEWS[2].0));
    server.set_delta(ADDRESS_TYPE, "v2", ambient_data::resources(&all));
    server.wait_for_delta_ack(WAIT).unwrap();
    let last = server.delta_log().responses.last().cloned().unwrap();
    // (The hostile push bypassed the server's set: only reviews-v3 goes.)
    assert_eq!(last.removed, [format!("{POD}{}", REVIEWS[2].0)]);
    assert_eq!(reviews(&model(&agent)), expected[..2].to_vec());
    let report = topo.client(REVIEWS_VIP, 100, &[]);
    assert_eq!(report.ok, 100, "failures: {:?}", report.failures);
    assert!(
        !report.backends.contains_key(&backends[2]),
        "{:?}",
        report.backends
    );

    // 5,000 more workloads in one push.
    let mut huge = all.clone();
    for i in 0..5000u32 {
        let uid = format!("cluster-default//Pod/load/pod-{i}");
        let w = Workload {
            uid: uid.clone(),
            namespace: "load".into(),
            addresses: vec![vec![10, 200, (i >> 8) as u8, i as u8]],
            services: [(
                "bookinfo/reviews.bookinfo.svc.cluster.local".to_string(),
                Default::default(),
            )]
            .into(),
            ..Workload::default()
        };
        huge.insert(
            uid,
            Address {
                r#type: Some(address::Type::Workload(Box::new(w))),
            },
        );
    }
    server.set_delta(ADDRESS_TYPE, "v3", ambient_data::resources(&huge));
    server.wait_for_delta_ack(Duration::from_secs(60)).unwrap();
    let m = model(&agent);
    assert_eq!(m.workloads.len(), 48 + 5000);
    assert_eq!(reviews(&m).len(), 256, "the kernel's limit, reported");
    assert!(
        m.findings
            .iter()
            .any(|f| f.message.contains("256 heaviest"))
    );
}
