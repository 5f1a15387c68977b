//! The bounded queue between the probe reader, which makes spans, and the
//! OTLP traces exporter, which sends them. The reader never waits on it: a
//! full queue (a slow or dead collector) drops the span and counts it.
use std::sync::Arc;

use opentelemetry_sdk::trace::SpanData;
use tokio::sync::mpsc;

use super::SpanOutcome;
use crate::agent_stats::{ExportHealth, add};

/// The exporter's end of the queue.
pub type SpanReceiver = mpsc::Receiver<SpanData>;

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

/// A queue of at most `capacity` spans; what does not fit is dropped and
/// counted in `health`.
pub fn queue(capacity: usize, health: Arc<ExportHealth>) -> (SpanQueue, SpanReceiver) {
    let (tx, rx) = mpsc::channel(capacity);
    (SpanQueue { tx, health }, rx)
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
