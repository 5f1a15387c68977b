//! Writes the seed corpora of the fuzz targets (`seed-*` files, the ones
//! committed) into `fuzz/corpus/<target>/`:
//!
//! - `translate_document`: the Envoy Gateway snapshot of shared/testdata/xds
//!   (each file, and all four as one multi-document YAML), the productpage
//!   config dump, and hand-made files in the other accepted shapes;
//! - `translate_ads`: the same resources and hand-made ones (a `tcp_proxy`
//!   listener, an RDS listener with weighted clusters, EDS and static
//!   clusters), protobuf-encoded with prost in the `records` format.
//!
//! It also writes `translate_document.dict`, the documents' field names,
//! type URLs and enum values for libFuzzer.
//!
//! Every seed is checked to load or decode, and each `translate_ads` seed to
//! translate into a service or an unrouted route, so the fuzzer starts past
//! the decoding.
//!
//!     cargo run --manifest-path fuzz/Cargo.toml -p kmesh-fuzz-input --bin make-seeds [TESTDATA_DIR]
use std::path::{Path, PathBuf};

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{Cluster, cluster},
            core::v3::{Address, SocketAddress, address, socket_address},
            endpoint::v3::{
                ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
            },
            listener::v3::{Filter, FilterChain, Listener, filter},
            route::v3::{
                Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
                route, route_action, route_match, weighted_cluster::ClusterWeight,
            },
        },
        extensions::filters::network::{
            http_connection_manager::v3::{HttpConnectionManager, Rds, http_connection_manager},
            tcp_proxy::v3::{TcpProxy, tcp_proxy},
        },
    },
    google::protobuf::{Any, UInt32Value},
};
use kmesh_agent::{
    model::ProbeSettings,
    xds::{
        self,
        resources::{Resource, ResourceSet, ResourceType},
    },
};
use prost::{Message, Name};
use serde_json::Value;

