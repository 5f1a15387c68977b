//! The agent on an xDS control plane: an ADS server in the test (standing
//! in for istiod) drives a running agent on the real kernel; the server's
//! log shows what the agent subscribed to, ACKed and NACKed.
use std::{path::PathBuf, time::Duration};

use envoy_types::pb::{
    envoy::{config::cluster::v3::cluster::LbPolicy, service::discovery::v3::DiscoveryResponse},
    google::protobuf::Any,
};
use kmesh_api::{client::AdminClient, v1};
use kmesh_tests::{
    ads::{self, AdsOptions, AdsServer},
    harness::{Agent, Metrics, Topology, block_on, privileged},
    xds_data::{self, eds_cluster, endpoints, vip_listener},
};

const WAIT: Duration = Duration::from_secs(15);

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/xds")
        .join(name)
}

fn model(agent: &Agent) -> v1::Model {
    block_on(AdminClient::new(&agent.admin_socket).model()).expect("GET /v1/model")
}

fn service<'m>(model: &'m v1::Model, vip: &str) -> &'m v1::ModelService {
    model
        .services
        .iter()
        .find(|s| s.vip == vip)
        .unwrap_or_else(|| panic!("no service at {vip}"))
}

/// Bounds that a correct sampler leaves with probability < 1e-6.
fn five_sigma(n: u64, p: f64) -> (f64, f64) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (mean - 5.0 * sd, mean + 5.0 * sd)
}

fn assert_share(report: &kmesh_tests::ClientReport, backend: &str, n: u64, p: f64) {
    let got = *report.backends.get(backend).unwrap_or(&0) as f64;
    let (lo, hi) = five_sigma(n, p);
    assert!(
        (lo..=hi).contains(&got),
        "{backend}: {got} of {n} outside [{lo:.0}, {hi:.0}] for share {p}: {:?}",
        report.backends
    );
}

const JAEGER_VIP: &str = "10.68.66.148:16686";
const JAEGER: &str = "outbound|16686||jaeger.social-network.svc.cluster.local";

#[test]
fn deathstarbench_dump_over_ads_routes_real_connections() {
    if !privileged("deathstarbench_dump_over_ads_routes_real_connections") {
        return;
    }
    let topo = Topology::new("xds-dsb");
    let jaeger_backends = ["127.0.0.2:16686", "127.0.0.3:16686"];
    let _backends = topo.serve(&jaeger_backends, false);
    let server = AdsServer::start().unwrap();
    let mut resources = xds_data::read_file(&testdata(
        "istio-1.18-sidecar-deathstarbench.config_dump.json",
    ));
    // Jaeger's pod IP is the dump's cluster's; here its endpoints are two
    // backends in the test's namespace, as EDS would move them.
    let eds = resources.get_mut(ads::ENDPOINT_TYPE).unwrap();
    let jaeger = eds.iter_mut().find(|(n, _)| n == JAEGER).unwrap();
    *jaeger = endpoints(JAEGER, &[(jaeger_backends[0], 1), (jaeger_backends[1], 1)]);
    xds_data::serve_all(&server, "dsb-1", &resources);

    let agent = topo.start_agent_xds(server.addr(), &["--xds-protocol", "sotw"]);
    for t in [
        ads::CLUSTER_TYPE,
        ads::ENDPOINT_TYPE,
        ads::LISTENER_TYPE,
        ads::ROUTE_TYPE,
    ] {
        let ack = server.wait_for_ack(t, "dsb-1", WAIT).unwrap();
        assert!(ack.error.is_none());
    }
    let log = server.log();
    let first = &log.requests[0];
    let node = first.node.as_ref().expect("the node on the first request");
    assert!(
        node.id.starts_with("sidecar~") && node.has_metadata,
        "{node:?}"
    );
    // Endpoints and routes are asked for by name: every EDS cluster's and
    // every RDS listener's.
    let eds_names = log
        .requests
        .iter()
        .filter(|r| r.type_url == ads::ENDPOINT_TYPE)
        .map(|r| r.resource_names.len())
        .max()
        .unwrap();
    assert_eq!(eds_names, 122);

    let m = model(&agent);
    assert_eq!(m.source.kind, "xds");
    assert_eq!(m.services.len(), 122);
    let xds = m.source.xds.as_ref().unwrap();
    assert!(xds.connected && xds.synced, "{xds:?}");
    assert_eq!(xds.versions["cluster"], "dsb-1");
    let jaeger = service(&m, JAEGER_VIP);
    assert_eq!(jaeger.name, "jaeger.social-network.svc.cluster.local");
    assert_eq!(jaeger.backends.len(), 2, "{jaeger:?}");
    assert!(jaeger.resources.iter().all(|r| r.version == "dsb-1"));

    let n = 400;
    let report = topo.client(JAEGER_VIP, n, &["--concurrency", "4"]);
    assert_eq!(report.ok, n, "failures: {:?}", report.failures);
    for b in jaeger_backends {
        assert_share(&report, b, n, 0.5);
    }
}

