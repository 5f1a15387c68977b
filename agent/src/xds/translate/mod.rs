//! From xDS resources to the mesh: which VIP:port is a service, with which
//! backends and weights, and every part of the config the kernel cannot
//! honour, with why.
//!
//! A service is an address clients dial. It comes from
//! - an outbound listener bound to a specific IP:port (Istio's `VIP_PORT`
//!   listeners), through its HTTP route or its `tcp_proxy`;
//! - a wildcard listener (`0.0.0.0_PORT`) whose route's virtual hosts name
//!   IP addresses among their domains (Istio lists each service's VIP), or
//!   whose `tcp_proxy` chains match single destination addresses.
//!
//! Routes that name no address (a gateway's `*`) are derived all the same
//! and listed as unrouted, with the reason.
mod backends;
pub mod incremental;
mod routes;
mod weights;
pub mod workloads;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use envoy_types::pb::envoy::{
    config::{
        core::v3::{TrafficDirection, address, socket_address},
        listener::v3::{FilterChain, Listener, filter, listener},
        route::v3::{RouteConfiguration, VirtualHost},
    },
    extensions::filters::network::{
        http_connection_manager::v3::{HttpConnectionManager, http_connection_manager},
        tcp_proxy::v3::{TcpProxy, tcp_proxy},
    },
};
use prost::{Message, Name};

use self::backends::{Outcome, Target};
use super::resources::{ResourceSet, ResourceType, Versioned};
use crate::model::{Backend, MAX_BACKENDS, Origin, Policy, RESERVED_NAMES, ResourceRef, Service};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Config the kernel cannot honour (header matches, host names, SNI).
    Unsupported,
    /// A reference to something that does not exist (yet).
    Unresolved,
    /// Changed to fit the kernel (backends left out, conflicts settled).
    Adjusted,
    /// Not for this data plane (inbound listeners, passthrough).
    Ignored,
}

/// Something in the config the translation could not take as it is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub severity: Severity,
    pub kind: ResourceType,
    pub name: String,
    pub message: String,
}

#[derive(Default)]
pub struct Findings(Vec<Finding>);

impl Findings {
    pub fn into_vec(self) -> Vec<Finding> {
        self.0
    }

    pub fn add(&mut self, severity: Severity, kind: ResourceType, name: &str, message: String) {
        self.0.push(Finding {
            severity,
            kind,
            name: name.to_string(),
            message,
        });
    }
}

/// A route derived from the config that no address leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unrouted {
    pub listener: String,
    pub port: u16,
    pub virtual_host: String,
    pub domains: Vec<String>,
    pub policy: Policy,
    pub backends: Vec<Backend>,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Translation {
    pub services: BTreeMap<SocketAddr, Service>,
    /// Services whose clusters or routes are still on their way: a source
    /// that had them before keeps what it had.
    pub pending: BTreeSet<SocketAddr>,
    pub unrouted: Vec<Unrouted>,
    pub findings: Vec<Finding>,
    /// What each service was resolved from, so a change of endpoints
    /// re-resolves only the services that read them
    /// ([`incremental::update_endpoints`]).
    pub index: incremental::Index,
}

pub fn translate(set: &ResourceSet) -> Translation {
    let mut t = Translator {
        set,
        out: Translation::default(),
        findings: Findings::default(),
        bound: BTreeSet::new(),
    };
    for listener in set.listeners.values() {
        t.listener(listener);
    }
    for aside in &set.set_aside {
        t.note(
            Severity::Ignored,
            aside.kind,
            &aside.name,
            aside.reason.clone(),
        );
    }
    t.out.index.finish(set, t.findings.0);
    t.out.findings = t.out.index.findings();
    t.out
}

struct Translator<'a> {
    set: &'a ResourceSet,
    out: Translation,
    findings: Findings,
    /// VIPs that came from a listener bound to them, which beat VIPs read
    /// from a wildcard listener's domains.
    bound: BTreeSet<SocketAddr>,
}

enum Terminal {
    Tcp(Box<TcpProxy>),
    Http(Box<HttpConnectionManager>),
    Other(String),
}

fn terminal(chain: &FilterChain) -> Option<Terminal> {
    let last = chain.filters.last()?;
    for f in &chain.filters {
        let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
            continue;
        };
        if any.type_url == TcpProxy::type_url() {
            return TcpProxy::decode(any.value.as_slice())
                .ok()
                .map(|t| Terminal::Tcp(Box::new(t)));
        }
        if any.type_url == HttpConnectionManager::type_url() {
            return HttpConnectionManager::decode(any.value.as_slice())
                .ok()
                .map(|h| Terminal::Http(Box::new(h)));
        }
    }
    Some(Terminal::Other(last.name.clone()))
}

