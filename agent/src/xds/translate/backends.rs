//! From the clusters a route picks (with their weights) to the service's
//! backends, weights and policy.
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use envoy_types::pb::envoy::config::{
    cluster::v3::{
        Cluster,
        cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy, common_lb_config},
    },
    core::v3::{HealthStatus, RoutingPriority, address, socket_address},
    endpoint::v3::{ClusterLoadAssignment, LocalityLbEndpoints, lb_endpoint},
};

use super::{
    Findings, Severity,
    weights::{Share, integer_weights},
};
use crate::{
    model::{Backend, ClusterShare, Policy, ResourceRef},
    xds::resources::{ResourceSet, ResourceType},
};

/// Endpoints and their weights within a locality.
type Weighted = Vec<(SocketAddr, u32)>;

/// A route's choice: clusters and their weights.
pub type Target = Vec<(String, u32)>;

pub struct Resolution {
    pub backends: Vec<Backend>,
    pub policy: Policy,
    pub policy_reason: Option<String>,
    pub clusters: Vec<ClusterShare>,
    pub resources: Vec<ResourceRef>,
    /// EDS clusters whose endpoints have not arrived yet.
    pub pending: Vec<String>,
}

pub enum Outcome {
    Routed(Resolution),
    /// Every cluster is ORIGINAL_DST: the connection keeps its destination.
    Passthrough,
    /// No cluster could be used; the reasons are in the findings.
    Unusable,
}

enum Hosts {
    Known(Vec<(SocketAddr, Share)>, usize),
    Pending,
    Passthrough,
}

pub fn resolve(set: &ResourceSet, target: &Target, vip: SocketAddr, f: &mut Findings) -> Outcome {
    let total: u128 = target.iter().map(|(_, w)| u128::from(*w)).sum();
    let mut merged: BTreeMap<SocketAddr, Share> = BTreeMap::new();
    let mut r = Resolution {
        backends: Vec::new(),
        policy: Policy::Random,
        policy_reason: None,
        clusters: Vec::new(),
        resources: Vec::new(),
        pending: Vec::new(),
    };
    let mut policies = Vec::new();
    let mut passthrough = 0;
    let mut overflowed = false;
    for (name, weight) in target {
        let Some(cluster) = set.clusters.get(name) else {
            f.add(
                Severity::Unresolved,
                ResourceType::Cluster,
                name,
                "referenced by a route but does not exist; its share of connections is dropped"
                    .into(),
            );
            continue;
        };
        r.resources.push(ResourceRef {
            kind: "cluster",
            name: name.clone(),
            version: cluster.version.clone(),
        });
        let c = &cluster.resource;
        let (lb_name, policy, reason) = cluster_policy(c);
        let (endpoints, excluded) = match hosts_of(set, c, vip, f, &mut r.resources) {
            Hosts::Passthrough => {
                passthrough += 1;
                continue;
            }
            Hosts::Pending => {
                r.pending.push(name.clone());
                (0, 0)
            }
            Hosts::Known(hosts, excluded) => {
                let n = hosts.len();
                if n == 0 {
                    f.add(
                        Severity::Unresolved,
                        ResourceType::Cluster,
                        name,
                        format!("has no healthy endpoint ({excluded} unusable); connections to {vip} are not redirected and fail as they would under Envoy"),
                    );
                }
                for (addr, share) in hosts {
                    let share = share.times(Share::new(u128::from(*weight), total.max(1)));
                    let sum = share.and_then(|s| match merged.get(&addr) {
                        Some(prev) => prev.plus(s),
                        None => Some(s),
                    });
                    match sum {
                        Some(s) => {
                            merged.insert(addr, s);
                        }
                        None => overflowed = true,
                    }
                }
                (n, excluded)
            }
        };
        policies.push((lb_name.clone(), policy, reason));
        r.clusters.push(ClusterShare {
            name: name.clone(),
            weight: *weight,
            lb_policy: lb_name,
            max_connections: max_connections(c),
            endpoints,
            excluded_endpoints: excluded,
        });
    }
    if overflowed {
        f.add(
            Severity::Adjusted,
            ResourceType::Cluster,
            &target[0].0,
            format!(
                "weights for {vip} are too fine to combine exactly; some backends were left out"
            ),
        );
    }
    if r.clusters.is_empty() {
        return if passthrough > 0 {
            Outcome::Passthrough
        } else {
            Outcome::Unusable
        };
    }
    let shares: Vec<Share> = merged.values().copied().collect();
    let weights = integer_weights(&shares);
    r.backends = merged
        .keys()
        .zip(weights)
        .map(|(&addr, weight)| Backend::new(addr, weight))
        .collect();
    (r.policy, r.policy_reason) = service_policy(&r.backends, &policies);
    Outcome::Routed(r)
}

