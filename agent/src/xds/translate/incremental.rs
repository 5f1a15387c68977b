//! Translation in proportion to a change: a new ClusterLoadAssignment
//! re-resolves only the services whose clusters read it. istiod pushes
//! endpoint changes far more often than anything else (every pod start,
//! stop and readiness flip), and over delta xDS such a push carries one
//! assignment; re-reading every listener, route and cluster for it made an
//! endpoint change at 10,000 services cost as much as a full sync.
//!
//! A full translation records, per service, what it was resolved from (the
//! route's clusters and weights, its listener) and the findings its
//! resolution made. [`update_endpoints`] repeats just those resolutions.
//! Anything it cannot redo exactly (a VIP several listeners claim, a route
//! with no address whose backends are listed as unrouted) asks for a full
//! translation instead.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
};

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType},
};

use super::{Finding, Findings, Translation, Translator, backends::Target};
use crate::{model::ResourceRef, xds::resources::ResourceSet};

/// One service as a listener asked for it.
#[derive(Clone, Debug)]
struct Call {
    name: String,
    target: Target,
    resources: Vec<ResourceRef>,
    listener: String,
    bound: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Index {
    /// Each VIP's services as the listeners asked for them, in order: more
    /// than one means listeners contest the VIP.
    calls: BTreeMap<SocketAddr, Vec<Call>>,
    /// The findings of each VIP's resolution.
    per_vip: BTreeMap<SocketAddr, Vec<Finding>>,
    /// The findings of everything else (listeners, routes).
    base: Vec<Finding>,
    /// Endpoints (EDS service names) → the VIPs whose clusters read them.
    by_endpoints: BTreeMap<String, BTreeSet<SocketAddr>>,
    /// Endpoints read by a route no address leads to: their backends are
    /// listed among the unrouted, which only a full translation redoes.
    unrouted: BTreeSet<String>,
}

/// The name an EDS cluster's assignment goes by, or `None` for a cluster
/// whose endpoints are inline or not its own.
fn eds_key(c: &Cluster) -> Option<&str> {
    if c.cluster_discovery_type != Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)) {
        return None;
    }
    Some(
        c.eds_cluster_config
            .as_ref()
            .map(|e| e.service_name.as_str())
            .filter(|s| !s.is_empty())
            .unwrap_or(&c.name),
    )
}

fn endpoints_of<'s>(set: &'s ResourceSet, target: &Target) -> impl Iterator<Item = &'s str> {
    target
        .iter()
        .filter_map(|(c, _)| set.clusters.get(c))
        .filter_map(|c| eds_key(&c.resource))
        .collect::<Vec<_>>()
        .into_iter()
}

impl Index {
    pub(super) fn call(
        &mut self,
        vip: SocketAddr,
        name: &str,
        target: &Target,
        resources: &[ResourceRef],
        (listener, bound): (&str, bool),
    ) {
        self.calls.entry(vip).or_default().push(Call {
            name: name.to_string(),
            target: target.clone(),
            resources: resources.to_vec(),
            listener: listener.to_string(),
            bound,
        });
    }

    pub(super) fn found(&mut self, vip: SocketAddr, findings: Vec<Finding>) {
        if !findings.is_empty() {
            self.per_vip.entry(vip).or_default().extend(findings);
        }
    }

    pub(super) fn unrouted(&mut self, set: &ResourceSet, target: &Target) {
        self.unrouted
            .extend(endpoints_of(set, target).map(str::to_string));
    }

    /// Completes the index after a full translation: `base` holds the
    /// findings that are no service's own.
    pub(super) fn finish(&mut self, set: &ResourceSet, base: Vec<Finding>) {
        let mut by_endpoints: BTreeMap<String, BTreeSet<SocketAddr>> = BTreeMap::new();
        for (vip, calls) in &self.calls {
            for call in calls {
                for key in endpoints_of(set, &call.target) {
                    by_endpoints
                        .entry(key.to_string())
                        .or_default()
                        .insert(*vip);
                }
            }
        }
        self.by_endpoints = by_endpoints;
        self.base = base;
    }

    /// Every finding, sorted, once.
    pub(super) fn findings(&self) -> Vec<Finding> {
        let mut all: Vec<Finding> = self
            .base
            .iter()
            .chain(self.per_vip.values().flatten())
            .cloned()
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

/// Brings `t` (a translation of `set` before the assignments named in
/// `changed` changed, with nothing else changed) up to date by
/// re-resolving only the services that read them. Returns the VIPs
/// re-resolved, or `None` when only a full translation can be exact (`t`
/// is then unchanged).
pub fn update_endpoints(
    t: &mut Translation,
    set: &ResourceSet,
    changed: &BTreeSet<String>,
) -> Option<BTreeSet<SocketAddr>> {
    if changed.iter().any(|n| t.index.unrouted.contains(n)) {
        return None;
    }
    let vips: BTreeSet<SocketAddr> = changed
        .iter()
        .filter_map(|n| t.index.by_endpoints.get(n))
        .flatten()
        .copied()
        .collect();
    if vips.iter().any(|v| t.index.calls[v].len() != 1) {
        return None;
    }
    let mut redo = Translator {
        set,
        out: Translation::default(),
        findings: Findings::default(),
        bound: BTreeSet::new(),
    };
    for vip in &vips {
        let c = &t.index.calls[vip][0];
        redo.add_service(
            *vip,
            &c.name,
            &c.target,
            c.resources.clone(),
            (&c.listener, c.bound),
        );
    }
    let Translator {
        out: mut redone, ..
    } = redo;
    for vip in &vips {
        match redone.services.remove(vip) {
            Some(s) => t.services.insert(*vip, s),
            None => t.services.remove(vip),
        };
        if redone.pending.contains(vip) {
            t.pending.insert(*vip);
        } else {
            t.pending.remove(vip);
        }
        match redone.index.per_vip.remove(vip) {
            Some(f) => t.index.per_vip.insert(*vip, f),
            None => t.index.per_vip.remove(vip),
        };
    }
    t.findings = t.index.findings();
    Some(vips)
}

#[cfg(test)]
mod tests;
