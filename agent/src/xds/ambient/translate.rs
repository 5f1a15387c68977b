//! From Address resources to the mesh, routing as the Envoy path does:
//! every service VIP × service port is a [`Service`] whose backends are the
//! workloads that name the service, at their IP and target port.
//!
//! - **Target port**: the workload's own mapping for the service port wins;
//!   otherwise the service's target port; a service port whose target port
//!   is 0 (a named port, which istiod resolves per workload) leaves out the
//!   workloads that do not map it, as ztunnel does.
//! - **Weight**: the workload's `capacity` (1 when unset; 0 drains it, as
//!   ztunnel's weighted pick never chooses it). Unequal capacities make the
//!   service `weighted`, otherwise `random`.
//! - **Health**: unhealthy workloads are left out (counted as excluded)
//!   unless the service's `load_balancing.health_policy` is ALLOW_ALL.
//! - **What the kernel cannot do** is reported, and the service routed
//!   directly all the same: waypoints (HBONE), locality preferences,
//!   workloads on other networks (reached through network gateways).
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use super::{
    AddressSet, ip_of,
    proto::{self, PortList, load_balancing},
};
use crate::{
    model::{
        Backend, ClusterShare, MAX_BACKENDS, Mesh, Origin, Policy, ProbeSettings, RESERVED_NAMES,
        ResourceRef, Service, Workload, Workloads,
    },
    xds::{
        Report,
        resources::{ResourceType, Versioned},
        translate::{Findings, Severity},
    },
};

/// The mesh of an Address set, and what could not be taken as it is.
pub fn translate(set: &AddressSet, probe: ProbeSettings) -> (Mesh, Report) {
    let mut findings = Findings::default();
    let mut workloads = Workloads::default();
    for (name, v) in &set.workloads {
        for clash in workloads.insert(workload(&v.resource)) {
            findings.add(
                Severity::Adjusted,
                ResourceType::Workload,
                name,
                format!(
                    "claims {}, which workload {:?} holds; telemetry names that one",
                    clash.addr, clash.kept
                ),
            );
        }
    }
    // Which workloads back which service, with their own port mapping.
    let mut backing: BTreeMap<&str, Vec<(&str, &proto::Workload, &PortList)>> = BTreeMap::new();
    for (name, v) in &set.workloads {
        for (key, ports) in &v.resource.services {
            if !set.services.contains_key(key) {
                findings.add(
                    Severity::Unresolved,
                    ResourceType::Workload,
                    name,
                    format!("backs service {key:?}, which was not received (yet)"),
                );
                continue;
            }
            backing
                .entry(key.as_str())
                .or_default()
                .push((name.as_str(), &v.resource, ports));
        }
    }
    let mut services = BTreeMap::new();
    for (key, v) in &set.services {
        let members = backing.get(key.as_str()).map_or(&[][..], Vec::as_slice);
        for service in service(key, v, members, &mut findings) {
            match services.get(&service.vip) {
                None => {
                    services.insert(service.vip, service);
                }
                Some(Service { name, .. }) => findings.add(
                    Severity::Adjusted,
                    ResourceType::WorkloadService,
                    key,
                    format!(
                        "{} is also a VIP of service {name:?}, which is kept",
                        service.vip
                    ),
                ),
            }
        }
    }
    let mut findings = findings.into_vec();
    findings.sort();
    findings.dedup();
    let report = Report {
        rejected: set.rejected.clone(),
        findings,
        unrouted: Vec::new(),
    };
    let mesh = Mesh {
        services,
        workloads,
        probe,
    };
    (mesh, report)
}

fn workload(w: &proto::Workload) -> Workload {
    Workload {
        uid: w.uid.clone(),
        name: w.name.clone(),
        namespace: w.namespace.clone(),
        workload_name: w.workload_name.clone(),
        service_account: w.service_account.clone(),
        canonical_name: w.canonical_name.clone(),
        canonical_revision: w.canonical_revision.clone(),
        node: w.node.clone(),
        cluster: w.cluster_id.clone(),
        network: w.network.clone(),
        trust_domain: w.trust_domain.clone(),
        addresses: w.addresses.iter().filter_map(|b| ip_of(b).ok()).collect(),
        services: w.services.keys().cloned().collect(),
    }
}

