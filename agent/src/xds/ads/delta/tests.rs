//! The delta state machine with Envoy's four types (the ambient store's
//! rules are tested in `ambient/delta/tests.rs`).
use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                Cluster,
                cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig},
            },
            core::v3::{Address, SocketAddress, address, socket_address},
            endpoint::v3::{
                ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
            },
            listener::v3::{Filter, FilterChain, Listener, filter},
        },
        extensions::filters::network::http_connection_manager::v3::{
            HttpConnectionManager, Rds, http_connection_manager,
        },
    },
    google::protobuf::UInt32Value,
};
use prost::{Message, Name};

use super::*;
use crate::xds::{
    ads::store::{CLUSTER_URL, ENDPOINTS_URL, ENVOY_TYPES, LISTENER_URL, ROUTE_URL},
    resources::ResourceSet,
};

fn any<T: Message + Name>(m: &T) -> Any {
    Any {
        type_url: T::type_url(),
        value: m.encode_to_vec(),
    }
}

fn res<T: Message + Name>(name: &str, version: &str, m: &T) -> Resource {
    Resource {
        name: name.into(),
        version: version.into(),
        resource: Some(any(m)),
        ..Default::default()
    }
}

fn eds_cluster(name: &str) -> Resource {
    res(
        name,
        "1",
        &Cluster {
            name: name.into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig {
                service_name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
}

fn cla(name: &str, version: &str, ip: &str, weight: u32) -> Resource {
    let ep = LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: ip.into(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(8080)),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        load_balancing_weight: Some(UInt32Value { value: weight }),
        ..Default::default()
    };
    res(
        name,
        version,
        &ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![ep],
                ..Default::default()
            }],
            ..Default::default()
        },
    )
}

fn rds_listener(name: &str, route: &str) -> Resource {
    let hcm = HttpConnectionManager {
        stat_prefix: "h".into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            route_config_name: route.into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    res(
        name,
        "1",
        &Listener {
            name: name.into(),
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: "0.0.0.0".into(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(80)),
                    ..Default::default()
                })),
            }),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "hcm".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
                }],
                ..Default::default()
            }],
            ..Default::default()
        },
    )
}

fn response(
    url: &str,
    nonce: &str,
    resources: Vec<Resource>,
    removed: &[&str],
) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: url.into(),
        nonce: nonce.into(),
        resources,
        removed_resources: removed.iter().map(|s| s.to_string()).collect(),
        system_version_info: "istiod".into(),
        ..Default::default()
    }
}

fn envoy() -> DeltaState<ResourceSet> {
    DeltaState::new(ResourceSet::default(), &ENVOY_TYPES)
}

fn urls(requests: &[DeltaDiscoveryRequest]) -> Vec<&str> {
    requests.iter().map(|r| r.type_url.as_str()).collect()
}

#[test]
fn wildcard_types_open_the_stream_and_named_ones_follow_what_they_name() {
    let mut st = envoy();
    let first = st.initial_requests();
    assert_eq!(urls(&first), [CLUSTER_URL, LISTENER_URL]);
    assert!(
        first.iter().all(
            |r| r.resource_names_subscribe.is_empty() && r.initial_resource_versions.is_empty()
        )
    );
    assert!(!st.synced());
    let h = st.handle(&response(
        CLUSTER_URL,
        "c1",
        vec![eds_cluster("a"), eds_cluster("b")],
        &[],
    ));
    assert!(h.errors.is_empty() && h.changed());
    assert_eq!(urls(&h.requests), [CLUSTER_URL, ENDPOINTS_URL]);
    assert_eq!(h.requests[0].response_nonce, "c1");
    assert!(h.requests[0].error_detail.is_none());
    assert_eq!(h.requests[1].resource_names_subscribe, ["a", "b"]);
    assert!(h.requests[1].response_nonce.is_empty());
    assert!(!st.synced(), "listeners and endpoints have not answered");
    let h = st.handle(&response(
        LISTENER_URL,
        "l1",
        vec![rds_listener("0.0.0.0_80", "80")],
        &[],
    ));
    assert_eq!(urls(&h.requests), [LISTENER_URL, ROUTE_URL]);
    assert_eq!(h.requests[1].resource_names_subscribe, ["80"]);
    st.handle(&response(
        ENDPOINTS_URL,
        "e1",
        vec![cla("a", "1", "10.0.0.1", 1)],
        &[],
    ));
    assert!(!st.synced(), "routes have not answered");
    // An endpoints response names nothing new: no subscription request.
    let h = st.handle(&response(ROUTE_URL, "r1", vec![], &[]));
    assert_eq!(urls(&h.requests), [ROUTE_URL]);
    assert!(st.synced());
    // A cluster removed: its assignment is unsubscribed and leaves at once.
    let h = st.handle(&response(CLUSTER_URL, "c2", vec![], &["a"]));
    assert_eq!(urls(&h.requests), [CLUSTER_URL, ENDPOINTS_URL]);
    assert_eq!(h.requests[1].resource_names_unsubscribe, ["a"]);
    assert!(h.requests[1].resource_names_subscribe.is_empty());
    assert!(st.resources.endpoints.is_empty());
    let gone: Vec<(&str, &str)> = h
        .undo
        .iter()
        .map(|u| (u.type_url, u.name.as_str()))
        .collect();
    assert_eq!(gone, [(CLUSTER_URL, "a"), (ENDPOINTS_URL, "a")]);
}

