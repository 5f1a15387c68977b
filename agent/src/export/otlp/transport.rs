//! Sends one OTLP metrics request over gRPC (tonic) or HTTP/protobuf
//! (reqwest). The connection is made lazily, so a collector that is not up
//! yet costs a failed export, not a failed start.
use std::{collections::HashMap, str::FromStr, time::Duration};

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, metrics_service_client::MetricsServiceClient,
};
use prost::Message;
use tonic::{
    metadata::{MetadataKey, MetadataValue},
    transport::Channel,
};

use super::settings::{Endpoint, Protocol};

#[derive(Debug, thiserror::Error)]
#[error("OTLP export to {endpoint} failed: {reason}")]
pub struct ExportError {
    pub endpoint: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("OTLP endpoint {url:?}: {reason}")]
    Endpoint { url: String, reason: String },
    #[error("OTLP header {name:?}: {reason}")]
    Header { name: String, reason: String },
}

enum Client {
    Grpc(MetricsServiceClient<Channel>),
    Http(reqwest::Client),
}

pub struct MetricsTransport {
    client: Client,
    url: String,
    headers: HashMap<String, String>,
}

impl MetricsTransport {
    pub fn new(
        endpoint: &Endpoint,
        headers: &HashMap<String, String>,
        timeout: Duration,
    ) -> Result<Self, TransportError> {
        let bad_endpoint = |reason: String| TransportError::Endpoint {
            url: endpoint.url.clone(),
            reason,
        };
        let client = match endpoint.protocol {
            Protocol::Grpc => {
                for (name, value) in headers {
                    MetadataKey::<tonic::metadata::Ascii>::from_str(name).map_err(|e| {
                        TransportError::Header {
                            name: name.clone(),
                            reason: e.to_string(),
                        }
                    })?;
                    MetadataValue::<tonic::metadata::Ascii>::from_str(value).map_err(|e| {
                        TransportError::Header {
                            name: name.clone(),
                            reason: e.to_string(),
                        }
                    })?;
                }
                let channel = Channel::from_shared(endpoint.url.clone())
                    .map_err(|e| bad_endpoint(e.to_string()))?
                    .connect_timeout(timeout)
                    .timeout(timeout)
                    .connect_lazy();
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
            headers: headers.clone(),
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
                for (name, value) in &self.headers {
                    // Validated in new().
                    if let (Ok(k), Ok(v)) = (MetadataKey::from_str(name), value.parse()) {
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
                for (name, value) in &self.headers {
                    req = req.header(name, value);
                }
                let response = req.send().await.map_err(|e| fail(error_chain(&e)))?;
                let status = response.status();
                if !status.is_success() {
                    let body = response.text().await.unwrap_or_default();
                    return Err(fail(format!("HTTP {status}: {}", body.trim())));
                }
                None
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

/// An error with its causes, since reqwest's own message rarely says why.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
