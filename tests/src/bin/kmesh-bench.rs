//! kmesh-bench: the data path with no mesh, with kmesh-rs and with a proxy
//! in each pod, side by side in one run; then the agent's own cost. Run as
//! root (network namespaces, cgroups, eBPF); `scripts/bench.sh` builds and
//! runs it. The `serve`, `load` and `hold` subcommands are the run's own
//! servers and clients, started in the namespaces it makes.
use std::{
    io::{Read, Write},
    net::SocketAddr,
    path::PathBuf,
    time::Duration,
};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use kmesh_tests::{
    Place,
    bench::{
        Bench, Settings, agent_cost, datapath,
        load::{self, Load},
        report::{Results, Scenario},
        series, xds_delta,
    },
};

#[derive(Parser)]
#[command(about = "Benchmarks: no mesh vs kmesh-rs vs sidecars, and the agent's own cost")]
struct Cli {
    #[command(flatten)]
    place: Place,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the topology, run every scenario and the agent-cost runs,
    /// print the table and write the JSON results.
    Run(RunArgs),
    /// What a series costs: agent memory at N series, and the scrape and
    /// OTLP export times, in this process through the agent's library
    /// (no root needed). Each count runs in a process of its own, so one's
    /// freed memory does not hide the next one's.
    Series(SeriesArgs),
    /// What one endpoint change costs at N services, state of the world
    /// against delta: the agent's CPU time per push and the time from the
    /// push to the kernel (the ACK). Needs root.
    XdsPush(XdsPushArgs),
    /// (internal) Serve echo and sink on the given addresses until killed.
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        echo: Vec<SocketAddr>,
        #[arg(long)]
        sink: Vec<SocketAddr>,
    },
    /// (internal) Run one load and print its JSON report.
    #[command(hide = true)]
    Load {
        #[arg(long)]
        target: SocketAddr,
        /// The load, as JSON.
        #[arg(long)]
        spec: String,
        #[arg(long)]
        warmup_ms: u64,
        #[arg(long)]
        duration_ms: u64,
    },
    /// (internal) Open connections, print a JSON report, hold them until
    /// stdin closes.
    #[command(hide = true)]
    Hold {
        #[arg(long = "target", required = true)]
        targets: Vec<SocketAddr>,
        #[arg(long)]
        count: usize,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Repetitions of every scenario; figures are medians over them.
    #[arg(long, default_value_t = 5)]
    repetitions: usize,
    /// Recorded time of each load.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unrecorded time before each load.
    #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Scenarios to run (default: all); comma-separated.
    #[arg(long, value_delimiter = ',', value_enum)]
    scenarios: Vec<ScenarioArg>,
    /// Threads opening connections in the connection-rate load.
    #[arg(long, default_value_t = 2)]
    connection_workers: usize,
    /// Sustained connection rate of the agent-cost run (per second).
    #[arg(long, default_value_t = 2000.0)]
    cost_rate: f64,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    cost_duration: Duration,
    /// Services of the memory run.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Open connections of the memory run.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Only the side-by-side data-path runs.
    #[arg(long)]
    datapath_only: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/kmesh-bench.json")]
    json: PathBuf,
}

#[derive(Args)]
struct SeriesArgs {
    /// Series counts to measure; comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    series: Vec<usize>,
    /// Close records per series.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// (internal) Measure the one count given, in this process, and print
    /// its JSON.
    #[arg(long, hide = true)]
    here: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/kmesh-bench-series.json")]
    json: PathBuf,
}

