//! The incremental (delta) side of the test server, as istiod serves it:
//! Istio ambient's `istio.workload.Address` to ztunnel, and Envoy's
//! clusters, endpoints, listeners and routes to a sidecar. Per stream and
//! type, a first request with no names is a wildcard subscription (every
//! resource of the type); one with names subscribes to those, and later
//! requests add (`resource_names_subscribe`) and drop
//! (`resource_names_unsubscribe`) names. A first request gets what it
//! subscribed to (less what it already holds at the same version, by
//! `initial_resource_versions`, and with a removal for names it holds that
//! are gone); newly subscribed names get a response of their own (empty if
//! none exists, so the client knows); each
//! [`AdsServer::set_delta`](super::AdsServer::set_delta) pushes what changed
//! and what was removed, to the streams subscribed to it. Requests echoing
//! anything but the latest nonce of their stream are logged as stale and
//! ignored, as for SotW. A type never set is not answered.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use envoy_types::pb::{
    envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource},
    google::protobuf::Any,
};
use tokio::sync::mpsc;

use super::log::{RecordedError, RecordedNode};

pub(super) type DeltaOutbox = mpsc::UnboundedSender<Result<DeltaDiscoveryResponse, tonic::Status>>;

/// One `DeltaDiscoveryRequest` as the server received it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeltaRequest {
    pub stream: usize,
    pub type_url: String,
    pub response_nonce: String,
    pub subscribe: Vec<String>,
    pub unsubscribe: Vec<String>,
    pub initial_versions: BTreeMap<String, String>,
    pub node: Option<RecordedNode>,
    pub error: Option<RecordedError>,
    pub stale: bool,
}

/// One `DeltaDiscoveryResponse` as the server sent it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeltaResponse {
    pub stream: usize,
    pub type_url: String,
    pub nonce: String,
    pub resources: Vec<String>,
    pub removed: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct DeltaLog {
    pub streams: usize,
    pub requests: Vec<DeltaRequest>,
    pub responses: Vec<DeltaResponse>,
}

impl DeltaLog {
    /// The latest ACK (no error, current nonce) of the response that had
    /// `nonce`.
    pub fn ack_of(&self, nonce: &str) -> Option<&DeltaRequest> {
        self.requests
            .iter()
            .rev()
            .find(|r| r.response_nonce == nonce && r.error.is_none() && !r.stale)
    }

    /// The latest NACK.
    pub fn nack(&self) -> Option<&DeltaRequest> {
        self.requests.iter().rev().find(|r| r.error.is_some())
    }

    /// The responses of `type_url`, in order.
    pub fn responses_of<'l>(
        &'l self,
        type_url: &'l str,
    ) -> impl Iterator<Item = &'l DeltaResponse> {
        self.responses
            .iter()
            .filter(move |r| r.type_url == type_url)
    }

    /// The requests of `type_url` on `stream`, in order.
    pub fn requests_of<'l>(
        &'l self,
        stream: usize,
        type_url: &'l str,
    ) -> impl Iterator<Item = &'l DeltaRequest> {
        self.requests
            .iter()
            .filter(move |r| r.stream == stream && r.type_url == type_url)
    }

    pub fn summary(&self) -> String {
        format!(
            "{} delta streams; requests: {:?}; responses: {:?}",
            self.streams,
            self.requests
                .iter()
                .map(|r| (
                    r.stream,
                    r.response_nonce.clone(),
                    r.error.as_ref().map(|e| e.message.clone())
                ))
                .collect::<Vec<_>>(),
            self.responses
                .iter()
                .map(|r| (
                    r.stream,
                    r.nonce.clone(),
                    r.resources.len(),
                    r.removed.len()
                ))
                .collect::<Vec<_>>()
        )
    }
}

/// What a stream subscribed to of one type.
enum Subscription {
    Wildcard,
    Names(BTreeSet<String>),
}

impl Subscription {
    fn wants(&self, name: &str) -> bool {
        match self {
            Subscription::Wildcard => true,
            Subscription::Names(names) => names.contains(name),
        }
    }
}

struct DeltaStream {
    outbox: DeltaOutbox,
    latest_nonce: Option<String>,
    /// Per type, once its first request has come.
    subscriptions: HashMap<String, Subscription>,
}

type Served = BTreeMap<String, (String, Any)>;

#[derive(Default)]
pub(super) struct DeltaState {
    /// Per type: name → (version, resource); a type never set is absent.
    resources: HashMap<String, Served>,
    streams: HashMap<usize, DeltaStream>,
    last_nonce: u64,
    pub(super) log: DeltaLog,
}

impl DeltaState {
    pub(super) fn open_stream(&mut self, outbox: DeltaOutbox) -> usize {
        self.log.streams += 1;
        let id = self.log.streams;
        self.streams.insert(
            id,
            DeltaStream {
                outbox,
                latest_nonce: None,
                subscriptions: HashMap::new(),
            },
        );
        id
    }

    pub(super) fn close_stream(&mut self, id: usize) {
        self.streams.remove(&id);
    }

    pub(super) fn close_all(&mut self) {
        self.streams.clear();
    }