/// An IP (with an optional port) among a virtual host's domains.
fn domain_addr(domain: &str, default_port: u16) -> Option<SocketAddr> {
    let (ip, port) = if let Ok(sa) = domain.parse::<SocketAddr>() {
        (sa.ip(), sa.port())
    } else if let Ok(ip) = domain.trim_start_matches('[').trim_end_matches(']').parse() {
        (ip, default_port)
    } else {
        return None;
    };
    Some(SocketAddr::new(unmap(ip), port))
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Istio names clusters `outbound|PORT|SUBSET|HOST`; the host is the service.
fn service_name_of_cluster(cluster: &str) -> &str {
    let parts: Vec<&str> = cluster.split('|').collect();
    match parts.as_slice() {
        [dir, _, _, host] if matches!(*dir, "outbound" | "inbound") && !host.is_empty() => host,
        _ => cluster,
    }
}

/// Istio names virtual hosts `HOST:PORT`.
fn service_name_of_vhost<'v>(vh: &'v VirtualHost, rc: &'v RouteConfiguration) -> &'v str {
    let name = match vh.name.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() && !host.is_empty() => host,
        _ => vh.name.as_str(),
    };
    if name.is_empty() { &rc.name } else { name }
}

fn tcp_target(tp: &TcpProxy) -> Target {
    match &tp.cluster_specifier {
        Some(tcp_proxy::ClusterSpecifier::Cluster(c)) => vec![(c.clone(), 1)],
        Some(tcp_proxy::ClusterSpecifier::WeightedClusters(wc)) => wc
            .clusters
            .iter()
            .map(|c| (c.name.clone(), c.weight))
            .collect(),
        None => Vec::new(),
    }
}

fn tcp_service_name<'t>(tp: &'t TcpProxy, target: &'t Target, listener: &'t str) -> &'t str {
    let hosts: BTreeSet<&str> = target
        .iter()
        .map(|(c, _)| service_name_of_cluster(c))
        .collect();
    match hosts.len() {
        1 => hosts.into_iter().next().unwrap_or(listener),
        _ if !tp.stat_prefix.is_empty() => &tp.stat_prefix,
        _ => listener,
    }
}

impl<'a> Translator<'a> {
    fn note(&mut self, severity: Severity, kind: ResourceType, name: &str, message: String) {
        self.findings.add(severity, kind, name, message);
    }

    fn listener(&mut self, v: &'a Versioned<Listener>) {
        let l = &v.resource;
        let at = ResourceRef {
            kind: "listener",
            name: l.name.clone(),
            version: v.version.clone(),
        };
        let ignore = |t: &mut Self, msg: &str| {
            t.note(
                Severity::Ignored,
                ResourceType::Listener,
                &l.name,
                msg.into(),
            )
        };
        if l.traffic_direction == TrafficDirection::Inbound as i32 {
            return ignore(
                self,
                "inbound: connections into this node's workloads are not redirected",
            );
        }
        if l.use_original_dst.is_some_and(|b| b.value) {
            return ignore(
                self,
                "hands connections to the other listeners (use_original_dst); not a service itself",
            );
        }
        if l.address.is_none()
            && matches!(
                l.listener_specifier,
                Some(listener::ListenerSpecifier::InternalListener(_))
            )
        {
            return ignore(
                self,
                "an internal listener: Envoy hands it connections from its own clusters (Istio's HBONE and waypoint plumbing); no application dials it",
            );
        }
        let Some((ip, port)) = listener_addr(l) else {
            return self.note(
                Severity::Unsupported,
                ResourceType::Listener,
                &l.name,
                "has no IP address and numeric port, so no connection can be matched to it".into(),
            );
        };
        let chains: Vec<&FilterChain> = l
            .filter_chains
            .iter()
            .chain(l.default_filter_chain.iter())
            .filter(|c| self.chain_applies(l, c, port))
            .collect();
        if ip.is_unspecified() {
            self.wildcard(l, at, port, &chains);
        } else {
            self.bound_listener(l, at, SocketAddr::new(ip, port), &chains);
        }
    }

