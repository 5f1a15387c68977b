//! The mesh as the agent understands it, whatever source it came from: the
//! one validated input of the map writer and of the metrics' label table.
mod workload;

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use serde::Deserialize;

pub use self::workload::{AddressClash, DEFAULT_TRUST_DOMAIN, Workload, Workloads, canonical_ip};

/// Largest backend set one service may have (the kernel's search is bounded).
pub const MAX_BACKENDS: usize = kmesh_common::MAX_BACKENDS as usize;

/// What telemetry calls a destination that is not a configured service or
/// backend.
pub const UNKNOWN: &str = "unknown";
/// Service and backend of the series that takes connections once the series
/// limit is reached.
pub const OVERFLOW: &str = "overflow";
/// Names no service may take, as telemetry already gives them a meaning.
pub const RESERVED_NAMES: [&str; 2] = [UNKNOWN, OVERFLOW];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Every backend equally likely, independently per connection.
    Random,
    /// Backends in turn, one shared cursor per service.
    RoundRobin,
    /// Backends in proportion to their weights (gray release, canaries).
    Weighted,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Random => "random",
            Policy::RoundRobin => "round_robin",
            Policy::Weighted => "weighted",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub addr: SocketAddr,
    pub weight: u32,
    /// The uid of the workload behind it, when the source names one;
    /// otherwise the workload holding the address, if any.
    pub workload: Option<String>,
}

impl Backend {
    pub fn new(addr: SocketAddr, weight: u32) -> Self {
        Self {
            addr,
            weight,
            workload: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// The name clients know it by: a hostname
    /// (`reviews.bookinfo.svc.cluster.local`) or a short name.
    pub name: String,
    /// The namespace it lives in, when the source says; otherwise read off
    /// a Kubernetes hostname (see [`Service::istio_names`]).
    pub namespace: Option<String>,
    /// The address clients dial.
    pub vip: SocketAddr,
    pub policy: Policy,
    pub backends: Vec<Backend>,
    /// Where the service came from; shown by introspection, never routed on.
    pub origin: Origin,
}

/// The resources a service was made from and what they said beyond the
/// routing itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub resources: Vec<ResourceRef>,
    /// Clusters behind an xDS service, with their share of its traffic.
    pub clusters: Vec<ClusterShare>,
    /// Why the policy differs from the source's own, if it does.
    pub policy_reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceRef {
    /// `file`, `listener`, `route`, `cluster` or `endpoints`.
    pub kind: &'static str,
    pub name: String,
    pub version: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterShare {
    pub name: String,
    /// The route's weight for this cluster (1 when it is the only one).
    pub weight: u32,
    /// The Envoy lb policy the cluster asked for.
    pub lb_policy: String,
    /// Circuit-breaker connection limit (default priority), carried for a
    /// later limit in the kernel; not enforced yet.
    pub max_connections: Option<u32>,
    /// Endpoints taking traffic, and those left out (unhealthy, draining,
    /// failover priorities, unusable addresses).
    pub endpoints: usize,
    pub excluded_endpoints: usize,
}

/// How Istio's `destination_service*` labels name a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IstioServiceNames {
    /// `destination_service`: the hostname, as configured.
    pub host: String,
    /// `destination_service_name`: the hostname's first label.
    pub name: String,
    /// `destination_service_namespace`, or None when unknown.
    pub namespace: Option<String>,
}

impl Service {
    /// The service's names in Istio's labels. A Kubernetes hostname
    /// `name.namespace.svc[.domain]` gives both parts; any other name is
    /// its own short name, in the namespace the source gave (if any).
    pub fn istio_names(&self) -> IstioServiceNames {
        let host = self.name.clone();
        let labels: Vec<&str> = self.name.split('.').collect();
        let kube = labels.len() >= 3 && labels[2] == "svc" && !labels[1].is_empty();
        let (name, namespace) = if kube {
            (labels[0].to_string(), Some(labels[1].to_string()))
        } else {
            (self.name.clone(), None)
        };
        IstioServiceNames {
            host,
            name,
            namespace: self.namespace.clone().or(namespace),
        }
    }

    /// The backends that take traffic, in order. Under `random` and
    /// `round_robin` a weight of 0 drains a backend; under `weighted` every
    /// backend is kept so indices match the configuration.
    pub fn routable_backends(&self) -> Vec<&Backend> {
        match self.policy {
            Policy::Weighted => self.backends.iter().collect(),
            Policy::Random | Policy::RoundRobin => {
                self.backends.iter().filter(|b| b.weight > 0).collect()
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Mesh {
    /// Keyed by VIP:port, which is unique.
    pub services: BTreeMap<SocketAddr, Service>,
    /// Who runs behind the addresses: telemetry's sources and destinations.
    pub workloads: Workloads,
    pub probe: ProbeSettings,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeSettings {
    /// How often a long-lived connection reports its running totals.
    pub report_interval: Duration,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        Self {
            report_interval: Duration::from_secs(10),
        }
    }
}

/// Meshes for unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// `echo` at 198.18.0.10:80, round robin over 127.0.0.2:8080.
    pub fn echo() -> Mesh {
        let mut mesh = Mesh::default();
        let vip = "198.18.0.10:80".parse().unwrap();
        mesh.services.insert(
            vip,
            Service {
                name: "echo".into(),
                namespace: None,
                vip,
                policy: Policy::RoundRobin,
                backends: vec![Backend::new("127.0.0.2:8080".parse().unwrap(), 1)],
                origin: Origin::default(),
            },
        );
        mesh
    }
}
