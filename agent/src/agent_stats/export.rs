//! Counters of the OTLP exporters, shared lock-free between the exporter
//! tasks, the probe reader (which queues spans) and `/metrics`.
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct ExportHealth {
    pub metrics_exports_ok: AtomicU64,
    pub metrics_exports_failed: AtomicU64,
    pub traces_exports_ok: AtomicU64,
    pub traces_exports_failed: AtomicU64,
    pub spans_exported: AtomicU64,
    /// Left out by the sampler: normal connections beyond the ratio.
    pub spans_sampled_out: AtomicU64,
    /// Dropped because the export queue was full (the collector is slow or down).
    pub spans_queue_full: AtomicU64,
    /// Dropped after their export failed every retry.
    pub spans_export_failed: AtomicU64,
    /// Not followed: the table of open connections was full.
    pub spans_untracked: AtomicU64,
}

/// One [`ExportHealth`] read at a point in time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportHealthSnapshot {
    pub metrics_exports_ok: u64,
    pub metrics_exports_failed: u64,
    pub traces_exports_ok: u64,
    pub traces_exports_failed: u64,
    pub spans_exported: u64,
    pub spans_sampled_out: u64,
    pub spans_queue_full: u64,
    pub spans_export_failed: u64,
    pub spans_untracked: u64,
}

pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl ExportHealth {
    pub fn snapshot(&self) -> ExportHealthSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ExportHealthSnapshot {
            metrics_exports_ok: get(&self.metrics_exports_ok),
            metrics_exports_failed: get(&self.metrics_exports_failed),
            traces_exports_ok: get(&self.traces_exports_ok),
            traces_exports_failed: get(&self.traces_exports_failed),
            spans_exported: get(&self.spans_exported),
            spans_sampled_out: get(&self.spans_sampled_out),
            spans_queue_full: get(&self.spans_queue_full),
            spans_export_failed: get(&self.spans_export_failed),
            spans_untracked: get(&self.spans_untracked),
        }
    }
}
