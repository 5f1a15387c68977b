//! Envoy v3 messages from their JSON form, for the fields the translation
//! reads. The result is the same `envoy-types` message an ADS response
//! decodes to, so files and istiod go through one translation.
use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                CircuitBreakers, Cluster, LoadBalancingPolicy,
                circuit_breakers::Thresholds,
                cluster::{
                    ClusterDiscoveryType, CommonLbConfig, CustomClusterType, DiscoveryType,
                    EdsClusterConfig, LbPolicy, common_lb_config,
                },
                load_balancing_policy::Policy,
            },
            core::v3::{
                Address, CidrRange, HealthStatus, Locality, Metadata, Pipe, RoutingPriority,
                SocketAddress, TrafficDirection, TypedExtensionConfig, address, socket_address,
            },
            endpoint::v3::{
                ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
            },
            listener::v3::{Filter, FilterChain, FilterChainMatch, Listener, filter, listener},
            route::v3::{
                DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, Route,
                RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster, route,
                route_action, route_match, weighted_cluster::ClusterWeight,
            },
        },
        extensions::filters::network::{
            http_connection_manager::v3::{HttpConnectionManager, Rds, http_connection_manager},
            tcp_proxy::v3::{TcpProxy, tcp_proxy},
        },
        r#type::matcher::v3::RegexMatcher,
    },
    google::protobuf::{Any, BoolValue, Struct, UInt32Value, Value as PbValue, value::Kind},
};
use prost::{Message, Name};

use super::reader::{FieldError, Obj};

type Result<T> = std::result::Result<T, FieldError>;

fn wrap(v: Option<u32>) -> Option<UInt32Value> {
    v.map(|value| UInt32Value { value })
}

pub fn cluster(o: Obj) -> Result<Cluster> {
    let mut c = Cluster {
        name: o.string("name")?,
        lb_policy: o.enumeration("lb_policy", |s| {
            LbPolicy::from_str_name(s).map(|e| e as i32)
        })?,
        ..Default::default()
    };
    if o.has("type") {
        let t = o.enumeration("type", |s| {
            DiscoveryType::from_str_name(s).map(|e| e as i32)
        })?;
        c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(t));
    } else if let Some(custom) = o.child("cluster_type")? {
        c.cluster_discovery_type = Some(ClusterDiscoveryType::ClusterType(CustomClusterType {
            name: custom.string("name")?,
            typed_config: None,
        }));
    }
    if let Some(eds) = o.child("eds_cluster_config")? {
        c.eds_cluster_config = Some(EdsClusterConfig {
            service_name: eds.string("service_name")?,
            eds_config: None,
        });
    }
    if let Some(cb) = o.child("circuit_breakers")? {
        let thresholds = cb.list("thresholds", |t| {
            Ok(Thresholds {
                priority: t.enumeration("priority", |s| {
                    RoutingPriority::from_str_name(s).map(|e| e as i32)
                })?,
                max_connections: wrap(t.u32("max_connections")?),
                ..Default::default()
            })
        })?;
        c.circuit_breakers = Some(CircuitBreakers {
            thresholds,
            ..Default::default()
        });
    }
    if let Some(lb) = o.child("common_lb_config")?
        && lb.has("locality_weighted_lb_config")
    {
        c.common_lb_config = Some(CommonLbConfig {
            locality_config_specifier: Some(
                common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                    Default::default(),
                ),
            ),
            ..Default::default()
        });
    }
    if let Some(lbp) = o.child("load_balancing_policy")? {
        let policies = lbp.list("policies", |p| {
            let ext = p.child("typed_extension_config")?;
            let ext = match ext {
                Some(ext) => Some(typed_extension(ext)?),
                None => None,
            };
            Ok(Policy {
                typed_extension_config: ext,
            })
        })?;
        c.load_balancing_policy = Some(LoadBalancingPolicy { policies });
    }
    if let Some(la) = o.child("load_assignment")? {
        c.load_assignment = Some(load_assignment(la)?);
    }
    Ok(c)
}