    /// Chains that select by what a connect() does not reveal are reported
    /// and skipped.
    fn chain_applies(&mut self, l: &Listener, chain: &FilterChain, port: u16) -> bool {
        let Some(m) = &chain.filter_chain_match else {
            return true;
        };
        if m.destination_port
            .is_some_and(|p| p.value != u32::from(port))
        {
            return false;
        }
        let unseen = if !m.server_names.is_empty() {
            Some("the TLS server name")
        } else if !m.source_prefix_ranges.is_empty()
            || !m.direct_source_prefix_ranges.is_empty()
            || !m.source_ports.is_empty()
            || m.source_type != 0
        {
            Some("the client's address")
        } else {
            None
        };
        if let Some(what) = unseen {
            let chain_name = if chain.name.is_empty() {
                "a filter chain"
            } else {
                &chain.name
            };
            self.note(
                Severity::Unsupported,
                ResourceType::Listener,
                &l.name,
                format!("{chain_name} is selected by {what}, which the routing hook does not match on; skipped"),
            );
            return false;
        }
        true
    }

    /// A listener bound to one IP:port: that address is the VIP. An HTTP
    /// chain's route wins over a TCP fallback chain, as clients of an HTTP
    /// service speak HTTP.
    fn bound_listener(
        &mut self,
        l: &Listener,
        at: ResourceRef,
        vip: SocketAddr,
        chains: &[&FilterChain],
    ) {
        let mut http: Option<(Target, String, Vec<ResourceRef>)> = None;
        let mut tcp: Option<(Target, String)> = None;
        for chain in chains {
            match terminal(chain) {
                Some(Terminal::Http(hcm)) if http.is_none() => {
                    http = self.http_target_for(l, &hcm, vip);
                }
                Some(Terminal::Tcp(tp)) if tcp.is_none() => {
                    let target = tcp_target(&tp);
                    let name = tcp_service_name(&tp, &target, &l.name).to_string();
                    tcp = Some((target, name));
                }
                Some(Terminal::Other(name)) => self.unsupported_filter(l, &name),
                _ => {}
            }
        }
        let (target, name, mut refs) = match (http, tcp) {
            (Some((target, name, refs)), tcp) => {
                if let Some((other, _)) = tcp
                    && !same_clusters(&other, &target)
                {
                    self.note(
                        Severity::Unsupported,
                        ResourceType::Listener,
                        &l.name,
                        format!(
                            "non-HTTP connections to {vip} go to {} under Envoy; the kernel routes every connection by the HTTP route",
                            names(&other)
                        ),
                    );
                }
                (target, name, refs)
            }
            (None, Some((target, name))) => (target, name, Vec::new()),
            (None, None) => return,
        };
        refs.insert(0, at);
        self.add_service(vip, &name, &target, refs, (&l.name, true));
    }

    /// The target of an HTTP chain for connections to `vip`, with the
    /// service's name and the route configuration it came from.
    fn http_target_for(
        &mut self,
        l: &Listener,
        hcm: &HttpConnectionManager,
        vip: SocketAddr,
    ) -> Option<(Target, String, Vec<ResourceRef>)> {
        let (rc, at) = match self.route_config(l, hcm) {
            Ok(found) => found,
            Err(pending) => {
                if pending {
                    self.out.pending.insert(vip);
                }
                return None;
            }
        };
        let vh = rc
            .virtual_hosts
            .iter()
            .find(|vh| {
                vh.domains
                    .iter()
                    .any(|d| domain_addr(d, vip.port()) == Some(vip))
            })
            .or_else(|| {
                rc.virtual_hosts
                    .iter()
                    .find(|vh| vh.domains.iter().any(|d| d == "*"))
            })
            .or(match rc.virtual_hosts.as_slice() {
                [only] => Some(only),
                _ => None,
            });
        let Some(vh) = vh else {
            self.note(
                Severity::Unresolved,
                ResourceType::Route,
                &rc.name,
                format!("no virtual host matches {vip} (by its address or `*`); connections to it are not routed"),
            );
            return None;
        };
        let target = routes::virtual_host_target(rc, vh, &mut self.findings)?;
        let name = service_name_of_vhost(vh, rc).to_string();
        Some((target, name, at.into_iter().collect()))
    }

