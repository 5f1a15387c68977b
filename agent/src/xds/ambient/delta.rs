//! Istio ambient's `istio.workload.Address` as a delta stream holds it, the
//! way ztunnel does: one wildcard type whose resources are workloads (by
//! uid) and services (by `namespace/hostname`), kept in an [`AddressSet`]
//! by the delta state machine every mode shares ([`crate::xds::ads::delta`]).
//! What is checked is what ztunnel checks ([`validate`]).
use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use super::{ADDRESS_TYPE_URL, AddressSet, kind_and_key, proto::Address, validate};
use crate::xds::{
    ads::delta::{self, DeltaStore, Interest},
    resources::{Rejected, ResourceType},
};

/// The ambient stream's state: one wildcard subscription to Address.
pub type DeltaState = delta::DeltaState<AddressSet>;

/// A state holding nothing yet.
pub fn new_state() -> DeltaState {
    DeltaState::new(
        AddressSet::default(),
        &[(ADDRESS_TYPE_URL, Interest::Wildcard)],
    )
}

impl DeltaStore for AddressSet {
    /// The Address and its version.
    type Entry = (Address, String);

    fn decode(
        &self,
        type_url: &str,
        _name: &str,
        version: &str,
        any: &Any,
    ) -> Result<Self::Entry, (Option<ResourceType>, String)> {
        let a = Address::decode(any.value.as_slice())
            .map_err(|e| (None, format!("cannot decode {type_url}: {e}")))?;
        validate(&a).map_err(|e| match kind_and_key(&a) {
            Some((kind, _)) => (Some(kind), format!("{kind}: {e}")),
            None => (None, e),
        })?;
        Ok((a, version.to_string()))
    }

    fn replace(
        &mut self,
        _type_url: &str,
        name: &str,
        entry: Option<Self::Entry>,
    ) -> Option<Self::Entry> {
        use super::proto::address::Type;
        let before = self
            .workloads
            .get(name)
            .map(|v| (Type::Workload(Box::new(v.resource.clone())), &v.version))
            .or_else(|| {
                self.services
                    .get(name)
                    .map(|v| (Type::Service(Box::new(v.resource.clone())), &v.version))
            })
            .map(|(t, v)| (Address { r#type: Some(t) }, v.clone()));
        match entry {
            Some((address, version)) => self.insert(name, address, &version),
            None => {
                self.remove(name);
            }
        }
        before
    }

    fn versions(&self, _type_url: &str) -> Vec<(String, String)> {
        self.workloads
            .iter()
            .map(|(n, v)| (n.clone(), v.version.clone()))
            .chain(
                self.services
                    .iter()
                    .map(|(n, v)| (n.clone(), v.version.clone())),
            )
            .collect()
    }

    fn wanted(&self) -> BTreeMap<&'static str, BTreeSet<String>> {
        BTreeMap::new()
    }

    fn refused(&self, _type_url: &str) -> BTreeSet<String> {
        self.rejected.iter().map(|r| r.name.clone()).collect()
    }

    fn reject(&mut self, _type_url: &str, name: &str, kind: Option<ResourceType>, reason: &str) {
        // Named by what it is, or by what it replaced.
        let kind = kind.unwrap_or(if self.services.contains_key(name) {
            ResourceType::WorkloadService
        } else {
            ResourceType::Workload
        });
        self.rejected.retain(|r| r.name != name);
        self.rejected.push(Rejected {
            kind,
            name: name.to_string(),
            version: String::new(),
            reason: reason.to_string(),
        });
    }

    fn clear_rejection(&mut self, _type_url: &str, name: &str) {
        self.rejected.retain(|r| r.name != name);
    }
}

#[cfg(test)]
mod tests;
