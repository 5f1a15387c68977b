//! OTLP out: metrics read from the aggregator on a period, spans from the
//! probe reader through a bounded queue. Neither ever blocks the data path:
//! the reader only takes the aggregator lock to copy figures out, and never
//! waits on the span queue.
mod exponential;
pub mod metrics;
pub mod resource;
mod retry;
pub mod settings;
pub mod traces;
mod transport;

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest, common::v1::KeyValue,
};
use tokio::{sync::watch, task::JoinHandle};
use tracing::{info, warn};

pub use self::transport::TransportError;
use self::{
    retry::ExportRetry,
    settings::{HistogramAggregation, OtlpSettings},
    transport::MetricsTransport,
};
use crate::{
    agent_stats::{AgentFigures, ControlStats, ExportHealth, add},
    aggregator::SharedAggregator,
    spans::SpanReceiver,
};

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Traces(#[from] traces::TraceExporterError),
}

/// The running exporters.
pub struct Otlp {
    tasks: Vec<JoinHandle<()>>,
}

impl Otlp {
    /// Starts the exporters on the current runtime; they stop when `stop`
    /// turns true, after a last export. Spans come from `spans`, the end of
    /// [`crate::spans::pipeline`], when the settings export traces.
    pub fn start(
        settings: &OtlpSettings,
        aggregator: SharedAggregator,
        control: ControlStats,
        spans: Option<SpanReceiver>,
        health: Arc<ExportHealth>,
        stop: watch::Receiver<bool>,
    ) -> Result<Self, OtlpError> {
        let resource = resource::build(settings.node_name.as_deref());
        let mut tasks = Vec::new();
        if let Some(endpoint) = &settings.metrics {
            let transport = MetricsTransport::new(endpoint, &settings.headers, settings.timeout)?;
            info!(endpoint = %endpoint.url, protocol = ?endpoint.protocol, interval = ?settings.metrics_interval, "exporting metrics over OTLP");
            tasks.push(tokio::spawn(export_metrics(
                transport,
                MetricsJob {
                    aggregator,
                    control,
                    health: health.clone(),
                    resource: resource::to_proto(&resource),
                    histograms: settings.histograms,
                    interval: settings.metrics_interval,
                },
                health.clone(),
                stop.clone(),
            )));
        }
        if let (Some(endpoint), Some(rx)) = (&settings.traces, spans) {
            let exporter =
                traces::exporter(endpoint, &settings.headers, settings.timeout, &resource)?;
            info!(endpoint = %endpoint.url, protocol = ?endpoint.protocol, ratio = settings.sample_ratio, slow = ?settings.slow_threshold, "exporting connection spans over OTLP");
            tasks.push(tokio::spawn(traces::run(
                exporter,
                endpoint.url.clone(),
                rx,
                health,
                stop,
            )));
        }
        Ok(Self { tasks })
    }

    /// Waits for the exporters' last exports, at most [`FINISH_DEADLINE`]
    /// in all; an exporter still busy then is stopped and what it held lost.
    pub async fn finish(self) {
        let deadline = tokio::time::Instant::now() + FINISH_DEADLINE;
        for mut task in self.tasks {
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "an OTLP exporter task failed"),
                Err(_) => {
                    task.abort();
                    warn!(
                        "an OTLP exporter did not finish within {FINISH_DEADLINE:?} of the stop; what it still held was not sent"
                    );
                }
            }
        }
    }
}

/// The last export at shutdown may take this long.
const LAST_EXPORT_DEADLINE: Duration = Duration::from_secs(3);
/// All exporters together may take this long to finish at shutdown.
const FINISH_DEADLINE: Duration = Duration::from_secs(5);

struct MetricsJob {
    aggregator: SharedAggregator,
    control: ControlStats,
    health: Arc<ExportHealth>,
    resource: Vec<KeyValue>,
    histograms: HistogramAggregation,
    interval: Duration,
}

impl MetricsJob {
    /// Copies the figures under the lock, then builds the requests without it.
    fn requests(&self) -> Vec<ExportMetricsServiceRequest> {
        let exponential = self.histograms == HistogramAggregation::Exponential;
        let view = self.aggregator.lock().view(exponential);
        let agent = AgentFigures::new(&view, *self.control.lock(), self.health.snapshot());
        metrics::requests(
            &view,
            &agent,
            &self.resource,
            self.histograms,
            SystemTime::now(),
        )
    }
}

/// Sends every request of one export; each is counted. Returns the first
/// failure.
async fn send_all(
    transport: &mut MetricsTransport,
    job: &MetricsJob,
    health: &ExportHealth,
) -> Result<(), transport::ExportError> {
    let mut first_error = None;
    for request in job.requests() {
        match transport.send(request).await {
            Ok(()) => add(&health.metrics_exports_ok, 1),
            Err(e) => {
                add(&health.metrics_exports_failed, 1);
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Every `interval` (sooner after a failure, backing off) sends the current
/// cumulative figures. A failed export is not queued: the next one carries
/// everything, so a dead collector costs no memory. A stop cuts short the
/// wait or the export under way, for one last bounded export.
async fn export_metrics(
    mut transport: MetricsTransport,
    job: MetricsJob,
    health: Arc<ExportHealth>,
    mut stop: watch::Receiver<bool>,
) {
    let mut retry = ExportRetry::new(job.interval);
    let mut wait = job.interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let result = tokio::select! {
            r = send_all(&mut transport, &job, &health) => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        wait = match result {
            Ok(()) => {
                retry.succeeded("metrics", transport.endpoint());
                job.interval
            }
            Err(e) => retry.failed("metrics", &e),
        };
    }
    // The last figures, so a clean stop loses nothing since the last period.
    let last = send_all(&mut transport, &job, &health);
    match tokio::time::timeout(LAST_EXPORT_DEADLINE, last).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!("last metrics export: {e}"),
        Err(_) => warn!(
            endpoint = transport.endpoint(),
            "last metrics export timed out"
        ),
    }
}
