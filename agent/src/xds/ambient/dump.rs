//! A ztunnel `/config_dump` (JSON) read back into Address resources. ztunnel
//! has printed its state in three layouts (read off its `src/state.rs`,
//! `src/state/workload.rs`, `src/state/service.rs` and `src/admin.rs` at the
//! release tags):
//!
//! - **1.23 and later** (ztunnel #1083, e2ee467d, "serialize ALL workloads
//!   and services"): `workloads: [Workload]`, `services: [Service]`,
//!   camelCase fields; services list their `endpoints` keyed by workload uid,
//!   each with its `port` map, and workloads their `services` as
//!   `namespace/hostname`.
//! - **1.22** (ztunnel #923, 42d1ecd4): the same names, but maps keyed by
//!   `network/ip`: `workloads: {"/10.0.0.1": Workload}`,
//!   `services: {"/10.96.0.1": Service}`; endpoints keyed `uid:network/ip`.
//! - **1.19 to 1.21** (since ztunnel #545, 490ab3f7): the stores flattened into the dump with their
//!   internal names: `by_uid` / `by_addr` (workloads), `by_vip` /
//!   `by_host` (services, `by_host` holding lists), `staged_services`;
//!   workloads carry no `services`, endpoints say membership.
//!
//! (ztunnel 1.18 and before spoke an older API without workload uids or
//! service hostnames; such a dump is refused with a pointer.) Fields are
//! read by name and unknown ones skipped; a field of the wrong kind or an
//! address that does not parse fails the file, naming where it is.
use std::{collections::BTreeMap, net::IpAddr};

use serde_json::{Map, Value};

use super::{
    AddressSet, ip_bytes, kind_and_key,
    proto::{
        Address, GatewayAddress, LoadBalancing, NamespacedHostname, NetworkAddress, Port, PortList,
        Service, Workload, address, gateway_address, load_balancing,
    },
    validate,
};
use crate::xds::resources::ResourceType;

/// Is this a ztunnel config dump, of any layout? A compact mesh file has
/// `services` (and may have `workloads`) too, but its services have a
/// `vip` where ztunnel's have `vips` and a `hostname`, and its workloads
/// name fields in snake_case (a `uid` is in both, so it tells nothing).
pub fn is_dump(value: &Value) -> bool {
    let Some(m) = value.as_object() else {
        return false;
    };
    let internal = [
        "workload_to_vip",
        "by_uid",
        "by_addr",
        "by_vip",
        "by_host",
        "staged_services",
        "stagedServices",
    ];
    if internal.iter().any(|k| m.contains_key(*k)) {
        return true;
    }
    let (Some(w), Some(s)) = (m.get("workloads"), m.get("services")) else {
        return false;
    };
    let ztunnel_like = |v: &Value, fields: &[&str]| {
        items(v).iter().any(|(_, item)| {
            item.as_object()
                .is_some_and(|o| fields.iter().any(|f| o.contains_key(*f)))
        })
    };
    w.is_object()
        || s.is_object()
        || ztunnel_like(s, &["vips", "hostname"])
        || ztunnel_like(w, &["workloadIps", "serviceAccount", "workloadName"])
        || m.contains_key("staticConfig")
}

/// The items of a list, or the values of a map (with their keys).
fn items(v: &Value) -> Vec<(String, &Value)> {
    match v {
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("[{i}]"), v))
            .collect(),
        Value::Object(m) => m.iter().map(|(k, v)| (format!("[{k:?}]"), v)).collect(),
        _ => Vec::new(),
    }
}

/// Reads a dump into `set` (every resource at `version`). Any unreadable
/// or invalid resource fails the whole dump, naming where it is.
pub fn read(value: &Value, version: &str, set: &mut AddressSet) -> Result<(), String> {
    let m = value
        .as_object()
        .ok_or("a ztunnel config dump is an object")?;
    if m.contains_key("workload_to_vip") {
        return Err("this is a ztunnel 1.18 (or older) dump, from before workload uids and service hostnames; dump a ztunnel of Istio 1.19 or later".into());
    }
    let mut workloads: BTreeMap<String, (String, Workload)> = BTreeMap::new();
    let mut services: BTreeMap<String, (String, Service)> = BTreeMap::new();
    for field in ["workloads", "by_uid", "by_addr"] {
        let Some(list) = m.get(field) else { continue };
        check_collection(list, field)?;
        for (at, item) in items(list) {
            let path = format!("{field}{at}");
            let w = workload(item, &path)?;
            merge(
                &mut workloads,
                w.uid.clone(),
                path,
                w,
                ResourceType::Workload,
            )?;
        }
    }
    let mut service_items = Vec::new();
    for field in ["services", "by_vip"] {
        if let Some(list) = m.get(field) {
            check_collection(list, field)?;
            service_items.extend(
                items(list)
                    .into_iter()
                    .map(|(at, v)| (format!("{field}{at}"), v)),
            );
        }
    }
    if let Some(hosts) = m.get("by_host") {
        check_collection(hosts, "by_host")?;
        for (at, list) in items(hosts) {
            check_collection(list, &format!("by_host{at}"))?;
            service_items.extend(
                items(list)
                    .into_iter()
                    .map(|(i, v)| (format!("by_host{at}{i}"), v)),
            );
        }
    }
    for (path, item) in service_items {
        let (s, endpoints) = service(item, &path)?;
        let key = format!("{}/{}", s.namespace, s.hostname);
        for (uid, ports) in endpoints {
            if let Some((_, w)) = workloads.get_mut(&uid) {
                w.services.insert(key.clone(), ports);
            }
        }
        merge(&mut services, key, path, s, ResourceType::WorkloadService)?;
    }
    for (name, (path, w)) in workloads {
        add(
            set,
            &name,
            &path,
            Address {
                r#type: Some(address::Type::Workload(Box::new(w))),
            },
            version,
        )?;
    }
    for (name, (path, s)) in services {
        add(
            set,
            &name,
            &path,
            Address {
                r#type: Some(address::Type::Service(Box::new(s))),
            },
            version,
        )?;
    }
    Ok(())
}

