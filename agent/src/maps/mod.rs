//! The map writer: makes the kernel's services and backends maps equal to a
//! [`Mesh`], touching only what changed.
//!
//! A changed service gets its backends written under a new generation first;
//! only then is the service entry pointed at that generation. The old
//! generation (and a removed service's backends) stays until the next apply:
//! a connect() that read the service just before the swap still finds the
//! backends it picked from, and one that is slower still reads the service
//! again when its backend is gone. A connect() sees the old backend set or
//! the new one, never a mix and never none.
//!
//! The writer reaches the maps through [`RoutingMaps`]: the kernel's in
//! production ([`KernelMaps`]), an in-memory fake in unit tests, so the
//! generation swap is tested without root.
use std::{
    collections::{BTreeMap, HashSet},
    net::SocketAddr,
};

use aya::{
    maps::{Map, MapError},
    sys::SyscallError,
};
use kmesh_common::{BackendKey, BackendValue, ServiceKey, ServiceValue, policy};
use tracing::{debug, info};

use crate::{
    addr::{ip_to_words, socket_addr},
    model::{Mesh, Policy, Service},
};

mod kernel;
pub use kernel::KernelMaps;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

/// The operations the writer needs on the services and backends maps, failing
/// as the kernel's do.
pub trait RoutingMaps {
    fn services(&self) -> Vec<(ServiceKey, ServiceValue)>;
    fn service(&self, key: &ServiceKey) -> Option<ServiceValue>;
    fn backend(&self, key: &BackendKey) -> Option<BackendValue>;
    fn backend_keys(&self) -> Vec<BackendKey>;
    fn insert_service(&mut self, key: &ServiceKey, value: ServiceValue) -> Result<(), MapError>;
    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), MapError>;
    fn insert_backend(&mut self, key: &BackendKey, value: BackendValue) -> Result<(), MapError>;
    fn remove_backend(&mut self, key: &BackendKey) -> Result<(), MapError>;
}

fn random_start() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

#[derive(Debug, thiserror::Error)]
pub enum MapWriteError {
    #[error(
        "{op} in map {map} for service {service} (if the map is full, raise its size or remove services)"
    )]
    Write {
        op: &'static str,
        map: &'static str,
        service: String,
        source: Box<MapError>,
    },
    #[error("opening map {map}")]
    Open {
        map: &'static str,
        source: Box<MapError>,
    },
}

/// What one apply changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyReport {
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
    pub unchanged: usize,
}

/// How many entries the routing maps hold (their capacities are in
/// [`kmesh_common::map_capacity`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapEntries {
    pub services: u64,
    pub backends: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Installed {
    service_id: u32,
    generation: u32,
    policy: u32,
    backends: Vec<BackendValue>,
}

/// A generation of one service's backends that no service entry points at
/// any more, kept until the apply after the one that replaced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Retired {
    service_id: u32,
    generation: u32,
    count: usize,
}

pub struct MapWriter<M: RoutingMaps = KernelMaps> {
    maps: M,
    installed: BTreeMap<ServiceKey, Installed>,
    /// Generations replaced or removed by the last apply.
    retired: Vec<Retired>,
    next_id: u32,
}

pub fn service_key(service: &Service) -> ServiceKey {
    let (addr, family) = ip_to_words(service.vip.ip());
    ServiceKey {
        addr,
        port: service.vip.port(),
        family,
    }
}

/// The kernel answers a delete of a key it does not hold with ENOENT, which
/// aya passes on as a syscall error.
fn is_absent(error: &MapError) -> bool {
    matches!(error, MapError::SyscallError(SyscallError { io_error, .. })
        if io_error.raw_os_error() == Some(libc::ENOENT))
}

fn policy_code(p: Policy) -> u32 {
    match p {
        Policy::Random => policy::RANDOM,
        Policy::RoundRobin => policy::ROUND_ROBIN,
        Policy::Weighted => policy::WEIGHTED,
    }
}

fn backend_values(service: &Service) -> Vec<BackendValue> {
    let mut cumulative = 0u32;
    service
        .routable_backends()
        .into_iter()
        .map(|b| {
            let (addr, family) = ip_to_words(b.addr.ip());
            // Only weighted picks read the cumulative weight; the others
            // count every routable backend once.
            cumulative += if service.policy == Policy::Weighted {
                b.weight
            } else {
                1
            };
            BackendValue {
                addr,
                port: b.addr.port(),
                family,
                cumulative_weight: cumulative,
            }
        })
        .collect()
}

impl MapWriter {
    /// Takes over the kernel's maps; see [`MapWriter::adopt`].
    pub fn new(services: Map, backends: Map) -> Result<Self, MapWriteError> {
        Ok(Self::adopt(KernelMaps::open(services, backends)?))
    }
}

impl<M: RoutingMaps> MapWriter<M> {
    /// Takes over the maps, adopting whatever an earlier agent left in them
    /// so that routing carries on until the first apply replaces it.
    pub fn adopt(maps: M) -> Self {
        let mut writer = Self {
            maps,
            installed: BTreeMap::new(),
            retired: Vec::new(),
            next_id: 1,
        };
        writer.adopt_existing();
        writer
    }

    fn adopt_existing(&mut self) {
        for (key, value) in self.maps.services() {
            let backends = (0..value.backend_count)
                .filter_map(|index| {
                    self.maps.backend(&BackendKey {
                        service_id: value.service_id,
                        generation: value.generation,
                        index,
                    })
                })
                .collect();
            self.next_id = self.next_id.max(value.service_id + 1);
            self.installed.insert(
                key,
                Installed {
                    service_id: value.service_id,
                    generation: value.generation,
                    policy: value.policy,
                    backends,
                },
            );
        }
        if !self.installed.is_empty() {
            info!(
                services = self.installed.len(),
                "adopted services from pinned maps"
            );
        }
    }

