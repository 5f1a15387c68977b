//! The xDS resources the agent holds, however they arrived (an ADS response
//! or a file): `envoy-types` messages with the version they came in, checked
//! the way Envoy checks them, and the ones refused with why.
use std::collections::{BTreeMap, HashSet};

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::Cluster,
            core::v3::{Address, address, socket_address},
            endpoint::v3::{ClusterLoadAssignment, lb_endpoint},
            listener::v3::{FilterChain, Listener, filter, listener},
            route::v3::{RouteConfiguration, route, route_action},
        },
        extensions::filters::network::{
            http_connection_manager::v3::{HttpConnectionManager, http_connection_manager},
            tcp_proxy::v3::{TcpProxy, tcp_proxy},
        },
    },
    google::protobuf::Any,
};
use prost::{Message, Name};

mod rules;

/// The one type URL of Istio ambient's workload discovery.
pub const ADDRESS_TYPE_URL: &str = "type.googleapis.com/istio.workload.Address";

/// The four Envoy resource types the agent subscribes to over SotW, in the
/// order istiod sends them ([`ResourceType::ALL`]), and the two halves of
/// Istio ambient's `istio.workload.Address` (delta only, see
/// [`crate::xds::ambient`]), which findings and refusals name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    Cluster,
    Endpoints,
    Listener,
    Route,
    /// An `istio.workload.Workload`, named by its uid.
    Workload,
    /// An `istio.workload.Service`, named `namespace/hostname`.
    WorkloadService,
}

impl ResourceType {
    pub const ALL: [ResourceType; 4] = [
        ResourceType::Cluster,
        ResourceType::Endpoints,
        ResourceType::Listener,
        ResourceType::Route,
    ];

    pub fn type_url(self) -> String {
        match self {
            ResourceType::Cluster => Cluster::type_url(),
            ResourceType::Endpoints => ClusterLoadAssignment::type_url(),
            ResourceType::Listener => Listener::type_url(),
            ResourceType::Route => RouteConfiguration::type_url(),
            ResourceType::Workload | ResourceType::WorkloadService => ADDRESS_TYPE_URL.to_string(),
        }
    }

    pub fn from_type_url(url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.type_url() == url)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Cluster => "cluster",
            ResourceType::Endpoints => "endpoints",
            ResourceType::Listener => "listener",
            ResourceType::Route => "route",
            ResourceType::Workload => "workload",
            ResourceType::WorkloadService => "service",
        }
    }

    /// Wildcard types list every resource; the others are asked for by name.
    pub fn is_wildcard(self) -> bool {
        matches!(self, ResourceType::Cluster | ResourceType::Listener)
    }
}

impl std::fmt::Display for ResourceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Resource {
    Cluster(Box<Cluster>),
    Endpoints(Box<ClusterLoadAssignment>),
    Listener(Box<Listener>),
    Route(Box<RouteConfiguration>),
}

/// Why a resource was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub kind: ResourceType,
    pub name: String,
    pub version: String,
    pub reason: String,
}

impl Resource {
    pub fn kind(&self) -> ResourceType {
        match self {
            Resource::Cluster(_) => ResourceType::Cluster,
            Resource::Endpoints(_) => ResourceType::Endpoints,
            Resource::Listener(_) => ResourceType::Listener,
            Resource::Route(_) => ResourceType::Route,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Resource::Cluster(c) => &c.name,
            Resource::Endpoints(e) => &e.cluster_name,
            Resource::Listener(l) => &l.name,
            Resource::Route(r) => &r.name,
        }
    }

    /// Decodes one resource of an ADS response and checks it. The error is
    /// the reason sent back in the NACK.
    pub fn decode(kind: ResourceType, any: &Any) -> Result<Resource, String> {
        if any.type_url != kind.type_url() {
            return Err(format!(
                "resource of type {:?} in a response for {}",
                any.type_url,
                kind.type_url()
            ));
        }
        let bytes = any.value.as_slice();
        let bad = |e: prost::DecodeError| format!("cannot decode {}: {e}", kind.type_url());
        let resource = match kind {
            ResourceType::Cluster => {
                Resource::Cluster(Box::new(Cluster::decode(bytes).map_err(bad)?))
            }
            ResourceType::Endpoints => {
                Resource::Endpoints(Box::new(ClusterLoadAssignment::decode(bytes).map_err(bad)?))
            }
            ResourceType::Listener => {
                Resource::Listener(Box::new(Listener::decode(bytes).map_err(bad)?))
            }
            ResourceType::Route => {
                Resource::Route(Box::new(RouteConfiguration::decode(bytes).map_err(bad)?))
            }
            ResourceType::Workload | ResourceType::WorkloadService => {
                return Err(format!(
                    "{} is Istio ambient's workload API, not an Envoy resource",
                    kind.type_url()
                ));
            }
        };
        resource.validate()?;
        Ok(resource)
    }

