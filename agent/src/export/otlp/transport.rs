//! Sends one OTLP metrics request over gRPC (tonic) or HTTP/protobuf
//! (reqwest). The connection is made lazily, so a collector that is not up
//! yet costs a failed export, not a failed start.
use std::{str::FromStr, time::Duration};

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    metrics_service_client::MetricsServiceClient,
};
use prost::Message;
use tonic::{metadata::MetadataKey, transport::Channel};

const KEEPALIVE: Duration = Duration::from_secs(20);

use super::settings::{Endpoint, Header, Protocol};

#[derive(Debug, thiserror::Error)]
#[error("OTLP export to {endpoint} failed: {reason}")]
pub struct ExportError {
    pub endpoint: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
#[error("OTLP endpoint {url:?}: {reason}")]
pub struct TransportError {
    url: String,
    reason: String,
}

enum Client {
    Grpc(MetricsServiceClient<Channel>),
    Http(reqwest::Client),
}

/// A lazily connected gRPC channel with keepalive; the trace exporter uses
/// one too.
pub fn grpc_channel(url: &str, timeout: Duration) -> Result<Channel, TransportError> {
    Ok(Channel::from_shared(url.to_string())
        .map_err(|e| TransportError {
            url: url.to_string(),
            reason: e.to_string(),
        })?
        .connect_timeout(timeout)
        .timeout(timeout)
        // A collector that vanishes without a reset is noticed in seconds,
        // not when TCP gives up.
        .http2_keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE)
        .connect_lazy())
}

pub struct MetricsTransport {
    client: Client,
    url: String,
    headers: Vec<Header>,
}

impl MetricsTransport {
    pub fn new(
        endpoint: &Endpoint,
        headers: &[Header],
        timeout: Duration,
    ) -> Result<Self, TransportError> {
        let bad_endpoint = |reason: String| TransportError {
            url: endpoint.url.clone(),
            reason,
        };
        let client = match endpoint.protocol {
            Protocol::Grpc => {
                let channel = grpc_channel(&endpoint.url, timeout)?;
                Client::Grpc(MetricsServiceClient::new(channel))
            }
            Protocol::HttpProtobuf | Protocol::HttpJson => Client::Http(
                reqwest::Client::builder()
                    .timeout(timeout)
                    .build()
                    .map_err(|e| bad_endpoint(e.to_string()))?,
            ),
        };
        Ok(Self {
            client,
            url: endpoint.url.clone(),
            headers: headers.to_vec(),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.url
    }

    /// Sends the request; a partial success counts as a failure (some
    /// points were rejected), with the collector's reason.
    pub async fn send(&mut self, request: ExportMetricsServiceRequest) -> Result<(), ExportError> {
        let fail = |reason: String| ExportError {
            endpoint: self.url.clone(),
            reason,
        };
        let rejected = match &mut self.client {
            Client::Grpc(client) => {
                let mut req = tonic::Request::new(request);
                for h in &self.headers {
                    // Checked when the settings were read.
                    if let (Ok(k), Ok(v)) = (MetadataKey::from_str(&h.name), h.value.parse()) {
                        req.metadata_mut().insert(k, v);
                    }
                }
                let response = client
                    .export(req)
                    .await
                    .map_err(|status| fail(format!("{:?}: {}", status.code(), status.message())))?;
                response.into_inner().partial_success
            }
            Client::Http(client) => {
                let mut req = client
                    .post(&self.url)
                    .header("content-type", "application/x-protobuf")
                    .body(request.encode_to_vec());
                for h in &self.headers {
                    req = req.header(&h.name, &h.value);
                }
                let response = req
                    .send()
                    .await
                    .map_err(|e| fail(format!("{:#}", anyhow::Error::new(e))))?;
                let status = response.status();
                let body = response.bytes().await.unwrap_or_default();
                if !status.is_success() {
                    let text = String::from_utf8_lossy(&body);
                    return Err(fail(format!("HTTP {status}: {}", text.trim())));
                }
                // An empty body is a full success; otherwise it may carry a
                // partial success, as over gRPC.
                ExportMetricsServiceResponse::decode(body.as_ref())
                    .ok()
                    .and_then(|r| r.partial_success)
            }
        };
        match rejected {
            Some(p) if p.rejected_data_points > 0 => Err(fail(format!(
                "collector rejected {} data points: {}",
                p.rejected_data_points, p.error_message
            ))),
            _ => Ok(()),
        }
    }
}
