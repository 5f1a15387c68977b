//! A real Prometheus server for the end-to-end tests: it scrapes one agent
//! every second from the root network namespace, keeps its data in a
//! directory of the test's own, and is killed and its data removed when
//! dropped. Queries go through its HTTP API like Grafana's do.
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

/// A running Prometheus; killed and its data directory removed on drop.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts `bin` on 127.0.0.1:<a free port> with its config and TSDB in
    /// `parent/prometheus`, scraping `target` (`/metrics`) every second as
    /// job [`JOB`], and waits until it is ready.
    pub fn start(bin: &Path, parent: &Path, target: SocketAddr) -> anyhow::Result<Self> {
        let dir = parent.join("prometheus");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: {JOB}\n    metrics_path: /metrics\n    \
                 static_configs:\n      - targets: ['{target}']\n"
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
        let mut prom = Self { child, addr, dir };
        prom.wait_ready()?;
        Ok(prom)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("prometheus exited ({status}):\n{}", self.log());
            }
            if http_get(self.addr, "/-/ready").is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        anyhow::bail!("prometheus not ready after 30 s:\n{}", self.log())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query at `time` (seconds since the epoch; now if `None`),
    /// as Grafana's instant queries do. A query Prometheus rejects is an
    /// error carrying its explanation.
    pub fn query(&self, expr: &str, time: Option<f64>) -> anyhow::Result<Vec<Sample>> {
        let time = time.map(|t| format!("{t:.3}"));
        let mut form = vec![("query", expr)];
        if let Some(t) = &time {
            form.push(("time", t));
        }
        let (status, body) = http_request(
            self.addr,
            "POST",
            "/api/v1/query",
            Some(&form_encode(&form)),
        )?;
        let response: Response = serde_json::from_str(&body)
            .with_context(|| format!("HTTP {status}, not a Prometheus API answer: {body}"))?;
        if response.status != "success" {
            anyhow::bail!(
                "{}: {}",
                response.error_type.unwrap_or_default(),
                response.error.unwrap_or(body)
            );
        }
        let data = response.data.context("a successful answer without data")?;
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

    /// Successful scrapes of the agent so far.
    pub fn scrapes(&self) -> anyhow::Result<u64> {
        let samples = self.query(&format!("sum_over_time(up{{job=\"{JOB}\"}}[1h])"), None)?;
        Ok(samples.first().map_or(0, |s| s.value as u64))
    }

    /// Waits until Prometheus has scraped the agent successfully at least
    /// `n` times (at most `timeout`); returns the count.
    pub fn wait_for_scrapes(&self, n: u64, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.scrapes()?;
            if got >= n {
                return Ok(got);
            }
            if Instant::now() > deadline {
                let up = self.query(&format!("up{{job=\"{JOB}\"}}"), None);
                anyhow::bail!(
                    "prometheus scraped the agent {got} times, not {n}, in {timeout:?} (up: {up:?}):\n{}",
                    self.log()
                );
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