    /// What Envoy itself would refuse, so a NACK from kmesh-rs means what it
    /// means from Envoy.
    pub fn validate(&self) -> Result<(), String> {
        if self.name().is_empty() {
            return Err(format!("a {} without a name", self.kind()));
        }
        match self {
            Resource::Cluster(c) => rules::cluster(c).and_then(|()| match &c.load_assignment {
                // As Envoy: a STATIC cluster (the default type) names IP
                // addresses; host names are for STRICT_DNS and LOGICAL_DNS.
                Some(la) if is_static(c) => validate_load_assignment(la, true).map_err(|e| {
                    format!("{e} (a STATIC cluster takes IP addresses; STRICT_DNS or LOGICAL_DNS resolve host names)")
                }),
                Some(la) => validate_load_assignment(la, false),
                None => Ok(()),
            }),
            Resource::Endpoints(la) => validate_load_assignment(la, true),
            Resource::Listener(l) => validate_listener(l),
            Resource::Route(r) => validate_route_configuration(r),
        }
    }
}

fn is_static(c: &Cluster) -> bool {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{
        ClusterDiscoveryType, DiscoveryType,
    };
    match c.cluster_discovery_type {
        None => true,
        Some(ClusterDiscoveryType::Type(t)) => t == DiscoveryType::Static as i32,
        Some(_) => false,
    }
}

/// An EDS assignment must name hosts by IP; an inline one (DNS clusters)
/// may use host names.
fn validate_load_assignment(la: &ClusterLoadAssignment, eds: bool) -> Result<(), String> {
    for (l, locality) in la.endpoints.iter().enumerate() {
        if locality.load_balancing_weight.is_some_and(|w| w.value == 0) {
            return Err(format!(
                "endpoints[{l}]: locality load_balancing_weight must be at least 1"
            ));
        }
        let mut total = 0u64;
        for (i, ep) in locality.lb_endpoints.iter().enumerate() {
            let weight = ep.load_balancing_weight.map_or(1, |w| w.value);
            if weight == 0 {
                return Err(format!(
                    "endpoints[{l}].lb_endpoints[{i}]: load_balancing_weight must be at least 1"
                ));
            }
            total += u64::from(weight);
            let Some(lb_endpoint::HostIdentifier::Endpoint(endpoint)) = &ep.host_identifier else {
                return Err(format!(
                    "endpoints[{l}].lb_endpoints[{i}]: an endpoint needs an address (named endpoints are not supported)"
                ));
            };
            let Some(addr) = &endpoint.address else {
                return Err(format!("endpoints[{l}].lb_endpoints[{i}]: no address"));
            };
            validate_address(addr, eds)
                .map_err(|e| format!("endpoints[{l}].lb_endpoints[{i}].endpoint.address: {e}"))?;
        }
        if total > u64::from(u32::MAX) {
            return Err(format!(
                "endpoints[{l}]: endpoint weights sum to {total}, above {}",
                u32::MAX
            ));
        }
    }
    Ok(())
}

fn validate_address(addr: &Address, ip_only: bool) -> Result<(), String> {
    match &addr.address {
        Some(address::Address::SocketAddress(sa)) => {
            if let Some(socket_address::PortSpecifier::PortValue(p)) = sa.port_specifier
                && p > u32::from(u16::MAX)
            {
                return Err(format!("port {p} is above 65535"));
            }
            if ip_only && sa.address.parse::<std::net::IpAddr>().is_err() {
                return Err(format!("{:?} is not an IP address", sa.address));
            }
            Ok(())
        }
        Some(_) => Ok(()),
        None => Err("empty address".into()),
    }
}