#[test]
fn a_nack_keeps_the_last_good_version_of_that_resource_only() {
    let mut st = envoy();
    st.initial_requests();
    st.handle(&response(
        CLUSTER_URL,
        "c1",
        vec![eds_cluster("a"), eds_cluster("b")],
        &[],
    ));
    st.handle(&response(
        ENDPOINTS_URL,
        "e1",
        vec![cla("a", "1", "10.0.0.1", 1), cla("b", "1", "10.0.0.2", 1)],
        &[],
    ));
    // b's weight 0 is refused (as Envoy refuses it); a's update applies.
    let h = st.handle(&response(
        ENDPOINTS_URL,
        "e2",
        vec![cla("a", "2", "10.0.0.11", 1), cla("b", "2", "10.0.0.12", 0)],
        &[],
    ));
    assert_eq!(h.errors.len(), 1);
    assert_eq!(h.errors[0].name, "b");
    let detail = h.requests[0].error_detail.clone().unwrap();
    assert_eq!(detail.code, INVALID_ARGUMENT);
    assert!(
        detail.message.contains("\"b\"") && detail.message.contains("at least 1"),
        "{}",
        detail.message
    );
    assert_eq!(h.requests[0].response_nonce, "e2");
    assert_eq!(st.resources.endpoints["a"].version, "2");
    assert_eq!(st.resources.endpoints["b"].version, "1");
    assert_eq!(st.resources.rejected.len(), 1);
    assert_eq!(st.resources.rejected[0].kind, ResourceType::Endpoints);
    // A reconnect offers what it holds, but not the refused name, so the
    // server sends it again.
    let again = st.initial_requests();
    assert_eq!(urls(&again), [CLUSTER_URL, ENDPOINTS_URL, LISTENER_URL]);
    assert_eq!(again[1].resource_names_subscribe, ["a", "b"]);
    let held: Vec<(&String, &String)> = again[1].initial_resource_versions.iter().collect();
    assert_eq!(held, [(&"a".to_string(), &"2".to_string())]);
    assert_eq!(again[0].initial_resource_versions.len(), 2);
    assert!(!st.synced());
    // A good version clears the refusal.
    st.handle(&response(
        ENDPOINTS_URL,
        "e3",
        vec![cla("b", "3", "10.0.0.12", 2)],
        &[],
    ));
    assert!(st.resources.rejected.is_empty());
}

#[test]
fn removals_of_names_not_held_are_ignored_as_envoy_ignores_them() {
    let mut st = envoy();
    st.initial_requests();
    st.handle(&response(CLUSTER_URL, "c1", vec![eds_cluster("a")], &[]));
    let h = st.handle(&response(CLUSTER_URL, "c2", vec![], &["never-sent"]));
    assert!(h.errors.is_empty() && !h.changed());
    assert!(h.requests[0].error_detail.is_none());
    assert_eq!(urls(&h.requests), [CLUSTER_URL]);
    assert!(st.resources.clusters.contains_key("a"));
}

#[test]
fn a_resource_under_another_name_or_twice_is_refused() {
    let mut st = envoy();
    st.initial_requests();
    let mut renamed = eds_cluster("a");
    renamed.name = "b".into();
    let h = st.handle(&response(
        CLUSTER_URL,
        "c1",
        vec![
            renamed,
            eds_cluster("c"),
            eds_cluster("c"),
            eds_cluster("d"),
        ],
        &[],
    ));
    let names: Vec<&str> = h.errors.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["b", "c"]);
    assert!(
        h.errors[0].reason.contains("names itself"),
        "{}",
        h.errors[0].reason
    );
    let held: Vec<&String> = st.resources.clusters.keys().collect();
    assert_eq!(held, ["d"]);
}

#[test]
fn an_update_the_kernel_refuses_goes_back_and_is_nacked() {
    let mut st = envoy();
    st.initial_requests();
    st.handle(&response(CLUSTER_URL, "c1", vec![eds_cluster("a")], &[]));
    st.handle(&response(
        ENDPOINTS_URL,
        "e1",
        vec![cla("a", "1", "10.0.0.1", 1)],
        &[],
    ));
    let h = st.handle(&response(CLUSTER_URL, "c2", vec![eds_cluster("b")], &["a"]));
    assert!(!st.resources.clusters.contains_key("a"));
    assert!(st.resources.endpoints.is_empty());
    let nack = st.refuse_applied(h.undo, CLUSTER_URL, "c2", "maps full".into());
    assert_eq!(nack.response_nonce, "c2");
    assert_eq!(nack.error_detail.unwrap().message, "maps full");
    assert!(st.resources.clusters.contains_key("a") && !st.resources.clusters.contains_key("b"));
    assert_eq!(st.resources.endpoints["a"].version, "1");
}

#[test]
fn a_type_not_subscribed_is_nacked_under_its_own_url_and_changes_nothing() {
    let mut st = envoy();
    st.initial_requests();
    let url = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
    let h = st.handle(&response(url, "s1", vec![], &[]));
    assert!(h.type_url.is_none() && !h.changed());
    assert_eq!(h.requests[0].type_url, url);
    assert!(
        h.requests[0]
            .error_detail
            .as_ref()
            .unwrap()
            .message
            .contains("did not subscribe")
    );
}