fn check_collection(v: &Value, path: &str) -> Result<(), String> {
    match v {
        Value::Array(_) | Value::Object(_) | Value::Null => Ok(()),
        _ => Err(format!("{path}: expected a list or a map")),
    }
}

/// One resource may be listed more than once (a map by address lists a
/// dual-stack workload under each); copies must agree.
fn merge<T: PartialEq>(
    into: &mut BTreeMap<String, (String, T)>,
    key: String,
    path: String,
    item: T,
    kind: ResourceType,
) -> Result<(), String> {
    match into.get(&key) {
        None => {
            into.insert(key, (path, item));
            Ok(())
        }
        Some((_, same)) if *same == item => Ok(()),
        Some((first, _)) => Err(format!(
            "{kind} {key:?} at {path} differs from the one at {first}; one {kind} per name"
        )),
    }
}

fn add(
    set: &mut AddressSet,
    name: &str,
    path: &str,
    a: Address,
    version: &str,
) -> Result<(), String> {
    validate(&a).map_err(|e| {
        let (kind, key) = kind_and_key(&a).unwrap_or((ResourceType::Workload, String::new()));
        format!("{kind} {key:?} at {path}: {e}")
    })?;
    set.insert(name, a, version);
    Ok(())
}

struct Obj<'a> {
    m: &'a Map<String, Value>,
    path: &'a str,
}

impl<'a> Obj<'a> {
    fn new(v: &'a Value, path: &'a str) -> Result<Self, String> {
        v.as_object()
            .map(|m| Obj { m, path })
            .ok_or_else(|| format!("{path}: expected an object"))
    }

    /// A field under its camelCase or snake_case name.
    fn get(&self, camel: &str) -> Option<&'a Value> {
        self.m
            .get(camel)
            .or_else(|| self.m.get(&snake(camel)))
            .filter(|v| !v.is_null())
    }

    fn string(&self, camel: &str) -> Result<String, String> {
        match self.get(camel) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("{}.{camel}: expected a string", self.path)),
        }
    }

    fn strings(&self, camel: &str) -> Result<Vec<String>, String> {
        match self.get(camel) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("{}.{camel}[{i}]: expected a string", self.path))
                })
                .collect(),
            Some(_) => Err(format!("{}.{camel}: expected a list", self.path)),
        }
    }

    /// A `{"80": 8080}` map of service port to target port.
    fn ports(&self, camel: &str) -> Result<Vec<Port>, String> {
        let Some(v) = self.get(camel) else {
            return Ok(Vec::new());
        };
        let m = v
            .as_object()
            .ok_or_else(|| format!("{}.{camel}: expected a map of port to port", self.path))?;
        let mut ports = Vec::new();
        for (k, v) in m {
            let bad = || {
                format!(
                    "{}.{camel}[{k:?}]: expected a port number (0-65535) to a port number",
                    self.path
                )
            };
            let service_port: u16 = k.parse().map_err(|_| bad())?;
            let target_port = v
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(bad)?;
            ports.push(Port {
                service_port: service_port.into(),
                target_port: target_port.into(),
                app_protocol: 0,
            });
        }
        ports.sort_by_key(|p| p.service_port);
        Ok(ports)
    }
}

