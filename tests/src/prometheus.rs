//! A real Prometheus server for the end-to-end tests: it scrapes the
//! agents it is given every second from the root network namespace, keeps
//! its data in a directory of the test's own, and is killed and its data
//! removed when dropped. Queries go through its HTTP API like Grafana's and
//! Kiali's do: instant queries, and range queries as graph panels draw.
use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use serde::Deserialize;

use crate::{form_encode, http_get, http_request};

/// The scrape job the agent is scraped under (the `job` label).
pub const JOB: &str = "kmesh-agent";

/// Where Prometheus is looked for: `$KMESH_PROMETHEUS`, then Debian's
/// `/usr/bin/prometheus` (package `prometheus`), then `PATH`.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KMESH_PROMETHEUS") {
        return Some(PathBuf::from(p));
    }
    let debian = PathBuf::from("/usr/bin/prometheus");
    if debian.exists() {
        return Some(debian);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("prometheus"))
            .find(|p| p.is_file())
    })
}

/// The Prometheus binary, when there is one. Outside CI a test without it
/// says why and is skipped (`None`); under `CI=true` it fails.
pub fn available(test: &str) -> Option<PathBuf> {
    match binary() {
        Some(bin) => Some(bin),
        None if crate::in_ci() => {
            panic!("{test}: cannot run under CI: prometheus is not installed; run scripts/setup.sh")
        }
        None => {
            eprintln!(
                "skipping {test}: prometheus is not installed (apt-get install prometheus, \
                 or set KMESH_PROMETHEUS to its path)"
            );
            None
        }
    }
}

/// One element of a query result: its labels and value (`NaN` and `±Inf`
/// included). A scalar result is one sample without labels.
#[derive(Clone, Debug)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// What `/api/v1/query` answers, success or not.
#[derive(Deserialize)]
struct Response {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct VectorElement {
    metric: BTreeMap<String, String>,
    #[serde(default)]
    value: Option<(f64, String)>,
    #[serde(default)]
    values: Option<Vec<(f64, String)>>,
}

fn parse_value(v: &str) -> f64 {
    v.parse().unwrap_or(f64::NAN)
}

/// Seconds since the epoch, the unit of the API's `time` parameter.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// What Kiali groups its TCP graph by; it skips a series lacking any of
/// these labels.
pub const KIALI_GROUP: &str = "source_workload_namespace,source_workload,source_canonical_service,source_canonical_revision,destination_service_namespace,destination_service,destination_service_name,destination_workload_namespace,destination_workload,destination_canonical_service,destination_canonical_revision,response_flags";

/// Kiali's TCP graph of `namespace` over `range_secs`: its three queries,
/// unknown sources, traffic from other namespaces and traffic from inside,
/// as kiali/kiali graph/telemetry/istio/istio.go (buildNamespaceTrafficMap,
/// commit 00d47bbb) sends them.
pub fn kiali_tcp_graph(namespace: &str, range_secs: u64) -> [String; 3] {
    let (ns, r, group) = (namespace, range_secs, KIALI_GROUP);
    [
        format!(
            "sum(rate(istio_tcp_sent_bytes_total{{reporter=\"destination\",source_workload=\"unknown\",destination_workload_namespace=\"{ns}\"}} [{r}s])) by ({group})"
        ),
        format!(
            "sum(rate(istio_tcp_sent_bytes_total{{reporter=\"source\",source_workload_namespace!=\"{ns}\",source_workload!=\"unknown\",destination_service_namespace=\"{ns}\"}} [{r}s])) by ({group})"
        ),
        format!(
            "sum(rate(istio_tcp_sent_bytes_total{{reporter=\"source\",source_workload_namespace=\"{ns}\"}} [{r}s])) by ({group})"
        ),
    ]
}

/// Samples summed by (source_workload, destination_workload); a missing
/// label reads as empty.
pub fn by_workload_pair(samples: &[Sample]) -> BTreeMap<(String, String), f64> {
    let mut pairs = BTreeMap::new();
    for s in samples {
        let label = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
        *pairs
            .entry((label("source_workload"), label("destination_workload")))
            .or_default() += s.value;
    }
    pairs
}

/// How long a wait for scrapes or a series may take before it fails: a
/// hang guard only; at a 1 s scrape interval a wait takes a few seconds.
const WAIT: Duration = Duration::from_secs(30);

/// One series of a range query: its labels and its (time, value) points.
#[derive(Clone, Debug)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(f64, f64)>,
}

/// A running Prometheus; killed and its data directory removed on drop.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
    targets: usize,
    started: Instant,
}

