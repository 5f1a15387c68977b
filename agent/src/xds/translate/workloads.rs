//! Workloads from Envoy resources: istiod labels each endpoint it sends a
//! sidecar with `filter_metadata.istio.workload`, the string
//! `name;namespace;canonical name;canonical revision;cluster` (its
//! telemetry filters name the destination workload by it). A pod IP with
//! that metadata is a workload, so the sidecar-style path attributes
//! destinations as ambient's workload discovery does. Sources are not in
//! Envoy's resources (only the local proxy's own node is), so a client
//! stays `unknown` there unless the mesh file or ambient names it.
use std::net::IpAddr;

use envoy_types::pb::{
    envoy::config::{
        core::v3::{Metadata, address, socket_address},
        endpoint::v3::{ClusterLoadAssignment, lb_endpoint},
    },
    google::protobuf::value::Kind,
};

use crate::{
    model::{Workload, Workloads},
    xds::resources::ResourceSet,
};

/// Every endpoint address istiod named a workload for, in the set's
/// endpoints and the clusters' inline assignments.
pub fn from_endpoints(set: &ResourceSet) -> Workloads {
    let inline = set
        .clusters
        .values()
        .filter_map(|c| c.resource.load_assignment.as_ref());
    let eds = set.endpoints.values().map(|e| &e.resource);
    let mut all = Workloads::default();
    for la in eds.chain(inline) {
        for w in workloads_of(la) {
            // One address, one workload: the first assignment naming it
            // wins; istiod names an address the same way everywhere.
            if all.by_addr(w.addresses[0]).is_none() {
                all.insert(w);
            }
        }
    }
    all
}

fn workloads_of(la: &ClusterLoadAssignment) -> impl Iterator<Item = Workload> + '_ {
    la.endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .filter_map(|e| {
            let named = istio_workload(e.metadata.as_ref()?)?;
            let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                return None;
            };
            let Some(address::Address::SocketAddress(sa)) = ep.address.as_ref()?.address.as_ref()
            else {
                return None;
            };
            if !matches!(
                sa.port_specifier,
                Some(socket_address::PortSpecifier::PortValue(_))
            ) {
                return None;
            }
            let ip: IpAddr = sa.address.parse().ok()?;
            Some(workload(named, ip))
        })
}

/// The `istio.workload` string of an endpoint's metadata.
fn istio_workload(m: &Metadata) -> Option<&str> {
    let istio = m.filter_metadata.get("istio")?;
    match istio.fields.get("workload")?.kind.as_ref()? {
        Kind::StringValue(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// A workload from `name;namespace;canonical name;revision;cluster`; a
/// part left empty (or missing) is not said.
fn workload(named: &str, ip: IpAddr) -> Workload {
    let mut parts = named.split(';').map(str::trim);
    let mut next = || parts.next().unwrap_or_default().to_string();
    let (workload_name, namespace, canonical_name, canonical_revision, cluster) =
        (next(), next(), next(), next(), next());
    Workload {
        // istiod does not send the pod's name: the address stands for it.
        uid: format!("{cluster}/{namespace}/{workload_name}/{ip}"),
        name: ip.to_string(),
        namespace,
        workload_name,
        canonical_name,
        canonical_revision,
        cluster,
        addresses: vec![ip],
        ..Workload::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::json;

    fn set_of(file: &str) -> ResourceSet {
        let path = format!(
            "{}/../../shared/testdata/xds/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut set = ResourceSet::default();
        json::read(&value, "1", &mut set).unwrap();
        set
    }

    #[test]
    fn istiods_endpoint_metadata_names_the_workloads_of_bookinfo() {
        let all = from_endpoints(&set_of("istio-bookinfo-endpoints.config_dump.json"));
        let revisions: std::collections::BTreeSet<&str> = all
            .iter()
            .filter(|w| w.workload_name.starts_with("reviews-"))
            .map(|w| w.canonical_revision.as_str())
            .collect();
        assert_eq!(revisions, ["v1", "v2", "v3"].into_iter().collect());
        let v3 = all
            .iter()
            .find(|w| w.workload_name == "reviews-v3")
            .unwrap();
        assert_eq!(
            (
                v3.namespace.as_str(),
                v3.canonical_name.as_str(),
                v3.cluster.as_str()
            ),
            ("default", "reviews", "Kubernetes")
        );
        assert_eq!(all.by_addr(v3.addresses[0]).unwrap().uid, v3.uid);
    }

    #[test]
    fn an_empty_revision_is_not_said_and_every_endpoint_counts_once() {
        let set = set_of("istio-1.18-sidecar-deathstarbench.config_dump.json");
        let all = from_endpoints(&set);
        let memcached = all
            .iter()
            .find(|w| w.workload_name == "media-memcached")
            .unwrap();
        assert_eq!(memcached.namespace, "social-network");
        assert_eq!(memcached.canonical_revision, "");
        // Every address appears once however many clusters list it.
        let addrs: Vec<IpAddr> = all.iter().flat_map(|w| w.addresses.clone()).collect();
        let unique: std::collections::BTreeSet<&IpAddr> = addrs.iter().collect();
        assert_eq!(addrs.len(), unique.len());
        assert!(all.len() > 50, "{} workloads", all.len());
    }
}
