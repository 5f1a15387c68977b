//! Generated hostile inputs for the oracle: one [`Case`] per thing an xDS
//! client must decide on, each beside good resources, so a NACK's names
//! show whether the client refused the bad one only.
use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                Cluster,
                cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy},
            },
            core::v3::CidrRange,
            core::v3::{
                Address, Locality, SocketAddress, TrafficDirection, address, socket_address,
            },
            endpoint::v3::{
                ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
            },
            listener::v3::{Filter, FilterChain, FilterChainMatch, Listener, filter, listener},
            route::v3::{
                Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
                route, route_action, route_match, weighted_cluster::ClusterWeight,
            },
        },
        extensions::filters::network::{
            http_connection_manager::v3::{HttpConnectionManager, Rds, http_connection_manager},
            tcp_proxy::v3::{TcpProxy, tcp_proxy},
        },
        service::discovery::v3::DiscoveryResponse,
    },
    google::protobuf::{Any, UInt32Value},
};
use prost::Name;

use super::Case;
use crate::{
    ads::{self, CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE},
    xds_data::{ResourceMap, Resources},
};

fn addr(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

fn cluster(name: &str, kind: DiscoveryType, lb: LbPolicy) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(kind as i32)),
        lb_policy: lb as i32,
        eds_cluster_config: (kind == DiscoveryType::Eds).then(Default::default),
        ..Default::default()
    }
}

fn eds(name: &str) -> Cluster {
    cluster(name, DiscoveryType::Eds, LbPolicy::RoundRobin)
}

/// A cluster with its endpoints inline (STATIC, STRICT_DNS, LOGICAL_DNS).
fn inline(name: &str, kind: DiscoveryType, hosts: &[(&str, u32)]) -> Cluster {
    Cluster {
        load_assignment: Some(cla(name, &[(0, None, hosts)])),
        ..cluster(name, kind, LbPolicy::RoundRobin)
    }
}

/// Localities as (priority, locality weight, endpoints (address, weight)).
type Localities<'a> = [(u32, Option<u32>, &'a [(&'a str, u32)])];

fn cla(name: &str, localities: &Localities) -> ClusterLoadAssignment {
    let endpoints = localities
        .iter()
        .enumerate()
        .map(|(i, (priority, weight, hosts))| LocalityLbEndpoints {
            locality: Some(Locality {
                zone: format!("zone-{i}"),
                ..Default::default()
            }),
            priority: *priority,
            load_balancing_weight: weight.map(|value| UInt32Value { value }),
            lb_endpoints: hosts
                .iter()
                .map(|(host, w)| {
                    let (ip, port) = host.rsplit_once(':').unwrap_or((host, "80"));
                    LbEndpoint {
                        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                            address: Some(addr(ip, port.parse().unwrap_or(80))),
                            ..Default::default()
                        })),
                        load_balancing_weight: Some(UInt32Value { value: *w }),
                        ..Default::default()
                    }
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints,
        ..Default::default()
    }
}

fn network_filter<M: Name>(name: &str, config: &M) -> Filter {
    Filter {
        name: name.into(),
        config_type: Some(filter::ConfigType::TypedConfig(ads::any(config))),
    }
}

fn tcp_proxy(cluster: &str) -> Filter {
    network_filter(
        "envoy.filters.network.tcp_proxy",
        &TcpProxy {
            stat_prefix: cluster.into(),
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.into())),
            ..Default::default()
        },
    )
}

fn hcm(route: http_connection_manager::RouteSpecifier) -> Filter {
    network_filter(
        "envoy.filters.network.http_connection_manager",
        &HttpConnectionManager {
            stat_prefix: "http".into(),
            route_specifier: Some(route),
            ..Default::default()
        },
    )
}

fn rds(name: &str) -> Filter {
    hcm(http_connection_manager::RouteSpecifier::Rds(Rds {
        route_config_name: name.into(),
        config_source: None,
    }))
}

fn chain(filters: Vec<Filter>) -> FilterChain {
    FilterChain {
        filters,
        ..Default::default()
    }
}