    /// The chain's route configuration; `Err(true)` when it has not arrived.
    fn route_config<'h>(
        &mut self,
        l: &Listener,
        hcm: &'h HttpConnectionManager,
    ) -> Result<(&'h RouteConfiguration, Option<ResourceRef>), bool>
    where
        'a: 'h,
    {
        match &hcm.route_specifier {
            Some(http_connection_manager::RouteSpecifier::Rds(rds)) => {
                match self.set.routes.get(&rds.route_config_name) {
                    Some(v) => Ok((
                        &v.resource,
                        Some(ResourceRef {
                            kind: "route",
                            name: rds.route_config_name.clone(),
                            version: v.version.clone(),
                        }),
                    )),
                    None => {
                        self.note(
                            Severity::Unresolved,
                            ResourceType::Listener,
                            &l.name,
                            format!(
                                "route configuration {:?} does not exist (yet)",
                                rds.route_config_name
                            ),
                        );
                        Err(true)
                    }
                }
            }
            Some(http_connection_manager::RouteSpecifier::RouteConfig(rc)) => Ok((rc, None)),
            _ => {
                self.note(
                    Severity::Unsupported,
                    ResourceType::Listener,
                    &l.name,
                    "scoped routes are not supported; its connections are not routed".into(),
                );
                Err(false)
            }
        }
    }

    fn unsupported_filter(&mut self, l: &Listener, filter: &str) {
        self.note(
            Severity::Unsupported,
            ResourceType::Listener,
            &l.name,
            format!("a filter chain ends in {filter}, which has no kernel counterpart; skipped"),
        );
    }

    /// A listener on 0.0.0.0 or `::`: the VIPs are in its virtual hosts'
    /// domains, or in its chains' destination matches.
    fn wildcard(&mut self, l: &Listener, at: ResourceRef, port: u16, chains: &[&FilterChain]) {
        for chain in chains {
            match terminal(chain) {
                Some(Terminal::Tcp(tp)) => {
                    let target = tcp_target(&tp);
                    let name = tcp_service_name(&tp, &target, &l.name).to_string();
                    let hosts = destination_hosts(chain);
                    if hosts.is_empty() {
                        self.unrouted(l, port, &target, ("tcp_proxy", vec![]),
                            "a tcp_proxy on a wildcard address matches every destination; only VIPs can be routed");
                    }
                    for ip in hosts {
                        self.add_service(
                            SocketAddr::new(ip, port),
                            &name,
                            &target,
                            vec![at.clone()],
                            (&l.name, false),
                        );
                    }
                }
                Some(Terminal::Http(hcm)) => self.wildcard_http(l, &at, port, &hcm),
                Some(Terminal::Other(name)) => self.unsupported_filter(l, &name),
                None => {}
            }
        }
    }

    fn wildcard_http(
        &mut self,
        l: &Listener,
        at: &ResourceRef,
        port: u16,
        hcm: &HttpConnectionManager,
    ) {
        let Ok((rc, rc_at)) = self.route_config(l, hcm) else {
            return;
        };
        for vh in &rc.virtual_hosts {
            let vips: BTreeSet<SocketAddr> = vh
                .domains
                .iter()
                .filter_map(|d| domain_addr(d, port))
                .collect();
            let Some(target) = routes::virtual_host_target(rc, vh, &mut self.findings) else {
                continue;
            };
            if vips.is_empty() {
                self.unrouted(l, port, &target, (&vh.name, vh.domains.clone()),
                    "none of its domains is an IP address (only `*` or host names), so no destination address leads to it; the kernel routes by destination address");
                continue;
            }
            let name = service_name_of_vhost(vh, rc).to_string();
            let refs: Vec<ResourceRef> = std::iter::once(at.clone()).chain(rc_at.clone()).collect();
            for vip in vips {
                self.add_service(vip, &name, &target, refs.clone(), (&l.name, false));
            }
        }
    }

    fn unrouted(
        &mut self,
        l: &Listener,
        port: u16,
        target: &Target,
        (vhost, domains): (&str, Vec<String>),
        reason: &str,
    ) {
        self.out.index.unrouted(self.set, target);
        // Any address of the right family will do to resolve the backends.
        let probe = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), port);
        let mut scratch = Findings::default();
        let (policy, backends) = match backends::resolve(self.set, target, probe, &mut scratch) {
            Outcome::Routed(r) if !r.backends.is_empty() => (r.policy, r.backends),
            _ => return,
        };
        self.note(
            Severity::Unsupported,
            ResourceType::Listener,
            &l.name,
            format!("virtual host {vhost:?} is not routed: {reason}"),
        );
        self.out.unrouted.push(Unrouted {
            listener: l.name.clone(),
            port,
            virtual_host: vhost.to_string(),
            domains,
            policy,
            backends,
            reason: reason.to_string(),
        });
    }

    fn add_service(
        &mut self,
        vip: SocketAddr,
        name: &str,
        target: &Target,
        resources: Vec<ResourceRef>,
        (listener, bound): (&str, bool),
    ) {
        if vip.port() == 0 {
            return;
        }
        self.out
            .index
            .call(vip, name, target, &resources, (listener, bound));
        // What resolving this service finds is the service's own, so that
        // re-resolving it replaces just that.
        let from = self.findings.0.len();
        self.resolve_service(vip, name, target, resources, (listener, bound));
        let found = self.findings.0.split_off(from);
        self.out.index.found(vip, found);
    }

    fn resolve_service(
        &mut self,
        vip: SocketAddr,
        name: &str,
        target: &Target,
        mut resources: Vec<ResourceRef>,
        (listener, bound): (&str, bool),
    ) {
        let r = match backends::resolve(self.set, target, vip, &mut self.findings) {
            Outcome::Routed(r) => r,
            Outcome::Passthrough => {
                return self.note(
                    Severity::Ignored,
                    ResourceType::Listener,
                    listener,
                    format!(
                        "{vip} is passthrough (ORIGINAL_DST): connections keep their destination"
                    ),
                );
            }
            Outcome::Unusable => return,
        };
        if !r.pending.is_empty() {
            self.out.pending.insert(vip);
            self.note(
                Severity::Unresolved,
                ResourceType::Listener,
                listener,
                format!(
                    "{vip}: waiting for the endpoints of {}",
                    r.pending.join(", ")
                ),
            );
        }
        resources.extend(r.resources);
        let mut service = Service {
            name: checked_name(name, vip),
            namespace: None,
            vip,
            policy: r.policy,
            backends: r.backends,
            origin: Origin {
                resources,
                clusters: r.clusters,
                policy_reason: r.policy_reason,
            },
        };
        if service.backends.len() > MAX_BACKENDS {
            let dropped = service.backends.len() - MAX_BACKENDS;
            service
                .backends
                .sort_by(|a, b| b.weight.cmp(&a.weight).then(a.addr.cmp(&b.addr)));
            service.backends.truncate(MAX_BACKENDS);
            service.backends.sort_by_key(|b| b.addr);
            self.note(
                Severity::Adjusted,
                ResourceType::Listener,
                listener,
                format!("{vip} has {} backends; the {MAX_BACKENDS} heaviest are kept and {dropped} left out", MAX_BACKENDS + dropped),
            );
        }
        self.claim(service, listener, bound);
    }

    /// One service per VIP: a listener bound to the VIP beats a domain read
    /// off a wildcard listener; otherwise the first listener by name wins.
    fn claim(&mut self, service: Service, listener: &str, bound: bool) {
        let vip = service.vip;
        let Some(existing) = self.out.services.get(&vip) else {
            if bound {
                self.bound.insert(vip);
            }
            self.out.services.insert(vip, service);
            return;
        };
        if existing.backends == service.backends && existing.policy == service.policy {
            return;
        }
        let other = existing
            .origin
            .resources
            .first()
            .map(|r| r.name.clone())
            .unwrap_or_default();
        let (kept, dropped) = if bound && !self.bound.contains(&vip) {
            self.bound.insert(vip);
            self.out.services.insert(vip, service);
            (listener.to_string(), other)
        } else {
            (other, listener.to_string())
        };
        self.note(
            Severity::Adjusted,
            ResourceType::Listener,
            &dropped,
            format!("{vip} is also a service of listener {kept:?}, with other backends; that one is kept"),
        );
    }
}

