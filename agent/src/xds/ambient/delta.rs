//! One delta ADS subscription to `istio.workload.Address`, the way ztunnel
//! holds it: what is in force, the ACK or NACK each response gets. No I/O
//! here, so every rule is unit-tested.
//!
//! - A stream opens with a wildcard subscription (no names, as ztunnel
//!   sends it) and the node; on a reconnect it lists the resources it holds
//!   with their versions (`initial_resource_versions`) so the server may
//!   skip unchanged ones. Refused resources are not listed, so the server
//!   sends them again.
//! - A response adds or replaces the resources it carries and removes the
//!   names in `removed_resources`.
//! - A resource that cannot be decoded or is invalid is refused: its last
//!   good version (if any) stays, the rest of the response is applied, and
//!   the response is NACKed naming every refused resource and why. A name
//!   carried twice in one response is refused (neither copy is trusted).
use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::{
    envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource},
    google::rpc::Status,
};
use prost::Message;

use super::{ADDRESS_TYPE_URL, AddressSet, kind_and_key, proto::Address, validate};
use crate::xds::{
    ads::stream::{INVALID_ARGUMENT, Refusal, truncate},
    resources::{Rejected, ResourceType},
};

#[derive(Debug, Default)]
pub struct DeltaState {
    /// What is in force, kept across streams.
    pub resources: AddressSet,
    /// The last response's `system_version_info` (for the status only).
    pub system_version: String,
    /// Whether the current stream has answered.
    answered: bool,
}

/// The outcome of one response.
#[derive(Debug)]
pub struct Handled {
    /// Whether it was an Address response (anything else is NACKed and
    /// changes nothing).
    pub addresses: bool,
    /// Refused resources, with why; empty means ACK.
    pub errors: Vec<Refusal>,
    /// The ACK or NACK.
    pub request: DeltaDiscoveryRequest,
    /// Whether the resources in force changed.
    pub changed: bool,
    /// The resources before this response, to go back to if the update
    /// cannot be applied.
    pub before: AddressSet,
}

impl DeltaState {
    pub fn new() -> Self {
        Self::default()
    }

    /// The first request of a stream (the caller adds the node).
    pub fn initial_request(&mut self) -> DeltaDiscoveryRequest {
        self.answered = false;
        let refused: BTreeSet<&str> = self
            .resources
            .rejected
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        let versions = self
            .resources
            .workloads
            .iter()
            .map(|(n, v)| (n, &v.version))
            .chain(self.resources.services.iter().map(|(n, v)| (n, &v.version)))
            .filter(|(n, _)| !refused.contains(n.as_str()))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        DeltaDiscoveryRequest {
            type_url: ADDRESS_TYPE_URL.to_string(),
            initial_resource_versions: versions,
            ..Default::default()
        }
    }

    /// True once the current stream has answered: its view may replace
    /// what an earlier stream left in force.
    pub fn synced(&self) -> bool {
        self.answered
    }

    pub fn handle(&mut self, response: &DeltaDiscoveryResponse) -> Handled {
        let before = self.resources.clone();
        if response.type_url != ADDRESS_TYPE_URL {
            let message = format!(
                "kmesh-rs did not subscribe to {:?}; in ambient mode it reads {ADDRESS_TYPE_URL}",
                response.type_url
            );
            return Handled {
                addresses: false,
                errors: vec![Refusal {
                    name: String::new(),
                    reason: message.clone(),
                }],
                request: nack(&response.type_url, &response.nonce, message),
                changed: false,
                before,
            };
        }
        let mut errors = Vec::new();
        let mut kinds = Vec::new();
        let mut accepted: BTreeMap<&str, (&str, Address)> = BTreeMap::new();
        let mut twice = BTreeMap::new();
        for (i, r) in response.resources.iter().enumerate() {
            match decode(r) {
                Ok(a) if accepted.contains_key(r.name.as_str()) => {
                    twice.insert(r.name.as_str(), kind_and_key(&a).map(|k| k.0));
                }
                Ok(a) => {
                    accepted.insert(&r.name, (&r.version, a));
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
        for (name, kind) in twice {
            accepted.remove(name);
            kinds.push(kind);
            errors.push(Refusal {
                name: name.to_string(),
                reason: "appears more than once in the response".into(),
            });
        }
        let set = &mut self.resources;
        let newly_rejected: Vec<Rejected> = errors
            .iter()
            .zip(kinds)
            .map(|(e, kind)| Rejected {
                // Named by what it is, or by what it replaced.
                kind: kind.unwrap_or(if set.services.contains_key(&e.name) {
                    ResourceType::WorkloadService
                } else {
                    ResourceType::Workload
                }),
                name: e.name.clone(),
                version: String::new(),
                reason: e.reason.clone(),
            })
            .collect();
        for (name, (version, address)) in accepted {
            set.insert(name, address, version);
            set.rejected.retain(|r| r.name != name);
        }
        // As ztunnel: updates first, then removals.
        for name in &response.removed_resources {
            set.remove(name);
            set.rejected.retain(|r| &r.name != name);
        }
        for r in newly_rejected {
            set.rejected.retain(|old| old.name != r.name);
            set.rejected.push(r);
        }
        self.system_version = response.system_version_info.clone();
        self.answered = true;
        let request = if errors.is_empty() {
            ack(&response.nonce)
        } else {
            let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
            nack(ADDRESS_TYPE_URL, &response.nonce, all.join("; "))
        };
        Handled {
            addresses: true,
            changed: self.resources != before,
            errors,
            request,
            before,
        }
    }

    /// The NACK for a response whose resources were valid but could not be
    /// applied (the kernel maps refused them): the resources go back to
    /// what they were.
    pub fn refuse_applied(
        &mut self,
        before: AddressSet,
        nonce: &str,
        message: String,
    ) -> DeltaDiscoveryRequest {
        self.resources = before;
        nack(ADDRESS_TYPE_URL, nonce, message)
    }
}

/// A resource of the response, checked; a refusal says what kind of
/// resource it was when its bytes show it.
fn decode(r: &Resource) -> Result<Address, (Option<ResourceType>, String)> {
    if r.name.is_empty() {
        return Err((None, "a resource without a name".into()));
    }
    let Some(any) = &r.resource else {
        return Err((
            None,
            "no resource (a removal goes in removed_resources)".into(),
        ));
    };
    if any.type_url != ADDRESS_TYPE_URL {
        return Err((
            None,
            format!(
                "resource of type {:?} in a response for {ADDRESS_TYPE_URL}",
                any.type_url
            ),
        ));
    }
    let a = Address::decode(any.value.as_slice())
        .map_err(|e| (None, format!("cannot decode {ADDRESS_TYPE_URL}: {e}")))?;
    validate(&a).map_err(|e| match kind_and_key(&a) {
        Some((kind, _)) => (Some(kind), format!("{kind}: {e}")),
        None => (None, e),
    })?;
    Ok(a)
}

fn ack(nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: ADDRESS_TYPE_URL.to_string(),
        response_nonce: nonce.to_string(),
        ..Default::default()
    }
}

fn nack(type_url: &str, nonce: &str, message: String) -> DeltaDiscoveryRequest {
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