/// An outbound listener at `ip:port` with `chains`.
fn listener(name: &str, ip: &str, port: u32, chains: Vec<FilterChain>) -> Listener {
    Listener {
        name: name.into(),
        address: Some(addr(ip, port)),
        filter_chains: chains,
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

fn tcp_listener(name: &str, ip: &str, port: u32, cluster: &str) -> Listener {
    listener(name, ip, port, vec![chain(vec![tcp_proxy(cluster)])])
}

fn weighted(clusters: &[(&str, u32)]) -> route_action::ClusterSpecifier {
    route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
        clusters: clusters
            .iter()
            .map(|(name, w)| ClusterWeight {
                name: (*name).into(),
                weight: Some(UInt32Value { value: *w }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}

fn vhost(name: &str, domains: &[&str], to: route_action::ClusterSpecifier) -> VirtualHost {
    VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| (*d).into()).collect(),
        routes: vec![Route {
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            action: Some(route::Action::Route(RouteAction {
                cluster_specifier: Some(to),
                ..Default::default()
            })),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn to(cluster: &str) -> route_action::ClusterSpecifier {
    route_action::ClusterSpecifier::Cluster(cluster.into())
}

fn routes(name: &str, vhosts: Vec<VirtualHost>) -> RouteConfiguration {
    RouteConfiguration {
        name: name.into(),
        virtual_hosts: vhosts,
        ..Default::default()
    }
}

/// Resources of one type by name (the name the server lists them under).
fn named<M: Name>(items: &[(&str, M)]) -> Resources {
    items.iter().map(|(n, m)| ads::resource(*n, m)).collect()
}

/// A mesh that every client accepts: an EDS cluster with endpoints, a VIP
/// listener to it, and an HTTP listener on an RDS route to it.
struct Mesh {
    clusters: Resources,
    endpoints: Resources,
    listeners: Resources,
    routes: Resources,
}

impl Mesh {
    fn good() -> Self {
        Self {
            clusters: named(&[("good", eds("good"))]),
            endpoints: named(&[(
                "good",
                cla("good", &[(0, Some(1), &[("127.0.0.2:8080", 1)])]),
            )]),
            listeners: named(&[
                (
                    "good_tcp",
                    tcp_listener("good_tcp", "198.18.0.1", 80, "good"),
                ),
                (
                    "good_http",
                    listener("good_http", "0.0.0.0", 8080, vec![chain(vec![rds("good")])]),
                ),
            ]),
            routes: named(&[(
                "good",
                routes("good", vec![vhost("good", &["198.18.0.2"], to("good"))]),
            )]),
        }
    }

    fn cluster<M: Name>(mut self, name: &str, m: M) -> Self {
        self.clusters.push(ads::resource(name, &m));
        self
    }

    fn endpoints(mut self, name: &str, m: ClusterLoadAssignment) -> Self {
        self.endpoints.push(ads::resource(name, &m));
        self
    }

    fn listener<M: Name>(mut self, name: &str, m: M) -> Self {
        self.listeners.push(ads::resource(name, &m));
        self
    }

    fn route<M: Name>(mut self, name: &str, m: M) -> Self {
        self.routes.push(ads::resource(name, &m));
        self
    }

    fn case(self, name: &str) -> Case {
        Case::new(
            name,
            ResourceMap::from([
                (CLUSTER_TYPE.to_string(), self.clusters),
                (ENDPOINT_TYPE.to_string(), self.endpoints),
                (LISTENER_TYPE.to_string(), self.listeners),
                (ROUTE_TYPE.to_string(), self.routes),
            ]),
        )
    }
}

/// Every generated case.
pub fn hostile() -> Vec<Case> {
    let mut cases = vec![
        Mesh::good().case("good"),
        Case::new("empty", ResourceMap::new()),
        Mesh::good()
            .listener("twice", tcp_listener("twice", "198.18.0.3", 80, "good"))
            .listener("twice", tcp_listener("twice", "198.18.0.4", 80, "good"))
            .case("duplicate-listener"),
        Mesh::good()
            .cluster("twice_c", eds("twice_c"))
            .cluster(
                "twice_c",
                cluster("twice_c", DiscoveryType::Static, LbPolicy::Random),
            )
            .case("duplicate-cluster"),
        Mesh::good()
            .listener(
                "to_missing",
                tcp_listener("to_missing", "198.18.0.5", 80, "missing"),
            )
            .listener(
                "rds_missing",
                listener(
                    "rds_missing",
                    "0.0.0.0",
                    8081,
                    vec![chain(vec![rds("missing")])],
                ),
            )
            .route(
                "route_to_missing",
                routes("route_to_missing", vec![vhost("v", &["*"], to("missing"))]),
            )
            .case("missing-references"),
        Mesh::good()
            .listener("bad_ip", tcp_listener("bad_ip", "not-an-ip", 80, "good"))
            .case("listener-bad-address"),
        Mesh::good()
            .listener(
                "big_port",
                tcp_listener("big_port", "198.18.0.6", 70000, "good"),
            )
            .case("listener-port-above-65535"),
        Mesh::good()
            .cluster("named_ep", eds("named_ep"))
            .endpoints(
                "named_ep",
                cla("named_ep", &[(0, Some(1), &[("db.example:80", 1)])]),
            )
            .case("eds-host-name"),
        Mesh::good()
            .cluster("zero_ep", eds("zero_ep"))
            .endpoints(
                "zero_ep",
                cla("zero_ep", &[(0, Some(1), &[("127.0.0.3:80", 0)])]),
            )
            .case("endpoint-weight-0"),
        Mesh::good()
            .route(
                "zero_sum",
                routes(
                    "zero_sum",
                    vec![vhost("v", &["*"], weighted(&[("good", 0), ("good", 0)]))],
                ),
            )
            .case("route-weights-sum-0"),
        Mesh::good()
            .listener(
                "tcp_zero",
                listener(
                    "tcp_zero",
                    "198.18.0.7",
                    80,
                    vec![chain(vec![network_filter(
                        "envoy.filters.network.tcp_proxy",
                        &TcpProxy {
                            stat_prefix: "tcp_zero".into(),
                            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::WeightedClusters(
                                tcp_proxy::WeightedCluster {
                                    clusters: vec![tcp_proxy::weighted_cluster::ClusterWeight {
                                        name: "good".into(),
                                        weight: 0,
                                        ..Default::default()
                                    }],
                                },
                            )),
                            ..Default::default()
                        },
                    )])],
                ),
            )
            .case("tcp-weight-0"),
        Mesh::good()
            .listener("no_stat", {
                let mut l = tcp_listener("no_stat", "198.18.0.8", 80, "good");
                l.filter_chains[0].filters[0] = network_filter(
                    "envoy.filters.network.tcp_proxy",
                    &TcpProxy {
                        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(
                            "good".into(),
                        )),
                        ..Default::default()
                    },
                );
                l
            })
            .case("tcp-proxy-without-stat-prefix"),
        Mesh::good()
            .listener(
                "internal",
                Listener {
                    name: "internal".into(),
                    listener_specifier: Some(listener::ListenerSpecifier::InternalListener(
                        Default::default(),
                    )),
                    filter_chains: vec![chain(vec![tcp_proxy("good")])],
                    ..Default::default()
                },
            )
            .case("internal-listener"),
        Mesh::good()
            .listener(
                "mixed",
                listener(
                    "mixed",
                    "0.0.0.0",
                    9090,
                    vec![
                        FilterChain {
                            filter_chain_match: Some(FilterChainMatch {
                                prefix_ranges: vec![cidr("198.18.0.9", 32)],
                                ..Default::default()
                            }),
                            ..chain(vec![rds("good")])
                        },
                        FilterChain {
                            filter_chain_match: Some(FilterChainMatch {
                                prefix_ranges: vec![cidr("198.18.0.10", 32)],
                                ..Default::default()
                            }),
                            ..chain(vec![hcm(
                                http_connection_manager::RouteSpecifier::RouteConfig(routes(
                                    "inline",
                                    vec![vhost("v", &["*"], weighted(&[("good", 3), ("good", 7)]))],
                                )),
                            )])
                        },
                    ],
                ),
            )
            .case("inline-and-rds-routes"),
        Mesh::good()
            .listener(
                "matchers",
                listener(
                    "matchers",
                    "0.0.0.0",
                    9091,
                    vec![
                        FilterChain {
                            filter_chain_match: Some(FilterChainMatch {
                                server_names: vec!["a.example".into()],
                                transport_protocol: "tls".into(),
                                ..Default::default()
                            }),
                            ..chain(vec![tcp_proxy("good")])
                        },
                        FilterChain {
                            filter_chain_match: Some(FilterChainMatch {
                                source_prefix_ranges: vec![cidr("10.0.0.0", 8)],
                                destination_port: Some(UInt32Value { value: 9091 }),
                                ..Default::default()
                            }),
                            ..chain(vec![tcp_proxy("good")])
                        },
                    ],
                ),
            )
            .case("filter-chain-matchers"),
        Mesh::good()
            .listener(
                "same_match",
                listener(
                    "same_match",
                    "0.0.0.0",
                    9092,
                    vec![
                        chain(vec![tcp_proxy("good")]),
                        chain(vec![tcp_proxy("good")]),
                    ],
                ),
            )
            .case("filter-chains-with-equal-matchers"),
        Mesh::good()
            .cluster(
                "passthrough",
                cluster(
                    "passthrough",
                    DiscoveryType::OriginalDst,
                    LbPolicy::ClusterProvided,
                ),
            )
            .listener(
                "to_passthrough",
                tcp_listener("to_passthrough", "198.18.0.11", 80, "passthrough"),
            )
            .case("original-dst"),
        Mesh::good()
            .cluster(
                "passthrough_rr",
                cluster(
                    "passthrough_rr",
                    DiscoveryType::OriginalDst,
                    LbPolicy::RoundRobin,
                ),
            )
            .case("original-dst-round-robin"),
        Mesh::good()
            .cluster(
                "static",
                inline(
                    "static",
                    DiscoveryType::Static,
                    &[("127.0.0.4:80", 1), ("127.0.0.5:80", 3)],
                ),
            )
            .listener(
                "to_static",
                tcp_listener("to_static", "198.18.0.12", 80, "static"),
            )
            .case("static"),
        Mesh::good()
            .cluster(
                "static_host",
                inline(
                    "static_host",
                    DiscoveryType::Static,
                    &[("db.example:80", 1)],
                ),
            )
            .case("static-host-name"),
        Mesh::good()
            .cluster(
                "dns",
                inline("dns", DiscoveryType::LogicalDns, &[("db.example:5432", 1)]),
            )
            .listener("to_dns", tcp_listener("to_dns", "198.18.0.13", 5432, "dns"))
            .case("logical-dns-host-name"),
        Mesh::good()
            .cluster(
                "dns_two",
                inline(
                    "dns_two",
                    DiscoveryType::LogicalDns,
                    &[("a.example:80", 1), ("b.example:80", 1)],
                ),
            )
            .case("logical-dns-two-hosts"),
        Mesh::good()
            .cluster(
                "strict_dns",
                inline(
                    "strict_dns",
                    DiscoveryType::StrictDns,
                    &[("a.example:80", 1), ("b.example:80", 2)],
                ),
            )
            .case("strict-dns-host-names"),
        Mesh::good()
            .cluster("prio", eds("prio"))
            .endpoints(
                "prio",
                cla(
                    "prio",
                    &[
                        (0, Some(2), &[("127.0.0.6:80", 1), ("127.0.0.7:80", 2)]),
                        (0, Some(1), &[("127.0.0.8:80", 1)]),
                        (1, Some(1), &[("127.0.0.9:80", 1)]),
                    ],
                ),
            )
            .listener(
                "to_prio",
                tcp_listener("to_prio", "198.18.0.14", 80, "prio"),
            )
            .case("eds-priorities-and-localities"),
        Mesh::good()
            .cluster("gap", eds("gap"))
            .endpoints(
                "gap",
                cla(
                    "gap",
                    &[
                        (0, Some(1), &[("127.0.0.10:80", 1)]),
                        (2, Some(1), &[("127.0.0.11:80", 1)]),
                    ],
                ),
            )
            .case("eds-priority-gap"),
        Mesh::good()
            .cluster("loc_zero", eds("loc_zero"))
            .endpoints(
                "loc_zero",
                cla("loc_zero", &[(0, Some(0), &[("127.0.0.12:80", 1)])]),
            )
            .case("eds-locality-weight-0"),
        Mesh::good()
            .route(
                "dup_domains",
                routes(
                    "dup_domains",
                    vec![
                        vhost("a", &["x.example"], to("good")),
                        vhost("b", &["X.example"], to("good")),
                    ],
                ),
            )
            .case("route-duplicate-domains"),
        Mesh::good()
            .route(
                "no_domains",
                routes("no_domains", vec![vhost("a", &[], to("good"))]),
            )
            .case("route-virtual-host-without-domains"),
        Mesh::good()
            .listener(
                "no_route",
                listener(
                    "no_route",
                    "0.0.0.0",
                    9093,
                    vec![chain(vec![network_filter(
                        "envoy.filters.network.http_connection_manager",
                        &HttpConnectionManager {
                            stat_prefix: "x".into(),
                            ..Default::default()
                        },
                    )])],
                ),
            )
            .case("hcm-without-routes"),
        Mesh::good()
            .listener("", tcp_listener("", "198.18.0.15", 80, "good"))
            .case("listener-without-name"),
        Mesh::good()
            .listener(
                "same_addr_a",
                tcp_listener("same_addr_a", "198.18.0.16", 80, "good"),
            )
            .listener(
                "same_addr_b",
                tcp_listener("same_addr_b", "198.18.0.16", 80, "good"),
            )
            .case("two-listeners-one-address"),
    ];
    let mut v2 = Mesh::good();
    v2.listeners.push((
        "v2".into(),
        Any {
            type_url: "type.googleapis.com/envoy.api.v2.Listener".into(),
            value: prost::Message::encode_to_vec(&tcp_listener("v2", "198.18.0.17", 80, "good")),
        },
    ));
    cases.push(v2.case("v2-type-url"));
    let mut garbage = Mesh::good();
    garbage.clusters.push((
        "garbage".into(),
        Any {
            type_url: CLUSTER_TYPE.into(),
            value: vec![0xff; 16],
        },
    ));
    cases.push(garbage.case("undecodable-cluster"));
    let mut unknown = Mesh::good().case("unsubscribed-type");
    unknown.raw = Some(DiscoveryResponse {
        type_url: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret".into(),
        ..Default::default()
    });
    cases.push(unknown);
    cases
}

fn cidr(ip: &str, len: u32) -> CidrRange {
    CidrRange {
        address_prefix: ip.into(),
        prefix_len: Some(UInt32Value { value: len }),
    }
}
