//! The ADS client: one gRPC stream to istiod (or any xDS server) carrying
//! clusters, endpoints, listeners and routes, state of the world here or
//! incremental in [`delta_client`] (`--xds-protocol`). Each
//! response is decoded and checked ([`stream`]), translated, handed to the
//! control loop to apply, and only then ACKed, so an ACK means the kernel
//! routes by it. A stream that fails is reopened with jittered exponential
//! backoff; until the new stream has delivered every type, the last mesh
//! applied keeps routing.
pub mod delta;
pub mod delta_client;
pub mod node;
pub mod settings;
pub mod store;
pub mod stream;

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    time::{Duration, Instant},
};

use envoy_types::pb::envoy::{
    config::core::v3::Node,
    service::discovery::v3::{
        DeltaDiscoveryRequest, DiscoveryRequest,
        aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
    },
};
use kmesh_api::v1;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tracing::{info, warn};

use self::{
    delta::DeltaState,
    settings::{AdsSettings, XdsProtocol},
    store::ENVOY_TYPES,
    stream::StreamState,
};
use super::{Report, mesh_of};
use crate::{
    backoff::Backoff,
    model::{Mesh, ProbeSettings},
};

/// istiod pushes whole snapshots; a large mesh's clusters or endpoints
/// exceed gRPC's 4 MiB default.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// A stream that lived this long was healthy: the next failure starts the
/// backoff over.
pub(crate) const HEALTHY_STREAM: Duration = Duration::from_secs(30);

/// A translated mesh for the control loop; it answers on `applied`.
pub struct Update {
    pub mesh: Mesh,
    pub report: Report,
    pub applied: oneshot::Sender<Result<(), String>>,
}

/// The client's state as the admin API shows it, and why the last stream
/// ended.
#[derive(Clone, Debug, Default)]
pub struct XdsStatus {
    pub stream: v1::XdsSource,
    pub last_error: Option<String>,
}

pub type SharedStatus = crate::shared::Shared<XdsStatus>;

pub(crate) fn with_status(status: &SharedStatus, f: impl FnOnce(&mut XdsStatus)) {
    f(&mut status.lock());
}

/// Runs until `stop` turns true.
pub async fn run(
    settings: AdsSettings,
    updates: mpsc::Sender<Update>,
    status: SharedStatus,
    stop: watch::Receiver<bool>,
) {
    if settings.protocol == XdsProtocol::Delta {
        let state = DeltaState::new(Default::default(), &ENVOY_TYPES);
        let mode = delta_client::Sidecar::default();
        return delta_client::run(settings, updates, status, stop, state, mode).await;
    }
    let mut sotw = Sotw {
        settings: &settings,
        updates: &updates,
        status: &status,
        last_applied: None,
    };
    reconnecting(&settings, &status, stop, &mut sotw).await;
}

/// A client that opens one stream at a time, keeping what it needs
/// across them.
pub(crate) trait Streams {
    /// Runs one stream until it ends.
    fn stream(&mut self) -> impl Future<Output = Result<(), String>> + Send;
}

struct Sotw<'s> {
    settings: &'s AdsSettings,
    updates: &'s mpsc::Sender<Update>,
    status: &'s SharedStatus,
    last_applied: Option<Mesh>,
}

impl Streams for Sotw<'_> {
    async fn stream(&mut self) -> Result<(), String> {
        Session {
            settings: self.settings,
            updates: self.updates,
            status: self.status,
            last_applied: &mut self.last_applied,
        }
        .run()
        .await
    }
}

