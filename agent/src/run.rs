//! `kmesh-agent run`: wires config, data plane, probe reader, aggregator and
//! the HTTP endpoint together, and takes them down in order.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use aya::maps::{Array, MapData};
use kmesh_common::{ProbeConfig, map_names};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, watch},
};
use tracing::{error, info, warn};

use crate::{
    admin, config,
    dataplane::{DataPlane, DataPlaneOptions, OnExit},
    export::{
        self,
        health::ExportHealth,
        otlp::{Otlp, settings::OtlpSettings},
    },
    http,
    introspect::{ModelState, SharedModel, SourceKind},
    maps::MapWriter,
    metrics::{Aggregator, SeriesLimits},
    model::Mesh,
    probe, reload, sysfs,
    xds::{
        self, Report,
        ads::{SharedStatus, Update, settings::AdsSettings},
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

pub struct RunOptions {
    pub source: MeshSource,
    pub cgroup: Option<PathBuf>,
    pub bpffs_dir: PathBuf,
    pub metrics_addr: SocketAddr,
    /// Unix socket of the admin API (kmesh-top).
    pub admin_socket: PathBuf,
    pub ringbuf_bytes: u32,
    /// Attach the probe (per-connection telemetry) as well as routing.
    pub observe: bool,
    pub on_exit: OnExit,
    pub series_limits: SeriesLimits,
    /// `None`: no OTLP export.
    pub otlp: Option<OtlpSettings>,
}

/// Bursts of file events (write, rename, chmod) settle before a reload.
const RELOAD_SETTLE: Duration = Duration::from_millis(150);

pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    crate::capabilities::check()?;
    let initial = match &opts.source {
        MeshSource::File(path) => {
            Some(config::load(path).context("the agent needs a valid mesh config to start")?)
        }
        MeshSource::Xds(_) => None,
    };
    let cgroup = match &opts.cgroup {
        Some(p) => p.clone(),
        None => sysfs::detect_cgroup2_mount()?,
    };
    let listener = tokio::net::TcpListener::bind(opts.metrics_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for /metrics; pick another --metrics-addr",
                opts.metrics_addr
            )
        })?;
    let admin_socket = admin::bind(&opts.admin_socket)?;
    let mut dataplane = DataPlane::load(&DataPlaneOptions {
        cgroup,
        bpffs_dir: opts.bpffs_dir.clone(),
        ringbuf_bytes: opts.ringbuf_bytes,
        observe: opts.observe,
        on_exit: opts.on_exit,
    })?;
    let mut exporters = None;
    let result = serve(
        &opts,
        initial,
        &mut dataplane,
        (listener, admin_socket),
        &mut exporters,
    )
    .await;
    // Detach first: the OTLP exporters' last exports do not need the kernel,
    // and a slow collector must not keep the programs attached.
    dataplane.shut_down();
    if let Some(otlp) = exporters {
        otlp.finish().await;
    }
    result
}

