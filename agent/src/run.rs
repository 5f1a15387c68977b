//! `kmesh-agent run`: wires the source, data plane, control loop, probe
//! reader, aggregator and servers together, and takes them down in order.
use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context;
use aya::maps::Array;
use kmesh_common::map_names;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::{
    admin::{
        self,
        model::{ModelState, SharedModel, SourceKind},
    },
    agent_stats::{ControlStats, ExportHealth},
    aggregator::{Aggregator, SeriesLimits, SharedAggregator},
    config,
    control::{Control, Signals},
    dataplane::{DataPlane, DataPlaneOptions, OnExit},
    export::{
        self, MetricNames,
        otlp::{Otlp, settings::OtlpSettings},
    },
    http,
    maps::MapWriter,
    probe,
    readiness::Readiness,
    reload,
    spans::{self, SamplingSettings},
    sysfs,
    xds::{
        self,
        ads::{SharedStatus, settings::XdsMode},
    },
};

pub use crate::control::MeshSource;

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
    pub metric_names: MetricNames,
    /// `None`: no OTLP export.
    pub otlp: Option<OtlpSettings>,
}

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
    let readiness = Readiness::default();
    let attached = readiness.block("programs attached");
    let source_live = readiness.block(match &opts.source {
        MeshSource::File(_) => "mesh file watched",
        MeshSource::Xds(_) => "first xDS sync applied",
    });
    let mut control = Control {
        writer: MapWriter::new(
            dataplane.take_orchestration_map(map_names::SERVICES)?,
            dataplane.take_orchestration_map(map_names::BACKENDS)?,
        )?,
        probe_config: Array::try_from(dataplane.take_probe_map(map_names::PROBE_CONFIG)?)
            .context("opening the probe config map")?,
        aggregator: SharedAggregator::new(Aggregator::new(opts.series_limits)),
        stats: ControlStats::default(),
        model: SharedModel::new(ModelState::new(source)),
        first_sync: None,
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
    // Spans are assembled, on the probe reader's thread, only when exported.
    let (span_sink, span_receiver) = match opts.otlp.as_ref().filter(|o| o.traces.is_some()) {
        Some(o) => {
            let sampling = SamplingSettings {
                ratio: o.sample_ratio,
                slow_threshold: o.slow_threshold,
            };
            let (sink, receiver) = spans::pipeline(sampling, o.span_queue, export_health.clone());
            (Some(sink), Some(receiver))
        }
        None => (None, None),
    };
    *exporters = match &opts.otlp {
        Some(settings) => Some(Otlp::start(
            settings,
            control.aggregator.clone(),
            control.stats.clone(),
            span_receiver,
            export_health.clone(),
            export_stop_rx,
        )?),
        None => None,
    };
    let reader = probe::spawn(
        probe::ProbeMaps {
            events: dataplane.take_probe_map(map_names::EVENTS)?,
            drops: dataplane.take_probe_map(map_names::DROPS)?,
            refused: dataplane.take_orchestration_map(map_names::REFUSED_CONNECTS)?,
            conns: dataplane.take_probe_map(map_names::CONNS)?,
        },
        control.aggregator.clone(),
        span_sink,
        stop_rx.clone(),
    )?;
    let server = tokio::spawn(http::serve(
        listener,
        export::prometheus::registry(
            control.aggregator.clone(),
            control.stats.clone(),
            export_health.clone(),
            opts.metric_names,
        ),
        readiness.clone(),
        stop_rx.clone(),
    ));
    let admin_server = tokio::spawn(admin::serve(
        admin_socket,
        control.aggregator.clone(),
        control.stats.clone(),
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
            attached.done();
            let started = match &opts.source {
                MeshSource::File(path) => reload::watch(path, changed_tx).map(|w| {
                    source_live.done();
                    info!(metrics = %opts.metrics_addr, config = %path.display(), "kmesh-agent ready");
                    Some(w)
                }),
                MeshSource::Xds(settings) => {
                    info!(server = %settings.url, node = %settings.node.id, "waiting for the first xDS sync before reporting ready");
                    control.first_sync = Some(source_live);
                    let args = (settings.clone(), updates_tx, xds_status, stop_rx);
                    xds_client = Some(match settings.mode {
                        XdsMode::Sidecar => {
                            tokio::spawn(xds::ads::run(args.0, args.1, args.2, args.3))
                        }
                        XdsMode::Ambient => {
                            tokio::spawn(xds::ambient::client::run(args.0, args.1, args.2, args.3))
                        }
                    });
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

    let _stopping = readiness.block("shutting down");
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
