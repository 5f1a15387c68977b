//! Turns a probe record into its bounded label set. Labels come only from the
//! mesh model (service names, backend addresses the config lists), never
//! from raw client ports, so the number of series stays bounded.
use std::{
    collections::{HashMap, HashSet},
    fmt,
    net::SocketAddr,
    sync::Arc,
};

use kmesh_common::{ConnEvent, direction, event_flags};

use crate::{
    addr::socket_addr,
    model::{Mesh, OVERFLOW, Policy, UNKNOWN},
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
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub service: Arc<str>,
    pub backend: Arc<str>,
    pub direction: Direction,
}

impl SeriesKey {
    pub fn overflow(direction: Direction) -> Self {
        let label: Arc<str> = Arc::from(OVERFLOW);
        Self {
            service: label.clone(),
            backend: label,
            direction,
        }
    }

    pub fn is_overflow(&self) -> bool {
        &*self.service == OVERFLOW && &*self.backend == OVERFLOW
    }
}

/// A backend of the applied config, as the exporters label it.
#[derive(Clone, Debug)]
pub struct ConfiguredBackend {
    pub service: Arc<str>,
    pub vip: SocketAddr,
    pub policy: Policy,
    pub label: Arc<str>,
    pub addr: SocketAddr,
    pub weight: u32,
}

#[derive(Default)]
pub struct LabelTable {
    /// Kept for ids of removed services too: records still in flight name them.
    service_names: HashMap<u32, Arc<str>>,
    /// Backend address -> (service, backend label, the service's VIP).
    backends: HashMap<SocketAddr, (Arc<str>, Arc<str>, SocketAddr)>,
    /// The applied config's backends, in config order.
    configured: Vec<ConfiguredBackend>,
    /// (service, backend label) of every configured backend.
    configured_pairs: HashSet<(Arc<str>, Arc<str>)>,
    /// Every configured service (name, VIP, policy), with or without backends.
    services: Vec<ConfiguredService>,
    unknown: Option<Arc<str>>,
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
                self.service_names
                    .insert(id, Arc::from(service.name.as_str()));
            }
        }
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
            for b in &service.backends {
                let label: Arc<str> = Arc::from(b.addr.to_string());
                self.backends
                    .insert(b.addr, (name.clone(), label.clone(), service.vip));
                self.configured_pairs.insert((name.clone(), label.clone()));
                self.configured.push(ConfiguredBackend {
                    service: name.clone(),
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
        self.backends.get(addr).map(|(_, _, vip)| *vip)
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

    pub fn resolve(&mut self, ev: &ConnEvent) -> SeriesKey {
        let dir = if ev.direction == direction::INBOUND {
            Direction::Inbound
        } else {
            Direction::Outbound
        };
        let (service, backend) =
            if dir == Direction::Outbound && ev.flags & event_flags::ROUTED != 0 {
                let r = &ev.route;
                let backend_addr = socket_addr(r.backend_addr, r.family, r.backend_port);
                let service = match self.service_names.get(&r.service_id) {
                    Some(name) => name.clone(),
                    None => self.unknown(),
                };
                let backend = match self.backends.get(&backend_addr) {
                    Some((_, label, _)) => label.clone(),
                    // The backend left the config while this connection lived.
                    None => Arc::from(backend_addr.to_string()),
                };
                (service, backend)
            } else {
                // Unrouted: a client dialling a backend directly, or a backend
                // accepting. Name it only if the address is a configured backend.
                let peer = if dir == Direction::Inbound {
                    socket_addr(ev.local_addr, ev.family, ev.local_port)
                } else {
                    socket_addr(ev.remote_addr, ev.family, ev.remote_port)
                };
                match self.backends.get(&peer) {
                    Some((s, b, _)) => (s.clone(), b.clone()),
                    None => (self.unknown(), self.unknown()),
                }
            };
        SeriesKey {
            service,
            backend,
            direction: dir,
        }
    }
}