const VIP: &str = "198.18.0.20:80";
const CLUSTER: &str = "outbound|80||echo.test.svc.cluster.local";
const A: &str = "127.0.0.2:8080";
const B: &str = "127.0.0.3:8080";
const C: &str = "127.0.0.4:8080";

/// A one-service mesh: a VIP listener, its EDS cluster and `backends`.
fn echo_mesh(server: &AdsServer, version: &str, backends: &[(&str, u32)]) {
    xds_data::serve_one_service(server, version, VIP, CLUSTER, backends);
}

#[test]
fn endpoint_updates_under_live_traffic_take_effect_by_the_ack() {
    if !privileged("endpoint_updates_under_live_traffic_take_effect_by_the_ack") {
        return;
    }
    let topo = Topology::new("xds-update");
    let _backends = topo.serve(&[A, B, C], false);
    let server = AdsServer::start().unwrap();
    echo_mesh(&server, "1", &[(A, 1), (B, 1)]);
    let agent = topo.start_agent_xds(server.addr(), &["--xds-protocol", "sotw"]);
    server.wait_for_ack(ads::ENDPOINT_TYPE, "1", WAIT).unwrap();

    // Connections that stay open across the update.
    let held = 20;
    let long_lived =
        topo.client_in_background(VIP, held, &["--concurrency", "20", "--hold-ms", "3000"]);
    // The precondition: all of them open, some through A, when the update
    // arrives; otherwise "established connections survive it" tests nothing.
    let echo = [
        ("destination_service", "echo.test.svc.cluster.local"),
        ("direction", "outbound"),
    ];
    let active = |m: &Metrics, backend: Option<&str>| {
        let mut labels = echo.to_vec();
        labels.extend(backend.map(|b| ("destination_backend", b)));
        m.value("kmesh_tcp_connections_active", &labels)
    };
    let open = agent.metrics_when(|m| active(m, None) == held as f64);
    assert_eq!(
        active(&open, None),
        held as f64,
        "the long-lived connections were not all open before the update:\n{}",
        open.0
    );
    assert!(
        active(&open, Some(A)) >= 1.0,
        "none of them to A, the backend the update removes:\n{}",
        open.0
    );

    // A leaves, C arrives with three times B's weight.
    server.set(
        ads::ENDPOINT_TYPE,
        "2",
        vec![endpoints(CLUSTER, &[(B, 1), (C, 3)])],
    );
    let ack = server.wait_for_ack(ads::ENDPOINT_TYPE, "2", WAIT).unwrap();
    let log = server.log();
    let push = log.answers(&ack).expect("the response the ACK answers");
    eprintln!(
        "endpoint update: pushed -> applied in the kernel -> ACKed in {:?}",
        ack.at.duration_since(push.at)
    );
    // The first connections after the ACK already follow the new weights.
    let n = 800;
    let report = topo.client(VIP, n, &["--concurrency", "4"]);
    assert_eq!(report.ok, n, "failures: {:?}", report.failures);
    assert_eq!(report.backends.get(A), None, "{:?}", report.backends);
    assert_share(&report, B, n, 0.25);
    assert_share(&report, C, n, 0.75);

    let held_report = long_lived.report();
    assert_eq!(
        held_report.ok, held,
        "established connections broke: {:?}",
        held_report.failures
    );

    let m = model(&agent);
    let s = service(&m, VIP);
    assert_eq!(s.policy, "weighted");
    assert_eq!(s.backends.len(), 2);

    // The service removed: no longer routed (connections to the VIP go
    // nowhere, as with no mesh).
    server.set(ads::LISTENER_TYPE, "3", vec![]);
    server.wait_for_ack(ads::LISTENER_TYPE, "3", WAIT).unwrap();
    let report = topo.client(VIP, 10, &["--concurrency", "2"]);
    assert_eq!(report.ok, 0, "{:?}", report.backends);
    assert!(model(&agent).services.is_empty());
}