fn validate_listener(l: &Listener) -> Result<(), String> {
    let internal = matches!(
        l.listener_specifier,
        Some(listener::ListenerSpecifier::InternalListener(_))
    );
    match &l.address {
        Some(a) => validate_address(a, false).map_err(|e| format!("address: {e}"))?,
        // Internal listeners (Istio's HBONE and waypoint plumbing) take
        // connections from Envoy itself, by name, and have no address.
        None if l.api_listener.is_some() || internal => {}
        None => return Err("a listener needs an address (or internal_listener)".into()),
    }
    rules::listener(l)?;
    let chains = l.filter_chains.iter().chain(&l.default_filter_chain);
    for (c, chain) in chains.enumerate() {
        validate_filter_chain(chain)
            .and_then(|()| rules::chain(chain))
            .map_err(|e| format!("filter_chains[{c}]: {e}"))?;
    }
    Ok(())
}

fn validate_filter_chain(chain: &FilterChain) -> Result<(), String> {
    for (f, filter) in chain.filters.iter().enumerate() {
        let Some(filter::ConfigType::TypedConfig(any)) = &filter.config_type else {
            continue;
        };
        let at = |e: String| format!("filters[{f}] ({}): {e}", filter.name);
        if any.type_url == TcpProxy::type_url() {
            let tp = TcpProxy::decode(any.value.as_slice())
                .map_err(|e| at(format!("cannot decode TcpProxy: {e}")))?;
            validate_tcp_proxy(&tp).map_err(at)?;
        } else if any.type_url == HttpConnectionManager::type_url() {
            let hcm = HttpConnectionManager::decode(any.value.as_slice())
                .map_err(|e| at(format!("cannot decode HttpConnectionManager: {e}")))?;
            match &hcm.route_specifier {
                Some(http_connection_manager::RouteSpecifier::Rds(rds)) => {
                    if rds.route_config_name.is_empty() {
                        return Err(at("rds.route_config_name is empty".into()));
                    }
                }
                Some(http_connection_manager::RouteSpecifier::RouteConfig(rc)) => {
                    validate_route_configuration(rc).map_err(at)?
                }
                Some(http_connection_manager::RouteSpecifier::ScopedRoutes(_)) => {}
                None => return Err(at("neither rds nor route_config".into())),
            }
        }
    }
    Ok(())
}

fn validate_tcp_proxy(tp: &TcpProxy) -> Result<(), String> {
    match &tp.cluster_specifier {
        Some(tcp_proxy::ClusterSpecifier::Cluster(c)) if c.is_empty() => {
            Err("tcp_proxy.cluster is empty".into())
        }
        Some(tcp_proxy::ClusterSpecifier::Cluster(_)) => Ok(()),
        Some(tcp_proxy::ClusterSpecifier::WeightedClusters(wc)) => {
            if wc.clusters.is_empty() {
                return Err("tcp_proxy.weighted_clusters lists no cluster".into());
            }
            let mut total = 0u64;
            for c in &wc.clusters {
                if c.name.is_empty() {
                    return Err("tcp_proxy.weighted_clusters: a cluster without a name".into());
                }
                if c.weight == 0 {
                    return Err(format!(
                        "tcp_proxy.weighted_clusters: cluster {:?} has weight 0, the least is 1",
                        c.name
                    ));
                }
                total += u64::from(c.weight);
            }
            check_weight_total(total)
        }
        None => Err("tcp_proxy names no cluster".into()),
    }
}

fn check_weight_total(total: u64) -> Result<(), String> {
    if total == 0 {
        return Err(
            "weighted_clusters: weights sum to 0; give at least one cluster a weight".into(),
        );
    }
    if total > u64::from(u32::MAX) {
        return Err(format!(
            "weighted_clusters: weights sum to {total}, above {}",
            u32::MAX
        ));
    }
    Ok(())
}

