//! The incremental (delta) side of the test server, as istiod serves
//! Istio ambient's `istio.workload.Address` to ztunnel: one type, every
//! stream wildcard. A stream's first request gets every resource (less
//! those whose version it already holds, by `initial_resource_versions`,
//! and with a removal for names it holds that are gone); each
//! [`AdsServer::set_delta`](super::AdsServer::set_delta) pushes what changed
//! and what was removed. Requests echoing anything but the latest nonce of
//! their stream are logged as stale and ignored, as for SotW.
use std::collections::{BTreeMap, HashMap};

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
    pub initial_versions: BTreeMap<String, String>,
    pub node: Option<RecordedNode>,
    pub error: Option<RecordedError>,
    pub stale: bool,
}

/// One `DeltaDiscoveryResponse` as the server sent it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeltaResponse {
    pub stream: usize,
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

struct DeltaStream {
    outbox: DeltaOutbox,
    latest_nonce: Option<String>,
    /// Its initial request has come.
    subscribed: bool,
}

#[derive(Default)]
pub(super) struct DeltaState {
    /// Name → (version, resource); None until first set.
    resources: Option<BTreeMap<String, (String, Any)>>,
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
                subscribed: false,
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
        let initial = r.response_nonce.is_empty();
        stream.subscribed |= initial;
        let stale = !initial && stream.latest_nonce.as_deref() != Some(&r.response_nonce);
        self.log.requests.push(DeltaRequest {
            stream: id,
            type_url: r.type_url.clone(),
            response_nonce: r.response_nonce.clone(),
            subscribe: r.resource_names_subscribe.clone(),
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
        if !initial {
            return;
        }
        let Some(all) = &self.resources else { return };
        let held = &r.initial_resource_versions;
        let resources: Vec<(String, (String, Any))> = all
            .iter()
            .filter(|(n, (v, _))| held.get(*n) != Some(v))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let removed = held
            .keys()
            .filter(|n| !all.contains_key(*n))
            .cloned()
            .collect();
        let type_url = r.type_url.clone();
        self.send(id, &type_url, resources, removed);
    }

    /// Replaces the resources, pushing what changed to every stream that
    /// has subscribed.
    pub(super) fn set(&mut self, type_url: &str, version: &str, named: Vec<(String, Any)>) {
        let old = self.resources.take().unwrap_or_default();
        let new: BTreeMap<String, (String, Any)> = named
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
        self.resources = Some(new);
        let ids: Vec<usize> = self
            .streams
            .iter()
            .filter(|(_, s)| s.subscribed)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.send(id, type_url, changed.clone(), removed.clone());
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
            nonce: response.nonce.clone(),
            resources: response.resources.iter().map(|r| r.name.clone()).collect(),
            removed: response.removed_resources.clone(),
        });
        let _ = stream.outbox.send(Ok(response));
    }
}