/// The extension's name and type; its settings are not read.
fn typed_extension(o: Obj) -> Result<TypedExtensionConfig> {
    let type_url = match o.child("typed_config")? {
        Some(tc) => tc.type_url().unwrap_or_default().to_string(),
        None => String::new(),
    };
    Ok(TypedExtensionConfig {
        name: o.string("name")?,
        typed_config: Some(Any {
            type_url,
            value: Vec::new(),
        }),
    })
}

pub fn load_assignment(o: Obj) -> Result<ClusterLoadAssignment> {
    let endpoints = o.list("endpoints", |l| {
        let locality = match l.child("locality")? {
            Some(loc) => Some(Locality {
                region: loc.string("region")?,
                zone: loc.string("zone")?,
                sub_zone: loc.string("sub_zone")?,
            }),
            None => None,
        };
        let lb_endpoints = l.list("lb_endpoints", lb_endpoint)?;
        Ok(LocalityLbEndpoints {
            locality,
            lb_endpoints,
            load_balancing_weight: wrap(l.u32("load_balancing_weight")?),
            priority: l.u32("priority")?.unwrap_or(0),
            ..Default::default()
        })
    })?;
    Ok(ClusterLoadAssignment {
        cluster_name: o.string("cluster_name")?,
        endpoints,
        ..Default::default()
    })
}

fn lb_endpoint(o: Obj) -> Result<LbEndpoint> {
    let host_identifier = match o.child("endpoint")? {
        Some(ep) => {
            let address = ep.object("address", self::address)?;
            Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address,
                hostname: ep.string("hostname")?,
                ..Default::default()
            }))
        }
        None if o.has("endpoint_name") => Some(lb_endpoint::HostIdentifier::EndpointName(
            o.string("endpoint_name")?,
        )),
        None => None,
    };
    Ok(LbEndpoint {
        host_identifier,
        health_status: o.enumeration("health_status", |s| {
            HealthStatus::from_str_name(s).map(|e| e as i32)
        })?,
        load_balancing_weight: wrap(o.u32("load_balancing_weight")?),
        metadata: istio_workload_metadata(&o)?,
    })
}

