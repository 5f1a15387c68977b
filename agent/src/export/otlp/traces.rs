//! Connection spans out over OTLP: the probe reader hands finished spans to
//! a bounded queue ([`crate::spans::queue`], never waiting on it); one task batches them into
//! opentelemetry-otlp's span exporter, which retries with backoff. A dead
//! collector fills the queue and further spans are dropped and counted.
use std::{str::FromStr, sync::Arc, time::Duration};

use opentelemetry_otlp::{
    RetryPolicy, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
    tonic_types::metadata::MetadataMap,
};
use opentelemetry_sdk::{
    Resource,
    trace::{SpanData, SpanExporter as _},
};
use tokio::sync::watch;
use tracing::warn;

use super::{
    retry::ExportRetry,
    settings::{Endpoint, Header, Protocol},
    transport::{TransportError, grpc_channel},
};
use crate::{
    agent_stats::{ExportHealth, add},
    spans::SpanReceiver,
};

/// Spans per export request at most.
const MAX_BATCH: usize = 512;
/// How long a span waits for its batch to fill.
const BATCH_DELAY: Duration = Duration::from_secs(1);
/// The longest pause between batches while the collector fails.
const MAX_PAUSE: Duration = Duration::from_secs(30);
/// Time left to send what is queued at shutdown.
const FLUSH_DEADLINE: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum TraceExporterError {
    #[error("OTLP traces endpoint {url}")]
    Build {
        url: String,
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error(transparent)]
    Channel(#[from] TransportError),
}

pub fn exporter(
    endpoint: &Endpoint,
    headers: &[Header],
    timeout: Duration,
    resource: &Resource,
) -> Result<SpanExporter, TraceExporterError> {
    let retry = RetryPolicy::recommended()
        .with_max_retries(4)
        .with_initial_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(4));
    let build = |source| TraceExporterError::Build {
        url: endpoint.url.clone(),
        source,
    };
    let mut exporter = match endpoint.protocol {
        Protocol::Grpc => {
            let mut metadata = MetadataMap::new();
            for h in headers {
                // Checked when the settings were read.
                if let (Ok(k), Ok(v)) = (
                    tonic::metadata::MetadataKey::from_str(&h.name),
                    h.value.parse(),
                ) {
                    metadata.insert(k, v);
                }
            }
            SpanExporter::builder()
                .with_tonic()
                .with_channel(grpc_channel(&endpoint.url, timeout)?)
                .with_timeout(timeout)
                .with_metadata(metadata)
                .with_retry_policy(retry)
                .build()
                .map_err(build)?
        }
        Protocol::HttpProtobuf | Protocol::HttpJson => SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint.url.clone())
            .with_timeout(timeout)
            // The library percent-decodes header values itself.
            .with_headers(
                headers
                    .iter()
                    .map(|h| (h.name.clone(), h.raw_value.clone()))
                    .collect(),
            )
            .with_retry_policy(retry)
            .build()
            .map_err(build)?,
    };
    exporter.set_resource(resource);
    Ok(exporter)
}

/// Exports queued spans until `stop`, then sends what is left within
/// [`FLUSH_DEADLINE`].
pub async fn run(
    exporter: SpanExporter,
    endpoint: String,
    mut rx: SpanReceiver,
    health: Arc<ExportHealth>,
    mut stop: watch::Receiver<bool>,
) {
    let mut retry = ExportRetry::new(MAX_PAUSE);
    loop {
        let first = tokio::select! {
            Some(span) = rx.recv() => span,
            _ = stop.wait_for(|s| *s) => break,
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + BATCH_DELAY;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                _ => break,
            }
        }
        if let Err(pause) = export(&exporter, &endpoint, batch, &health, &mut retry).await {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
    }
    let flush = async {
        let mut batch = Vec::new();
        while let Ok(span) = rx.try_recv() {
            batch.push(span);
            if batch.len() == MAX_BATCH {
                let full = std::mem::take(&mut batch);
                let _ = export(&exporter, &endpoint, full, &health, &mut retry).await;
            }
        }
        if !batch.is_empty() {
            let _ = export(&exporter, &endpoint, batch, &health, &mut retry).await;
        }
    };
    if tokio::time::timeout(FLUSH_DEADLINE, flush).await.is_err() {
        warn!(endpoint, "spans still queued at shutdown were not sent");
    }
}

/// One export; on failure the spans are dropped and counted, and the error
/// is the pause before the next batch.
async fn export(
    exporter: &SpanExporter,
    endpoint: &str,
    batch: Vec<SpanData>,
    health: &ExportHealth,
    retry: &mut ExportRetry,
) -> Result<(), Duration> {
    let n = batch.len() as u64;
    match exporter.export(batch).await {
        Ok(()) => {
            add(&health.traces_exports_ok, 1);
            add(&health.spans_exported, n);
            retry.succeeded("traces", endpoint);
            Ok(())
        }
        Err(e) => {
            add(&health.traces_exports_failed, 1);
            add(&health.spans_export_failed, n);
            Err(retry.failed(
                "traces",
                &format!("OTLP span export to {endpoint} failed, {n} spans dropped: {e}"),
            ))
        }
    }
}
