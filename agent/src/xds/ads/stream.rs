//! One ADS stream's protocol state (state of the world): what each type
//! has accepted, which names are subscribed, and the ACK or NACK each
//! response gets. No I/O here, so every rule is unit-tested.
//!
//! - Clusters and listeners are wildcard: a response replaces the set.
//! - Endpoints and routes are asked for by name: the clusters and listeners
//!   in force name them; a response updates the named resources it carries,
//!   and a name no longer subscribed is dropped.
//! - A resource that cannot be decoded or is invalid is refused: its last
//!   good version (if any) stays, the rest of the response is applied, and
//!   the response is NACKed with every reason, as Envoy does.
use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::{
    envoy::{
        config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType},
        config::listener::v3::filter,
        extensions::filters::network::http_connection_manager::v3::{
            HttpConnectionManager, http_connection_manager,
        },
        service::discovery::v3::{DiscoveryRequest, DiscoveryResponse},
    },
    google::rpc::Status,
};
use prost::{Message, Name};

use crate::xds::resources::{Rejected, Resource, ResourceSet, ResourceType};

/// gRPC's INVALID_ARGUMENT, what Envoy puts in a NACK.
pub(crate) const INVALID_ARGUMENT: i32 = 3;
/// A NACK's message is for humans; keep a flood of reasons readable.
const MAX_ERROR_DETAIL: usize = 8 * 1024;

#[derive(Debug, Default, Clone)]
struct TypeState {
    /// The version last ACKed; what a NACK reports as still in force.
    accepted: String,
    /// The nonce of the last response, echoed by the next request.
    nonce: String,
    /// Names asked for (endpoints, routes).
    names: BTreeSet<String>,
    /// Whether a request has gone out, and a response come back.
    requested: bool,
    answered: bool,
}

/// A resource refused, by name when its bytes show one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub name: String,
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.name.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{:?}: {}", self.name, self.reason)
        }
    }
}

/// The outcome of one response.
#[derive(Debug)]
pub struct Handled {
    pub kind: Option<ResourceType>,
    /// Refused resources, with why; empty means ACK.
    pub errors: Vec<Refusal>,
    /// The ACK or NACK, then any new subscriptions it caused.
    pub requests: Vec<DiscoveryRequest>,
    /// Whether the resources in force changed.
    pub changed: bool,
    /// The type's accepted version before this response.
    pub previous_version: String,
}

#[derive(Debug)]
pub struct StreamState {
    types: BTreeMap<ResourceType, TypeState>,
    pub resources: ResourceSet,
}

impl Default for StreamState {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamState {
    pub fn new() -> Self {
        Self {
            types: ResourceType::ALL
                .iter()
                .map(|&k| (k, TypeState::default()))
                .collect(),
            resources: ResourceSet::default(),
        }
    }

    /// The first requests of a stream: clusters and listeners, everything.
    pub fn initial_requests(&mut self) -> Vec<DiscoveryRequest> {
        [ResourceType::Cluster, ResourceType::Listener]
            .into_iter()
            .map(|k| self.request(k, None))
            .collect()
    }

    /// True once every subscribed type has answered: the stream's view is
    /// whole and may replace what an earlier stream left in force.
    pub fn synced(&self) -> bool {
        self.types
            .iter()
            .all(|(k, t)| t.answered || (!k.is_wildcard() && !t.requested && t.names.is_empty()))
    }

    pub fn accepted_versions(&self) -> BTreeMap<ResourceType, String> {
        self.types
            .iter()
            .filter(|(_, t)| t.answered)
            .map(|(k, t)| (*k, t.accepted.clone()))
            .collect()
    }

    fn request(&mut self, kind: ResourceType, error: Option<String>) -> DiscoveryRequest {
        let t = self.types.get_mut(&kind).expect("every type has a state");
        t.requested = true;
        DiscoveryRequest {
            version_info: t.accepted.clone(),
            response_nonce: t.nonce.clone(),
            type_url: kind.type_url(),
            resource_names: t.names.iter().cloned().collect(),
            error_detail: error.map(|message| Status {
                code: INVALID_ARGUMENT,
                message,
                details: Vec::new(),
            }),
            ..Default::default()
        }
    }

