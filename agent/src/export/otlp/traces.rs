//! Connection spans out over OTLP: the probe reader hands finished spans to
//! a bounded queue (never waiting on it); one task batches them into
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
use tokio::sync::{mpsc, watch};
use tracing::warn;

use super::{
    backoff::Backoff,
    settings::{Endpoint, Header, Protocol},
    transport::{TransportError, grpc_channel},
};
use crate::{
    export::health::{ExportHealth, add},
    spans::SpanOutcome,
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

/// Where the probe reader puts what the span assembler produced.
#[derive(Clone)]
pub struct SpanQueue {
    tx: mpsc::Sender<SpanData>,
    health: Arc<ExportHealth>,
}

impl SpanQueue {
    pub fn push(&self, outcome: SpanOutcome) {
        let h = &self.health;
        match outcome {
            SpanOutcome::Span(span) => {
                if self.tx.try_send(*span).is_err() {
                    add(&h.spans_queue_full, 1);
                }
            }
            SpanOutcome::SampledOut => add(&h.spans_sampled_out, 1),
            SpanOutcome::Untracked => add(&h.spans_untracked, 1),
        }
    }
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

pub fn queue(capacity: usize, health: Arc<ExportHealth>) -> (SpanQueue, mpsc::Receiver<SpanData>) {
    let (tx, rx) = mpsc::channel(capacity);
    (SpanQueue { tx, health }, rx)
}

/// Exports queued spans until `stop`, then sends what is left within
/// [`FLUSH_DEADLINE`].
pub async fn run(
    exporter: SpanExporter,
    endpoint: String,
    mut rx: mpsc::Receiver<SpanData>,
    health: Arc<ExportHealth>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(MAX_PAUSE);
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
        if let Err(pause) = export(&exporter, &endpoint, batch, &health, &mut backoff).await {
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
                let _ = export(&exporter, &endpoint, full, &health, &mut backoff).await;
            }
        }
        if !batch.is_empty() {
            let _ = export(&exporter, &endpoint, batch, &health, &mut backoff).await;
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
    backoff: &mut Backoff,
) -> Result<(), Duration> {
    let n = batch.len() as u64;
    match exporter.export(batch).await {
        Ok(()) => {
            add(&health.traces_exports_ok, 1);
            add(&health.spans_exported, n);
            backoff.succeeded("traces", endpoint);
            Ok(())
        }
        Err(e) => {
            add(&health.traces_exports_failed, 1);
            add(&health.spans_export_failed, n);
            Err(backoff.failed(
                "traces",
                &format!("OTLP span export to {endpoint} failed, {n} spans dropped: {e}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::{InstrumentationScope, trace::SpanContext};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    use super::*;

    fn span() -> SpanData {
        SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: opentelemetry::trace::SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: opentelemetry::trace::SpanKind::Client,
            name: "connect echo".into(),
            start_time: std::time::SystemTime::UNIX_EPOCH,
            end_time: std::time::SystemTime::UNIX_EPOCH,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: opentelemetry::trace::Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("t").build(),
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let health = Arc::new(ExportHealth::default());
        let (queue, mut rx) = queue(2, health.clone());
        for _ in 0..5 {
            queue.push(SpanOutcome::Span(Box::new(span())));
        }
        queue.push(SpanOutcome::SampledOut);
        queue.push(SpanOutcome::Untracked);
        let h = health.snapshot();
        assert_eq!(
            (h.spans_queue_full, h.spans_sampled_out, h.spans_untracked),
            (3, 1, 1)
        );
        assert!(rx.try_recv().is_ok() && rx.try_recv().is_ok() && rx.try_recv().is_err());
    }
}