fn main() {
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let testdata = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| fuzz_dir.join("../../shared/testdata/xds"));
    let corpus = fuzz_dir.join("corpus");
    let docs = corpus.join("translate_document");
    let ads = corpus.join("translate_ads");
    for dir in [&docs, &ads] {
        std::fs::create_dir_all(dir).unwrap();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("seed-")
            {
                std::fs::remove_file(path).unwrap();
            }
        }
    }

    let read = |name: &str| {
        let path = testdata.join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let gateway: Vec<String> = ["clusters", "endpoints", "listeners", "routes"]
        .iter()
        .map(|part| read(&format!("envoy-gateway-weighted.{part}.yaml")))
        .collect();
    let productpage = read("istio-productpage-subset.http_config.json");

    // translate_document: files as the file source reads them.
    let mut documents: Vec<(String, String)> = Vec::new();
    for (part, text) in ["clusters", "endpoints", "listeners", "routes"]
        .iter()
        .zip(&gateway)
    {
        documents.push((format!("seed-envoy-gateway-{part}.yaml"), text.clone()));
    }
    let snapshot = gateway.join("---\n");
    documents.push(("seed-envoy-gateway-snapshot.yaml".into(), snapshot.clone()));
    documents.push((
        "seed-istio-productpage-subset.json".into(),
        productpage.clone(),
    ));
    for (name, text) in HANDMADE_DOCUMENTS {
        documents.push((name.to_string(), text.to_string()));
    }
    // ztunnel dumps, in the two older layouts (hand-written files).
    let layouts = fuzz_dir.join("../agent/testdata/ztunnel");
    for name in [
        "ztunnel-1.21-stores.config_dump.json",
        "ztunnel-1.22-maps.config_dump.json",
    ] {
        let text = std::fs::read_to_string(layouts.join(name)).unwrap();
        documents.push((format!("seed-{name}"), text));
    }
    for (name, text) in &documents {
        let loaded = kmesh_agent::config::load_text(text)
            .unwrap_or_else(|e| panic!("seed {name} does not load: {e}"));
        kmesh_fuzz_input::check_mesh(&loaded.mesh);
        println!(
            "translate_document/{name}: {} bytes, {} services, {} unrouted",
            text.len(),
            loaded.mesh.services.len(),
            loaded.report.unrouted.len()
        );
        std::fs::write(docs.join(name), text).unwrap();
    }

    // The field names, type URLs and enum values of those documents, as a
    // libFuzzer dictionary (scripts/fuzz.sh passes it).
    let mut tokens = std::collections::BTreeSet::new();
    for (_, text) in &documents {
        for value in values_of(text) {
            collect_tokens(&value, &mut tokens);
        }
    }
    let dict: String = tokens
        .iter()
        .map(|t| format!("{}\n", serde_json::to_string(t).unwrap()))
        .collect();
    std::fs::write(fuzz_dir.join("translate_document.dict"), dict).unwrap();
    println!("translate_document.dict: {} tokens", tokens.len());

    // translate_ads: the same resources and hand-made ones, as protobuf.
    let mut sets: Vec<(&str, ResourceSet)> = vec![
        ("seed-envoy-gateway.bin", set_of(&[&snapshot])),
        (
            "seed-istio-productpage-subset.bin",
            set_of(&[&productpage, PRODUCTPAGE_VIP_AND_ENDPOINTS]),
        ),
        (
            "seed-bootstrap-header-routes.bin",
            set_of(&[HANDMADE_DOCUMENTS[1].1]),
        ),
    ];
    sets.push(("seed-tcp-proxy.bin", handmade_tcp()));
    sets.push(("seed-rds-weighted.bin", handmade_rds_weighted()));
    for (name, set) in &sets {
        let bytes = records_of(set);
        check_ads_seed(name, &bytes);
        std::fs::write(ads.join(name), bytes).unwrap();
    }
    // Istio ambient: every Address of the real ztunnel 1.24 dump.
    let dump: Value =
        serde_json::from_str(&read("istio-1.24-ambient-ztunnel.config_dump.json")).unwrap();
    let mut addresses = kmesh_agent::xds::ambient::AddressSet::default();
    kmesh_agent::xds::ambient::dump::read(&dump, "seed", &mut addresses).unwrap();
    let mut bytes = Vec::new();
    for (kind, message) in addresses
        .workloads
        .values()
        .map(|v| (ResourceType::Workload, address_of_workload(&v.resource)))
        .chain(addresses.services.values().map(|v| {
            (
                ResourceType::WorkloadService,
                address_of_service(&v.resource),
            )
        }))
    {
        kmesh_fuzz_input::encode(kind, &prost::Message::encode_to_vec(&message), &mut bytes);
    }
    println!(
        "translate_ads/seed-ztunnel-bookinfo.bin: {} bytes",
        bytes.len()
    );
    std::fs::write(ads.join("seed-ztunnel-bookinfo.bin"), bytes).unwrap();
    // One resource of each type alone, for short starting points.
    let tcp = handmade_tcp();
    let singles = [
        (
            "seed-one-cluster.bin",
            ResourceType::Cluster,
            any_of(&tcp.clusters["db"].resource),
        ),
        (
            "seed-one-endpoints.bin",
            ResourceType::Endpoints,
            any_of(&tcp.endpoints["db"].resource),
        ),
        (
            "seed-one-listener.bin",
            ResourceType::Listener,
            any_of(&tcp.listeners["db_5432"].resource),
        ),
        (
            "seed-one-route.bin",
            ResourceType::Route,
            any_of(&handmade_rds_weighted().routes["reviews"].resource),
        ),
    ];
    for (name, kind, any) in singles {
        let mut bytes = Vec::new();
        kmesh_fuzz_input::encode(kind, &any.value, &mut bytes);
        Resource::decode(kind, &any).unwrap_or_else(|e| panic!("seed {name}: {e}"));
        println!("translate_ads/{name}: {} bytes", bytes.len());
        std::fs::write(ads.join(name), bytes).unwrap();
    }
}

