//! The mesh file's `workloads:` list: who runs behind the addresses, for
//! users without Istio's workload discovery. Canonical names and revisions
//! come from the workload's labels as Istio derives them, so a file can copy
//! a pod's labels as they are.
use std::{collections::BTreeMap, fmt, net::IpAddr};

use serde::{
    Deserialize, Deserializer,
    de::{self, Visitor},
};

use super::non_empty::NonEmpty;
use crate::model::{Mesh, Workload, Workloads};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkload {
    /// The instance (a pod's name).
    name: NonEmpty,
    namespace: NonEmpty,
    /// Defaults to `namespace/name`.
    uid: Option<NonEmpty>,
    /// What owns the instances (a Deployment); defaults to `name`.
    workload: Option<NonEmpty>,
    /// Defaults to `default`, as in Kubernetes.
    service_account: Option<NonEmpty>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    node: String,
    #[serde(default)]
    cluster: String,
    #[serde(default)]
    network: String,
    #[serde(default)]
    trust_domain: String,
    addresses: Vec<WorkloadIp>,
}

/// Istio's label keys for a workload's canonical name and revision, in the
/// order Istio tries them; without any, the workload's name and `latest`.
const CANONICAL_NAME_LABELS: [&str; 3] = [
    "service.istio.io/canonical-name",
    "app.kubernetes.io/name",
    "app",
];
const CANONICAL_REVISION_LABELS: [&str; 3] = [
    "service.istio.io/canonical-revision",
    "app.kubernetes.io/version",
    "version",
];

fn first_label(labels: &BTreeMap<String, String>, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|k| labels.get(*k).filter(|v| !v.is_empty()).cloned())
}

impl RawWorkload {
    fn into_workload(self) -> Workload {
        let name = self.name.0;
        let namespace = self.namespace.0;
        let workload_name = self.workload.map_or_else(|| name.clone(), |w| w.0);
        Workload {
            uid: self
                .uid
                .map_or_else(|| format!("{namespace}/{name}"), |u| u.0),
            canonical_name: first_label(&self.labels, &CANONICAL_NAME_LABELS)
                .unwrap_or_else(|| workload_name.clone()),
            canonical_revision: first_label(&self.labels, &CANONICAL_REVISION_LABELS)
                .unwrap_or_else(|| "latest".to_string()),
            service_account: self
                .service_account
                .map_or_else(|| "default".to_string(), |s| s.0),
            workload_name,
            name,
            namespace,
            node: self.node,
            cluster: self.cluster,
            network: self.network,
            trust_domain: self.trust_domain,
            addresses: self.addresses.into_iter().map(|a| a.0).collect(),
            services: Vec::new(),
        }
    }
}

/// Builds the workload set: uids are unique, and an address belongs to one
/// workload.
pub(super) fn collect(raw: Vec<RawWorkload>) -> Result<Workloads, String> {
    let mut all = Workloads::default();
    for w in raw {
        let w = w.into_workload();
        if all.get(&w.uid).is_some() {
            return Err(format!(
                "workloads: {:?} is listed twice; give each workload its own name (or uid)",
                w.uid
            ));
        }
        let uid = w.uid.clone();
        if let Some(clash) = all.insert(w).first() {
            return Err(format!(
                "workloads: {:?} and {:?} both have address {}; an address names one workload",
                clash.kept, uid, clash.addr
            ));
        }
    }
    Ok(all)
}

/// Checks the workloads backends name, and records which services each
/// workload backs.
pub(super) fn link_backends(mesh: &mut Mesh) -> Result<(), String> {
    let mut backs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for service in mesh.services.values() {
        for b in &service.backends {
            let owner = match &b.workload {
                Some(named) => {
                    let Some(w) = find(&mesh.workloads, named) else {
                        return Err(format!(
                            "service {:?}: backend {} names workload {named:?}, which `workloads:` does not list (by uid, or namespace/name)",
                            service.name, b.addr
                        ));
                    };
                    w.uid.clone()
                }
                None => match mesh.workloads.by_addr(b.addr.ip()) {
                    Some(w) => w.uid.clone(),
                    None => continue,
                },
            };
            let namespace = service.istio_names().namespace.unwrap_or_default();
            backs
                .entry(owner)
                .or_default()
                .push(format!("{namespace}/{}", service.name));
        }
    }
    for service in mesh.services.values_mut() {
        for b in &mut service.backends {
            if let Some(named) = &b.workload {
                b.workload = find(&mesh.workloads, named).map(|w| w.uid.clone());
            }
        }
    }
    let workloads = std::mem::take(&mut mesh.workloads);
    mesh.workloads = workloads
        .iter()
        .cloned()
        .map(|mut w| {
            if let Some(mut names) = backs.remove(&w.uid) {
                names.sort();
                names.dedup();
                w.services = names;
            }
            w
        })
        .collect();
    Ok(())
}

/// A workload by uid, or by `namespace/name` when the uid differs.
fn find<'w>(all: &'w Workloads, named: &str) -> Option<&'w Workload> {
    all.get(named).or_else(|| {
        let (namespace, name) = named.split_once('/')?;
        all.iter()
            .find(|w| w.namespace == namespace && w.name == name)
    })
}

/// A workload's IP address (no port: a workload is all its ports).
#[derive(Debug)]
struct WorkloadIp(IpAddr);

impl<'de> Deserialize<'de> for WorkloadIp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(WorkloadIpVisitor)
    }
}

struct WorkloadIpVisitor;

impl Visitor<'_> for WorkloadIpVisitor {
    type Value = WorkloadIp;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a workload address, an IP address without a port")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<WorkloadIp, E> {
        let ip: IpAddr = v.trim().parse().map_err(|_| {
            E::custom(format!(
                "workload address {v:?} is not an IP address (without a port), like 10.244.1.5 or fd00::5"
            ))
        })?;
        if let IpAddr::V6(v6) = ip
            && let Some(v4) = v6.to_ipv4_mapped()
        {
            return Err(E::custom(format!(
                "workload address {ip} is an IPv4-mapped IPv6 address; write it as {v4}"
            )));
        }
        Ok(WorkloadIp(ip))
    }
}
