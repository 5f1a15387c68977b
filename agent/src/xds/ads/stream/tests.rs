use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                Cluster,
                cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig},
            },
            endpoint::v3::ClusterLoadAssignment,
            listener::v3::{Filter, FilterChain, Listener, filter},
        },
        extensions::filters::network::http_connection_manager::v3::{
            HttpConnectionManager, Rds, http_connection_manager,
        },
        service::discovery::v3::DiscoveryResponse,
    },
    google::protobuf::Any,
};
use prost::{Message, Name};

use super::*;

fn any<T: Message + Name>(m: &T) -> Any {
    Any {
        type_url: T::type_url(),
        value: m.encode_to_vec(),
    }
}

fn eds_cluster(name: &str) -> Any {
    any(&Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            service_name: format!("{name}-eds"),
            eds_config: None,
        }),
        ..Default::default()
    })
}

fn rds_listener(name: &str, route: &str) -> Any {
    let hcm = HttpConnectionManager {
        stat_prefix: "http".into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            route_config_name: route.into(),
            config_source: None,
        })),
        ..Default::default()
    };
    any(&Listener {
        name: name.into(),
        address: Some(envoy_types::pb::envoy::config::core::v3::Address {
            address: Some(
                envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(
                    envoy_types::pb::envoy::config::core::v3::SocketAddress {
                        address: "0.0.0.0".into(),
                        port_specifier: Some(
                            envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(80),
                        ),
                        ..Default::default()
                    },
                ),
            ),
        }),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn response(
    kind: ResourceType,
    version: &str,
    nonce: &str,
    resources: Vec<Any>,
) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.into(),
        nonce: nonce.into(),
        type_url: kind.type_url(),
        resources,
        ..Default::default()
    }
}

#[test]
fn a_stream_subscribes_by_name_acks_and_syncs() {
    let mut s = StreamState::new();
    let initial = s.initial_requests();
    assert_eq!(initial.len(), 2);
    assert!(
        initial
            .iter()
            .all(|r| r.resource_names.is_empty() && r.response_nonce.is_empty())
    );
    assert!(!s.synced());

    let h = s.handle(&response(
        ResourceType::Cluster,
        "c1",
        "n1",
        vec![eds_cluster("a")],
    ));
    assert!(h.errors.is_empty() && h.changed);
    let [ack, eds] = h.requests.as_slice() else {
        panic!("{:?}", h.requests)
    };
    assert_eq!(
        (ack.version_info.as_str(), ack.response_nonce.as_str()),
        ("c1", "n1")
    );
    assert!(ack.error_detail.is_none());
    assert_eq!(eds.type_url, ResourceType::Endpoints.type_url());
    assert_eq!(eds.resource_names, ["a-eds"]);
    assert!(!s.synced(), "listeners and endpoints are still missing");

    let h = s.handle(&response(
        ResourceType::Listener,
        "l1",
        "n2",
        vec![rds_listener("l", "r80")],
    ));
    assert_eq!(h.requests[1].resource_names, ["r80"]);
    let cla = ClusterLoadAssignment {
        cluster_name: "a-eds".into(),
        ..Default::default()
    };
    s.handle(&response(
        ResourceType::Endpoints,
        "e1",
        "n3",
        vec![any(&cla)],
    ));
    assert!(!s.synced(), "routes are still missing");
    let route = envoy_types::pb::envoy::config::route::v3::RouteConfiguration {
        name: "r80".into(),
        ..Default::default()
    };
    let h = s.handle(&response(
        ResourceType::Route,
        "r1",
        "n4",
        vec![any(&route)],
    ));
    assert_eq!(h.requests.len(), 1, "no new subscriptions");
    assert!(s.synced());
    assert_eq!(s.accepted_versions()[&ResourceType::Route], "r1");
}

