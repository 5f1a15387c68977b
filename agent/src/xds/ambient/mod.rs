//! Istio ambient's workload discovery (`istio.workload.Address`, as ztunnel
//! consumes it) as a mesh source: from istiod over delta ADS ([`delta`],
//! [`client`]) or from a ztunnel `/config_dump` in a file ([`dump`]). Either
//! way the resources land in one [`AddressSet`] and go through one
//! translation ([`translate`]) into the services and workloads of the mesh.
pub mod client;
pub mod delta;
pub mod dump;
pub mod proto;
pub mod translate;

use std::{collections::BTreeMap, net::IpAddr};

use self::proto::{Address, Service, Workload, address};
use super::resources::{Rejected, ResourceType, Versioned};

pub use super::resources::ADDRESS_TYPE_URL;

/// Every Address resource in force, by its xDS name (a workload's uid, a
/// service's `namespace/hostname`), with the ones refused.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AddressSet {
    pub workloads: BTreeMap<String, Versioned<Workload>>,
    pub services: BTreeMap<String, Versioned<Service>>,
    pub rejected: Vec<Rejected>,
}

impl AddressSet {
    /// Puts a checked resource in force under `name`, replacing any
    /// resource of that name (of either kind).
    pub fn insert(&mut self, name: &str, resource: Address, version: &str) {
        self.remove(name);
        match resource.r#type {
            Some(address::Type::Workload(w)) => {
                self.workloads.insert(
                    name.to_string(),
                    Versioned {
                        version: version.to_string(),
                        resource: *w,
                    },
                );
            }
            Some(address::Type::Service(s)) => {
                self.services.insert(
                    name.to_string(),
                    Versioned {
                        version: version.to_string(),
                        resource: *s,
                    },
                );
            }
            None => {}
        }
    }

    pub fn remove(&mut self, name: &str) -> bool {
        let w = self.workloads.remove(name).is_some();
        let s = self.services.remove(name).is_some();
        w || s
    }

    pub fn contains(&self, name: &str) -> bool {
        self.workloads.contains_key(name) || self.services.contains_key(name)
    }

    pub fn version(&self, name: &str) -> Option<&str> {
        self.workloads
            .get(name)
            .map(|v| v.version.as_str())
            .or_else(|| self.services.get(name).map(|v| v.version.as_str()))
    }

    pub fn len(&self) -> usize {
        self.workloads.len() + self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An address as protobuf carries it: 4 or 16 bytes.
pub fn ip_of(bytes: &[u8]) -> Result<IpAddr, String> {
    match bytes.len() {
        4 => Ok(IpAddr::from(<[u8; 4]>::try_from(bytes).expect("4 bytes"))),
        16 => {
            let v6 = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).expect("16 bytes"));
            // A v4-mapped address is the v4 address, as the kernel sees it.
            Ok(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
        }
        n => Err(format!(
            "an IP address of {n} bytes (IPv4 takes 4, IPv6 16)"
        )),
    }
}

/// The bytes protobuf carries for an address.
pub fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// The kind and key of an Address, for errors and for a dump's names.
pub fn kind_and_key(a: &Address) -> Option<(ResourceType, String)> {
    match &a.r#type {
        Some(address::Type::Workload(w)) => Some((ResourceType::Workload, w.uid.clone())),
        Some(address::Type::Service(s)) => Some((
            ResourceType::WorkloadService,
            format!("{}/{}", s.namespace, s.hostname),
        )),
        None => None,
    }
}

/// What ztunnel itself would refuse: a resource that is neither a workload
/// nor a service, a workload without a uid or with an address that is not
/// 4 or 16 bytes, a service without a hostname, ports above 65535, a
/// service reference that is not `namespace/hostname`. The error is the
/// reason a NACK (or a refused file) gives.
pub fn validate(a: &Address) -> Result<(), String> {
    match &a.r#type {
        None => Err("an Address that is neither a workload nor a service".into()),
        Some(address::Type::Workload(w)) => validate_workload(w),
        Some(address::Type::Service(s)) => validate_service(s),
    }
}

fn validate_ports(ports: &[proto::Port], at: &str) -> Result<(), String> {
    for (i, p) in ports.iter().enumerate() {
        for (field, v) in [
            ("service_port", p.service_port),
            ("target_port", p.target_port),
        ] {
            if v > u32::from(u16::MAX) {
                return Err(format!("{at}[{i}].{field} {v} is above 65535"));
            }
        }
    }
    Ok(())
}

fn validate_workload(w: &Workload) -> Result<(), String> {
    if w.uid.trim().is_empty() {
        return Err(format!(
            "workload {:?} in namespace {:?} has no uid; istiod gives every workload one",
            w.name, w.namespace
        ));
    }
    for (i, bytes) in w.addresses.iter().enumerate() {
        ip_of(bytes).map_err(|e| format!("addresses[{i}] is {e}"))?;
    }
    for (key, list) in &w.services {
        match key.split_once('/') {
            Some((ns, host)) if !ns.is_empty() && !host.is_empty() => {}
            _ => {
                return Err(format!("services key {key:?} is not namespace/hostname"));
            }
        }
        validate_ports(&list.ports, &format!("services[{key:?}].ports"))?;
    }
    if let Some(g) = &w.waypoint {
        validate_gateway(g, "waypoint")?;
    }
    if let Some(g) = &w.network_gateway {
        validate_gateway(g, "network_gateway")?;
    }
    Ok(())
}

fn validate_gateway(g: &proto::GatewayAddress, at: &str) -> Result<(), String> {
    if let Some(proto::gateway_address::Destination::Address(a)) = &g.destination {
        ip_of(&a.address).map_err(|e| format!("{at}.address is {e}"))?;
    }
    Ok(())
}

fn validate_service(s: &Service) -> Result<(), String> {
    if s.hostname.trim().is_empty() {
        return Err(format!(
            "service {:?} in namespace {:?} has no hostname",
            s.name, s.namespace
        ));
    }
    for (i, a) in s.addresses.iter().enumerate() {
        ip_of(&a.address).map_err(|e| format!("addresses[{i}] is {e}"))?;
    }
    validate_ports(&s.ports, "ports")?;
    if let Some(g) = &s.waypoint {
        validate_gateway(g, "waypoint")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