#[test]
fn invalid_resources_are_nacked_and_the_last_good_state_stays() {
    if !privileged("invalid_resources_are_nacked_and_the_last_good_state_stays") {
        return;
    }
    let topo = Topology::new("xds-nack");
    let _backends = topo.serve(&[A, B], false);
    let server = AdsServer::start().unwrap();
    echo_mesh(&server, "1", &[(A, 1)]);
    let agent = topo.start_agent_xds(server.addr(), &["--xds-protocol", "sotw"]);
    server.wait_for_ack(ads::ENDPOINT_TYPE, "1", WAIT).unwrap();

    // An endpoint of weight 0 is invalid in Envoy: NACK, version 1 stays.
    server.set(ads::ENDPOINT_TYPE, "2", vec![endpoints(CLUSTER, &[(B, 0)])]);
    let message = server.wait_for_nack(ads::ENDPOINT_TYPE, WAIT).unwrap();
    assert!(
        message.contains(CLUSTER) && message.contains("at least 1"),
        "{message}"
    );
    let nack = server.log().nack(ads::ENDPOINT_TYPE).cloned().unwrap();
    assert_eq!(nack.version_info, "1", "a NACK names the version in force");
    let report = topo.client(VIP, 50, &["--concurrency", "2"]);
    assert_eq!(report.backends.get(A), Some(&50), "{:?}", report.backends);
    let m = model(&agent);
    assert_eq!(m.rejected.len(), 1, "{:?}", m.rejected);
    assert_eq!(m.rejected[0].name, CLUSTER);
    assert_eq!(m.source.xds.as_ref().unwrap().nacks, 1);

    // Hostile pushes: a type nobody asked for, bytes that do not decode,
    // and the same listener twice.
    server.push_raw(DiscoveryResponse {
        version_info: "x".into(),
        type_url: "type.googleapis.com/istio.workload.Address".into(),
        ..Default::default()
    });
    server
        .wait_for(
            |log| {
                log.nack("type.googleapis.com/istio.workload.Address")
                    .map(|_| ())
            },
            WAIT,
        )
        .unwrap();
    server.push_raw(DiscoveryResponse {
        version_info: "garbage".into(),
        type_url: ads::CLUSTER_TYPE.into(),
        resources: vec![Any {
            type_url: ads::CLUSTER_TYPE.into(),
            value: vec![0x0a, 0xff, 0xff, 0xff],
        }],
        ..Default::default()
    });
    server
        .wait_for(
            |log| {
                log.nacks(ads::CLUSTER_TYPE)
                    .find(|r| {
                        r.error
                            .as_ref()
                            .is_some_and(|e| e.message.contains("decode"))
                    })
                    .map(|_| ())
            },
            WAIT,
        )
        .unwrap();
    let twice = vip_listener(VIP, CLUSTER);
    server.set(ads::LISTENER_TYPE, "dup", vec![twice.clone(), twice]);
    let message = server.wait_for_nack(ads::LISTENER_TYPE, WAIT).unwrap();
    assert!(message.contains("more than once"), "{message}");
    let report = topo.client(VIP, 20, &["--concurrency", "2"]);
    assert_eq!(
        report.backends.get(A),
        Some(&20),
        "routing survived: {:?}",
        report.backends
    );

    // Valid but unroutable: a listener to a cluster that does not exist is
    // ACKed and reported, and a 150 000-endpoint assignment (a 4.5 MB
    // message, above gRPC's 4 MiB default) keeps the 256 the kernel holds.
    let many: Vec<String> = (0..150_000u32)
        .map(|i| {
            format!(
                "127.{}.{}.{}:8080",
                1 + i / 62_500,
                i / 250 % 250,
                i % 250 + 1
            )
        })
        .collect();
    let many: Vec<(&str, u32)> = many.iter().map(|a| (a.as_str(), 1)).collect();
    server.set(
        ads::CLUSTER_TYPE,
        "4",
        vec![eds_cluster(CLUSTER, LbPolicy::Random)],
    );
    server.set(ads::ENDPOINT_TYPE, "4", vec![endpoints(CLUSTER, &many)]);
    server.set(
        ads::LISTENER_TYPE,
        "4",
        vec![
            vip_listener(VIP, CLUSTER),
            vip_listener("198.18.0.21:80", "no-such-cluster"),
        ],
    );
    server.wait_for_ack(ads::LISTENER_TYPE, "4", WAIT).unwrap();
    server.wait_for_ack(ads::ENDPOINT_TYPE, "4", WAIT).unwrap();
    let m = model(&agent);
    assert_eq!(service(&m, VIP).backends.len(), 256);
    let said = |needle: &str| m.findings.iter().any(|f| f.message.contains(needle));
    assert!(said("does not exist"), "{:?}", m.findings);
    assert!(said("heaviest are kept"), "{:?}", m.findings);
    assert!(
        m.rejected.is_empty(),
        "valid updates clear refusals: {:?}",
        m.rejected
    );
}