#[derive(Args)]
struct XdsPushArgs {
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Endpoint changes pushed per protocol.
    #[arg(long, default_value_t = 20)]
    pushes: usize,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/kmesh-bench-xds-push.json")]
    json: PathBuf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ScenarioArg {
    Direct,
    KmeshProbe,
    KmeshRoutingOnly,
    Sidecars,
}

impl From<ScenarioArg> for Scenario {
    fn from(s: ScenarioArg) -> Self {
        match s {
            ScenarioArg::Direct => Scenario::Direct,
            ScenarioArg::KmeshProbe => Scenario::KmeshProbe,
            ScenarioArg::KmeshRoutingOnly => Scenario::KmeshRoutingOnly,
            ScenarioArg::Sidecars => Scenario::Sidecars,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.place.enter()?;
    match cli.command {
        Command::Run(args) => run(args),
        Command::Series(args) => series(args),
        Command::XdsPush(args) => {
            let costs = ["sotw", "delta"]
                .into_iter()
                .map(|p| xds_delta::measure(p, args.services, args.pushes))
                .collect::<anyhow::Result<Vec<_>>>()?;
            print!("{}", xds_delta::table(&costs));
            std::fs::write(&args.json, serde_json::to_string_pretty(&costs)?)?;
            Ok(())
        }
        Command::Serve { echo, sink } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let tasks = load::serve(&echo, &sink).await?;
                println!("ready");
                std::io::stdout().flush()?;
                for t in tasks {
                    let _ = t.await;
                }
                Ok(())
            })
        }
        Command::Load {
            target,
            spec,
            warmup_ms,
            duration_ms,
        } => {
            let load: Load = serde_json::from_str(&spec).context("--spec")?;
            let report = load::run(
                target,
                load,
                Duration::from_millis(warmup_ms),
                Duration::from_millis(duration_ms),
            );
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Hold { targets, count } => {
            let (held, report) = load::open_many(&targets, count);
            println!("{}", serde_json::to_string(&report)?);
            std::io::stdout().flush()?;
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            drop(held);
            Ok(())
        }
    }
}

fn series(args: SeriesArgs) -> anyhow::Result<()> {
    if args.here {
        let [n] = args.series[..] else {
            anyhow::bail!("--here measures one series count");
        };
        let cost = series::measure(n, args.connections)?;
        println!("{}", serde_json::to_string(&cost)?);
        return Ok(());
    }
    let mut costs = Vec::new();
    for n in &args.series {
        let out = std::process::Command::new(std::env::current_exe()?)
            .args(["series", "--here", "--series", &n.to_string()])
            .args(["--connections", &args.connections.to_string()])
            .output()
            .context("running kmesh-bench series --here")?;
        anyhow::ensure!(
            out.status.success(),
            "kmesh-bench series --here --series {n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cost: series::SeriesCost = serde_json::from_slice(&out.stdout)?;
        costs.push(cost);
    }
    print!("{}", series::table(&costs));
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&costs)?)?;
    Ok(())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("kmesh-bench needs root (network namespaces, cgroups, eBPF)");
    }
    let settings = Settings {
        repetitions: args.repetitions.max(1),
        duration: args.duration,
        warmup: args.warmup,
        scenarios: if args.scenarios.is_empty() {
            Scenario::ALL.to_vec()
        } else {
            args.scenarios.iter().map(|&s| s.into()).collect()
        },
        connection_workers: args.connection_workers.max(1),
        cost_rate: args.cost_rate,
        cost_duration: args.cost_duration,
        services: args.services,
        connections: args.connections,
        agent_cost: !args.datapath_only,
        memory: !args.datapath_only,
        ring_buffer: !args.datapath_only,
    };
    let mut results = Results {
        date: now_rfc3339(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        ..Results::default()
    };
    let bench = Bench::new(settings);
    datapath::run(&bench, &mut results)?;
    if bench.settings.agent_cost {
        eprintln!(
            "agent cost at {:.0} connections/s",
            bench.settings.cost_rate
        );
        results.agent_cost = Some(agent_cost::agent_cost(&bench)?);
    }
    if bench.settings.ring_buffer {
        eprintln!("ring buffer");
        results.ring_buffer = Some(agent_cost::ring_buffer(&bench)?);
    }
    if bench.settings.memory {
        eprintln!(
            "memory: {} services, {} connections",
            bench.settings.services, bench.settings.connections
        );
        results.memory = Some(agent_cost::memory(&bench)?);
    }
    drop(bench);
    print!("{}", results.table());
    if let Some(dir) = args.json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("writing {}", args.json.display()))?;
    println!("results: {}", args.json.display());
    Ok(())
}

fn now_rfc3339() -> String {
    std::process::Command::new("date")
        .arg("--iso-8601=seconds")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
