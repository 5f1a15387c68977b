//! Turns a probe record into its bounded label set. Labels come only from the
//! mesh model (service names, backend addresses the config lists, workloads
//! by address), never from raw client ports, so the number of series stays
//! bounded.
use std::{
    collections::{HashMap, HashSet},
    fmt,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use kmesh_common::{ConnEvent, direction, event_flags};

use super::peers::{ServiceNames, WorkloadLabels};
use crate::{
    addr::socket_addr,
    model::{Mesh, OVERFLOW, Policy, UNKNOWN, canonical_ip},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Outbound,
    Inbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }

    /// Istio's `reporter`: the client's side reports as `source`, the
    /// server's as `destination`.
    pub fn reporter(self) -> &'static str {
        match self {
            Direction::Outbound => "source",
            Direction::Inbound => "destination",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    /// `destination_service`.
    pub service: Arc<str>,
    pub backend: Arc<str>,
    pub direction: Direction,
    /// The client's workload (Istio's `source_*` labels) and the server's
    /// (`destination_*`).
    pub source: Arc<WorkloadLabels>,
    pub destination: Arc<WorkloadLabels>,
    pub service_names: Arc<ServiceNames>,
}

impl SeriesKey {
    /// A series between peers outside the mesh.
    pub fn new(service: &str, backend: &str, direction: Direction) -> Self {
        Self {
            service: Arc::from(service),
            backend: Arc::from(backend),
            direction,
            source: WorkloadLabels::unknown(),
            destination: WorkloadLabels::unknown(),
            service_names: ServiceNames::unknown(),
        }
    }

    pub fn overflow(direction: Direction) -> Self {
        Self::new(OVERFLOW, OVERFLOW, direction)
    }

    pub fn is_overflow(&self) -> bool {
        &*self.service == OVERFLOW && &*self.backend == OVERFLOW
    }
}

/// A backend of the applied config, as the exporters label it.
#[derive(Clone, Debug)]
pub struct ConfiguredBackend {
    pub service: Arc<str>,
    /// The workload behind it, if the mesh knows one.
    pub workload: Option<Arc<WorkloadLabels>>,
    pub vip: SocketAddr,
    pub policy: Policy,
    pub label: Arc<str>,
    pub addr: SocketAddr,
    pub weight: u32,
}

#[derive(Default)]
pub struct LabelTable {
    /// Kept for ids of removed services too: records still in flight name them.
    service_names: HashMap<u32, (Arc<str>, Arc<ServiceNames>)>,
    /// Backend address -> its service and how it is labelled.
    backends: HashMap<SocketAddr, BackendLabels>,
    /// Workload addresses -> the workload's labels.
    peers: HashMap<IpAddr, Arc<WorkloadLabels>>,
    unknown_peer: Option<Arc<WorkloadLabels>>,
    unknown_service: Option<Arc<ServiceNames>>,
    /// The applied config's backends, in config order.
    configured: Vec<ConfiguredBackend>,
    /// (service, backend label) of every configured backend.
    configured_pairs: HashSet<(Arc<str>, Arc<str>)>,
    /// Every configured service (name, VIP, policy), with or without backends.
    services: Vec<ConfiguredService>,
    unknown: Option<Arc<str>>,
}

struct BackendLabels {
    service: Arc<str>,
    names: Arc<ServiceNames>,
    label: Arc<str>,
    vip: SocketAddr,
    /// The backend's workload, when the source named one.
    workload: Option<Arc<WorkloadLabels>>,
}

/// A service of the applied config, as the admin API lists it.
#[derive(Clone, Debug)]
pub struct ConfiguredService {
    pub name: Arc<str>,
    pub vip: SocketAddr,
    pub policy: Policy,
}

impl LabelTable {
    /// Rebuilds the table from the model and the id the kernel reports for
    /// each VIP.
    pub fn update(&mut self, mesh: &Mesh, ids: impl Iterator<Item = (SocketAddr, u32)>) {
        for (vip, id) in ids {
            if let Some(service) = mesh.services.get(&vip) {
                self.service_names.insert(
                    id,
                    (Arc::from(service.name.as_str()), ServiceNames::of(service)),
                );
            }
        }
        let by_uid: HashMap<&str, Arc<WorkloadLabels>> = mesh
            .workloads
            .iter()
            .map(|w| (w.uid.as_str(), WorkloadLabels::of(w)))
            .collect();
        self.peers = mesh
            .workloads
            .addresses()
            .map(|(ip, w)| (ip, by_uid[w.uid.as_str()].clone()))
            .collect();
        self.backends.clear();
        self.configured.clear();
        self.services = mesh
            .services
            .values()
            .map(|s| ConfiguredService {
                name: Arc::from(s.name.as_str()),
                vip: s.vip,
                policy: s.policy,
            })
            .collect();
        self.configured_pairs.clear();
        for service in mesh.services.values() {
            let name: Arc<str> = Arc::from(service.name.as_str());
            let names = ServiceNames::of(service);
            for b in &service.backends {
                let label: Arc<str> = Arc::from(b.addr.to_string());
                self.backends.insert(
                    b.addr,
                    BackendLabels {
                        service: name.clone(),
                        names: names.clone(),
                        label: label.clone(),
                        vip: service.vip,
                        workload: b
                            .workload
                            .as_deref()
                            .and_then(|uid| by_uid.get(uid).cloned()),
                    },
                );
                self.configured_pairs.insert((name.clone(), label.clone()));
                let workload = self.backends[&b.addr]
                    .workload
                    .clone()
                    .or_else(|| self.peers.get(&canonical_ip(b.addr.ip())).cloned());
                self.configured.push(ConfiguredBackend {
                    service: name.clone(),
                    workload,
                    vip: service.vip,
                    policy: service.policy,
                    label,
                    addr: b.addr,
                    weight: b.weight,
                });
            }
        }
    }

    /// The VIP of the service a configured backend address belongs to.
    pub fn vip_of_backend(&self, addr: &SocketAddr) -> Option<SocketAddr> {
        self.backends.get(addr).map(|b| b.vip)
    }

    /// Every configured service, in VIP order.
    pub fn services(&self) -> &[ConfiguredService] {
        &self.services
    }

    pub fn configured(&self) -> &[ConfiguredBackend] {
        &self.configured
    }

    /// Whether the applied config still has this series' service and backend.
    pub fn is_configured(&self, key: &SeriesKey) -> bool {
        self.configured_pairs
            .contains(&(key.service.clone(), key.backend.clone()))
    }

    fn unknown(&mut self) -> Arc<str> {
        self.unknown
            .get_or_insert_with(|| Arc::from(UNKNOWN))
            .clone()
    }

    fn unknown_service(&mut self) -> Arc<ServiceNames> {
        self.unknown_service
            .get_or_insert_with(ServiceNames::unknown)
            .clone()
    }

    /// The workload at an address: the one its backend entry names, else
    /// the one holding the IP, else `unknown` (outside the mesh).
    fn peer(&mut self, addr: SocketAddr) -> Arc<WorkloadLabels> {
        if let Some(w) = self.backends.get(&addr).and_then(|b| b.workload.clone()) {
            return w;
        }
        match self.peers.get(&canonical_ip(addr.ip())) {
            Some(w) => w.clone(),
            None => self
                .unknown_peer
                .get_or_insert_with(WorkloadLabels::unknown)
                .clone(),
        }
    }

    pub fn resolve(&mut self, ev: &ConnEvent) -> SeriesKey {
        let dir = if ev.direction == direction::INBOUND {
            Direction::Inbound
        } else {
            Direction::Outbound
        };
        let local = socket_addr(ev.local_addr, ev.family, ev.local_port);
        let remote = socket_addr(ev.remote_addr, ev.family, ev.remote_port);
        // The server's address: where the kernel sent a routed connection,
        // else the peer an unrouted client dialled, else ourselves.
        let server = if dir == Direction::Inbound {
            local
        } else if ev.flags & event_flags::ROUTED != 0 {
            let r = &ev.route;
            socket_addr(r.backend_addr, r.family, r.backend_port)
        } else {
            remote
        };
        let client = if dir == Direction::Inbound {
            remote
        } else {
            local
        };
        let (service, service_names, backend) =
            if dir == Direction::Outbound && ev.flags & event_flags::ROUTED != 0 {
                let (service, names) = match self.service_names.get(&ev.route.service_id) {
                    Some((name, names)) => (name.clone(), names.clone()),
                    None => (self.unknown(), self.unknown_service()),
                };
                let backend = match self.backends.get(&server) {
                    Some(b) => b.label.clone(),
                    // The backend left the config while this connection lived.
                    None => Arc::from(server.to_string()),
                };
                (service, names, backend)
            } else {
                // Unrouted: a client dialling a backend directly, or a backend
                // accepting. Name it only if the address is a configured backend.
                match self.backends.get(&server) {
                    Some(b) => (b.service.clone(), b.names.clone(), b.label.clone()),
                    None => (self.unknown(), self.unknown_service(), self.unknown()),
                }
            };
        SeriesKey {
            service,
            backend,
            direction: dir,
            source: self.peer(client),
            destination: self.peer(server),
            service_names,
        }
    }
}