fn validate_route_configuration(rc: &RouteConfiguration) -> Result<(), String> {
    let mut domains = HashSet::new();
    for vh in &rc.virtual_hosts {
        let at = |e: String| format!("virtual host {:?}: {e}", vh.name);
        if vh.domains.is_empty() {
            return Err(at("no domains".into()));
        }
        for d in &vh.domains {
            if !domains.insert(d.to_ascii_lowercase()) {
                return Err(at(format!(
                    "domain {d:?} appears in two virtual hosts; domains must be unique"
                )));
            }
        }
        for (i, r) in vh.routes.iter().enumerate() {
            let Some(route::Action::Route(action)) = &r.action else {
                continue;
            };
            let Some(route_action::ClusterSpecifier::WeightedClusters(wc)) =
                &action.cluster_specifier
            else {
                continue;
            };
            if wc.clusters.is_empty() {
                return Err(at(format!(
                    "routes[{i}]: weighted_clusters lists no cluster"
                )));
            }
            let mut total = 0u64;
            for c in &wc.clusters {
                if c.name.is_empty() && c.cluster_header.is_empty() {
                    return Err(at(format!(
                        "routes[{i}]: a weighted cluster without a name or cluster_header"
                    )));
                }
                total += u64::from(c.weight.map_or(0, |w| w.value));
            }
            check_weight_total(total).map_err(|e| at(format!("routes[{i}]: {e}")))?;
        }
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq)]
pub struct Versioned<T> {
    pub version: String,
    pub resource: T,
}

/// Every resource in force, by type and name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceSet {
    pub clusters: BTreeMap<String, Versioned<Cluster>>,
    pub endpoints: BTreeMap<String, Versioned<ClusterLoadAssignment>>,
    pub listeners: BTreeMap<String, Versioned<Listener>>,
    pub routes: BTreeMap<String, Versioned<RouteConfiguration>>,
    /// Refused, with why; refused resources never reach the translation.
    pub rejected: Vec<Rejected>,
    /// Read from a file and of no use to this data plane (a config dump's
    /// secrets, say); reported as ignored.
    pub set_aside: Vec<SetAside>,
}

/// Something a file holds that is neither used nor refused, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetAside {
    pub kind: ResourceType,
    pub name: String,
    pub reason: String,
}

impl ResourceSet {
    /// Adds a resource; a second one of the same type and name is refused,
    /// as Envoy refuses duplicates in one update.
    pub fn insert(&mut self, resource: Resource, version: &str) -> Result<(), String> {
        let name = resource.name().to_string();
        let kind = resource.kind();
        let version = version.to_string();
        fn put<T>(
            map: &mut BTreeMap<String, Versioned<T>>,
            name: &str,
            version: String,
            resource: T,
        ) -> bool {
            map.insert(name.to_string(), Versioned { version, resource })
                .is_some()
        }
        let duplicate = match resource {
            Resource::Cluster(r) => put(&mut self.clusters, &name, version, *r),
            Resource::Endpoints(r) => put(&mut self.endpoints, &name, version, *r),
            Resource::Listener(r) => put(&mut self.listeners, &name, version, *r),
            Resource::Route(r) => put(&mut self.routes, &name, version, *r),
        };
        if duplicate {
            return Err(format!("{kind} {name:?} is listed twice"));
        }
        Ok(())
    }