/// The one piece of endpoint metadata the translation reads: istiod's
/// `filter_metadata.istio.workload`, which names the endpoint's workload.
fn istio_workload_metadata(o: &Obj) -> Result<Option<Metadata>> {
    let Some(meta) = o.child("metadata")? else {
        return Ok(None);
    };
    let Some(filters) = meta.child("filter_metadata")? else {
        return Ok(None);
    };
    let Some(istio) = filters.child("istio")? else {
        return Ok(None);
    };
    // Envoy takes any value here; only istiod's string names a workload.
    let Ok(workload) = istio.string("workload") else {
        return Ok(None);
    };
    if workload.is_empty() {
        return Ok(None);
    }
    let fields = [(
        "workload".to_string(),
        PbValue {
            kind: Some(Kind::StringValue(workload)),
        },
    )];
    Ok(Some(Metadata {
        filter_metadata: [(
            "istio".to_string(),
            Struct {
                fields: fields.into_iter().collect(),
            },
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    }))
}

pub fn address(o: Obj) -> Result<Address> {
    let variant = if let Some(sa) = o.child("socket_address")? {
        let port_specifier = if sa.has("named_port") {
            Some(socket_address::PortSpecifier::NamedPort(
                sa.string("named_port")?,
            ))
        } else {
            Some(socket_address::PortSpecifier::PortValue(
                sa.u32("port_value")?.unwrap_or(0),
            ))
        };
        address::Address::SocketAddress(SocketAddress {
            address: sa.string("address")?,
            port_specifier,
            ..Default::default()
        })
    } else if let Some(pipe) = o.child("pipe")? {
        address::Address::Pipe(Pipe {
            path: pipe.string("path")?,
            mode: 0,
        })
    } else if o.has("envoy_internal_address") {
        address::Address::EnvoyInternalAddress(Default::default())
    } else {
        return Err(o.err(
            "socket_address",
            "an address needs socket_address, pipe or envoy_internal_address",
        ));
    };
    Ok(Address {
        address: Some(variant),
    })
}

pub fn listener(o: Obj) -> Result<Listener> {
    let address = o.object("address", self::address)?;
    let filter_chains = o.list("filter_chains", filter_chain)?;
    let default_filter_chain = o.object("default_filter_chain", filter_chain)?;
    Ok(Listener {
        name: o.string("name")?,
        address,
        filter_chains,
        default_filter_chain,
        traffic_direction: o.enumeration("traffic_direction", |s| {
            TrafficDirection::from_str_name(s).map(|e| e as i32)
        })?,
        use_original_dst: o.bool("use_original_dst")?.map(|value| BoolValue { value }),
        bind_to_port: o.bool("bind_to_port")?.map(|value| BoolValue { value }),
        listener_specifier: o
            .has("internal_listener")
            .then(|| listener::ListenerSpecifier::InternalListener(Default::default())),
        ..Default::default()
    })
}

fn filter_chain(o: Obj) -> Result<FilterChain> {
    let filter_chain_match = match o.child("filter_chain_match")? {
        Some(m) => {
            let cidrs = |field: &str| -> Result<Vec<CidrRange>> {
                m.children(field)?
                    .iter()
                    .map(|r| {
                        Ok(CidrRange {
                            address_prefix: r.string("address_prefix")?,
                            prefix_len: wrap(r.u32("prefix_len")?),
                        })
                    })
                    .collect()
            };
            Some(FilterChainMatch {
                destination_port: wrap(m.u32("destination_port")?),
                prefix_ranges: cidrs("prefix_ranges")?,
                source_prefix_ranges: cidrs("source_prefix_ranges")?,
                server_names: m.strings("server_names")?,
                transport_protocol: m.string("transport_protocol")?,
                application_protocols: m.strings("application_protocols")?,
                ..Default::default()
            })
        }
        None => None,
    };
    let filters = o.list("filters", network_filter)?;
    Ok(FilterChain {
        name: o.string("name")?,
        filter_chain_match,
        filters,
        ..Default::default()
    })
}

fn network_filter(o: Obj) -> Result<Filter> {
    let config_type = match o.child("typed_config")? {
        Some(tc) => {
            let type_url = tc.type_url().unwrap_or_default();
            let value = if type_url == TcpProxy::type_url() {
                tcp_proxy(tc)?.encode_to_vec()
            } else if type_url == HttpConnectionManager::type_url() {
                http_connection_manager(tc)?.encode_to_vec()
            } else {
                // Filters the translation does not read keep only their type.
                Vec::new()
            };
            Some(filter::ConfigType::TypedConfig(Any {
                type_url: type_url.to_string(),
                value,
            }))
        }
        None => None,
    };
    Ok(Filter {
        name: o.string("name")?,
        config_type,
    })
}

fn tcp_proxy(o: Obj) -> Result<TcpProxy> {
    let cluster_specifier = if let Some(wc) = o.child("weighted_clusters")? {
        let clusters = wc.list("clusters", |c| {
            Ok(tcp_proxy::weighted_cluster::ClusterWeight {
                name: c.string("name")?,
                weight: c.u32("weight")?.unwrap_or(0),
                ..Default::default()
            })
        })?;
        Some(tcp_proxy::ClusterSpecifier::WeightedClusters(
            tcp_proxy::WeightedCluster { clusters },
        ))
    } else if o.has("cluster") {
        Some(tcp_proxy::ClusterSpecifier::Cluster(o.string("cluster")?))
    } else {
        None
    };
    Ok(TcpProxy {
        stat_prefix: o.string("stat_prefix")?,
        cluster_specifier,
        ..Default::default()
    })
}

fn http_connection_manager(o: Obj) -> Result<HttpConnectionManager> {
    let route_specifier = if let Some(rds) = o.child("rds")? {
        Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            route_config_name: rds.string("route_config_name")?,
            config_source: None,
        }))
    } else if let Some(rc) = o.child("route_config")? {
        Some(http_connection_manager::RouteSpecifier::RouteConfig(
            route_configuration(rc)?,
        ))
    } else if o.has("scoped_routes") {
        Some(http_connection_manager::RouteSpecifier::ScopedRoutes(
            Default::default(),
        ))
    } else {
        None
    };
    Ok(HttpConnectionManager {
        stat_prefix: o.string("stat_prefix")?,
        route_specifier,
        ..Default::default()
    })
}