/// The services (one per VIP and port) of one Address service.
fn service(
    key: &str,
    v: &Versioned<proto::Service>,
    members: &[(&str, &proto::Workload, &PortList)],
    findings: &mut Findings,
) -> Vec<Service> {
    let s = &v.resource;
    let mut note = |severity, message: String| {
        findings.add(severity, ResourceType::WorkloadService, key, message)
    };
    if s.addresses.is_empty() {
        note(
            Severity::Ignored,
            "headless (no VIP): clients dial the workloads' own addresses, which need no routing"
                .into(),
        );
        return Vec::new();
    }
    let lb = s.load_balancing.clone().unwrap_or_default();
    if lb.mode == load_balancing::MODE_PASSTHROUGH {
        note(
            Severity::Ignored,
            "load balancing mode PASSTHROUGH: connections keep their destination".into(),
        );
        return Vec::new();
    }
    if let Some(w) = s.waypoint.as_ref().or(s
        .weighted_waypoints
        .first()
        .and_then(|w| w.destination.as_ref()))
    {
        note(
            Severity::Unsupported,
            format!(
                "uses waypoint {}, which the kernel cannot reach (HBONE); its connections go straight to the workloads, without the waypoint's L7 policy",
                w.describe()
            ),
        );
    }
    if !lb.routing_preference.is_empty() {
        note(
            Severity::Unsupported,
            format!(
                "prefers endpoints by locality ({} scopes, {}); the kernel picks among every endpoint",
                lb.routing_preference.len(),
                if lb.mode == load_balancing::MODE_STRICT {
                    "strict"
                } else {
                    "failover"
                }
            ),
        );
    }
    let allow_unhealthy = lb.health_policy == load_balancing::HEALTH_ALLOW_ALL;
    let mut out = Vec::new();
    for vip in &s.addresses {
        let Ok(ip) = ip_of(&vip.address) else {
            continue;
        };
        if vip
            .length
            .is_some_and(|l| l != if ip.is_ipv4() { 32 } else { 128 })
        {
            note(
                Severity::Unsupported,
                format!(
                    "VIP {ip}/{} is a range; the kernel routes single addresses",
                    vip.length.unwrap_or_default()
                ),
            );
            continue;
        }
        for port in &s.ports {
            let Ok(service_port) = u16::try_from(port.service_port) else {
                continue;
            };
            if service_port == 0 {
                note(
                    Severity::Ignored,
                    "a service port 0 is not an address; skipped".into(),
                );
                continue;
            }
            let vip_addr = SocketAddr::new(ip, service_port);
            let picked = backends(
                (&vip.network, vip_addr, port.target_port),
                members,
                allow_unhealthy,
                &mut note,
            );
            out.push(make_service(key, v, vip_addr, picked, &mut note));
        }
    }
    out
}

struct Picked {
    backends: BTreeMap<SocketAddr, Backend>,
    excluded: usize,
}

fn backends(
    (network, vip, target_port): (&str, SocketAddr, u32),
    members: &[(&str, &proto::Workload, &PortList)],
    allow_unhealthy: bool,
    note: &mut impl FnMut(Severity, String),
) -> Picked {
    let mut picked = Picked {
        backends: BTreeMap::new(),
        excluded: 0,
    };
    let mut unmapped = BTreeSet::new();
    for &(uid, w, ports) in members {
        if w.status == proto::WORKLOAD_UNHEALTHY && !allow_unhealthy {
            picked.excluded += 1;
            continue;
        }
        let own = ports
            .ports
            .iter()
            .find(|p| p.service_port == u32::from(vip.port()))
            .map(|p| p.target_port)
            .filter(|&p| p != 0);
        let Some(port) = own.or((target_port != 0).then_some(target_port)) else {
            unmapped.insert(uid);
            picked.excluded += 1;
            continue;
        };
        let port = u16::try_from(port).unwrap_or_default();
        if !network.is_empty() && !w.network.is_empty() && w.network != network {
            note(
                Severity::Unsupported,
                format!(
                    "{vip}: workload {uid:?} is on network {:?}, reached through its network gateway (HBONE); left out",
                    w.network
                ),
            );
            picked.excluded += 1;
            continue;
        }
        let ips: Vec<IpAddr> = w.addresses.iter().filter_map(|b| ip_of(b).ok()).collect();
        let Some(ip) = ips.iter().find(|ip| ip.is_ipv4() == vip.is_ipv4()) else {
            let why = if ips.is_empty() && !w.hostname.is_empty() {
                format!(
                    "has a host name ({:?}) and no address; the kernel does no DNS",
                    w.hostname
                )
            } else if ips.is_empty() {
                "has no address".to_string()
            } else {
                "has no address of the VIP's family".to_string()
            };
            note(
                Severity::Adjusted,
                format!("{vip}: workload {uid:?} {why}; left out"),
            );
            picked.excluded += 1;
            continue;
        };
        let weight = w.capacity.unwrap_or(1);
        let addr = SocketAddr::new(*ip, port);
        // Two workloads on one address (a clash istiod should not send):
        // the first by uid keeps it.
        picked.backends.entry(addr).or_insert(Backend {
            addr,
            weight,
            workload: Some(uid.to_string()),
        });
    }
    if !unmapped.is_empty() {
        note(
            Severity::Unresolved,
            format!(
                "{vip}: the service's target port is a name and {} workload(s) do not map port {} (e.g. {:?}); left out",
                unmapped.len(),
                vip.port(),
                unmapped.first().copied().unwrap_or_default()
            ),
        );
    }
    picked
}