#[test]
fn a_bad_resource_is_nacked_and_its_last_good_version_stays() {
    let mut s = StreamState::new();
    s.initial_requests();
    s.handle(&response(
        ResourceType::Cluster,
        "1",
        "n1",
        vec![eds_cluster("a"), eds_cluster("b")],
    ));
    // "b" comes back invalid (an endpoint of weight 0); "c" is new.
    let bad = any(&Cluster {
        name: "b".into(),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: "b".into(),
            endpoints: vec![
                envoy_types::pb::envoy::config::endpoint::v3::LocalityLbEndpoints {
                    load_balancing_weight: Some(envoy_types::pb::google::protobuf::UInt32Value {
                        value: 0,
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }),
        ..Default::default()
    });
    let h = s.handle(&response(
        ResourceType::Cluster,
        "2",
        "n2",
        vec![eds_cluster("a"), bad, eds_cluster("c")],
    ));
    let nack = &h.requests[0];
    assert_eq!(
        nack.version_info, "1",
        "a NACK reports the version still in force"
    );
    assert_eq!(nack.response_nonce, "n2");
    let detail = nack.error_detail.as_ref().unwrap();
    assert_eq!(detail.code, INVALID_ARGUMENT);
    assert!(detail.message.contains("\"b\""), "{}", detail.message);
    let clusters: Vec<&String> = s.resources.clusters.keys().collect();
    assert_eq!(clusters, ["a", "b", "c"]);
    assert_eq!(s.resources.clusters["b"].version, "1");
    assert_eq!(s.resources.clusters["c"].version, "2");
    assert_eq!(s.resources.rejected.len(), 1);

    // The next good response clears the refusal and ACKs.
    let h = s.handle(&response(
        ResourceType::Cluster,
        "3",
        "n3",
        vec![eds_cluster("a")],
    ));
    assert!(h.requests[0].error_detail.is_none());
    assert!(s.resources.rejected.is_empty());
    assert_eq!(s.resources.clusters.len(), 1);
    // Endpoints of removed clusters are unsubscribed.
    assert_eq!(h.requests[1].resource_names, ["a-eds"]);
}

#[test]
fn duplicates_unknown_types_and_mismatched_urls_are_refused() {
    let mut s = StreamState::new();
    s.initial_requests();
    let h = s.handle(&response(
        ResourceType::Cluster,
        "1",
        "n1",
        vec![eds_cluster("a"), eds_cluster("a")],
    ));
    assert!(
        h.errors[0].reason.contains("more than once"),
        "{:?}",
        h.errors
    );
    assert!(s.resources.clusters.is_empty(), "neither copy is trusted");

    let h = s.handle(&DiscoveryResponse {
        type_url: "type.googleapis.com/istio.workload.Address".into(),
        nonce: "n2".into(),
        ..Default::default()
    });
    assert!(h.kind.is_none());
    assert_eq!(
        h.requests[0].type_url,
        "type.googleapis.com/istio.workload.Address"
    );
    assert!(h.requests[0].error_detail.is_some());

    let h = s.handle(&response(
        ResourceType::Listener,
        "1",
        "n3",
        vec![eds_cluster("x")],
    ));
    assert!(
        h.errors[0].reason.contains("in a response for"),
        "{:?}",
        h.errors
    );
}

#[test]
fn a_failed_apply_turns_the_ack_into_a_nack() {
    let mut s = StreamState::new();
    s.initial_requests();
    s.handle(&response(ResourceType::Cluster, "1", "n1", vec![]));
    let h = s.handle(&response(
        ResourceType::Cluster,
        "2",
        "n2",
        vec![eds_cluster("a")],
    ));
    let nack = s.refuse_applied(
        ResourceType::Cluster,
        &h.previous_version,
        "services map full".into(),
    );
    assert_eq!(
        (nack.version_info.as_str(), nack.response_nonce.as_str()),
        ("1", "n2")
    );
    assert_eq!(nack.error_detail.unwrap().message, "services map full");
}

#[test]
fn undecodable_resources_are_named_when_their_bytes_allow() {
    let mut s = StreamState::new();
    s.initial_requests();
    let mut garbage = eds_cluster("g");
    garbage.value.extend_from_slice(&[0x18, 0xff]);
    let h = s.handle(&response(ResourceType::Cluster, "1", "n1", vec![garbage]));
    assert_eq!(h.errors[0].name, "g");
    assert!(
        h.errors[0].reason.contains("cannot decode"),
        "{:?}",
        h.errors
    );
}

#[test]
fn a_wildcard_response_with_an_unnameable_resource_is_refused_whole() {
    let mut s = StreamState::new();
    s.initial_requests();
    s.handle(&response(
        ResourceType::Cluster,
        "1",
        "n1",
        vec![eds_cluster("a")],
    ));
    let garbage = Any {
        type_url: Cluster::type_url(),
        value: vec![0x0a, 0xff, 0xff],
    };
    let h = s.handle(&response(
        ResourceType::Cluster,
        "2",
        "n2",
        vec![eds_cluster("b"), garbage],
    ));
    assert_eq!(h.requests[0].version_info, "1");
    assert_eq!(s.resources.rejected.len(), 1);
    let clusters: Vec<&String> = s.resources.clusters.keys().collect();
    assert_eq!(
        clusters,
        ["a"],
        "nothing of the refused response is applied"
    );
}

#[test]
fn error_details_are_bounded() {
    let long = truncate("é".repeat(MAX_ERROR_DETAIL));
    assert!(long.len() <= MAX_ERROR_DETAIL + 4 && long.ends_with(" ..."));
}