/// Everything between loading and unloading the programs; any error here
/// still lets [`run`] detach them and remove the pins.
async fn serve(
    opts: &RunOptions,
    initial: Option<config::Loaded>,
    dataplane: &mut DataPlane,
    (listener, admin_socket): (tokio::net::TcpListener, admin::AdminSocket),
    exporters: &mut Option<Otlp>,
) -> anyhow::Result<()> {
    let xds_status = SharedStatus::default();
    let source = match &opts.source {
        MeshSource::File(path) => SourceKind::File(path.clone()),
        MeshSource::Xds(settings) => SourceKind::Xds {
            url: settings.url.clone(),
            status: xds_status.clone(),
        },
    };
    let ready = Arc::new(AtomicBool::new(false));
    let mut control = Control {
        writer: MapWriter::new(
            dataplane.take_orchestration_map(map_names::SERVICES)?,
            dataplane.take_orchestration_map(map_names::BACKENDS)?,
        )?,
        probe_config: Array::try_from(dataplane.take_probe_map(map_names::PROBE_CONFIG)?)
            .context("opening the probe config map")?,
        aggregator: Arc::new(Mutex::new(Aggregator::new(opts.series_limits))),
        model: Arc::new(Mutex::new(ModelState::new(source))),
        ready: ready.clone(),
        wakeup_bytes: probe::wakeup_bytes(opts.ringbuf_bytes),
    };
    // An xDS agent keeps what an earlier agent left in the maps routing
    // until its first sync.
    if let Some(loaded) = &initial {
        control.install_file(loaded)?;
    }

    // The reader stops first and drains the ring; only then do the OTLP
    // exporters make their last export, so it carries everything.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (export_stop_tx, export_stop_rx) = watch::channel(false);
    let export_health = Arc::new(ExportHealth::default());
    *exporters = match &opts.otlp {
        Some(settings) => Some(Otlp::start(
            settings,
            control.aggregator.clone(),
            export_health.clone(),
            export_stop_rx,
        )?),
        None => None,
    };
    let reader = probe::spawn(
        probe::ProbeMaps {
            events: dataplane.take_probe_map(map_names::EVENTS)?,
            drops: dataplane.take_probe_map(map_names::DROPS)?,
            conns: dataplane.take_probe_map(map_names::CONNS)?,
        },
        control.aggregator.clone(),
        exporters.as_mut().and_then(|o| o.spans.take()),
        stop_rx.clone(),
    )?;
    let server = tokio::spawn(http::serve(
        listener,
        export::prometheus::registry(control.aggregator.clone(), export_health.clone()),
        ready.clone(),
        stop_rx.clone(),
    ));
    let admin_server = tokio::spawn(admin::serve(
        admin_socket,
        control.aggregator.clone(),
        control.model.clone(),
        stop_rx.clone(),
    ));

    // Signals and the source are in place before the agent says it is
    // ready: a SIGTERM or a config change right after /readyz is not lost.
    let (changed_tx, changed) = mpsc::channel(1);
    let (updates_tx, updates) = mpsc::channel(1);
    let mut xds_client = None;
    let outcome = match (Signals::install(), dataplane.attach()) {
        (Ok(signals), Ok(())) => {
            let started = match &opts.source {
                MeshSource::File(path) => reload::watch(path, changed_tx).map(|w| {
                    ready.store(true, Ordering::Release);
                    info!(metrics = %opts.metrics_addr, config = %path.display(), "kmesh-agent ready");
                    Some(w)
                }),
                MeshSource::Xds(settings) => {
                    info!(server = %settings.url, node = %settings.node.id, "waiting for the first xDS sync before reporting ready");
                    xds_client = Some(tokio::spawn(xds::ads::run(
                        settings.clone(),
                        updates_tx,
                        xds_status,
                        stop_rx,
                    )));
                    Ok(None)
                }
            };
            match started {
                Ok(_watcher) => {
                    control
                        .until_signalled(&opts.source, signals, changed, updates)
                        .await
                }
                Err(e) => Err(e.into()),
            }
        }
        (Err(e), _) => Err(e.into()),
        (_, Err(e)) => Err(e.into()),
    };

    ready.store(false, Ordering::Release);
    let _ = stop_tx.send(true);
    if let Some(client) = xds_client
        && client.await.is_err()
    {
        warn!("xDS client task failed");
    }
    for (what, task) in [("metrics", server), ("admin API", admin_server)] {
        match task.await {
            Ok(Err(e)) => warn!(error = %e, "{what} server ended with an error"),
            Err(e) => warn!(error = %e, "{what} server task failed"),
            Ok(Ok(())) => {}
        }
    }
    if reader.join().is_err() {
        warn!("probe reader thread panicked");
    }
    let _ = export_stop_tx.send(true);
    outcome
}

struct Control {
    writer: MapWriter,
    probe_config: Array<MapData, ProbeConfig>,
    aggregator: Arc<Mutex<Aggregator>>,
    model: SharedModel,
    /// Set once the source is live: the file watched, or the first xDS
    /// sync applied.
    ready: Arc<AtomicBool>,
    wakeup_bytes: u32,
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
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
        let mut agg = self.aggregator.lock().unwrap_or_else(|p| p.into_inner());
        agg.update_labels(mesh, self.writer.service_ids());
        agg.agent.map_entries = self.writer.entries();
        drop(agg);
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
    fn install(&mut self, mesh: &Mesh, report: &Report) -> anyhow::Result<()> {
        let result = self.apply(mesh);
        let mut model = self.model.lock().unwrap_or_else(|p| p.into_inner());
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
    fn install_file(&mut self, loaded: &config::Loaded) -> anyhow::Result<()> {
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
                self.model
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .refused(format!("{e:#}"));
                Err(e)
            }
        };
        // Logged before counted: whoever sees the count sees the reason.
        if let Err(e) = &result {
            error!("config reload rejected, the previous config stays in force: {e:#}");
        }
        let mut agg = self.aggregator.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) => agg.agent.config_reloads_ok += 1,
            Err(_) => agg.agent.config_reloads_failed += 1,
        }
    }

    /// An update from the xDS client; the outcome decides its ACK or NACK.
    fn apply_update(&mut self, update: Update) {
        let first = !self.ready.load(Ordering::Acquire);
        let result = self.install(&update.mesh, &update.report);
        if result.is_ok() && first {
            // The file source is ready once its watcher runs; this one once
            // its first sync is in the kernel.
            self.ready.store(true, Ordering::Release);
            info!("first xDS sync applied; kmesh-agent ready");
        }
        let _ = update.applied.send(result.map_err(|e| format!("{e:#}")));
    }

    async fn until_signalled(
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