    pub fn handle(&mut self, response: &DiscoveryResponse) -> Handled {
        let Some(kind) = ResourceType::from_type_url(&response.type_url) else {
            // Not a type this client asked for: NACK it under its own URL so
            // the server sees the refusal, and change nothing.
            let message = format!(
                "kmesh-rs did not subscribe to {:?}; it reads clusters, endpoints, listeners and routes",
                response.type_url
            );
            return Handled {
                kind: None,
                errors: vec![Refusal {
                    name: String::new(),
                    reason: message.clone(),
                }],
                requests: vec![DiscoveryRequest {
                    response_nonce: response.nonce.clone(),
                    type_url: response.type_url.clone(),
                    error_detail: Some(Status {
                        code: INVALID_ARGUMENT,
                        message,
                        details: Vec::new(),
                    }),
                    ..Default::default()
                }],
                changed: false,
                previous_version: String::new(),
            };
        };
        let version = response.version_info.clone();
        let mut errors = Vec::new();
        let mut accepted: BTreeMap<String, Resource> = BTreeMap::new();
        let (mut seen, mut twice) = (BTreeSet::new(), BTreeSet::new());
        for (i, any) in response.resources.iter().enumerate() {
            match Resource::decode(kind, any) {
                Ok(r) => {
                    let name = r.name().to_string();
                    if !seen.insert(name.clone()) {
                        twice.insert(name.clone());
                    } else {
                        accepted.insert(name, r);
                    }
                }
                Err(e) => errors.push(Refusal {
                    name: name_hint(any),
                    reason: format!("resources[{i}]: {e}"),
                }),
            }
        }
        // Neither copy of a twice-sent resource is trusted over the other.
        for name in twice {
            accepted.remove(&name);
            errors.push(Refusal {
                reason: format!("{kind} {name:?} appears more than once in the response"),
                name,
            });
        }
        let before = self.resources.clone();
        // A wildcard response is the whole set; with a resource in it that
        // cannot even be named, nothing says which of ours it replaces, so
        // the response is refused whole.
        if kind.is_wildcard() && errors.iter().any(|e| e.name.is_empty()) {
            self.refuse(kind, &version, &errors);
        } else {
            self.replace(kind, accepted, &version, &errors);
        }
        let t = self.types.get_mut(&kind).expect("every type has a state");
        let previous_version = t.accepted.clone();
        t.nonce = response.nonce.clone();
        t.answered = true;
        if errors.is_empty() {
            t.accepted = version;
        }
        let detail = (!errors.is_empty()).then(|| {
            let all: Vec<String> = errors.iter().map(|e| format!("{kind} {e}")).collect();
            truncate(all.join("; "))
        });
        let mut requests = vec![self.request(kind, detail)];
        requests.extend(self.resubscribe());
        Handled {
            kind: Some(kind),
            changed: self.resources != before,
            errors,
            requests,
            previous_version,
        }
    }

    /// The NACK for a response whose resources were valid but could not be
    /// applied (the kernel maps refused them): the type goes back to its
    /// previous version.
    pub fn refuse_applied(
        &mut self,
        kind: ResourceType,
        previous_version: &str,
        message: String,
    ) -> DiscoveryRequest {
        let t = self.types.get_mut(&kind).expect("every type has a state");
        t.accepted = previous_version.to_string();
        self.request(kind, Some(truncate(message)))
    }

    /// Puts a response's resources in force. For a wildcard type the
    /// response is the whole set, but a refused resource keeps its last good
    /// version; for named types the response updates what it carries.
    fn replace(
        &mut self,
        kind: ResourceType,
        accepted: BTreeMap<String, Resource>,
        version: &str,
        errors: &[Refusal],
    ) {
        let set = &mut self.resources;
        let mut next = ResourceSet::default();
        let refused_names: BTreeSet<&str> = errors.iter().map(|e| e.name.as_str()).collect();
        // Keep what this response does not replace.
        macro_rules! carry {
            ($field:ident) => {
                for (name, v) in std::mem::take(&mut set.$field) {
                    let keep = if kind.is_wildcard() {
                        refused_names.contains(name.as_str()) && !accepted.contains_key(&name)
                    } else {
                        !accepted.contains_key(&name)
                    };
                    if keep {
                        next.$field.insert(name, v);
                    }
                }
            };
        }
        match kind {
            ResourceType::Cluster => carry!(clusters),
            ResourceType::Endpoints => carry!(endpoints),
            ResourceType::Listener => carry!(listeners),
            ResourceType::Route => carry!(routes),
            // Never subscribed over SotW (`from_type_url` knows only `ALL`).
            ResourceType::Workload | ResourceType::WorkloadService => {}
        }
        for resource in accepted.into_values() {
            // Names are unique here, so this cannot fail.
            let _ = next.insert(resource, version);
        }
        match kind {
            ResourceType::Cluster => set.clusters = next.clusters,
            ResourceType::Endpoints => set.endpoints = next.endpoints,
            ResourceType::Listener => set.listeners = next.listeners,
            ResourceType::Route => set.routes = next.routes,
            ResourceType::Workload | ResourceType::WorkloadService => {}
        }
        self.refuse(kind, version, errors);
    }