    pub fn len(&self, kind: ResourceType) -> usize {
        match kind {
            ResourceType::Cluster => self.clusters.len(),
            ResourceType::Endpoints => self.endpoints.len(),
            ResourceType::Listener => self.listeners.len(),
            ResourceType::Route => self.routes.len(),
            ResourceType::Workload | ResourceType::WorkloadService => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        ResourceType::ALL.iter().all(|&k| self.len(k) == 0)
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::{
        endpoint::v3::{Endpoint, LbEndpoint, LocalityLbEndpoints},
        route::v3::{Route, RouteAction, VirtualHost, WeightedCluster},
    };
    use envoy_types::pb::{
        envoy::config::route::v3::weighted_cluster::ClusterWeight, google::protobuf::UInt32Value,
    };

    use super::*;

    fn any<T: Message + Name>(m: &T) -> Any {
        Any {
            type_url: T::type_url(),
            value: m.encode_to_vec(),
        }
    }

    fn weighted_route(weights: &[u32]) -> RouteConfiguration {
        let clusters = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| ClusterWeight {
                name: format!("c{i}"),
                weight: Some(UInt32Value { value: w }),
                ..Default::default()
            })
            .collect();
        RouteConfiguration {
            name: "r".into(),
            virtual_hosts: vec![VirtualHost {
                name: "vh".into(),
                domains: vec!["*".into()],
                routes: vec![Route {
                    action: Some(route::Action::Route(RouteAction {
                        cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(
                            WeightedCluster {
                                clusters,
                                ..Default::default()
                            },
                        )),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn weighted_routes_must_sum_above_zero_and_fit_32_bits() {
        let decode = |w: &[u32]| Resource::decode(ResourceType::Route, &any(&weighted_route(w)));
        assert!(decode(&[0, 0]).unwrap_err().contains("sum to 0"));
        assert!(decode(&[u32::MAX, 1]).unwrap_err().contains("above"));
        assert!(
            decode(&[3000, 7000]).is_ok(),
            "weights summing to 10000 are valid"
        );
    }

    #[test]
    fn refuses_mismatched_type_urls_and_garbage() {
        let mut a = any(&weighted_route(&[1]));
        a.type_url = "type.googleapis.com/envoy.api.v2.RouteConfiguration".into();
        let e = Resource::decode(ResourceType::Route, &a).unwrap_err();
        assert!(e.contains("envoy.api.v2"), "{e}");
        let garbage = Any {
            type_url: Cluster::type_url(),
            value: vec![0xff; 16],
        };
        let e = Resource::decode(ResourceType::Cluster, &garbage).unwrap_err();
        assert!(e.contains("cannot decode"), "{e}");
    }

    /// One endpoint at `address`:80 with `weight`.
    fn one_endpoint(address: &str, weight: u32) -> ClusterLoadAssignment {
        ClusterLoadAssignment {
            cluster_name: "c".into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(Address {
                            address: Some(address::Address::SocketAddress(
                                envoy_types::pb::envoy::config::core::v3::SocketAddress {
                                    address: address.into(),
                                    port_specifier: Some(socket_address::PortSpecifier::PortValue(
                                        80,
                                    )),
                                    ..Default::default()
                                },
                            )),
                        }),
                        ..Default::default()
                    })),
                    load_balancing_weight: Some(UInt32Value { value: weight }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn eds_endpoints_need_ip_addresses_and_positive_weights() {
        let cla = one_endpoint;
        let decode = |c: ClusterLoadAssignment| Resource::decode(ResourceType::Endpoints, &any(&c));
        assert!(decode(cla("10.0.0.1", 1)).is_ok());
        assert!(
            decode(cla("db.example", 1))
                .unwrap_err()
                .contains("not an IP")
        );
        assert!(
            decode(cla("10.0.0.1", 0))
                .unwrap_err()
                .contains("at least 1")
        );
    }

    #[test]
    fn static_clusters_need_ip_addresses_as_envoy_says() {
        use envoy_types::pb::envoy::config::cluster::v3::cluster::{
            ClusterDiscoveryType, DiscoveryType,
        };
        let cluster = |kind: Option<DiscoveryType>, host: &str| Cluster {
            name: "c".into(),
            cluster_discovery_type: kind.map(|k| ClusterDiscoveryType::Type(k as i32)),
            load_assignment: Some(one_endpoint(host, 1)),
            ..Default::default()
        };
        let decode = |c: Cluster| Resource::decode(ResourceType::Cluster, &any(&c));
        for kind in [None, Some(DiscoveryType::Static)] {
            let e = decode(cluster(kind, "db.example")).unwrap_err();
            assert!(e.contains("STATIC") && e.contains("not an IP"), "{e}");
            assert!(decode(cluster(kind, "10.0.0.1")).is_ok());
        }
        for kind in [DiscoveryType::StrictDns, DiscoveryType::LogicalDns] {
            assert!(decode(cluster(Some(kind), "db.example")).is_ok());
        }
    }

    #[test]
    fn duplicate_domains_and_names_are_refused() {
        let mut rc = weighted_route(&[1]);
        let mut twin = rc.virtual_hosts[0].clone();
        twin.name = "other".into();
        rc.virtual_hosts.push(twin);
        assert!(
            Resource::Route(Box::new(rc))
                .validate()
                .unwrap_err()
                .contains("two virtual hosts")
        );
        let mut set = ResourceSet::default();
        let r = Resource::Route(Box::new(weighted_route(&[1])));
        set.insert(r.clone(), "1").unwrap();
        assert!(set.insert(r, "1").unwrap_err().contains("twice"));
    }
}