    /// Entries in the services and backends maps now, retired generations
    /// included: they take room until the next apply.
    pub fn entries(&self) -> MapEntries {
        let installed: u64 = self
            .installed
            .values()
            .map(|i| i.backends.len() as u64)
            .sum();
        let retired: u64 = self.retired.iter().map(|r| r.count as u64).sum();
        MapEntries {
            services: self.installed.len() as u64,
            backends: installed + retired,
        }
    }

    /// The service id the kernel reports for each VIP.
    pub fn service_ids(&self) -> impl Iterator<Item = (SocketAddr, u32)> {
        self.installed
            .iter()
            .map(|(k, v)| (socket_addr(k.addr, k.family, k.port), v.service_id))
    }

    pub fn apply(&mut self, mesh: &Mesh) -> Result<ApplyReport, MapWriteError> {
        let expired = std::mem::take(&mut self.retired);
        let report = self.write(mesh);
        // Whatever became of this apply, what the last one retired has had
        // its apply of grace. (If this one failed half-way, what it retired
        // so far waits for the next.)
        for r in expired {
            self.remove_backends(r);
        }
        self.sweep_orphan_backends();
        report
    }

    fn write(&mut self, mesh: &Mesh) -> Result<ApplyReport, MapWriteError> {
        let mut report = ApplyReport::default();
        let mut wanted = BTreeMap::new();
        for service in mesh.services.values() {
            wanted.insert(service_key(service), service);
        }
        for (key, service) in &wanted {
            let backends = backend_values(service);
            let policy = policy_code(service.policy);
            match self.installed.get(key) {
                Some(cur) if cur.policy == policy && cur.backends == backends => {
                    report.unchanged += 1;
                }
                Some(cur) => {
                    let (id, generation) = (cur.service_id, cur.generation.wrapping_add(1));
                    self.install(key, service, id, generation, policy, backends)?;
                    report.updated += 1;
                }
                None => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.install(key, service, id, 1, policy, backends)?;
                    report.added += 1;
                }
            }
        }
        let gone: Vec<ServiceKey> = self
            .installed
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            self.uninstall(&key)?;
            report.removed += 1;
        }
        Ok(report)
    }

    fn install(
        &mut self,
        key: &ServiceKey,
        service: &Service,
        service_id: u32,
        generation: u32,
        policy: u32,
        backends: Vec<BackendValue>,
    ) -> Result<(), MapWriteError> {
        let write_err = |op, map, source| MapWriteError::Write {
            op,
            map,
            service: format!("{} ({})", service.name, service.vip),
            source: Box::new(source),
        };
        for (index, value) in backends.iter().enumerate() {
            let bkey = BackendKey {
                service_id,
                generation,
                index: index as u32,
            };
            self.maps
                .insert_backend(&bkey, *value)
                .map_err(|e| write_err("inserting a backend", "backends", e))?;
        }
        // Round robin goes on from where connect() left it: a cursor reset
        // by every update sent each node's next connection to the first
        // backend. A new service starts anywhere, so nodes do not all start
        // on the same backend.
        let rr_cursor = self
            .maps
            .service(key)
            .map_or_else(random_start, |v| v.rr_cursor);
        let value = ServiceValue {
            service_id,
            generation,
            backend_count: backends.len() as u32,
            total_weight: backends.last().map_or(0, |b| b.cumulative_weight),
            policy,
            _pad0: 0,
            rr_cursor,
        };
        self.maps
            .insert_service(key, value)
            .map_err(|e| write_err("inserting the service", "services", e))?;
        let previous = self.installed.insert(
            *key,
            Installed {
                service_id,
                generation,
                policy,
                backends,
            },
        );
        if let Some(prev) = previous {
            self.retire(&prev);
        }
        debug!(service = %service.name, vip = %service.vip, generation, "service written");
        Ok(())
    }

    fn uninstall(&mut self, key: &ServiceKey) -> Result<(), MapWriteError> {
        if let Err(source) = self.maps.remove_service(key)
            && !is_absent(&source)
        {
            return Err(MapWriteError::Write {
                op: "removing the service",
                map: "services",
                service: socket_addr(key.addr, key.family, key.port).to_string(),
                source: Box::new(source),
            });
        }
        if let Some(prev) = self.installed.remove(key) {
            self.retire(&prev);
        }
        Ok(())
    }

    fn retire(&mut self, gone: &Installed) {
        self.retired.push(Retired {
            service_id: gone.service_id,
            generation: gone.generation,
            count: gone.backends.len(),
        });
    }

    fn remove_backends(&mut self, r: Retired) {
        for index in 0..r.count as u32 {
            let _ = self.maps.remove_backend(&BackendKey {
                service_id: r.service_id,
                generation: r.generation,
                index,
            });
        }
    }

    /// Deletes backend entries neither an installed service nor the grace of
    /// a retired generation accounts for: leftovers of an agent that stopped
    /// between writing and cleaning up.
    fn sweep_orphan_backends(&mut self) {
        let live: HashSet<(u32, u32)> = self
            .installed
            .values()
            .map(|i| (i.service_id, i.generation))
            .chain(self.retired.iter().map(|r| (r.service_id, r.generation)))
            .collect();
        let orphans: Vec<BackendKey> = self
            .maps
            .backend_keys()
            .into_iter()
            .filter(|k| !live.contains(&(k.service_id, k.generation)))
            .collect();
        for key in orphans {
            let _ = self.maps.remove_backend(&key);
        }
    }
}
