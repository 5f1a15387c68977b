//! The control loop: applies each mesh the source produces (the file on a
//! change or SIGHUP, or an xDS update) to the maps, the probe's settings and
//! the aggregator's labels, and records the outcome, until SIGTERM or SIGINT.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use aya::maps::{Array, MapData};
use kmesh_common::ProbeConfig;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracing::{error, info, warn};

use crate::{
    admin::model::SharedModel,
    agent_stats::ControlStats,
    aggregator::SharedAggregator,
    config,
    maps::MapWriter,
    model::Mesh,
    readiness::Blocker,
    xds::{
        Report,
        ads::{Update, settings::AdsSettings},
        translate::Severity,
    },
};

/// Where the mesh comes from.
pub enum MeshSource {
    /// A file or directory, reloaded when it changes or on SIGHUP.
    File(PathBuf),
    /// An xDS control plane over ADS.
    Xds(AdsSettings),
}

/// Bursts of file events (write, rename, chmod) settle before a reload.
const RELOAD_SETTLE: Duration = Duration::from_millis(150);

/// The control loop's state: what it writes to (the maps, the probe's
/// settings) and what it tells (the aggregator's labels, the counters, the
/// applied model).
pub struct Control {
    pub writer: MapWriter,
    pub probe_config: Array<MapData, ProbeConfig>,
    pub aggregator: SharedAggregator,
    pub stats: ControlStats,
    pub model: SharedModel,
    /// Held until the first xDS sync is applied.
    pub first_sync: Option<Blocker>,
    pub wakeup_bytes: u32,
}

pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

impl Control {
    fn apply(&mut self, mesh: &Mesh) -> anyhow::Result<()> {
        let report = self.writer.apply(mesh)?;
        let interval = mesh
            .probe
            .report_interval
            .as_nanos()
            .min(u128::from(u64::MAX)) as u64;
        self.probe_config
            .set(
                0,
                ProbeConfig {
                    report_interval_ns: interval,
                    wakeup_bytes: self.wakeup_bytes,
                    ..ProbeConfig::default()
                },
                0,
            )
            .context("writing the probe config map")?;
        self.aggregator
            .lock()
            .update_labels(mesh, self.writer.service_ids());
        let entries = self.writer.entries();
        let mut stats = self.stats.lock();
        stats.services = mesh.services.len() as u64;
        stats.map_services = entries.services;
        stats.map_backends = entries.backends;
        drop(stats);
        info!(
            services = mesh.services.len(),
            added = report.added,
            updated = report.updated,
            removed = report.removed,
            unchanged = report.unchanged,
            "mesh config applied"
        );
        Ok(())
    }

    /// Applies a mesh and records it for introspection.
    pub fn install(&mut self, mesh: &Mesh, report: &Report) -> anyhow::Result<()> {
        let result = self.apply(mesh);
        let mut model = self.model.lock();
        match &result {
            Ok(()) => {
                log_report(&model.report, report);
                model.applied(mesh, report);
            }
            Err(e) => model.refused(format!("{e:#}")),
        }
        result
    }

    /// Applies a mesh read from a file, then warns of the services it
    /// leaves unrouted.
    pub fn install_file(&mut self, loaded: &config::Loaded) -> anyhow::Result<()> {
        self.install(&loaded.mesh, &loaded.report)?;
        for note in &loaded.notes {
            warn!("{note}");
        }
        Ok(())
    }

    /// Re-reads the file; on any error the previous config stays in force.
    fn reload(&mut self, path: &Path) {
        let result = match config::load(path) {
            Ok(loaded) => self.install_file(&loaded),
            Err(e) => {
                let e = anyhow::Error::from(e);
                self.model.lock().refused(format!("{e:#}"));
                Err(e)
            }
        };
        // Logged before counted: whoever sees the count sees the reason.
        if let Err(e) = &result {
            error!("config reload rejected, the previous config stays in force: {e:#}");
        }
        let mut stats = self.stats.lock();
        match result {
            Ok(()) => stats.config_reloads_ok += 1,
            Err(_) => stats.config_reloads_failed += 1,
        }
    }

    /// An update from the xDS client; the outcome decides its ACK or NACK.
    fn apply_update(&mut self, update: Update) {
        let result = self.install(&update.mesh, &update.report);
        if result.is_ok()
            && let Some(first_sync) = self.first_sync.take()
        {
            // The file source is ready once its watcher runs; this one once
            // its first sync is in the kernel.
            first_sync.done();
            info!("first xDS sync applied");
        }
        let _ = update.applied.send(result.map_err(|e| format!("{e:#}")));
    }

    /// Applies what the source sends until SIGTERM or SIGINT.
    pub async fn until_signalled(
        &mut self,
        source: &MeshSource,
        mut signals: Signals,
        mut changed: mpsc::Receiver<()>,
        mut updates: mpsc::Receiver<Update>,
    ) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                _ = signals.term.recv() => { info!("SIGTERM: shutting down"); return Ok(()); }
                _ = signals.int.recv() => { info!("SIGINT: shutting down"); return Ok(()); }
                _ = signals.hup.recv() => match source {
                    MeshSource::File(path) => self.reload(path),
                    MeshSource::Xds(_) => info!("SIGHUP: the mesh comes from xDS, nothing to reload"),
                },
                Some(update) = updates.recv() => self.apply_update(update),
                Some(()) = changed.recv() => {
                    let MeshSource::File(path) = source else { continue };
                    tokio::time::sleep(RELOAD_SETTLE).await;
                    while changed.try_recv().is_ok() {}
                    if path.exists() {
                        self.reload(path);
                    } else {
                        warn!(config = %path.display(), "mesh config file removed; the current config stays in force until it returns");
                    }
                }
            }
        }
    }
}

/// Logs what the translation newly reports, so a log shows what changed;
/// the whole report is in the admin API's model.
fn log_report(previous: &Report, report: &Report) {
    const MAX_LINES: usize = 50;
    let mut lines = 0;
    let new_findings = report
        .findings
        .iter()
        .filter(|f| !previous.findings.contains(f));
    for f in new_findings {
        if f.severity == Severity::Ignored {
            tracing::debug!(resource = %format!("{} {}", f.kind, f.name), "{}", f.message);
            continue;
        }
        lines += 1;
        if lines > MAX_LINES {
            continue;
        }
        let resource = format!("{} {}", f.kind, f.name);
        match f.severity {
            Severity::Adjusted => info!(%resource, "{}", f.message),
            _ => warn!(%resource, severity = ?f.severity, "{}", f.message),
        }
    }
    for r in report
        .rejected
        .iter()
        .filter(|r| !previous.rejected.contains(r))
    {
        warn!(resource = %format!("{} {}", r.kind, r.name), version = %r.version, "refused: {}", r.reason);
    }
    if lines > MAX_LINES {
        warn!(
            "{} more findings; `kmesh-agent model` shows them all",
            lines - MAX_LINES
        );
    }
}
