//! The server's state and the state-of-the-world protocol: the resources
//! served per type, each open stream's subscriptions and nonces, and the log.
//! One mutex guards all of it, so a push from `set` and a request handled on
//! a stream never interleave halfway (a nonce is always recorded before the
//! client can echo it).
use std::collections::{BTreeMap, BTreeSet, HashMap};

use envoy_types::pb::{
    envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse},
    google::protobuf::Any,
};
use tokio::sync::mpsc;

use super::{
    CLUSTER_TYPE, LISTENER_TYPE,
    log::{Log, RecordedRequest, RecordedResponse},
};

/// Where a stream's responses go; the stream's gRPC response body reads it.
pub(super) type Outbox = mpsc::UnboundedSender<Result<DiscoveryResponse, tonic::Status>>;

#[derive(Default)]
pub(super) struct State {
    /// Per type URL; a type never `set` is not served at all.
    resources: HashMap<String, Resources>,
    /// Open streams by number.
    streams: BTreeMap<usize, Stream>,
    rejected: usize,
    /// Nonces come from one counter, so each is unique on the server.
    last_nonce: u64,
    /// Why the gRPC server stopped, if it stopped on its own.
    pub(super) server_error: Option<String>,
    pub(super) log: Log,
}

struct Resources {
    version: String,
    named: Vec<(String, Any)>,
}

struct Stream {
    outbox: Outbox,
    /// Resource names of the latest current request per type.
    subscriptions: HashMap<String, BTreeSet<String>>,
    /// The latest nonce sent per type: only a request echoing it (or an
    /// initial one, without a nonce) is current.
    latest_nonce: HashMap<String, String>,
}

/// Cluster and Listener are the wildcard types: no names means all of them.
fn is_wildcard_type(type_url: &str) -> bool {
    type_url == CLUSTER_TYPE || type_url == LISTENER_TYPE
}

impl State {
    /// Registers a new stream; returns its number (1 for the first).
    pub(super) fn open_stream(&mut self, outbox: Outbox) -> usize {
        self.log.streams += 1;
        let id = self.log.streams;
        let stream = Stream {
            outbox,
            subscriptions: HashMap::new(),
            latest_nonce: HashMap::new(),
        };
        self.streams.insert(id, stream);
        id
    }

    pub(super) fn close_stream(&mut self, id: usize) {
        self.streams.remove(&id);
    }

    /// Forgets every stream; dropping their outboxes ends their responses.
    pub(super) fn close_all(&mut self) {
        self.streams.clear();
    }

    pub(super) fn reject_stream(&mut self) {
        self.rejected += 1;
    }

    pub(super) fn open_streams(&self) -> usize {
        self.streams.len()
    }

    pub(super) fn rejected(&self) -> usize {
        self.rejected
    }

    /// Records `request` and answers it if the protocol says so: an initial
    /// request or a subscription change gets the current state; an ACK or
    /// NACK of the latest nonce with the same names gets nothing; a request
    /// with a stale nonce is ignored.
    pub(super) fn handle_request(&mut self, id: usize, request: DiscoveryRequest) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let type_url = &request.type_url;
        let nonce = &request.response_nonce;
        let stale = !nonce.is_empty() && stream.latest_nonce.get(type_url) != Some(nonce);
        self.log
            .requests
            .push(RecordedRequest::new(id, &request, stale));
        if stale {
            return;
        }
        let names: BTreeSet<String> = request.resource_names.iter().cloned().collect();
        let previous = stream.subscriptions.insert(type_url.clone(), names.clone());
        if nonce.is_empty() || previous != Some(names) {
            self.respond(id, type_url);
        }
    }

    /// Replaces the resources of `type_url` and pushes them to every stream
    /// subscribed to it.
    pub(super) fn set(&mut self, type_url: &str, version: &str, named: Vec<(String, Any)>) {
        let resources = Resources {
            version: version.to_string(),
            named,
        };
        self.resources.insert(type_url.to_string(), resources);
        let subscribed: Vec<usize> = self
            .streams
            .iter()
            .filter(|(_, s)| s.subscriptions.contains_key(type_url))
            .map(|(id, _)| *id)
            .collect();
        for id in subscribed {
            self.respond(id, type_url);
        }
    }

    /// Sends `response` as it is to every stream, with a fresh nonce where
    /// it has none, and makes that nonce the latest for its type so the
    /// client's ACK or NACK of it is current.
    pub(super) fn push_raw(&mut self, response: DiscoveryResponse) {
        let ids: Vec<usize> = self.streams.keys().copied().collect();
        for id in ids {
            let mut response = response.clone();
            if response.nonce.is_empty() {
                response.nonce = self.next_nonce();
            }
            self.send(id, response, Vec::new());
        }
    }

    /// Sends stream `id` the current state of `type_url` as it subscribed
    /// to it; nothing if the type was never set or, for a non-wildcard
    /// type, the client asked for no names.
    fn respond(&mut self, id: usize, type_url: &str) {
        let (Some(resources), Some(stream)) = (self.resources.get(type_url), self.streams.get(&id))
        else {
            return;
        };
        let names = &stream.subscriptions[type_url];
        let everything = is_wildcard_type(type_url) && (names.is_empty() || names.contains("*"));
        if names.is_empty() && !everything {
            return;
        }
        let chosen: Vec<&(String, Any)> = resources
            .named
            .iter()
            .filter(|(name, _)| everything || names.contains(name))
            .collect();
        let response = DiscoveryResponse {
            version_info: resources.version.clone(),
            resources: chosen.iter().map(|(_, any)| any.clone()).collect(),
            type_url: type_url.to_string(),
            ..Default::default()
        };
        let names = chosen.into_iter().map(|(name, _)| name.clone()).collect();
        let nonce = self.next_nonce();
        self.send(id, DiscoveryResponse { nonce, ..response }, names);
    }

    /// Records `response`, makes its nonce the stream's latest for its type
    /// and queues it on the stream.
    fn send(&mut self, id: usize, response: DiscoveryResponse, resource_names: Vec<String>) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        stream
            .latest_nonce
            .insert(response.type_url.clone(), response.nonce.clone());
        self.log.responses.push(RecordedResponse {
            stream: id,
            at: std::time::Instant::now(),
            type_url: response.type_url.clone(),
            version_info: response.version_info.clone(),
            nonce: response.nonce.clone(),
            resource_names,
        });
        // A stream whose client went away is closed by its reader shortly.
        let _ = stream.outbox.send(Ok(response));
    }

    fn next_nonce(&mut self) -> String {
        self.last_nonce += 1;
        self.last_nonce.to_string()
    }
}