/// Runs one stream after another until `stop` turns true: a stream that
/// ends is reopened after a jittered, doubling delay, which a stream that
/// lived [`HEALTHY_STREAM`] starts over.
pub(crate) async fn reconnecting(
    settings: &AdsSettings,
    status: &SharedStatus,
    mut stop: watch::Receiver<bool>,
    streams: &mut impl Streams,
) {
    with_status(status, |s| {
        s.stream.node_id = settings.node.id.clone();
        s.stream.mode = settings.mode.as_str().into();
    });
    let mut backoff = Backoff::new(FIRST_RETRY, MAX_RETRY).jittered();
    loop {
        let started = Instant::now();
        let result = tokio::select! {
            r = streams.stream() => r,
            _ = stop.changed() => return,
        };
        with_status(status, |s| {
            s.stream.connected = false;
            s.stream.synced = false;
        });
        let message = match result {
            Ok(()) => "the server closed the stream".to_string(),
            Err(e) => e,
        };
        if started.elapsed() >= HEALTHY_STREAM {
            backoff.succeeded();
        }
        let delay = backoff.failed();
        warn!(
            server = %settings.url,
            retry_in = ?delay,
            "xDS stream ended: {message}; the last applied mesh keeps routing"
        );
        with_status(status, |s| s.last_error = Some(message));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
    }
}

