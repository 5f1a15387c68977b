//! The gRPC side: accepts ADS streams (checking the bearer token if asked
//! to), feeds each request to the shared state and streams the state's
//! responses back.
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    aggregated_discovery_service_server::AggregatedDiscoveryService,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming, metadata::MetadataMap};

use super::{delta::DeltaState, lock, state::State};

pub(super) struct Ads {
    pub(super) state: Arc<Mutex<State>>,
    pub(super) delta: Arc<Mutex<DeltaState>>,
    pub(super) require_token: Option<String>,
}

impl Ads {
    /// Like istiod with JWT authentication: the stream must carry
    /// `authorization: Bearer <token>`.
    fn authorize(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let Some(token) = &self.require_token else {
            return Ok(());
        };
        let presented = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            Some(t) if t == token => Ok(()),
            Some(_) => Err(Status::unauthenticated("wrong bearer token")),
            None => Err(Status::unauthenticated(
                "no `authorization: Bearer <token>` metadata",
            )),
        }
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream =
        UnboundedReceiverStream<Result<DiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        if let Err(status) = self.authorize(request.metadata()) {
            lock(&self.state).reject_stream();
            return Err(status);
        }
        let (outbox, responses) = mpsc::unbounded_channel();
        let id = lock(&self.state).open_stream(outbox);
        tokio::spawn(read_requests(
            Arc::clone(&self.state),
            id,
            request.into_inner(),
        ));
        Ok(Response::new(UnboundedReceiverStream::new(responses)))
    }

    type DeltaAggregatedResourcesStream =
        UnboundedReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        if let Err(status) = self.authorize(request.metadata()) {
            lock(&self.state).reject_stream();
            return Err(status);
        }
        let (outbox, responses) = mpsc::unbounded_channel();
        let id = lock(&self.delta).open_stream(outbox);
        let delta = Arc::clone(&self.delta);
        let mut requests = request.into_inner();
        tokio::spawn(async move {
            while let Ok(Some(request)) = requests.message().await {
                lock(&delta).handle_request(id, request);
            }
            lock(&delta).close_stream(id);
        });
        Ok(Response::new(UnboundedReceiverStream::new(responses)))
    }
}

/// Handles a stream's requests until the client closes it or it breaks;
/// then the stream is forgotten, which ends its responses.
async fn read_requests(
    state: Arc<Mutex<State>>,
    id: usize,
    mut requests: Streaming<DiscoveryRequest>,
) {
    while let Ok(Some(request)) = requests.message().await {
        lock(&state).handle_request(id, request);
    }
    lock(&state).close_stream(id);
}