fn address_of_workload(
    w: &kmesh_agent::xds::ambient::proto::Workload,
) -> kmesh_agent::xds::ambient::proto::Address {
    use kmesh_agent::xds::ambient::proto::{Address, address};
    Address {
        r#type: Some(address::Type::Workload(Box::new(w.clone()))),
    }
}

fn address_of_service(
    s: &kmesh_agent::xds::ambient::proto::Service,
) -> kmesh_agent::xds::ambient::proto::Address {
    use kmesh_agent::xds::ambient::proto::{Address, address};
    Address {
        r#type: Some(address::Type::Service(Box::new(s.clone()))),
    }
}

/// The values of a JSON or YAML text, as the file source reads them.
fn values_of(text: &str) -> Vec<Value> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        vec![serde_json::from_str(text).unwrap()]
    } else {
        serde_yaml_ng::Deserializer::from_str(text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect()
    }
}

/// Object keys, type URLs and enum-like values (`ROUND_ROBIN`).
fn collect_tokens(value: &Value, tokens: &mut std::collections::BTreeSet<String>) {
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                tokens.insert(k.clone());
                collect_tokens(v, tokens);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_tokens(v, tokens)),
        Value::String(s)
            if s.starts_with("type.googleapis.com/")
                || (s.len() > 1 && s.chars().all(|c| c.is_ascii_uppercase() || c == '_')) =>
        {
            tokens.insert(s.clone());
        }
        _ => {}
    }
}

/// Reads Envoy documents into one set, as the file source does.
fn set_of(texts: &[&str]) -> ResourceSet {
    let mut set = ResourceSet::default();
    for text in texts {
        for value in values_of(text) {
            xds::json::read(&value, "seed", &mut set).unwrap();
        }
    }
    assert!(set.rejected.is_empty(), "{:?}", set.rejected);
    set
}

fn any_of<T: Message + Name>(m: &T) -> Any {
    Any {
        type_url: T::type_url(),
        value: m.encode_to_vec(),
    }
}

/// The set as records, in the order istiod sends the types.
fn records_of(set: &ResourceSet) -> Vec<u8> {
    let mut out = Vec::new();
    let mut put = |kind, value: Vec<u8>| kmesh_fuzz_input::encode(kind, &value, &mut out);
    for c in set.clusters.values() {
        put(ResourceType::Cluster, c.resource.encode_to_vec());
    }
    for e in set.endpoints.values() {
        put(ResourceType::Endpoints, e.resource.encode_to_vec());
    }
    for l in set.listeners.values() {
        put(ResourceType::Listener, l.resource.encode_to_vec());
    }
    for r in set.routes.values() {
        put(ResourceType::Route, r.resource.encode_to_vec());
    }
    out
}

/// Runs a seed the way the `translate_ads` target does and insists that
/// every record is accepted and that a service comes out.
fn check_ads_seed(name: &str, bytes: &[u8]) {
    let mut set = ResourceSet::default();
    let records = kmesh_fuzz_input::records(bytes);
    for r in &records {
        let resource =
            Resource::decode(r.kind, &r.any).unwrap_or_else(|e| panic!("seed {name}: {e}"));
        set.insert(resource, "seed")
            .unwrap_or_else(|e| panic!("seed {name}: {e}"));
    }
    let (mesh, report, _) = xds::mesh_of(&set, ProbeSettings::default());
    kmesh_fuzz_input::check_mesh(&mesh);
    // A gateway's `*` routes lead to no address: unrouted, but translated.
    assert!(
        !mesh.services.is_empty() || !report.unrouted.is_empty(),
        "seed {name} translates to no service or route"
    );
    println!(
        "translate_ads/{name}: {} bytes, {} resources, {} services, {} unrouted",
        bytes.len(),
        records.len(),
        mesh.services.len(),
        report.unrouted.len()
    );
}

fn socket(ip: &str, port: u32) -> Option<Address> {
    Some(Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    })
}

