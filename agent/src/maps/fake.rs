//! The routing maps in memory, for unit tests: they answer as the kernel's
//! do (a full map refuses a new key with E2BIG, deleting an absent key fails
//! with ENOENT) and log every write, so a test can replay an apply one write
//! at a time.
use std::{collections::HashMap, hash::Hash, io};

use aya::{maps::MapError, sys::SyscallError};
use kmesh_common::{BackendKey, BackendValue, ServiceKey, ServiceValue, map_capacity};

use super::RoutingMaps;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    InsertService(ServiceKey, ServiceValue),
    RemoveService(ServiceKey),
    InsertBackend(BackendKey, BackendValue),
    RemoveBackend(BackendKey),
}

#[derive(Clone, Debug)]
pub struct FakeMaps {
    pub services: HashMap<ServiceKey, ServiceValue>,
    pub backends: HashMap<BackendKey, BackendValue>,
    pub service_capacity: usize,
    pub backend_capacity: usize,
    /// Every write asked for, in order, also those that failed.
    pub writes: Vec<Write>,
}

impl Default for FakeMaps {
    fn default() -> Self {
        Self {
            services: HashMap::new(),
            backends: HashMap::new(),
            service_capacity: map_capacity::SERVICES as usize,
            backend_capacity: map_capacity::BACKENDS as usize,
            writes: Vec::new(),
        }
    }
}

impl FakeMaps {
    /// Does one write, as the kernel would, without logging it; replaying a
    /// log on a copy of the maps taken before it goes through here.
    pub fn perform(&mut self, write: Write) -> Result<(), MapError> {
        match write {
            Write::InsertService(key, value) => {
                insert(&mut self.services, self.service_capacity, key, value)
            }
            Write::RemoveService(key) => self.services.remove(&key).map(drop).ok_or_else(absent),
            Write::InsertBackend(key, value) => {
                insert(&mut self.backends, self.backend_capacity, key, value)
            }
            Write::RemoveBackend(key) => self.backends.remove(&key).map(drop).ok_or_else(absent),
        }
    }

    fn log_and_perform(&mut self, write: Write) -> Result<(), MapError> {
        self.writes.push(write);
        self.perform(write)
    }
}

/// A hash map replaces a key it holds even when full; only a new key needs
/// room.
fn insert<K: Hash + Eq, V>(
    map: &mut HashMap<K, V>,
    capacity: usize,
    key: K,
    value: V,
) -> Result<(), MapError> {
    if !map.contains_key(&key) && map.len() >= capacity {
        return Err(syscall_error("bpf_map_update_elem", libc::E2BIG));
    }
    map.insert(key, value);
    Ok(())
}

fn absent() -> MapError {
    syscall_error("bpf_map_delete_elem", libc::ENOENT)
}

fn syscall_error(call: &'static str, errno: i32) -> MapError {
    MapError::SyscallError(SyscallError {
        call,
        io_error: io::Error::from_raw_os_error(errno),
    })
}

impl RoutingMaps for FakeMaps {
    fn services(&self) -> Vec<(ServiceKey, ServiceValue)> {
        self.services.iter().map(|(k, v)| (*k, *v)).collect()
    }

    fn service(&self, key: &ServiceKey) -> Option<ServiceValue> {
        self.services.get(key).copied()
    }

    fn backend(&self, key: &BackendKey) -> Option<BackendValue> {
        self.backends.get(key).copied()
    }

    fn backend_keys(&self) -> Vec<BackendKey> {
        self.backends.keys().copied().collect()
    }

    fn insert_service(&mut self, key: &ServiceKey, value: ServiceValue) -> Result<(), MapError> {
        self.log_and_perform(Write::InsertService(*key, value))
    }

    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), MapError> {
        self.log_and_perform(Write::RemoveService(*key))
    }

    fn insert_backend(&mut self, key: &BackendKey, value: BackendValue) -> Result<(), MapError> {
        self.log_and_perform(Write::InsertBackend(*key, value))
    }

    fn remove_backend(&mut self, key: &BackendKey) -> Result<(), MapError> {
        self.log_and_perform(Write::RemoveBackend(*key))
    }
}