    pub(super) fn handle_request(&mut self, id: usize, r: DeltaDiscoveryRequest) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let first = !stream.subscriptions.contains_key(&r.type_url);
        let stale = !r.response_nonce.is_empty()
            && stream.latest_nonce.as_deref() != Some(&r.response_nonce);
        self.log.requests.push(DeltaRequest {
            stream: id,
            type_url: r.type_url.clone(),
            response_nonce: r.response_nonce.clone(),
            subscribe: r.resource_names_subscribe.clone(),
            unsubscribe: r.resource_names_unsubscribe.clone(),
            initial_versions: r.initial_resource_versions.clone().into_iter().collect(),
            node: r.node.as_ref().map(|n| RecordedNode {
                id: n.id.clone(),
                cluster: n.cluster.clone(),
                has_metadata: n.metadata.is_some(),
            }),
            error: r.error_detail.as_ref().map(|e| RecordedError {
                code: e.code,
                message: e.message.clone(),
            }),
            stale,
        });
        if stale {
            return;
        }
        let url = r.type_url.clone();
        let wildcard = r.resource_names_subscribe.iter().any(|n| n == "*")
            || (first && r.resource_names_subscribe.is_empty());
        let new_names: BTreeSet<String> = r
            .resource_names_subscribe
            .iter()
            .filter(|n| *n != "*")
            .cloned()
            .collect();
        let sub = stream
            .subscriptions
            .entry(url.clone())
            .or_insert_with(|| Subscription::Names(BTreeSet::new()));
        if wildcard {
            *sub = Subscription::Wildcard;
        } else if let Subscription::Names(names) = sub {
            names.extend(new_names.iter().cloned());
            for n in &r.resource_names_unsubscribe {
                names.remove(n);
            }
        }
        if !first && new_names.is_empty() {
            // An ACK, a NACK or an unsubscription: nothing to send.
            return;
        }
        let Some(all) = self.resources.get(&url) else {
            return;
        };
        let held = &r.initial_resource_versions;
        let wants = |n: &str| wildcard || new_names.contains(n);
        let resources: Vec<(String, (String, Any))> = all
            .iter()
            .filter(|(n, (v, _))| wants(n) && held.get(*n) != Some(v))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let removed = held
            .keys()
            .filter(|n| !all.contains_key(*n))
            .cloned()
            .collect();
        self.send(id, &url, resources, removed);
    }

    /// Replaces the resources of `type_url`, pushing what changed to every
    /// stream subscribed to any of it.
    pub(super) fn set(&mut self, type_url: &str, version: &str, named: Vec<(String, Any)>) {
        let old = self.resources.remove(type_url).unwrap_or_default();
        let new: Served = named
            .into_iter()
            .map(|(n, a)| {
                let v = match old.get(&n) {
                    Some((v, same)) if *same == a => v.clone(),
                    _ => version.to_string(),
                };
                (n, (v, a))
            })
            .collect();
        let changed: Vec<(String, (String, Any))> = new
            .iter()
            .filter(|(n, (_, a))| old.get(*n).is_none_or(|(_, o)| o != a))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let removed: Vec<String> = old
            .keys()
            .filter(|n| !new.contains_key(*n))
            .cloned()
            .collect();
        self.resources.insert(type_url.to_string(), new);
        let mut pushes = Vec::new();
        for (id, s) in &self.streams {
            let Some(sub) = s.subscriptions.get(type_url) else {
                continue;
            };
            let mine: Vec<(String, (String, Any))> = changed
                .iter()
                .filter(|(n, _)| sub.wants(n))
                .cloned()
                .collect();
            let gone: Vec<String> = removed.iter().filter(|n| sub.wants(n)).cloned().collect();
            // A wildcard stream hears of every set (as the ambient tests
            // expect); a named one only of its names.
            if matches!(sub, Subscription::Wildcard) || !mine.is_empty() || !gone.is_empty() {
                pushes.push((*id, mine, gone));
            }
        }
        for (id, mine, gone) in pushes {
            self.send(id, type_url, mine, gone);
        }
    }

    /// A hand-made response to every stream (a fresh nonce if it has none).
    pub(super) fn push_raw(&mut self, mut response: DeltaDiscoveryResponse) {
        let ids: Vec<usize> = self.streams.keys().copied().collect();
        let given = response.nonce.clone();
        for id in ids {
            response.nonce = if given.is_empty() {
                self.nonce()
            } else {
                given.clone()
            };
            self.deliver(id, response.clone());
        }
    }

    fn nonce(&mut self) -> String {
        self.last_nonce += 1;
        format!("d{}", self.last_nonce)
    }

    fn send(
        &mut self,
        id: usize,
        type_url: &str,
        resources: Vec<(String, (String, Any))>,
        removed: Vec<String>,
    ) {
        let nonce = self.nonce();
        let response = DeltaDiscoveryResponse {
            system_version_info: "test".into(),
            type_url: type_url.to_string(),
            nonce,
            removed_resources: removed,
            resources: resources
                .into_iter()
                .map(|(name, (version, any))| Resource {
                    name,
                    version,
                    resource: Some(any),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        self.deliver(id, response);
    }

    fn deliver(&mut self, id: usize, response: DeltaDiscoveryResponse) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        stream.latest_nonce = Some(response.nonce.clone());
        self.log.responses.push(DeltaResponse {
            stream: id,
            type_url: response.type_url.clone(),
            nonce: response.nonce.clone(),
            resources: response.resources.iter().map(|r| r.name.clone()).collect(),
            removed: response.removed_resources.clone(),
        });
        let _ = stream.outbox.send(Ok(response));
    }
}