fn checked_name(name: &str, vip: SocketAddr) -> String {
    let name = name.trim();
    if name.is_empty() {
        return vip.to_string();
    }
    if RESERVED_NAMES.contains(&name) {
        // Those names label series of unconfigured destinations.
        return format!("{name}@{vip}");
    }
    name.to_string()
}

fn listener_addr(l: &Listener) -> Option<(IpAddr, u16)> {
    let address::Address::SocketAddress(sa) = l.address.as_ref()?.address.as_ref()? else {
        return None;
    };
    let Some(socket_address::PortSpecifier::PortValue(port)) = sa.port_specifier else {
        return None;
    };
    let ip: IpAddr = sa.address.parse().ok()?;
    Some((unmap(ip), u16::try_from(port).ok()?))
}

/// Single addresses a chain matches by destination (`/32`, `/128`).
fn destination_hosts(chain: &FilterChain) -> Vec<IpAddr> {
    let Some(m) = &chain.filter_chain_match else {
        return Vec::new();
    };
    m.prefix_ranges
        .iter()
        .filter_map(|r| {
            let ip: IpAddr = r.address_prefix.parse().ok()?;
            let full = if ip.is_ipv4() { 32 } else { 128 };
            (r.prefix_len.map_or(full, |p| p.value) == full).then(|| unmap(ip))
        })
        .collect()
}

fn same_clusters(a: &Target, b: &Target) -> bool {
    let set = |t: &Target| t.iter().map(|(c, _)| c.clone()).collect::<BTreeSet<_>>();
    set(a) == set(b)
}

fn names(t: &Target) -> String {
    t.iter()
        .map(|(c, _)| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