pub fn route_configuration(o: Obj) -> Result<RouteConfiguration> {
    let virtual_hosts = o.list("virtual_hosts", |vh| {
        let routes = vh.list("routes", self::route)?;
        Ok(VirtualHost {
            name: vh.string("name")?,
            domains: vh.strings("domains")?,
            routes,
            ..Default::default()
        })
    })?;
    Ok(RouteConfiguration {
        name: o.string("name")?,
        virtual_hosts,
        ..Default::default()
    })
}

fn route(o: Obj) -> Result<Route> {
    let r#match = o.object("match", route_match)?;
    let action = if let Some(ra) = o.child("route")? {
        Some(route::Action::Route(route_action(ra)?))
    } else if o.has("redirect") {
        Some(route::Action::Redirect(RedirectAction::default()))
    } else if let Some(dr) = o.child("direct_response")? {
        Some(route::Action::DirectResponse(DirectResponseAction {
            status: dr.u32("status")?.unwrap_or(0),
            ..Default::default()
        }))
    } else if o.has("filter_action") || o.has("non_forwarding_action") {
        Some(route::Action::NonForwardingAction(Default::default()))
    } else {
        None
    };
    Ok(Route {
        name: o.string("name")?,
        r#match,
        action,
        ..Default::default()
    })
}

fn route_match(o: Obj) -> Result<RouteMatch> {
    use route_match::PathSpecifier as P;
    let path_specifier = if o.has("prefix") {
        Some(P::Prefix(o.string("prefix")?))
    } else if o.has("path") {
        Some(P::Path(o.string("path")?))
    } else if let Some(re) = o.child("safe_regex")? {
        Some(P::SafeRegex(RegexMatcher {
            regex: re.string("regex")?,
            ..Default::default()
        }))
    } else if o.has("path_separated_prefix") {
        Some(P::PathSeparatedPrefix(o.string("path_separated_prefix")?))
    } else if o.has("connect_matcher") {
        Some(P::ConnectMatcher(Default::default()))
    } else if let Some(policy) = o.child("path_match_policy")? {
        Some(P::PathMatchPolicy(typed_extension(policy)?))
    } else {
        None
    };
    let headers = o.list("headers", |h| {
        Ok(HeaderMatcher {
            name: h.string("name")?,
            ..Default::default()
        })
    })?;
    let query_parameters = o.list("query_parameters", |q| {
        Ok(QueryParameterMatcher {
            name: q.string("name")?,
            ..Default::default()
        })
    })?;
    Ok(RouteMatch {
        path_specifier,
        headers,
        query_parameters,
        grpc: o.has("grpc").then(Default::default),
        runtime_fraction: o.has("runtime_fraction").then(Default::default),
        ..Default::default()
    })
}

fn route_action(o: Obj) -> Result<RouteAction> {
    use route_action::ClusterSpecifier as C;
    let cluster_specifier = if let Some(wc) = o.child("weighted_clusters")? {
        let clusters = wc.list("clusters", |c| {
            Ok(ClusterWeight {
                name: c.string("name")?,
                cluster_header: c.string("cluster_header")?,
                weight: wrap(c.u32("weight")?),
                ..Default::default()
            })
        })?;
        Some(C::WeightedClusters(WeightedCluster {
            clusters,
            ..Default::default()
        }))
    } else if o.has("cluster") {
        Some(C::Cluster(o.string("cluster")?))
    } else if o.has("cluster_header") {
        Some(C::ClusterHeader(o.string("cluster_header")?))
    } else if o.has("cluster_specifier_plugin") || o.has("inline_cluster_specifier_plugin") {
        Some(C::ClusterSpecifierPlugin(
            o.string("cluster_specifier_plugin").unwrap_or_default(),
        ))
    } else {
        None
    };
    Ok(RouteAction {
        cluster_specifier,
        ..Default::default()
    })
}