fn snake(camel: &str) -> String {
    let mut s = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            s.push('_');
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

fn ip(s: &str, path: &str) -> Result<IpAddr, String> {
    s.parse()
        .map_err(|_| format!("{path}: {s:?} is not an IP address"))
}

/// `network/ip`, as ztunnel prints a NetworkAddress.
fn network_address(s: &str, path: &str) -> Result<NetworkAddress, String> {
    let (network, addr) = s.rsplit_once('/').unwrap_or(("", s));
    Ok(NetworkAddress {
        network: network.to_string(),
        address: ip_bytes(ip(addr, path)?),
        length: None,
    })
}

fn gateway(o: &Obj, field: &str) -> Result<Option<GatewayAddress>, String> {
    let Some(v) = o.get(field) else {
        return Ok(None);
    };
    let path = format!("{}.{field}", o.path);
    let g = Obj::new(v, &path)?;
    let dest = g.string("destination")?;
    // `network/ip` or `namespace/hostname`.
    let destination = match dest.rsplit_once('/') {
        Some((_, ip)) if ip.parse::<IpAddr>().is_ok() => Some(
            gateway_address::Destination::Address(network_address(&dest, &path)?),
        ),
        Some((ns, host)) => Some(gateway_address::Destination::Hostname(NamespacedHostname {
            namespace: ns.to_string(),
            hostname: host.to_string(),
        })),
        None => None,
    };
    let port = g.get("hboneMtlsPort").and_then(Value::as_u64).unwrap_or(0);
    Ok(Some(GatewayAddress {
        destination,
        hbone_mtls_port: u32::try_from(port).unwrap_or(0),
    }))
}

fn workload(v: &Value, path: &str) -> Result<Workload, String> {
    let o = Obj::new(v, path)?;
    let mut addresses = Vec::new();
    // `workloadIp` is how ztunnel 1.18 said it; later releases have a list.
    let mut ips = o.strings("workloadIps")?;
    ips.extend(
        o.get("workloadIp")
            .and_then(Value::as_str)
            .map(str::to_string),
    );
    for (i, s) in ips.iter().enumerate() {
        addresses.push(ip_bytes(ip(s, &format!("{path}.workloadIps[{i}]"))?));
    }
    let mut services = BTreeMap::new();
    for key in o.strings("services")? {
        services.insert(key, PortList::default());
    }
    let status = match o.string("status")?.as_str() {
        "Unhealthy" => super::proto::WORKLOAD_UNHEALTHY,
        _ => 0,
    };
    let capacity = match o.get("capacity") {
        None => None,
        Some(c) => Some(
            c.as_u64()
                .and_then(|c| u32::try_from(c).ok())
                .ok_or_else(|| format!("{path}.capacity: expected a whole number"))?,
        ),
    };
    Ok(Workload {
        uid: o.string("uid")?,
        name: o.string("name")?,
        namespace: o.string("namespace")?,
        addresses,
        hostname: o.string("hostname")?,
        network: o.string("network")?,
        trust_domain: o.string("trustDomain")?,
        service_account: o.string("serviceAccount")?,
        waypoint: gateway(&o, "waypoint")?,
        network_gateway: gateway(&o, "networkGateway")?,
        node: o.string("node")?,
        canonical_name: o.string("canonicalName")?,
        canonical_revision: o.string("canonicalRevision")?,
        workload_name: o.string("workloadName")?,
        services,
        status,
        cluster_id: o.string("clusterId")?,
        capacity,
        ..Workload::default()
    })
}

/// A service and its endpoints (workload uid → port mapping).
fn service(v: &Value, path: &str) -> Result<(Service, Vec<(String, PortList)>), String> {
    let o = Obj::new(v, path)?;
    let mut addresses = Vec::new();
    for (i, s) in o.strings("vips")?.iter().enumerate() {
        addresses.push(network_address(s, &format!("{path}.vips[{i}]"))?);
    }
    let mut endpoints = Vec::new();
    if let Some(eps) = o.get("endpoints") {
        for (at, ep) in items(eps) {
            let ep_path = format!("{path}.endpoints{at}");
            let e = Obj::new(ep, &ep_path)?;
            let uid = e.string("workloadUid")?;
            let ports = e.ports("port")?;
            endpoints.push((uid, PortList { ports }));
        }
    }
    let load_balancing = match o.get("loadBalancer") {
        None => None,
        Some(v) => {
            let lb_path = format!("{path}.loadBalancer");
            let lb = Obj::new(v, &lb_path)?;
            let scope = |s: &str| match s {
                "Region" => 1,
                "Zone" => 2,
                "Subzone" => 3,
                "Node" => 4,
                "Cluster" => 5,
                "Network" => 6,
                _ => 0,
            };
            Some(LoadBalancing {
                routing_preference: lb
                    .strings("routingPreferences")?
                    .iter()
                    .map(|s| scope(s))
                    .collect(),
                mode: match lb.string("mode")?.as_str() {
                    "Strict" => load_balancing::MODE_STRICT,
                    "Failover" => load_balancing::MODE_FAILOVER,
                    "Passthrough" => load_balancing::MODE_PASSTHROUGH,
                    _ => 0,
                },
                health_policy: match lb.string("healthPolicy")?.as_str() {
                    "AllowAll" => load_balancing::HEALTH_ALLOW_ALL,
                    _ => 0,
                },
            })
        }
    };
    let service = Service {
        name: o.string("name")?,
        namespace: o.string("namespace")?,
        hostname: o.string("hostname")?,
        addresses,
        ports: o.ports("ports")?,
        subject_alt_names: o.strings("subjectAltNames")?,
        waypoint: gateway(&o, "waypoint")?,
        load_balancing,
        ..Service::default()
    };
    Ok((service, endpoints))
}