fn load_assignment(cluster: &str, endpoints: &[(&str, u32, u32)]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: endpoints
                .iter()
                .map(|&(ip, port, weight)| LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: socket(ip, port),
                        ..Default::default()
                    })),
                    load_balancing_weight: Some(UInt32Value { value: weight }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn cluster(name: &str, kind: cluster::DiscoveryType, lb: cluster::LbPolicy) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(kind as i32)),
        lb_policy: lb as i32,
        ..Default::default()
    }
}

fn listener(name: &str, ip: &str, port: u32, filter: Filter) -> Listener {
    Listener {
        name: name.into(),
        address: socket(ip, port),
        filter_chains: vec![FilterChain {
            filters: vec![filter],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn typed_filter<T: Message + Name>(name: &str, config: &T) -> Filter {
    Filter {
        name: name.into(),
        config_type: Some(filter::ConfigType::TypedConfig(any_of(config))),
    }
}

fn insert(set: &mut ResourceSet, resource: Resource) {
    resource.validate().unwrap();
    set.insert(resource, "seed").unwrap();
}

/// Two `tcp_proxy` listeners: one to an EDS cluster with weighted
/// endpoints, one splitting 1:3 between two static clusters (one IPv6).
fn handmade_tcp() -> ResourceSet {
    use cluster::{DiscoveryType, LbPolicy};
    let mut set = ResourceSet::default();
    insert(
        &mut set,
        Resource::Cluster(Box::new(cluster(
            "db",
            DiscoveryType::Eds,
            LbPolicy::RoundRobin,
        ))),
    );
    insert(
        &mut set,
        Resource::Endpoints(Box::new(load_assignment(
            "db",
            &[("10.1.0.1", 5432, 1), ("10.1.0.2", 5432, 3)],
        ))),
    );
    for (name, ip) in [("cache-a", "10.2.0.1"), ("cache-b", "10.2.0.2")] {
        let mut c = cluster(name, DiscoveryType::Static, LbPolicy::LeastRequest);
        c.load_assignment = Some(load_assignment(name, &[(ip, 6379, 1)]));
        insert(&mut set, Resource::Cluster(Box::new(c)));
    }
    let mut v6 = cluster("cache-v6", DiscoveryType::Static, LbPolicy::Random);
    v6.load_assignment = Some(load_assignment("cache-v6", &[("fd00::2:1", 6379, 1)]));
    insert(&mut set, Resource::Cluster(Box::new(v6)));
    let db = TcpProxy {
        stat_prefix: "db".into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster("db".into())),
        ..Default::default()
    };
    insert(
        &mut set,
        Resource::Listener(Box::new(listener(
            "db_5432",
            "10.96.0.10",
            5432,
            typed_filter("envoy.filters.network.tcp_proxy", &db),
        ))),
    );
    let split = |clusters: &[(&str, u32)]| TcpProxy {
        stat_prefix: "cache".into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::WeightedClusters(
            tcp_proxy::WeightedCluster {
                clusters: clusters
                    .iter()
                    .map(
                        |&(name, weight)| tcp_proxy::weighted_cluster::ClusterWeight {
                            name: name.into(),
                            weight,
                            ..Default::default()
                        },
                    )
                    .collect(),
            },
        )),
        ..Default::default()
    };
    insert(
        &mut set,
        Resource::Listener(Box::new(listener(
            "cache_6379",
            "10.96.0.11",
            6379,
            typed_filter(
                "envoy.filters.network.tcp_proxy",
                &split(&[("cache-a", 1), ("cache-b", 3)]),
            ),
        ))),
    );
    insert(
        &mut set,
        Resource::Listener(Box::new(listener(
            "cache-v6_6379",
            "fd00::96:11",
            6379,
            typed_filter(
                "envoy.filters.network.tcp_proxy",
                &split(&[("cache-v6", 1)]),
            ),
        ))),
    );
    set
}

/// A VIP listener whose HTTP connection manager takes route `reviews` over
/// RDS: 90/10 between two EDS clusters, whose endpoints come over EDS.
fn handmade_rds_weighted() -> ResourceSet {
    use cluster::{DiscoveryType, LbPolicy};
    let mut set = ResourceSet::default();
    for (name, endpoints) in [
        (
            "reviews-v1",
            &[("10.3.0.1", 9080, 1), ("10.3.0.2", 9080, 1)][..],
        ),
        ("reviews-v2", &[("10.3.1.1", 9080, 2)][..]),
    ] {
        insert(
            &mut set,
            Resource::Cluster(Box::new(cluster(
                name,
                DiscoveryType::Eds,
                LbPolicy::RoundRobin,
            ))),
        );
        insert(
            &mut set,
            Resource::Endpoints(Box::new(load_assignment(name, endpoints))),
        );
    }
    let hcm = HttpConnectionManager {
        stat_prefix: "reviews".into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            route_config_name: "reviews".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    insert(
        &mut set,
        Resource::Listener(Box::new(listener(
            "10.96.0.30_9080",
            "10.96.0.30",
            9080,
            typed_filter("envoy.filters.network.http_connection_manager", &hcm),
        ))),
    );
    let weighted = WeightedCluster {
        clusters: [("reviews-v1", 90), ("reviews-v2", 10)]
            .iter()
            .map(|&(name, w)| ClusterWeight {
                name: name.into(),
                weight: Some(UInt32Value { value: w }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let route = RouteConfiguration {
        name: "reviews".into(),
        virtual_hosts: vec![VirtualHost {
            name: "reviews.default.svc.cluster.local:9080".into(),
            domains: vec!["reviews.default.svc.cluster.local".into(), "*".into()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(
                        weighted,
                    )),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    insert(&mut set, Resource::Route(Box::new(route)));
    set
}

/// The productpage dump has the route and a subset cluster; this adds a VIP
/// listener over RDS, the cluster the route names and the endpoints of both,
/// so a service comes out.
const PRODUCTPAGE_VIP_AND_ENDPOINTS: &str = r#"
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: 10.96.0.20_80
  address: { socket_address: { address: 10.96.0.20, port_value: 80 } }
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: http
        rds: { route_config_name: http.8080 }
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: outbound|9080||productpage.default.svc.cluster.local
  type: EDS
  eds_cluster_config: { eds_config: { ads: {} } }
- "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
  cluster_name: outbound|9080||productpage.default.svc.cluster.local
  endpoints:
  - lb_endpoints:
    - endpoint: { address: { socket_address: { address: 10.4.0.1, port_value: 9080 } } }
    - endpoint: { address: { socket_address: { address: 10.4.0.2, port_value: 9080 } } }
- "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
  cluster_name: outbound|9080|v1|productpage.default.svc.cluster.local
  endpoints:
  - lb_endpoints:
    - endpoint: { address: { socket_address: { address: 10.4.0.1, port_value: 9080 } } }
"#;

const HANDMADE_DOCUMENTS: [(&str, &str); 4] = [
    (
        "seed-compact.yaml",
        r#"probe:
  report_interval_seconds: 2.5
services:
  - name: reviews
    vip: 198.18.0.10:9080
    policy: weighted
    backends:
      - address: 127.0.0.1:40001
        weight: 80
      - address: 127.0.0.1:40002
        weight: 20
  - name: ratings
    vip: "[fd00::10]:80"
    policy: round_robin
    backends:
      - address: "[::1]:8080"
"#,
    ),
    (
        "seed-bootstrap.yaml",
        r#"static_resources:
  listeners:
  - name: reviews
    address: { socket_address: { address: 10.96.0.30, port_value: 9080 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: reviews
          route_config:
            name: reviews
            virtual_hosts:
            - name: reviews.default.svc.cluster.local:9080
              domains: ["*"]
              routes:
              - match: { prefix: /, headers: [{ name: end-user, string_match: { exact: jason } }] }
                route: { cluster: reviews-v2 }
              - match: { prefix: / }
                route:
                  weighted_clusters:
                    clusters:
                    - { name: reviews-v1, weight: 9000 }
                    - { name: reviews-v3, weight: 1000 }
  - address: { socket_address: { address: 10.96.0.31, port_value: 5432 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: db
          weighted_clusters:
            clusters:
            - { name: reviews-v1, weight: 1 }
            - { name: reviews-v2, weight: 2 }
  clusters:
  - name: reviews-v1
    type: STATIC
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: reviews-v1
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 10.1.0.1, port_value: 9080 } } }
        - endpoint: { address: { socket_address: { address: 10.1.0.2, port_value: 9080 } } }
          health_status: UNHEALTHY
        - endpoint: { address: { socket_address: { address: reviews.example, port_value: 9080 } } }
  - name: reviews-v2
    type: STATIC
    load_assignment:
      cluster_name: reviews-v2
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 10.2.0.1, port_value: 9080 } } }
  - name: reviews-v3
    type: STATIC
    load_assignment:
      cluster_name: reviews-v3
      endpoints:
      - priority: 0
        lb_endpoints:
        - endpoint: { address: { socket_address: { address: 10.3.0.1, port_value: 9080 } } }
          load_balancing_weight: 3
        - endpoint: { address: { socket_address: { address: 10.3.0.2, port_value: 9080 } } }
      - priority: 1
        lb_endpoints:
        - endpoint: { address: { socket_address: { address: 10.3.9.9, port_value: 9080 } } }
"#,
    ),
    (
        "seed-discovery-response.json",
        r#"{"version_info": "7", "resources": [
  {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "db", "type": "EDS",
   "eds_cluster_config": {"eds_config": {"ads": {}}}, "lb_policy": "LEAST_REQUEST",
   "circuit_breakers": {"thresholds": [{"max_connections": 100}]}},
  {"@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment", "cluster_name": "db",
   "endpoints": [{"locality": {"zone": "a"}, "load_balancing_weight": 2, "lb_endpoints": [
     {"endpoint": {"address": {"socket_address": {"address": "10.5.0.1", "port_value": 5432}}}},
     {"endpoint": {"address": {"socket_address": {"address": "::ffff:10.5.0.2", "port_value": 5432}}}, "health_status": "DRAINING"}]},
    {"locality": {"zone": "b"}, "load_balancing_weight": 1, "lb_endpoints": [
     {"endpoint": {"address": {"socket_address": {"address": "10.5.1.1", "port_value": 5432}}}, "load_balancing_weight": 5}]}]},
  {"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "0.0.0.0_5432",
   "address": {"socket_address": {"address": "0.0.0.0", "port_value": 5432}},
   "filter_chains": [{"filter_chain_match": {"prefix_ranges": [{"address_prefix": "10.96.0.40", "prefix_len": 32}]},
     "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
       "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
       "stat_prefix": "db", "cluster": "db"}}]}]}
]}
"#,
    ),
    (
        "seed-config-dump.json",
        r#"{"configs": [
  {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
   "dynamic_active_clusters": [{"version_info": "3", "cluster": {
     "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "outbound|80||web",
     "type": "STATIC", "load_assignment": {"cluster_name": "outbound|80||web", "endpoints": [{"lb_endpoints": [
       {"endpoint": {"address": {"socket_address": {"address": "fd00::5:1", "port_value": 8080}}}}]}]}}}]},
  {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
   "dynamic_listeners": [
    {"name": "0.0.0.0_80", "active_state": {"version_info": "3", "listener": {
      "@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "0.0.0.0_80",
      "address": {"socket_address": {"address": "0.0.0.0", "port_value": 80}},
      "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "http", "rds": {"route_config_name": "80"}}}]}]}}},
    {"name": "broken", "error_state": {"details": "refused by Envoy"}}]},
  {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
   "dynamic_route_configs": [{"version_info": "3", "route_config": {
     "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration", "name": "80",
     "virtual_hosts": [{"name": "web:80", "domains": ["web", "web.default.svc.cluster.local", "fd00::96:5", "[fd00::96:5]:80"],
       "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "outbound|80||web"}}]}]}}]}
]}
"#,
    ),
];
