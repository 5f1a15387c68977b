//! The routing maps as the kernel holds them: the orchestration object's
//! services and backends hash maps.
use aya::maps::{HashMap, Map, MapData, MapError};
use kmesh_common::{BackendKey, BackendValue, ServiceKey, ServiceValue};

use super::{MapWriteError, RoutingMaps};

pub struct KernelMaps {
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    backends: HashMap<MapData, BackendKey, BackendValue>,
}

impl KernelMaps {
    pub fn open(services: Map, backends: Map) -> Result<Self, MapWriteError> {
        let open_err = |map, source| MapWriteError::Open {
            map,
            source: Box::new(source),
        };
        Ok(Self {
            services: HashMap::try_from(services).map_err(|e| open_err("services", e))?,
            backends: HashMap::try_from(backends).map_err(|e| open_err("backends", e))?,
        })
    }
}

/// Entries that cannot be read are skipped: the writer then sees less than
/// the kernel holds and rewrites it, or sweeps it, on the next apply.
impl RoutingMaps for KernelMaps {
    fn services(&self) -> Vec<(ServiceKey, ServiceValue)> {
        self.services.iter().filter_map(Result::ok).collect()
    }

    fn service(&self, key: &ServiceKey) -> Option<ServiceValue> {
        self.services.get(key, 0).ok()
    }

    fn backend(&self, key: &BackendKey) -> Option<BackendValue> {
        self.backends.get(key, 0).ok()
    }

    fn backend_keys(&self) -> Vec<BackendKey> {
        self.backends.keys().filter_map(Result::ok).collect()
    }

    fn insert_service(&mut self, key: &ServiceKey, value: ServiceValue) -> Result<(), MapError> {
        self.services.insert(key, value, 0)
    }

    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), MapError> {
        self.services.remove(key)
    }

    fn insert_backend(&mut self, key: &BackendKey, value: BackendValue) -> Result<(), MapError> {
        self.backends.insert(key, value, 0)
    }

    fn remove_backend(&mut self, key: &BackendKey) -> Result<(), MapError> {
        self.backends.remove(key)
    }
}
