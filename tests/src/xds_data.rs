//! xDS resources for the ADS server: real control-plane dumps read with the
//! agent's own file reader and encoded back to protobuf, and small
//! hand-made resources for update tests.
use std::{collections::BTreeMap, path::Path};

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                Cluster,
                cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy},
            },
            core::v3::{Address, SocketAddress, address, socket_address},
            endpoint::v3::{
                ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
            },
            listener::v3::{Filter, FilterChain, Listener, filter},
        },
        extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy},
    },
    google::protobuf::{Any, UInt32Value},
};
use kmesh_agent::xds::resources::ResourceSet;
use prost::Name;

use crate::ads::{self, AdsServer};

/// Resources of one type, as [`AdsServer::set`] takes them.
pub type Resources = Vec<(String, Any)>;

/// Resources of every type, by type URL.
pub type ResourceMap = BTreeMap<String, Resources>;

/// Every resource of a file (a config dump, a list, ...) by type URL.
pub fn read_file(path: &Path) -> ResourceMap {
    let text = std::fs::read_to_string(path).expect("reading xDS test data");
    let value: serde_json::Value = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).expect("JSON")
    } else {
        panic!("xDS test data must be JSON: {}", path.display());
    };
    let mut set = ResourceSet::default();
    kmesh_agent::xds::json::read(&value, "file", &mut set).expect("readable xDS test data");
    by_type(&set)
}

pub fn by_type(set: &ResourceSet) -> ResourceMap {
    fn pack<M: Name>(
        map: &BTreeMap<String, kmesh_agent::xds::resources::Versioned<M>>,
    ) -> Resources {
        map.iter()
            .map(|(name, v)| ads::resource(name.clone(), &v.resource))
            .collect()
    }
    BTreeMap::from([
        (ads::CLUSTER_TYPE.to_string(), pack(&set.clusters)),
        (ads::ENDPOINT_TYPE.to_string(), pack(&set.endpoints)),
        (ads::LISTENER_TYPE.to_string(), pack(&set.listeners)),
        (ads::ROUTE_TYPE.to_string(), pack(&set.routes)),
    ])
}

/// Serves a one-service mesh at `version`: a listener on `vip`, its EDS
/// cluster and `backends` (address, weight); no routes.
pub fn serve_one_service(
    server: &AdsServer,
    version: &str,
    vip: &str,
    cluster: &str,
    backends: &[(&str, u32)],
) {
    server.set(
        ads::CLUSTER_TYPE,
        version,
        vec![eds_cluster(cluster, LbPolicy::Random)],
    );
    server.set(
        ads::ENDPOINT_TYPE,
        version,
        vec![endpoints(cluster, backends)],
    );
    server.set(
        ads::LISTENER_TYPE,
        version,
        vec![vip_listener(vip, cluster)],
    );
    server.set(ads::ROUTE_TYPE, version, vec![]);
}

/// Serves `resources` at `version` (clusters and endpoints first, as istiod
/// orders a push).
pub fn serve_all(server: &AdsServer, version: &str, resources: &ResourceMap) {
    for t in [
        ads::CLUSTER_TYPE,
        ads::ENDPOINT_TYPE,
        ads::LISTENER_TYPE,
        ads::ROUTE_TYPE,
    ] {
        server.set(t, version, resources.get(t).cloned().unwrap_or_default());
    }
}

fn socket_address(addr: &str) -> Address {
    let sa: std::net::SocketAddr = addr.parse().expect("an IP:port");
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: sa.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                sa.port(),
            ))),
            ..Default::default()
        })),
    }
}

/// An EDS cluster, as istiod makes them.
pub fn eds_cluster(name: &str, lb: LbPolicy) -> (String, Any) {
    ads::resource(
        name,
        &Cluster {
            name: name.into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig {
                service_name: name.into(),
                eds_config: None,
            }),
            lb_policy: lb as i32,
            ..Default::default()
        },
    )
}

/// A load assignment of `endpoints` (address, weight), all healthy.
pub fn endpoints(cluster: &str, endpoints: &[(&str, u32)]) -> (String, Any) {
    let lb_endpoints = endpoints
        .iter()
        .map(|(addr, weight)| LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(socket_address(addr)),
                ..Default::default()
            })),
            load_balancing_weight: Some(UInt32Value { value: *weight }),
            health_status: 1,
            ..Default::default()
        })
        .collect();
    ads::resource(
        cluster,
        &ClusterLoadAssignment {
            cluster_name: cluster.into(),
            endpoints: vec![LocalityLbEndpoints {
                // istiod weighs a locality by its endpoint count; Envoy gives
                // a locality without a weight no traffic when its cluster
                // balances by locality, as istiod's clusters do.
                load_balancing_weight: Some(UInt32Value {
                    value: endpoints.len().max(1) as u32,
                }),
                lb_endpoints,
                ..Default::default()
            }],
            ..Default::default()
        },
    )
}

/// An outbound `VIP_PORT` listener whose tcp_proxy goes to `cluster`.
pub fn vip_listener(vip: &str, cluster: &str) -> (String, Any) {
    let name = vip.replace(':', "_");
    let tcp = TcpProxy {
        stat_prefix: cluster.into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    };
    ads::resource(
        name.clone(),
        &Listener {
            name,
            address: Some(socket_address(vip)),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "envoy.filters.network.tcp_proxy".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(ads::any(&tcp))),
                }],
                ..Default::default()
            }],
            traffic_direction: 2,
            ..Default::default()
        },
    )
}
