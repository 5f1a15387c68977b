//! One incremental (delta) ADS stream's protocol state, for every type it
//! carries: the subscriptions, what is in force, the ACK or NACK each
//! response gets. The same machine serves the sidecar mode (Envoy's
//! clusters, endpoints, listeners and routes) and the ambient mode
//! (`istio.workload.Address`); what a resource is and how it is checked is
//! the [`DeltaStore`]'s business. No I/O here, so every rule is unit-tested.
//!
//! - Wildcard types (clusters, listeners, addresses) open with no names, as
//!   Envoy and ztunnel send them; named types (routes, endpoints) subscribe
//!   to the names the store wants ([`DeltaStore::wanted`]: the listeners'
//!   RDS names, the EDS clusters' service names) and follow them with
//!   `resource_names_subscribe` / `resource_names_unsubscribe`. A name
//!   unsubscribed leaves the store at once, as Envoy drops it.
//! - A stream lists the resources it holds with their versions
//!   (`initial_resource_versions`) so the server sends only what changed;
//!   refused resources are not listed, so the server sends them again.
//! - A response adds or replaces the resources it carries and removes the
//!   names in `removed_resources`; a removal of a name not held is ignored,
//!   as Envoy ignores it.
//! - A resource that cannot be decoded or is invalid is refused: its last
//!   good version (if any) stays, the rest of the response is applied, and
//!   the response is NACKed naming every refused resource and why. A name
//!   carried twice in one response is refused (neither copy is trusted).
use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::{
    envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource},
    google::{protobuf::Any, rpc::Status},
};

use super::stream::{INVALID_ARGUMENT, Refusal, truncate};
use crate::xds::resources::ResourceType;

/// What a delta stream keeps in force: resources by type URL and name.
pub trait DeltaStore {
    /// One resource with its version, as the store holds it.
    type Entry: Clone + PartialEq;

    /// Decodes and checks one resource of `type_url` carried under `name`
    /// at `version`. A refusal says what kind of resource it was when its
    /// bytes show it.
    fn decode(
        &self,
        type_url: &str,
        name: &str,
        version: &str,
        any: &Any,
    ) -> Result<Self::Entry, (Option<ResourceType>, String)>;

    /// Puts `entry` in force under `name` (or takes the name out with
    /// `None`); returns what was there.
    fn replace(
        &mut self,
        type_url: &str,
        name: &str,
        entry: Option<Self::Entry>,
    ) -> Option<Self::Entry>;

    /// Name and version of every resource of `type_url` in force.
    fn versions(&self, type_url: &str) -> Vec<(String, String)>;

    /// The names the resources in force need of each named type.
    fn wanted(&self) -> BTreeMap<&'static str, BTreeSet<String>>;

    /// Names of `type_url` refused and not since replaced.
    fn refused(&self, type_url: &str) -> BTreeSet<String>;

    /// Records a refusal of `name` (replacing an earlier one of that name).
    fn reject(&mut self, type_url: &str, name: &str, kind: Option<ResourceType>, reason: &str);

    /// Forgets the refusal of `name`: a good version came, or it was removed.
    fn clear_rejection(&mut self, type_url: &str, name: &str);
}

/// How a type is subscribed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interest {
    /// Everything of the type.
    Wildcard,
    /// The names [`DeltaStore::wanted`] gives for it.
    Named,
}

#[derive(Debug, Clone)]
struct TypeState {
    url: &'static str,
    interest: Interest,
    /// Names subscribed on this stream (named types).
    names: BTreeSet<String>,
    /// Whether a request has gone out on this stream, and a response come back.
    requested: bool,
    answered: bool,
    /// The last response's `system_version_info`, for the status.
    system_version: String,
}

/// A change a response made: the entry that was there before.
pub struct Undo<E> {
    pub type_url: &'static str,
    pub name: String,
    pub before: Option<E>,
}

/// The outcome of one response.
pub struct Handled<E> {
    /// The subscribed type the response was for; `None` for any other
    /// (NACKed, nothing changed).
    pub type_url: Option<&'static str>,
    /// Refused resources, with why; empty means ACK.
    pub errors: Vec<Refusal>,
    /// The ACK or NACK, then any subscription changes it caused.
    pub requests: Vec<DeltaDiscoveryRequest>,
    /// What changed (resources put in force, replaced, removed or
    /// unsubscribed), with what was there before, to go back to if the
    /// update cannot be applied.
    pub undo: Vec<Undo<E>>,
}

impl<E> Handled<E> {
    pub fn changed(&self) -> bool {
        !self.undo.is_empty()
    }
}

pub struct DeltaState<S> {
    /// What is in force, kept across streams.
    pub resources: S,
    types: Vec<TypeState>,
}