    /// Records this response's refusals in place of the type's earlier ones.
    fn refuse(&mut self, kind: ResourceType, version: &str, errors: &[Refusal]) {
        let rejected = &mut self.resources.rejected;
        rejected.retain(|r| r.kind != kind);
        rejected.extend(errors.iter().map(|e| Rejected {
            kind,
            name: e.name.clone(),
            version: version.to_string(),
            reason: e.reason.clone(),
        }));
    }

    /// Requests for endpoints and routes whose names changed with the
    /// clusters and listeners in force.
    fn resubscribe(&mut self) -> Vec<DiscoveryRequest> {
        let wanted = [
            (ResourceType::Endpoints, eds_names(&self.resources)),
            (ResourceType::Route, rds_names(&self.resources)),
        ];
        let mut requests = Vec::new();
        for (kind, names) in wanted {
            let t = self.types.get_mut(&kind).expect("every type has a state");
            if t.names == names {
                continue;
            }
            // Nothing to ask for and nothing asked before: no request, and the
            // type does not hold the sync back.
            let first = !t.requested;
            t.names = names;
            if first && t.names.is_empty() {
                continue;
            }
            if t.names.is_empty() {
                // Dropped names go from the set at once; the server learns
                // of it from the request.
                drop_unsubscribed(&mut self.resources, kind, &BTreeSet::new());
            } else {
                let names = t.names.clone();
                drop_unsubscribed(&mut self.resources, kind, &names);
            }
            requests.push(self.request(kind, None));
        }
        requests
    }
}

fn drop_unsubscribed(set: &mut ResourceSet, kind: ResourceType, names: &BTreeSet<String>) {
    match kind {
        ResourceType::Endpoints => set.endpoints.retain(|n, _| names.contains(n)),
        ResourceType::Route => set.routes.retain(|n, _| names.contains(n)),
        _ => {}
    }
}

/// The load assignments the EDS clusters in force need.
pub(crate) fn eds_names(set: &ResourceSet) -> BTreeSet<String> {
    set.clusters
        .values()
        .map(|v| &v.resource)
        .filter(|c| {
            c.cluster_discovery_type == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
        })
        .map(|c| {
            c.eds_cluster_config
                .as_ref()
                .map(|e| e.service_name.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| c.name.clone())
        })
        .collect()
}

/// The route configurations the listeners in force name over RDS.
pub(crate) fn rds_names(set: &ResourceSet) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for l in set.listeners.values().map(|v| &v.resource) {
        for chain in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
            for f in &chain.filters {
                let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                    continue;
                };
                if any.type_url != HttpConnectionManager::type_url() {
                    continue;
                }
                if let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice())
                    && let Some(http_connection_manager::RouteSpecifier::Rds(rds)) =
                        hcm.route_specifier
                {
                    names.insert(rds.route_config_name);
                }
            }
        }
    }
    names
}

/// A resource's name for an error about it, if its bytes show one: every
/// resource type has its name in field 1. The bytes are walked by hand, as
/// a message that does not decode may still carry its name intact.
fn name_hint(any: &envoy_types::pb::google::protobuf::Any) -> String {
    use prost::encoding::decode_varint;
    let mut buf = any.value.as_slice();
    while let Ok(key) = decode_varint(&mut buf) {
        let skip = match key & 7 {
            0 => match decode_varint(&mut buf) {
                Ok(_) => 0,
                Err(_) => break,
            },
            1 => 8,
            2 => {
                let Ok(len) = decode_varint(&mut buf) else {
                    break;
                };
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                if key >> 3 == 1 && len <= buf.len() {
                    return String::from_utf8_lossy(&buf[..len]).into_owned();
                }
                len
            }
            5 => 4,
            _ => break,
        };
        if skip > buf.len() {
            break;
        }
        buf = &buf[skip..];
    }
    String::new()
}

pub(crate) fn truncate(mut s: String) -> String {
    if s.len() > MAX_ERROR_DETAIL {
        let mut end = MAX_ERROR_DETAIL;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str(" ...");
    }
    s
}

#[cfg(test)]
mod tests;
