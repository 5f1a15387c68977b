use std::{
    io::{IsTerminal, Write},
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

mod check;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use kmesh_agent::{
    aggregator::SeriesLimits,
    dataplane::{self, OnExit},
    export::{
        MetricNames,
        otlp::settings::{OtlpArgs, parse_duration},
    },
    run::{self, MeshSource},
    xds::ads::settings::XdsArgs,
};
use tracing_subscriber::EnvFilter;

/// kmesh-rs node agent: routes service connections in the kernel and
/// measures every connection it routes.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the eBPF programs, apply the mesh config and serve metrics until SIGINT/SIGTERM.
    Run(Box<RunArgs>),
    /// Validate a mesh config as `run` reads it, without running.
    ///
    /// Reads the file or directory (compact format or Envoy resources) and
    /// prints a one-line summary first (services, routed backends, findings
    /// by severity, refused resources), then the services it defines (name,
    /// vip, policy, backends and weights), a note for each service that will
    /// not be routed (no backends, or all drained), then what could not be
    /// honoured: refused resources, unrouted routes and findings. Exits 0
    /// whenever `run` would take the config, refused resources and findings
    /// included; exits 1 only when it cannot be used at all, with the
    /// reason (file, line, field) on stderr.
    Check {
        /// Mesh config to validate: a file or a directory of files, as
        /// `run --config` takes it.
        #[arg(long, env = "KMESH_CONFIG")]
        config: PathBuf,
    },
    /// Print the mesh a running agent routes by, as JSON: services,
    /// backends, weights, the source and version of each, refused resources
    /// and findings (the admin API's /v1/model).
    Model {
        /// Unix socket of the agent's admin API.
        #[arg(long, env = "KMESH_ADMIN_SOCKET", default_value = kmesh_api::v1::DEFAULT_SOCKET)]
        admin_socket: PathBuf,
    },
    /// Remove what agents run with `--on-exit keep-routing` leave in bpffs:
    /// the pinned routing links (their programs stop routing at once) and
    /// the pinned maps. For uninstalling; stop the agent first.
    Cleanup {
        /// The agents' bpffs directory.
        #[arg(long, env = "KMESH_BPFFS_DIR", default_value = DEFAULT_BPFFS_DIR)]
        bpffs_dir: PathBuf,
    },
}

const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/kmesh-rs";