impl Prometheus {
    /// Starts `bin` on 127.0.0.1:<a free port> with its config and TSDB in
    /// `parent/prometheus`, scraping each of `targets` (`/metrics`) every
    /// second as job [`JOB`] (each its own `instance`, its address), and
    /// waits until it is ready.
    pub fn start(bin: &Path, parent: &Path, targets: &[SocketAddr]) -> anyhow::Result<Self> {
        anyhow::ensure!(!targets.is_empty(), "prometheus needs a target to scrape");
        let dir = parent.join("prometheus");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let config = dir.join("prometheus.yml");
        let listed: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: {JOB}\n    metrics_path: /metrics\n    \
                 static_configs:\n      - targets: [{}]\n",
                listed.join(", ")
            ),
        )
        .with_context(|| format!("writing {}", config.display()))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port")?
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--storage.tsdb.retention.time=1h")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        // From here on, Drop kills it and removes `dir`.
        let mut prom = Self {
            child,
            addr,
            dir,
            targets: targets.len(),
            started: Instant::now(),
        };
        prom.wait_ready()?;
        Ok(prom)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("prometheus exited ({status}):\n{}", self.log());
            }
            if http_get(self.addr, "/-/ready").is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        anyhow::bail!("prometheus not ready after {WAIT:?}:\n{}", self.log())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// A range in whole seconds that spans everything this Prometheus has
    /// scraped, and at least 30 s (Grafana's `$__rate_interval` is at least
    /// four scrape intervals): a rate or increase over it holds every sample.
    pub fn whole_range(&self) -> u64 {
        (self.started.elapsed().as_secs() + 5).max(30)
    }

    /// Posts `form` to the query API `path` and returns the answer's data.
    /// A query Prometheus rejects is an error carrying its explanation.
    fn api(&self, path: &str, form: &[(&str, &str)]) -> anyhow::Result<Data> {
        let (status, body) = http_request(self.addr, "POST", path, Some(&form_encode(form)))?;
        let response: Response = serde_json::from_str(&body)
            .with_context(|| format!("HTTP {status}, not a Prometheus API answer: {body}"))?;
        if response.status != "success" {
            anyhow::bail!(
                "{}: {}",
                response.error_type.unwrap_or_default(),
                response.error.unwrap_or(body)
            );
        }
        response.data.context("a successful answer without data")
    }

    /// An instant query at `time` (seconds since the epoch; now if `None`),
    /// as Grafana's instant queries do. A range vector's element reads as
    /// its last value.
    pub fn query(&self, expr: &str, time: Option<f64>) -> anyhow::Result<Vec<Sample>> {
        let time = time.map(|t| format!("{t:.3}"));
        let mut form = vec![("query", expr)];
        if let Some(t) = &time {
            form.push(("time", t));
        }
        let data = self.api("/api/v1/query", &form)?;
        match data.result_type.as_str() {
            "vector" | "matrix" => {
                let elements: Vec<VectorElement> = serde_json::from_value(data.result)?;
                Ok(elements
                    .into_iter()
                    .map(|e| {
                        let value = e
                            .value
                            .or_else(|| e.values.and_then(|v| v.last().cloned()))
                            .map(|(_, v)| parse_value(&v))
                            .unwrap_or(f64::NAN);
                        Sample {
                            labels: e.metric,
                            value,
                        }
                    })
                    .collect())
            }
            "scalar" | "string" => {
                let (_, v): (f64, String) = serde_json::from_value(data.result)?;
                Ok(vec![Sample {
                    labels: BTreeMap::new(),
                    value: parse_value(&v),
                }])
            }
            other => anyhow::bail!("unknown result type {other}"),
        }
    }

    /// A range query from `start` to `end` (seconds since the epoch) every
    /// `step` seconds, as a graph panel draws: each series with its points.
    pub fn query_range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: u64,
    ) -> anyhow::Result<Vec<Series>> {
        let (start, end, step) = (format!("{start:.3}"), format!("{end:.3}"), step.to_string());
        let form = [
            ("query", expr),
            ("start", &start),
            ("end", &end),
            ("step", &step),
        ];
        let data = self.api("/api/v1/query_range", &form)?;
        anyhow::ensure!(
            data.result_type == "matrix",
            "a range query answered with a {}",
            data.result_type
        );
        let elements: Vec<VectorElement> = serde_json::from_value(data.result)?;
        Ok(elements
            .into_iter()
            .map(|e| Series {
                labels: e.metric,
                points: e
                    .values
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(t, v)| (t, parse_value(&v)))
                    .collect(),
            })
            .collect())
    }

    /// Successful scrapes of the target scraped least so far (0 until every
    /// target has been scraped once).
    pub fn scrapes(&self) -> anyhow::Result<u64> {
        let samples = self.query(&format!("sum_over_time(up{{job=\"{JOB}\"}}[1h])"), None)?;
        if samples.len() < self.targets {
            return Ok(0);
        }
        Ok(samples.iter().map(|s| s.value as u64).min().unwrap_or(0))
    }

    /// Waits until Prometheus has scraped every target successfully at
    /// least `n` times; returns the least count.
    pub fn wait_for_scrapes(&self, n: u64) -> anyhow::Result<u64> {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.scrapes()?;
            if got >= n {
                return Ok(got);
            }
            if Instant::now() > deadline {
                let up = self.query(&format!("up{{job=\"{JOB}\"}}"), None);
                anyhow::bail!(
                    "prometheus scraped its targets {got} times, not {n}, in {WAIT:?} (up: {up:?}):\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for `more` successful scrapes of every target after this call:
    /// with `more` of 2, the last one began after whatever the test did
    /// before, so Prometheus holds the figures as they are now.
    pub fn wait_for_more_scrapes(&self, more: u64) -> anyhow::Result<u64> {
        let now = self.scrapes()?;
        self.wait_for_scrapes(now + more)
    }

    /// Waits until the instant query `expr` returns a series; returns them.
    pub fn wait_for_series(&self, expr: &str) -> anyhow::Result<Vec<Sample>> {
        let deadline = Instant::now() + WAIT;
        loop {
            let samples = self.query(expr, None)?;
            if !samples.is_empty() {
                return Ok(samples);
            }
            if Instant::now() > deadline {
                anyhow::bail!("no series for {expr} after {WAIT:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
