//! What the server saw and sent, kept so a test can assert what the client
//! did: every request (stale ones too) and every response, in order.
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;

/// One `DiscoveryRequest` as the server received it.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedRequest {
    /// Which stream carried it: 1 for the first stream since the server
    /// started, 2 for the next, and so on.
    pub stream: usize,
    /// When the server read it.
    pub at: std::time::Instant,
    pub type_url: String,
    pub version_info: String,
    pub response_nonce: String,
    pub resource_names: Vec<String>,
    /// Clients usually send the node on a stream's first request only.
    pub node: Option<RecordedNode>,
    /// Set on a NACK.
    pub error: Option<RecordedError>,
    /// The nonce was not the latest one sent for this type on this stream,
    /// so the server ignored the request, as the protocol says.
    pub stale: bool,
}

/// The parts of `envoy.config.core.v3.Node` tests look at.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedNode {
    pub id: String,
    pub cluster: String,
    pub has_metadata: bool,
}

/// The `error_detail` of a NACK.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedError {
    /// A `google.rpc.Code`.
    pub code: i32,
    pub message: String,
}

/// One `DiscoveryResponse` as the server sent it.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedResponse {
    pub stream: usize,
    /// When the server sent it.
    pub at: std::time::Instant,
    pub type_url: String,
    pub version_info: String,
    pub nonce: String,
    /// Names of the resources it carried; empty for [`super::AdsServer::push_raw`],
    /// whose resources may not even decode.
    pub resource_names: Vec<String>,
}

/// A snapshot of everything recorded, for [`super::AdsServer::wait_for`].
#[derive(Clone, Debug, Default)]
pub struct Log {
    /// Streams accepted since the server started.
    pub streams: usize,
    pub requests: Vec<RecordedRequest>,
    pub responses: Vec<RecordedResponse>,
}

impl Log {
    /// The first ACK of `version` for `type_url`: a request without error
    /// whose version is `version` and whose nonce is that of a response
    /// (same stream, same type) that carried `version`.
    pub fn ack(&self, type_url: &str, version: &str) -> Option<&RecordedRequest> {
        self.requests.iter().find(|r| {
            r.type_url == type_url
                && r.version_info == version
                && r.error.is_none()
                && self
                    .answers(r)
                    .is_some_and(|sent| sent.version_info == version)
        })
    }

    /// The latest NACK for `type_url`.
    pub fn nack(&self, type_url: &str) -> Option<&RecordedRequest> {
        self.requests
            .iter()
            .rev()
            .find(|r| r.type_url == type_url && r.error.is_some())
    }

    /// Every NACK for `type_url`, oldest first.
    pub fn nacks<'a>(&'a self, type_url: &'a str) -> impl Iterator<Item = &'a RecordedRequest> {
        self.requests
            .iter()
            .filter(move |r| r.type_url == type_url && r.error.is_some())
    }

    /// The response a request's nonce refers to, if the server sent it.
    pub fn answers(&self, request: &RecordedRequest) -> Option<&RecordedResponse> {
        self.responses.iter().find(|sent| {
            sent.stream == request.stream
                && sent.type_url == request.type_url
                && sent.nonce == request.response_nonce
        })
    }

    /// One line per request (`<-`), then one per response (`->`), for a
    /// timeout's error message.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{} stream(s), {} request(s), {} response(s)\n",
            self.streams,
            self.requests.len(),
            self.responses.len()
        );
        for r in &self.requests {
            out.push_str(&format!(
                "  <- stream {} {} version {:?} nonce {:?} names {:?}{}{}\n",
                r.stream,
                r.type_url,
                r.version_info,
                r.response_nonce,
                r.resource_names,
                r.error
                    .as_ref()
                    .map(|e| format!(" NACK {:?}", e.message))
                    .unwrap_or_default(),
                if r.stale { " (stale)" } else { "" },
            ));
        }
        for r in &self.responses {
            out.push_str(&format!(
                "  -> stream {} {} version {:?} nonce {:?} names {:?}\n",
                r.stream, r.type_url, r.version_info, r.nonce, r.resource_names
            ));
        }
        out
    }
}

impl RecordedRequest {
    pub(super) fn new(stream: usize, request: &DiscoveryRequest, stale: bool) -> Self {
        Self {
            stream,
            at: std::time::Instant::now(),
            type_url: request.type_url.clone(),
            version_info: request.version_info.clone(),
            response_nonce: request.response_nonce.clone(),
            resource_names: request.resource_names.clone(),
            node: request.node.as_ref().map(|n| RecordedNode {
                id: n.id.clone(),
                cluster: n.cluster.clone(),
                has_metadata: n.metadata.is_some(),
            }),
            error: request.error_detail.as_ref().map(|e| RecordedError {
                code: e.code,
                message: e.message.clone(),
            }),
            stale,
        }
    }
}