#[derive(Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["config", "xds_address"]))]
struct RunArgs {
    /// Mesh config: a file or a directory of files, in the compact format
    /// or as Envoy v3 resources (YAML or JSON, config dumps too); reloaded
    /// when it changes or on SIGHUP. Either this or --xds-address.
    #[arg(long, env = "KMESH_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    xds: XdsArgs,
    /// cgroup v2 directory to attach to; default: the cgroup2 mount (every process on the node).
    #[arg(long, env = "KMESH_CGROUP")]
    cgroup: Option<PathBuf>,
    /// bpffs directory for the maps the programs share.
    #[arg(long, env = "KMESH_BPFFS_DIR", default_value = DEFAULT_BPFFS_DIR)]
    bpffs_dir: PathBuf,
    /// What becomes of routing when the agent ends: `detach` leaves
    /// nothing behind; `keep-routing` leaves the routing programs attached
    /// and the maps pinned (even after a crash or SIGKILL) until the next
    /// agent takes over, as a DaemonSet's rolling update wants.
    #[arg(long, env = "KMESH_ON_EXIT", value_enum, default_value_t = OnExit::Detach)]
    on_exit: OnExit,
    /// IP address and port of the HTTP endpoint: /metrics (Prometheus),
    /// /healthz and /readyz. The admin API (snapshots, the connection feed,
    /// the model; what kmesh-top reads) is on --admin-socket.
    #[arg(long, env = "KMESH_METRICS_ADDR", default_value = "127.0.0.1:9464", value_parser = parse_metrics_addr)]
    metrics_addr: SocketAddr,
    /// Unix socket of the admin API (kmesh-top); owner-only.
    #[arg(long, env = "KMESH_ADMIN_SOCKET", default_value = kmesh_api::v1::DEFAULT_SOCKET)]
    admin_socket: PathBuf,
    /// Ring-buffer size in bytes (a power of two, at least one page).
    #[arg(long, env = "KMESH_RINGBUF_BYTES", default_value_t = 256 * 1024, value_parser = parse_ringbuf_bytes)]
    ringbuf_bytes: u32,
    /// Route only: attach the routing programs but not the probe, so
    /// connections are not observed (no connection metrics, spans or
    /// connection feed). For nodes that want the least per-connection cost.
    #[arg(long, env = "KMESH_ROUTING_ONLY")]
    routing_only: bool,
    /// Most label sets (service, backend, direction) kept per metric;
    /// connections beyond are counted in an `overflow` series.
    #[arg(long, env = "KMESH_MAX_SERIES", default_value_t = SeriesLimits::default().max_series)]
    max_series: usize,
    /// How long the series of a removed service or backend stays after
    /// its last connection closed (e.g. `5m`).
    #[arg(long, env = "KMESH_SERIES_EXPIRY", default_value = "5m", value_parser = parse_duration)]
    series_expiry: Duration,
    /// `istio` also publishes the TCP connection and byte counters under
    /// Istio's names (`istio_tcp_sent_bytes_total`, ...), so Kiali and
    /// Istio's dashboards read them unchanged; histograms keep their
    /// `kmesh_` names.
    #[arg(long, env = "KMESH_METRIC_NAMES", value_enum, default_value_t = MetricNames::Kmesh)]
    metric_names: MetricNames,
    #[command(flatten)]
    otlp: OtlpArgs,
}

impl RunArgs {
    fn run(self) -> anyhow::Result<()> {
        let otlp = self.otlp.resolve()?;
        let source = match (self.config, self.xds.resolve()?) {
            (Some(path), None) => MeshSource::File(path),
            (None, Some(settings)) => MeshSource::Xds(settings),
            _ => anyhow::bail!("give the mesh source once: --config or --xds-address"),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kmesh-control")
            .enable_all()
            .build()?;
        runtime.block_on(run::run(run::RunOptions {
            source,
            cgroup: self.cgroup,
            bpffs_dir: self.bpffs_dir,
            metrics_addr: self.metrics_addr,
            admin_socket: self.admin_socket,
            ringbuf_bytes: self.ringbuf_bytes,
            observe: !self.routing_only,
            on_exit: self.on_exit,
            series_limits: SeriesLimits {
                max_series: self.max_series,
                expiry: self.series_expiry,
            },
            metric_names: self.metric_names,
            otlp,
        }))
    }
}

fn parse_ringbuf_bytes(s: &str) -> Result<u32, String> {
    let v: u32 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if v < 4096 || !v.is_power_of_two() {
        return Err(format!("{v} is not a power of two of at least 4096"));
    }
    Ok(v)
}

fn parse_metrics_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        format!(
            "{s:?} is not an IP address and port; write one like 127.0.0.1:9464 or [::1]:9464 (host names are not resolved)"
        )
    })
}

/// OpenTelemetry's rule for its variables, applied to all of the agent's:
/// an empty variable is unset. A ConfigMap key left empty (say
/// `OTEL_EXPORTER_OTLP_ENDPOINT: ""`) then turns its setting off instead of
/// failing as an empty address.
fn forget_empty_settings() {
    let empty: Vec<std::ffi::OsString> = std::env::vars_os()
        .filter(|(k, v)| {
            let k = k.to_string_lossy();
            v.is_empty() && (k.starts_with("KMESH_") || k.starts_with("OTEL_"))
        })
        .map(|(k, _)| k)
        .collect();
    for k in empty {
        // SAFETY: called first thing in main, before any thread exists.
        unsafe { std::env::remove_var(k) };
    }
}