fn max_connections(c: &Cluster) -> Option<u32> {
    c.circuit_breakers
        .as_ref()?
        .thresholds
        .iter()
        .find(|t| t.priority == RoutingPriority::Default as i32)?
        .max_connections
        .map(|w| w.value)
}

/// The cluster's own policy, and the one the kernel can run in its place.
fn cluster_policy(c: &Cluster) -> (String, Policy, Option<String>) {
    let extension = c
        .load_balancing_policy
        .as_ref()
        .and_then(|p| p.policies.first())
        .and_then(|p| p.typed_extension_config.as_ref());
    let name = match extension {
        Some(ext) => {
            let url = ext.typed_config.as_ref().map(|a| a.type_url.as_str());
            let key = format!("{} {}", ext.name, url.unwrap_or_default()).to_ascii_lowercase();
            [
                "round_robin",
                "least_request",
                "random",
                "ring_hash",
                "maglev",
            ]
            .into_iter()
            .find(|p| key.contains(p) || key.contains(&p.replace('_', "")))
            .map(|p| p.to_ascii_uppercase())
            .unwrap_or_else(|| ext.name.clone())
        }
        None => LbPolicy::try_from(c.lb_policy)
            .map(|p| p.as_str_name().to_string())
            .unwrap_or_else(|_| format!("lb_policy {}", c.lb_policy)),
    };
    let (policy, reason) = match name.as_str() {
        "ROUND_ROBIN" => (Policy::RoundRobin, None),
        "RANDOM" => (Policy::Random, None),
        "LEAST_REQUEST" => (
            Policy::Random,
            Some(
                "LEAST_REQUEST compares backends' active requests, which a connect-time choice cannot see; with equal weights its nearest kernel policy is random",
            ),
        ),
        "RING_HASH" | "MAGLEV" => (
            Policy::Random,
            Some(
                "consistent hashing needs a request attribute the connect() hook does not have; random",
            ),
        ),
        _ => (
            Policy::Random,
            Some("this lb policy has no kernel counterpart; random"),
        ),
    };
    (name.clone(), policy, reason.map(|r| format!("{name}: {r}")))
}

/// Unequal weights need the weighted pick whatever the clusters asked for.
fn service_policy(
    backends: &[Backend],
    policies: &[(String, Policy, Option<String>)],
) -> (Policy, Option<String>) {
    let unequal = backends.windows(2).any(|w| w[0].weight != w[1].weight);
    if unequal {
        let reason = match policies.iter().all(|(n, _, _)| n == "RANDOM") {
            true => None,
            false => Some(
                "weights differ, so backends are picked at random in proportion to them (the same shares the source's weighted policy gives)".to_string(),
            ),
        };
        return (Policy::Weighted, reason);
    }
    match policies {
        [] => (Policy::Random, None),
        [(first, policy, reason), rest @ ..] => {
            if rest.iter().all(|(n, _, _)| n == first) {
                (*policy, reason.clone())
            } else {
                (
                    Policy::Random,
                    Some(
                        "the clusters behind this service ask for different lb policies; random"
                            .into(),
                    ),
                )
            }
        }
    }
}

fn hosts_of(
    set: &ResourceSet,
    c: &Cluster,
    vip: SocketAddr,
    f: &mut Findings,
    resources: &mut Vec<ResourceRef>,
) -> Hosts {
    let kind = match &c.cluster_discovery_type {
        None => DiscoveryType::Static,
        Some(ClusterDiscoveryType::Type(t)) => {
            DiscoveryType::try_from(*t).unwrap_or(DiscoveryType::Static)
        }
        Some(ClusterDiscoveryType::ClusterType(custom)) => {
            f.add(
                Severity::Unsupported,
                ResourceType::Cluster,
                &c.name,
                format!(
                    "custom cluster type {:?} is not supported; its connections are not routed",
                    custom.name
                ),
            );
            return Hosts::Known(Vec::new(), 0);
        }
    };
    let assignment = match kind {
        DiscoveryType::OriginalDst => return Hosts::Passthrough,
        DiscoveryType::Eds => {
            let key = c
                .eds_cluster_config
                .as_ref()
                .map(|e| e.service_name.as_str())
                .filter(|s| !s.is_empty())
                .unwrap_or(&c.name);
            match set.endpoints.get(key) {
                Some(cla) => {
                    resources.push(ResourceRef {
                        kind: "endpoints",
                        name: key.to_string(),
                        version: cla.version.clone(),
                    });
                    &cla.resource
                }
                None => return Hosts::Pending,
            }
        }
        DiscoveryType::Static | DiscoveryType::StrictDns | DiscoveryType::LogicalDns => {
            match &c.load_assignment {
                Some(la) => la,
                None => return Hosts::Known(Vec::new(), 0),
            }
        }
    };
    endpoints(c, assignment, vip, f)
}