#[test]
fn a_restarted_server_is_reconnected_and_routing_carries_on_meanwhile() {
    if !privileged("a_restarted_server_is_reconnected_and_routing_carries_on_meanwhile") {
        return;
    }
    let topo = Topology::new("xds-restart");
    let _backends = topo.serve(&[A, B], false);
    let mut server = AdsServer::start().unwrap();
    let addr = server.addr();
    echo_mesh(&server, "1", &[(A, 1)]);
    let agent = topo.start_agent_xds(addr, &["--xds-protocol", "sotw"]);
    server.wait_for_ack(ads::ENDPOINT_TYPE, "1", WAIT).unwrap();

    server.stop();
    // istiod is gone: the agent routes by what it has.
    let report = topo.client(VIP, 30, &["--concurrency", "2"]);
    assert_eq!(report.backends.get(A), Some(&30), "{:?}", report.backends);

    // A new istiod with newer state: the agent reconnects (with backoff)
    // and takes it.
    let server = AdsServer::start_on(addr).unwrap();
    echo_mesh(&server, "2", &[(B, 1)]);
    server
        .wait_for_ack(ads::ENDPOINT_TYPE, "2", Duration::from_secs(30))
        .unwrap();
    let report = topo.client(VIP, 30, &["--concurrency", "2"]);
    assert_eq!(report.backends.get(B), Some(&30), "{:?}", report.backends);
    let xds = model(&agent).source.xds.unwrap();
    assert_eq!(xds.connects, 2);
    assert!(agent.log().contains("xDS stream ended"), "{}", agent.log());
}

#[test]
fn tls_and_a_rotating_token_as_istiod_15012_wants() {
    if !privileged("tls_and_a_rotating_token_as_istiod_15012_wants") {
        return;
    }
    let topo = Topology::new("xds-tls");
    let _backends = topo.serve(&[A], false);
    let (ca_pem, identity) = ads::test_pki("istiod.istio-system.svc").unwrap();
    let mut server = AdsServer::start_with(
        "127.0.0.1:0".parse().unwrap(),
        AdsOptions {
            require_token: Some("token-one".into()),
            tls: Some(identity),
        },
    )
    .unwrap();
    echo_mesh(&server, "1", &[(A, 1)]);
    let ca = topo.workdir.join("root-cert.pem");
    let token = topo.workdir.join("istio-token");
    std::fs::write(&ca, ca_pem).unwrap();
    std::fs::write(&token, "token-one\n").unwrap();
    let (ca_arg, token_arg) = (ca.display().to_string(), token.display().to_string());
    let agent = topo.start_agent_xds(
        server.addr(),
        &[
            "--xds-protocol",
            "sotw",
            "--xds-ca-file",
            &ca_arg,
            "--xds-server-name",
            "istiod.istio-system.svc",
            "--xds-token-file",
            &token_arg,
        ],
    );
    server.wait_for_ack(ads::ENDPOINT_TYPE, "1", WAIT).unwrap();
    assert!(model(&agent).source.location.starts_with("https://"));
    let report = topo.client(VIP, 20, &["--concurrency", "2"]);
    assert_eq!(report.backends.get(A), Some(&20), "{:?}", report.backends);

    // The token rotates while istiod restarts (which then takes only the
    // new one): the agent reads the file again when it reconnects.
    std::fs::write(&token, "token-two\n").unwrap();
    let mut rotated = server.options().clone();
    rotated.require_token = Some("token-two".into());
    server.stop();
    let server = AdsServer::start_with(server.addr(), rotated).unwrap();
    echo_mesh(&server, "2", &[(A, 1)]);
    server
        .wait_for_ack(ads::ENDPOINT_TYPE, "2", Duration::from_secs(30))
        .unwrap();
    assert_eq!(server.rejected(), 0);
}

#[test]
fn an_envoy_resource_file_routes_like_ads() {
    if !privileged("an_envoy_resource_file_routes_like_ads") {
        return;
    }
    let topo = Topology::new("xds-file");
    let _backends = topo.serve(&[A, B], false);
    // The bootstrap form: a static cluster with weights, a VIP listener.
    let config = r#"
static_resources:
  listeners:
  - name: echo
    address: { socket_address: { address: 198.18.0.20, port_value: 80 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: echo
          cluster: echo
  clusters:
  - name: echo
    type: STATIC
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.2, port_value: 8080 } } }
        - endpoint: { address: { socket_address: { address: 127.0.0.3, port_value: 8080 } } }
"#;
    let agent = topo.start_agent(config);
    let report = topo.client(VIP, 100, &["--concurrency", "2"]);
    assert_eq!(
        report.backends.get(A),
        Some(&50),
        "round robin: {:?}",
        report.backends
    );
    assert_eq!(
        report.backends.get(B),
        Some(&50),
        "round robin: {:?}",
        report.backends
    );
    let m = model(&agent);
    assert_eq!(m.source.kind, "file");
    let s = service(&m, VIP);
    assert_eq!(s.policy, "round_robin");
    assert_eq!(s.resources[0].kind, "listener");
}