/// An ADS client on a new connection, taking istiod's large responses.
pub(crate) async fn open(
    settings: &AdsSettings,
) -> Result<AggregatedDiscoveryServiceClient<Channel>, String> {
    let channel = connect(settings).await?;
    Ok(AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// A stream's requests: `initial` first, then what is sent on the sender;
/// with the bearer token.
pub(crate) type Requests<T> = (mpsc::Sender<T>, tonic::Request<ReceiverStream<T>>);

/// A request that carries the node (SotW's and delta's).
pub(crate) trait WithNode {
    fn set_node(&mut self, node: Node);
}

impl WithNode for DiscoveryRequest {
    fn set_node(&mut self, node: Node) {
        self.node = Some(node);
    }
}

impl WithNode for DeltaDiscoveryRequest {
    fn set_node(&mut self, node: Node) {
        self.node = Some(node);
    }
}

pub(crate) fn requests<T: WithNode>(
    settings: &AdsSettings,
    mut initial: Vec<T>,
) -> Result<Requests<T>, String> {
    if let Some(first) = initial.first_mut() {
        // Istio reads the node from a stream's first request only.
        first.set_node(settings.node.to_node());
    }
    let (tx, rx) = mpsc::channel::<T>(initial.len() + 16);
    for r in initial {
        let _ = tx.try_send(r);
    }
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    authorize(settings, &mut request)?;
    Ok((tx, request))
}

/// The status of a stream just opened.
pub(crate) fn opened(status: &SharedStatus) {
    with_status(status, |s| {
        s.stream.connected = true;
        s.stream.connects += 1;
    });
}

/// Adds the bearer token of `--xds-token-file`, read again for every
/// stream so a rotated token needs no restart.
pub(crate) fn authorize<T>(
    settings: &AdsSettings,
    request: &mut tonic::Request<T>,
) -> Result<(), String> {
    if let Some(path) = &settings.token_file {
        let token = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
        let value = format!("Bearer {}", token.trim()).parse().map_err(|_| {
            format!(
                "token file {} holds characters a header cannot carry",
                path.display()
            )
        })?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(())
}

pub(crate) async fn connect(settings: &AdsSettings) -> Result<Channel, String> {
    let mut endpoint = Endpoint::from_shared(settings.url.clone())
        .map_err(|e| format!("bad server URL: {e}"))?
        .connect_timeout(Duration::from_secs(10))
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    if let Some(pem) = &settings.ca_pem {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
        if let Some(name) = &settings.server_name {
            tls = tls.domain_name(name.clone());
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("TLS settings: {e}"))?;
    }
    endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {}", error_chain(&e)))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

struct Session<'s> {
    settings: &'s AdsSettings,
    updates: &'s mpsc::Sender<Update>,
    status: &'s SharedStatus,
    last_applied: &'s mut Option<Mesh>,
}

impl Session<'_> {
    async fn run(&mut self) -> Result<(), String> {
        let mut client = open(self.settings).await?;
        let mut state = StreamState::new();
        let (tx, request) = requests(self.settings, state.initial_requests())?;
        let mut responses = client
            .stream_aggregated_resources(request)
            .await
            .map_err(|s| describe_status(&s))?
            .into_inner();
        opened(self.status);
        info!(server = %self.settings.url, node = %self.settings.node.id, "xDS stream open");
        let mut applied_this_stream = false;
        while let Some(response) = responses.message().await.map_err(|s| describe_status(&s))? {
            let handled = state.handle(&response);
            let kind = handled.kind;
            let mut requests = handled.requests;
            if !handled.errors.is_empty() {
                let what: Vec<String> = handled.errors.iter().map(ToString::to_string).collect();
                warn!(
                    type_url = %response.type_url,
                    version = %response.version_info,
                    "NACK: {}; the previous version of each refused resource stays in force",
                    what.join("; ")
                );
            }
            if kind.is_some() && state.synced() && (handled.changed || !applied_this_stream) {
                if let Err(e) = self.apply(&state).await {
                    warn!("xDS update not applied: {e}");
                    // The ACK becomes a NACK: the kernel does not route by it.
                    if let (Some(kind), Some(first)) = (kind, requests.first_mut()) {
                        *first = state.refuse_applied(kind, &handled.previous_version, e);
                    }
                } else {
                    applied_this_stream = true;
                }
            }
            let nack = requests.first().is_some_and(|r| r.error_detail.is_some());
            with_status(self.status, |s| {
                s.stream.responses += 1;
                if nack {
                    s.stream.nacks += 1;
                    s.stream.last_nack =
                        requests[0].error_detail.as_ref().map(|d| d.message.clone());
                } else {
                    s.stream.acks += 1;
                }
                s.stream.synced = state.synced();
                s.stream.versions = state
                    .accepted_versions()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect();
            });
            for r in requests {
                tx.send(r)
                    .await
                    .map_err(|_| "the request stream closed".to_string())?;
            }
        }
        Ok(())
    }

    /// Translates the stream's resources and waits for the control loop to
    /// apply them. A service whose clusters or routes are still on their
    /// way keeps its previous form.
    async fn apply(&mut self, state: &StreamState) -> Result<(), String> {
        let (mut mesh, report, pending) = mesh_of(&state.resources, ProbeSettings::default());
        keep_pending(&mut mesh, &pending, self.last_applied.as_ref());
        send_update(self.updates, mesh.clone(), report).await?;
        *self.last_applied = Some(mesh);
        Ok(())
    }
}

/// Hands `mesh` to the control loop and waits for it to be applied.
pub(crate) async fn send_update(
    updates: &mpsc::Sender<Update>,
    mesh: Mesh,
    report: Report,
) -> Result<(), String> {
    let (applied, outcome) = oneshot::channel();
    const SHUTTING_DOWN: &str = "the agent is shutting down";
    updates
        .send(Update {
            mesh,
            report,
            applied,
        })
        .await
        .map_err(|_| SHUTTING_DOWN.to_string())?;
    outcome.await.map_err(|_| SHUTTING_DOWN.to_string())?
}

fn keep_pending(mesh: &mut Mesh, pending: &BTreeSet<SocketAddr>, last: Option<&Mesh>) {
    let Some(last) = last else { return };
    for vip in pending {
        if let Some(previous) = last.services.get(vip) {
            mesh.services.insert(*vip, previous.clone());
        }
    }
}

pub(crate) fn describe_status(s: &tonic::Status) -> String {
    let hint = match s.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
            "; check --xds-token-file (istiod wants a token with audience istio-ca) and that the node's namespace is the token's"
        }
        tonic::Code::Unimplemented => "; the server has no ADS (is this an xDS port?)",
        _ => "",
    };
    format!("{} ({:?}){hint}", s.message(), s.code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures;

    #[test]
    fn a_service_waiting_for_its_endpoints_keeps_its_previous_form() {
        let before = fixtures::echo();
        let vip = *before.services.keys().next().unwrap();
        let mut now = before.clone();
        now.services.get_mut(&vip).unwrap().backends.clear();
        keep_pending(&mut now, &BTreeSet::from([vip]), Some(&before));
        assert_eq!(now, before);
        // Nothing to keep on a first sync: the service goes in as it is.
        let mut first = before.clone();
        first.services.get_mut(&vip).unwrap().backends.clear();
        keep_pending(&mut first, &BTreeSet::from([vip]), None);
        assert!(first.services[&vip].backends.is_empty());
    }
}