/// The healthy endpoints of the highest priority that has any, with their
/// share of the cluster.
fn endpoints(c: &Cluster, la: &ClusterLoadAssignment, vip: SocketAddr, f: &mut Findings) -> Hosts {
    let total: usize = la.endpoints.iter().map(|l| l.lb_endpoints.len()).sum();
    let mut usable = |l: &LocalityLbEndpoints| -> Weighted {
        l.lb_endpoints
            .iter()
            .filter(|e| {
                matches!(
                    HealthStatus::try_from(e.health_status),
                    Ok(HealthStatus::Unknown | HealthStatus::Healthy)
                )
            })
            .filter_map(|e| {
                let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                    return None;
                };
                let addr = endpoint_addr(ep.address.as_ref()?, &c.name, vip, f)?;
                Some((addr, e.load_balancing_weight.map_or(1, |w| w.value)))
            })
            .collect()
    };
    // (priority, locality weight, usable endpoints)
    let all: Vec<(u32, u32, Weighted)> = la
        .endpoints
        .iter()
        .map(|l| {
            let lw = l.load_balancing_weight.map_or(0, |w| w.value);
            (l.priority, lw, usable(l))
        })
        .collect();
    // Lower priorities are Envoy's failover; the kernel uses the first
    // level that has a usable endpoint.
    let Some(priority) = all
        .iter()
        .filter(|(_, _, eps)| !eps.is_empty())
        .map(|(p, _, _)| *p)
        .min()
    else {
        return Hosts::Known(Vec::new(), total);
    };
    let localities: Vec<(u32, Weighted)> = all
        .into_iter()
        .filter(|(p, _, eps)| *p == priority && !eps.is_empty())
        .map(|(_, lw, eps)| (lw, eps))
        .collect();
    let locality_weighted = matches!(
        c.common_lb_config
            .as_ref()
            .and_then(|l| l.locality_config_specifier.as_ref()),
        Some(common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(_))
    );
    let mut hosts = Vec::new();
    if locality_weighted {
        // Envoy gives a locality without a weight no traffic in this mode.
        let lw_total: u128 = localities.iter().map(|(w, _)| u128::from(*w)).sum();
        for (lw, eps) in &localities {
            if *lw == 0 {
                continue;
            }
            let ew_total: u128 = eps.iter().map(|(_, w)| u128::from(*w)).sum();
            for &(addr, w) in eps {
                let s = Share::new(u128::from(*lw), lw_total)
                    .times(Share::new(u128::from(w), ew_total));
                hosts.extend(s.map(|s| (addr, s)));
            }
        }
    } else {
        let ew_total: u128 = localities
            .iter()
            .flat_map(|(_, eps)| eps)
            .map(|(_, w)| u128::from(*w))
            .sum();
        for (_, eps) in &localities {
            for &(addr, w) in eps {
                hosts.push((addr, Share::new(u128::from(w), ew_total)));
            }
        }
    }
    let excluded = total - hosts.len();
    Hosts::Known(hosts, excluded)
}

fn endpoint_addr(
    a: &envoy_types::pb::envoy::config::core::v3::Address,
    cluster: &str,
    vip: SocketAddr,
    f: &mut Findings,
) -> Option<SocketAddr> {
    let mut skip = |sev, msg: String| {
        f.add(sev, ResourceType::Cluster, cluster, msg);
        None
    };
    let Some(address::Address::SocketAddress(sa)) = &a.address else {
        return skip(
            Severity::Unsupported,
            "an endpoint on a pipe or internal address cannot be dialled from the kernel; left out"
                .into(),
        );
    };
    let port = match sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) if p > 0 && p <= 65535 => p as u16,
        _ => {
            return skip(
                Severity::Unsupported,
                format!("endpoint {} has no numeric port; left out", sa.address),
            );
        }
    };
    let ip: IpAddr = match sa.address.parse() {
        Ok(IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        Ok(ip) => ip,
        Err(_) => {
            return skip(
                Severity::Unsupported,
                format!(
                    "endpoint {:?} is a host name; kmesh-rs routes to IP addresses and does no DNS, so it is left out",
                    sa.address
                ),
            );
        }
    };
    if ip.is_ipv4() != vip.is_ipv4() {
        return skip(
            Severity::Adjusted,
            format!(
                "endpoint {ip} is not of the address family of {vip}; a connection cannot change family, so it is left out there"
            ),
        );
    }
    Some(SocketAddr::new(ip, port))
}
