//! Istio ambient's workload discovery for the in-test delta ADS server: a
//! ztunnel 1.24 config dump (lists of workloads and services, camelCase)
//! turned into the `istio.workload.Address` resources istiod would have
//! sent, independently of the agent's own dump reader, so the server
//! serves what istiod serves and the agent reads it over the wire.
use std::{collections::BTreeMap, net::IpAddr, path::Path};

use envoy_types::pb::google::protobuf::Any;
use kmesh_agent::xds::ambient::proto::{
    Address, GatewayAddress, NamespacedHostname, NetworkAddress, Port, PortList, Service, Workload,
    address, gateway_address,
};
use serde_json::Value;

use crate::ads::ADDRESS_TYPE;

/// The resources of a dump: name (uid, or `namespace/hostname`) → Address.
pub type Addresses = BTreeMap<String, Address>;

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn text<'v>(v: &'v Value, field: &str) -> &'v str {
    v.get(field).and_then(Value::as_str).unwrap_or_default()
}

fn port_map(v: Option<&Value>) -> Vec<Port> {
    let Some(m) = v.and_then(Value::as_object) else {
        return Vec::new();
    };
    m.iter()
        .map(|(k, v)| Port {
            service_port: k.parse().expect("a service port"),
            target_port: v.as_u64().expect("a target port") as u32,
            app_protocol: 0,
        })
        .collect()
}

/// Reads the dump's workloads and services.
pub fn read_dump(path: &Path) -> Addresses {
    let dump: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the dump")).expect("dump JSON");
    let mut out = Addresses::new();
    let mut workloads: BTreeMap<String, Workload> = BTreeMap::new();
    for w in dump["workloads"].as_array().expect("workloads") {
        let uid = text(w, "uid").to_string();
        let workload = Workload {
            uid: uid.clone(),
            name: text(w, "name").into(),
            namespace: text(w, "namespace").into(),
            addresses: w["workloadIps"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|ip| ip_bytes(ip.as_str().unwrap().parse().unwrap()))
                .collect(),
            trust_domain: text(w, "trustDomain").into(),
            service_account: text(w, "serviceAccount").into(),
            node: text(w, "node").into(),
            canonical_name: text(w, "canonicalName").into(),
            canonical_revision: text(w, "canonicalRevision").into(),
            workload_name: text(w, "workloadName").into(),
            cluster_id: text(w, "clusterId").into(),
            status: i32::from(text(w, "status") == "Unhealthy"),
            ..Workload::default()
        };
        workloads.insert(uid, workload);
    }
    for s in dump["services"].as_array().expect("services") {
        let key = format!("{}/{}", text(s, "namespace"), text(s, "hostname"));
        // istiod sends each workload's own port mapping per service.
        for ep in s["endpoints"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|e| e.1)
        {
            if let Some(w) = workloads.get_mut(text(ep, "workloadUid")) {
                w.services.insert(
                    key.clone(),
                    PortList {
                        ports: port_map(ep.get("port")),
                    },
                );
            }
        }
        let waypoint = s.get("waypoint").map(|wp| {
            let (ns, host) = text(wp, "destination").split_once('/').unwrap();
            GatewayAddress {
                destination: Some(gateway_address::Destination::Hostname(NamespacedHostname {
                    namespace: ns.into(),
                    hostname: host.into(),
                })),
                hbone_mtls_port: 15008,
            }
        });
        let service = Service {
            name: text(s, "name").into(),
            namespace: text(s, "namespace").into(),
            hostname: text(s, "hostname").into(),
            addresses: s["vips"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| {
                    let (network, ip) = v.as_str().unwrap().rsplit_once('/').unwrap();
                    NetworkAddress {
                        network: network.into(),
                        address: ip_bytes(ip.parse().unwrap()),
                        length: None,
                    }
                })
                .collect(),
            ports: port_map(s.get("ports")),
            waypoint,
            ..Service::default()
        };
        out.insert(
            key,
            Address {
                r#type: Some(address::Type::Service(Box::new(service))),
            },
        );
    }
    for (uid, w) in workloads {
        out.insert(
            uid,
            Address {
                r#type: Some(address::Type::Workload(Box::new(w))),
            },
        );
    }
    out
}

/// Moves a workload to `ip` (a loopback address of the test's namespace).
pub fn readdress(all: &mut Addresses, uid: &str, ip: IpAddr) {
    match all.get_mut(uid).and_then(|a| a.r#type.as_mut()) {
        Some(address::Type::Workload(w)) => w.addresses = vec![ip_bytes(ip)],
        _ => panic!("no workload {uid}"),
    }
}

pub fn any(a: &Address) -> Any {
    Any {
        type_url: ADDRESS_TYPE.into(),
        value: prost::Message::encode_to_vec(a),
    }
}

/// The resources as the server takes them.
pub fn resources(all: &Addresses) -> Vec<(String, Any)> {
    all.iter().map(|(n, a)| (n.clone(), any(a))).collect()
}