impl<S: DeltaStore> DeltaState<S> {
    /// A state subscribed to `types`, in the order their first requests go
    /// out (Envoy: clusters before endpoints, listeners before routes).
    pub fn new(resources: S, types: &[(&'static str, Interest)]) -> Self {
        Self {
            resources,
            types: types
                .iter()
                .map(|&(url, interest)| TypeState {
                    url,
                    interest,
                    names: BTreeSet::new(),
                    requested: false,
                    answered: false,
                    system_version: String::new(),
                })
                .collect(),
        }
    }

    /// The first requests of a stream (the caller adds the node to the
    /// first): every wildcard type, and each named type with names wanted,
    /// each listing what is held.
    pub fn initial_requests(&mut self) -> Vec<DeltaDiscoveryRequest> {
        let wanted = self.resources.wanted();
        let mut requests = Vec::new();
        for i in 0..self.types.len() {
            let t = &mut self.types[i];
            t.requested = false;
            t.answered = false;
            let url = t.url;
            let names = match t.interest {
                Interest::Wildcard => BTreeSet::new(),
                Interest::Named => wanted.get(url).cloned().unwrap_or_default(),
            };
            t.names = names.clone();
            if t.interest == Interest::Named {
                // What a name no longer wanted held goes now: it is not listed.
                self.drop_unsubscribed(url, &names, &mut Vec::new());
                if names.is_empty() {
                    continue;
                }
            }
            self.types[i].requested = true;
            let refused = self.resources.refused(url);
            let versions = self
                .resources
                .versions(url)
                .into_iter()
                .filter(|(n, _)| !refused.contains(n))
                .collect();
            requests.push(DeltaDiscoveryRequest {
                type_url: url.to_string(),
                resource_names_subscribe: names.into_iter().collect(),
                initial_resource_versions: versions,
                ..Default::default()
            });
        }
        requests
    }

    /// True once every type subscribed on this stream has answered: its
    /// view may replace what an earlier stream left in force.
    pub fn synced(&self) -> bool {
        self.types.iter().all(|t| {
            t.answered || (t.interest == Interest::Named && !t.requested && t.names.is_empty())
        })
    }

    /// Whether this stream has had any response of `type_url`.
    pub fn answered(&self, type_url: &str) -> bool {
        self.types.iter().any(|t| t.url == type_url && t.answered)
    }

    /// The last `system_version_info` of each type that has answered.
    pub fn system_versions(&self) -> BTreeMap<&'static str, String> {
        self.types
            .iter()
            .filter(|t| t.answered)
            .map(|t| (t.url, t.system_version.clone()))
            .collect()
    }

    pub fn handle(&mut self, response: &DeltaDiscoveryResponse) -> Handled<S::Entry> {
        let Some(index) = self.types.iter().position(|t| t.url == response.type_url) else {
            let urls: Vec<&str> = self.types.iter().map(|t| t.url).collect();
            let message = format!(
                "kmesh-rs did not subscribe to {:?}; this stream reads {}",
                response.type_url,
                urls.join(", ")
            );
            return Handled {
                type_url: None,
                errors: vec![Refusal {
                    name: String::new(),
                    reason: message.clone(),
                }],
                requests: vec![nack(&response.type_url, &response.nonce, message)],
                undo: Vec::new(),
            };
        };
        let url = self.types[index].url;
        let mut errors = Vec::new();
        let mut kinds = Vec::new();
        let mut accepted: BTreeMap<&str, S::Entry> = BTreeMap::new();
        let mut twice = BTreeSet::new();
        for (i, r) in response.resources.iter().enumerate() {
            match self.decode(url, r) {
                Ok(_) if accepted.contains_key(r.name.as_str()) => {
                    twice.insert(r.name.as_str());
                }
                Ok(entry) => {
                    accepted.insert(&r.name, entry);
                }
                Err((kind, reason)) => {
                    kinds.push(kind);
                    errors.push(Refusal {
                        name: r.name.clone(),
                        reason: format!("resources[{i}]: {reason}"),
                    });
                }
            }
        }
        for name in twice {
            accepted.remove(name);
            kinds.push(None);
            errors.push(Refusal {
                name: name.to_string(),
                reason: "appears more than once in the response".into(),
            });
        }
        let mut undo = Vec::new();
        for (name, entry) in accepted {
            self.resources.clear_rejection(url, name);
            self.put(url, name, Some(entry), &mut undo);
        }
        // Updates first, then removals (as Envoy and ztunnel). A name not
        // held changes nothing: Envoy ignores removals of unknown resources.
        for name in &response.removed_resources {
            self.resources.clear_rejection(url, name);
            self.put(url, name, None, &mut undo);
        }
        for (e, kind) in errors.iter().zip(kinds) {
            self.resources.reject(url, &e.name, kind, &e.reason);
        }
        let t = &mut self.types[index];
        t.answered = true;
        t.system_version = response.system_version_info.clone();
        let mut requests = vec![if errors.is_empty() {
            ack(url, &response.nonce)
        } else {
            let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
            nack(url, &response.nonce, all.join("; "))
        }];
        // Only the wildcard types (clusters, listeners) name what the named
        // ones need: an endpoints or routes update leaves them as they are,
        // and costs no walk over every listener.
        let wildcard: BTreeSet<&str> = self
            .types
            .iter()
            .filter(|t| t.interest == Interest::Wildcard)
            .map(|t| t.url)
            .collect();
        if undo.iter().any(|u| wildcard.contains(u.type_url)) {
            requests.extend(self.resubscribe(&mut undo));
        }
        Handled {
            type_url: Some(url),
            errors,
            requests,
            undo,
        }
    }

    /// The NACK for a response whose resources were valid but could not be
    /// applied (the kernel maps refused them): what it changed goes back.
    pub fn refuse_applied(
        &mut self,
        undo: Vec<Undo<S::Entry>>,
        type_url: &str,
        nonce: &str,
        message: String,
    ) -> DeltaDiscoveryRequest {
        for u in undo.into_iter().rev() {
            self.resources.replace(u.type_url, &u.name, u.before);
        }
        nack(type_url, nonce, message)
    }

    fn decode(&self, url: &str, r: &Resource) -> Result<S::Entry, (Option<ResourceType>, String)> {
        if r.name.is_empty() {
            return Err((None, "a resource without a name".into()));
        }
        let Some(any) = &r.resource else {
            return Err((
                None,
                "no resource (a removal goes in removed_resources)".into(),
            ));
        };
        if any.type_url != url {
            return Err((
                None,
                format!(
                    "resource of type {:?} in a response for {url}",
                    any.type_url
                ),
            ));
        }
        self.resources.decode(url, &r.name, &r.version, any)
    }

    fn put(
        &mut self,
        url: &'static str,
        name: &str,
        entry: Option<S::Entry>,
        undo: &mut Vec<Undo<S::Entry>>,
    ) {
        let same = entry.clone();
        let before = self.resources.replace(url, name, entry);
        if before != same {
            undo.push(Undo {
                type_url: url,
                name: name.to_string(),
                before,
            });
        }
    }

    /// Requests for the named types whose wanted names changed with what
    /// is in force.
    fn resubscribe(&mut self, undo: &mut Vec<Undo<S::Entry>>) -> Vec<DeltaDiscoveryRequest> {
        let wanted = self.resources.wanted();
        let mut requests = Vec::new();
        for i in 0..self.types.len() {
            let t = &self.types[i];
            if t.interest != Interest::Named {
                continue;
            }
            let names = wanted.get(t.url).cloned().unwrap_or_default();
            if t.names == names {
                continue;
            }
            let url = t.url;
            let subscribe: Vec<String> = names.difference(&t.names).cloned().collect();
            let unsubscribe: Vec<String> = t.names.difference(&names).cloned().collect();
            self.drop_unsubscribed(url, &names, undo);
            let t = &mut self.types[i];
            t.names = names;
            let first = !t.requested;
            t.requested = true;
            let versions = if first {
                // A type first subscribed on this stream lists what it holds.
                let refused = self.resources.refused(url);
                self.resources
                    .versions(url)
                    .into_iter()
                    .filter(|(n, _)| !refused.contains(n))
                    .collect()
            } else {
                Default::default()
            };
            requests.push(DeltaDiscoveryRequest {
                type_url: url.to_string(),
                resource_names_subscribe: subscribe,
                resource_names_unsubscribe: unsubscribe,
                initial_resource_versions: versions,
                ..Default::default()
            });
        }
        requests
    }

    /// Takes out of force what `url` holds under names no longer wanted.
    fn drop_unsubscribed(
        &mut self,
        url: &'static str,
        names: &BTreeSet<String>,
        undo: &mut Vec<Undo<S::Entry>>,
    ) {
        let gone: Vec<String> = self
            .resources
            .versions(url)
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| !names.contains(n))
            .collect();
        for name in gone {
            self.resources.clear_rejection(url, &name);
            self.put(url, &name, None, undo);
        }
    }
}

fn ack(type_url: &str, nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.to_string(),
        response_nonce: nonce.to_string(),
        ..Default::default()
    }
}

pub(crate) fn nack(type_url: &str, nonce: &str, message: String) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.to_string(),
        response_nonce: nonce.to_string(),
        error_detail: Some(Status {
            code: INVALID_ARGUMENT,
            message: truncate(message),
            details: Vec::new(),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