fn main() -> ExitCode {
    forget_empty_settings();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal: container runtimes
        // and log collectors store them as text.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    // `run` is a daemon and reports through its log; the other commands are
    // a person's, who wants the reason alone.
    let logs_errors = matches!(cli.command, Command::Run(_));
    let result = match cli.command {
        Command::Run(args) => args.run(),
        Command::Check { config } => check::check(&config, &mut std::io::stdout().lock()),
        Command::Model { admin_socket } => model(admin_socket),
        Command::Cleanup { bpffs_dir } => cleanup(&bpffs_dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if logs_errors {
                tracing::error!("{e:#}");
            } else {
                eprintln!("kmesh-agent: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn cleanup(dir: &std::path::Path) -> anyhow::Result<()> {
    let removed = dataplane::remove_left_state(dir)
        .with_context(|| format!("cleaning up {}", dir.display()))?;
    let mut out = std::io::stdout().lock();
    if removed.detached_programs.is_empty() && removed.maps.is_empty() {
        writeln!(out, "{}: nothing left by an agent", dir.display())?;
        return Ok(());
    }
    for id in &removed.detached_programs {
        writeln!(out, "detached program {id} (its link pin removed)")?;
    }
    for map in &removed.maps {
        writeln!(out, "removed pinned map {}", map.display())?;
    }
    Ok(())
}

fn model(socket: PathBuf) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = kmesh_api::client::AdminClient::new(socket);
    let model = runtime
        .block_on(client.model())
        .context("asking the agent for its model")?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &model)?;
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn flag(command: &str, flag: &str) -> clap::Arg {
        Cli::command()
            .find_subcommand(command)
            .expect("the subcommand")
            .get_arguments()
            .find(|a| a.get_long() == Some(flag))
            .expect("the flag")
            .clone()
    }

    /// The help `kmesh-agent <command> --help` prints for one flag.
    fn flag_help(command: &str, name: &str) -> String {
        let arg = flag(command, name);
        arg.get_long_help()
            .or(arg.get_help())
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    #[test]
    fn check_reads_the_config_as_run_does_and_says_what_it_does() {
        for command in ["run", "check"] {
            let env = flag(command, "config").get_env().map(|e| e.to_owned());
            assert_eq!(env.as_deref(), Some("KMESH_CONFIG".as_ref()), "{command}");
        }
        let help = flag_help("check", "config");
        assert!(help.contains("directory"), "--config: {help:?}");
        let mut cli = Cli::command();
        let help = cli
            .find_subcommand_mut("check")
            .expect("check")
            .render_long_help()
            .to_string();
        for what in ["services", "backends", "findings", "exit", "KMESH_CONFIG"] {
            assert!(
                help.contains(what),
                "check --help does not say {what:?}:\n{help}"
            );
        }
    }

    #[test]
    fn metrics_addr_help_names_what_it_serves() {
        let help = flag_help("run", "metrics-addr");
        assert!(!help.contains("/v1/"), "the admin API is not there: {help}");
        for path in ["/metrics", "/healthz", "/readyz", "--admin-socket"] {
            assert!(help.contains(path), "{path} missing: {help}");
        }
    }

    fn run_error(flags: &[&str]) -> String {
        let args = ["kmesh-agent", "run", "--config", "mesh.yaml"];
        match Cli::try_parse_from(args.iter().chain(flags)) {
            Ok(_) => panic!("{flags:?} accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_flag_values_say_what_form_is_expected() {
        let e = run_error(&["--series-expiry", "forever"]);
        assert!(e.contains("5m") && e.contains("1h30m"), "{e}");
        let e = run_error(&["--metrics-addr", "localhost:19501"]);
        assert!(
            e.contains("IP address and port")
                && e.contains("127.0.0.1:9464")
                && e.contains("[::1]:9464")
                && e.contains("host names are not resolved"),
            "{e}"
        );
    }
}
