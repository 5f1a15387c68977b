//! Envoy's resources as a delta stream holds them: the [`ResourceSet`]
//! the translation reads, kept by the delta state machine
//! ([`super::delta`]) one resource at a time.
use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::google::protobuf::Any;

use super::{
    delta::{DeltaStore, Interest},
    stream::{eds_names, rds_names},
};
use crate::xds::resources::{Rejected, Resource, ResourceSet, ResourceType, Versioned};

pub const CLUSTER_URL: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINTS_URL: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LISTENER_URL: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE_URL: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// The four Envoy types in the order Envoy subscribes to them: clusters
/// before their endpoints, listeners before their routes.
pub const ENVOY_TYPES: [(&str, Interest); 4] = [
    (CLUSTER_URL, Interest::Wildcard),
    (ENDPOINTS_URL, Interest::Named),
    (LISTENER_URL, Interest::Wildcard),
    (ROUTE_URL, Interest::Named),
];

fn kind_of(type_url: &str) -> Option<ResourceType> {
    ResourceType::from_type_url(type_url)
}

fn take<T>(
    map: &mut BTreeMap<String, Versioned<T>>,
    name: &str,
    entry: Option<(T, String)>,
) -> Option<(T, String)> {
    let before = match entry {
        Some((resource, version)) => map.insert(name.to_string(), Versioned { version, resource }),
        None => map.remove(name),
    };
    before.map(|v| (v.resource, v.version))
}

impl DeltaStore for ResourceSet {
    /// The resource and its version.
    type Entry = (Resource, String);

    fn decode(
        &self,
        type_url: &str,
        name: &str,
        version: &str,
        any: &Any,
    ) -> Result<Self::Entry, (Option<ResourceType>, String)> {
        let kind = kind_of(type_url);
        let Some(k) = kind else {
            return Err((None, format!("{type_url} is not an Envoy resource type")));
        };
        let resource = Resource::decode(k, any).map_err(|e| (kind, e))?;
        // The set, and the references between resources, go by the
        // resource's own name.
        if resource.name() != name {
            return Err((
                kind,
                format!(
                    "carried under the name {name:?} but names itself {:?}",
                    resource.name()
                ),
            ));
        }
        Ok((resource, version.to_string()))
    }

    fn replace(
        &mut self,
        type_url: &str,
        name: &str,
        entry: Option<Self::Entry>,
    ) -> Option<Self::Entry> {
        macro_rules! swap {
            ($field:ident, $variant:ident) => {{
                let entry = match entry {
                    Some((Resource::$variant(r), v)) => Some((*r, v)),
                    // An entry of another type never comes from `decode`.
                    Some(_) => return None,
                    None => None,
                };
                take(&mut self.$field, name, entry)
                    .map(|(r, v)| (Resource::$variant(Box::new(r)), v))
            }};
        }
        match kind_of(type_url)? {
            ResourceType::Cluster => swap!(clusters, Cluster),
            ResourceType::Endpoints => swap!(endpoints, Endpoints),
            ResourceType::Listener => swap!(listeners, Listener),
            ResourceType::Route => swap!(routes, Route),
            ResourceType::Workload | ResourceType::WorkloadService => None,
        }
    }

    fn versions(&self, type_url: &str) -> Vec<(String, String)> {
        fn of<T>(map: &BTreeMap<String, Versioned<T>>) -> Vec<(String, String)> {
            map.iter()
                .map(|(n, v)| (n.clone(), v.version.clone()))
                .collect()
        }
        match kind_of(type_url) {
            Some(ResourceType::Cluster) => of(&self.clusters),
            Some(ResourceType::Endpoints) => of(&self.endpoints),
            Some(ResourceType::Listener) => of(&self.listeners),
            Some(ResourceType::Route) => of(&self.routes),
            _ => Vec::new(),
        }
    }

    fn wanted(&self) -> BTreeMap<&'static str, BTreeSet<String>> {
        BTreeMap::from([
            (ENDPOINTS_URL, eds_names(self)),
            (ROUTE_URL, rds_names(self)),
        ])
    }

    fn refused(&self, type_url: &str) -> BTreeSet<String> {
        let kind = kind_of(type_url);
        self.rejected
            .iter()
            .filter(|r| Some(r.kind) == kind)
            .map(|r| r.name.clone())
            .collect()
    }

    fn reject(&mut self, type_url: &str, name: &str, _: Option<ResourceType>, reason: &str) {
        let Some(kind) = kind_of(type_url) else {
            return;
        };
        self.clear_rejection(type_url, name);
        self.rejected.push(Rejected {
            kind,
            name: name.to_string(),
            version: String::new(),
            reason: reason.to_string(),
        });
    }

    fn clear_rejection(&mut self, type_url: &str, name: &str) {
        let kind = kind_of(type_url);
        self.rejected
            .retain(|r| !(Some(r.kind) == kind && r.name == name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_urls_are_envoys() {
        for (url, _) in ENVOY_TYPES {
            let kind = kind_of(url).unwrap();
            assert_eq!(kind.type_url(), url);
        }
    }
}