fn make_service(
    key: &str,
    v: &Versioned<proto::Service>,
    vip: SocketAddr,
    picked: Picked,
    note: &mut impl FnMut(Severity, String),
) -> Service {
    let s = &v.resource;
    let mut backends: Vec<Backend> = picked.backends.into_values().collect();
    let endpoints = backends.len();
    let mut excluded = picked.excluded;
    if backends.len() > MAX_BACKENDS {
        let dropped = backends.len() - MAX_BACKENDS;
        backends.sort_by(|a, b| b.weight.cmp(&a.weight).then(a.addr.cmp(&b.addr)));
        backends.truncate(MAX_BACKENDS);
        backends.sort_by_key(|b| b.addr);
        excluded += dropped;
        note(
            Severity::Adjusted,
            format!(
                "{vip} has {endpoints} backends; the {MAX_BACKENDS} heaviest are kept and {dropped} left out"
            ),
        );
    }
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    if total > u64::from(u32::MAX) {
        // Capacities are relative: scaled down, a non-zero one stays non-zero.
        let factor = total.div_ceil(u64::from(u32::MAX) - MAX_BACKENDS as u64);
        for b in &mut backends {
            let scaled = u64::from(b.weight) / factor;
            b.weight = u32::try_from(scaled)
                .unwrap_or(u32::MAX)
                .max(u32::from(b.weight > 0));
        }
        note(
            Severity::Adjusted,
            format!("{vip}: capacities sum to {total}, above 2^32-1; scaled down by {factor}"),
        );
    }
    let weighted = backends.windows(2).any(|w| w[0].weight != w[1].weight);
    let policy = if weighted {
        Policy::Weighted
    } else {
        Policy::Random
    };
    let name = match s.hostname.trim() {
        n if RESERVED_NAMES.contains(&n) => format!("{n}@{vip}"),
        n => n.to_string(),
    };
    Service {
        name,
        namespace: (!s.namespace.is_empty()).then(|| s.namespace.clone()),
        vip,
        policy,
        origin: Origin {
            resources: vec![ResourceRef {
                kind: "service",
                name: key.to_string(),
                version: v.version.clone(),
            }],
            clusters: vec![ClusterShare {
                name: key.to_string(),
                weight: 1,
                lb_policy: lb_policy(s),
                max_connections: None,
                endpoints: endpoints.min(MAX_BACKENDS),
                excluded_endpoints: excluded,
            }],
            policy_reason: weighted.then(|| "workloads have unequal capacities".to_string()),
        },
        backends,
    }
}

/// How ztunnel would balance the service, as the model shows it.
fn lb_policy(s: &proto::Service) -> String {
    match s.load_balancing.as_ref().map_or(0, |lb| lb.mode) {
        load_balancing::MODE_STRICT => "ambient (strict locality)".into(),
        load_balancing::MODE_FAILOVER => "ambient (locality failover)".into(),
        _ => "ambient".into(),
    }
}
