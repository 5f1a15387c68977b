//! A real OpenTelemetry collector for the tests: rotel (from PyPI, installed
//! by scripts/setup.sh), run with its blackhole exporter and debug logging,
//! so every span and data point it receives is printed to its output.
use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::harness::{Proc, free_port};

/// Where pip put the collector binary.
fn rotel_binary() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
        ])
        .output()
        .expect("running python3 to find rotel");
    assert!(
        out.status.success(),
        "rotel is not installed (scripts/setup.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

pub struct Rotel {
    proc: Option<Proc>,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    output: PathBuf,
    /// Output of earlier runs (before a restart).
    earlier: String,
}

impl Rotel {
    /// Starts rotel on free loopback ports (it panics on port 0).
    pub fn start(workdir: &Path) -> Self {
        let mut rotel = Self {
            proc: None,
            grpc: SocketAddr::from(([127, 0, 0, 1], free_port())),
            http: SocketAddr::from(([127, 0, 0, 1], free_port())),
            output: workdir.join("rotel.out"),
            earlier: String::new(),
        };
        rotel.spawn();
        rotel
    }

    fn spawn(&mut self) {
        let out = std::fs::File::create(&self.output).expect("rotel output file");
        let child = Command::new(rotel_binary())
            .args(["start", "--exporter", "blackhole"])
            .args(["--debug-log", "traces", "--debug-log", "metrics"])
            .args(["--debug-log-verbosity", "detailed"])
            .arg("--otlp-grpc-endpoint")
            .arg(self.grpc.to_string())
            .arg("--otlp-http-endpoint")
            .arg(self.http.to_string())
            .arg("--pid-file")
            .arg(self.output.with_extension("pid"))
            .arg("--log-file")
            .arg(self.output.with_extension("log"))
            .env("NO_COLOR", "1")
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawning rotel");
        self.proc = Some(Proc(child));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&self.grpc, Duration::from_millis(100)).is_err() {
            assert!(
                Instant::now() < deadline,
                "rotel did not listen on {} within 10 s:\n{}",
                self.grpc,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything rotel printed, across restarts.
    pub fn output(&self) -> String {
        let now = std::fs::read_to_string(&self.output).unwrap_or_default();
        format!("{}{now}", self.earlier)
    }

    /// What rotel printed since it was last (re)started.
    pub fn output_since_start(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Kills the collector: exports to it fail until [`Rotel::restart`].
    pub fn stop(&mut self) {
        self.earlier = self.output();
        self.proc = None;
    }

    /// Starts it again on the same ports.
    pub fn restart(&mut self) {
        self.spawn();
    }
}

/// One data point as rotel printed it.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub metric: String,
    /// `Sum`, `Gauge`, `Histogram`, `ExponentialHistogram`.
    pub data_type: String,
    pub monotonic: bool,
    pub cumulative: bool,
    pub unit: String,
    pub attributes: BTreeMap<String, String>,
    /// `Value` of a number point, `Count` of a histogram point.
    pub value: f64,
}

/// One span as rotel printed it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Span {
    pub trace_id: String,
    /// Empty for a root span.
    pub parent_id: String,
    pub id: String,
    pub name: String,
    pub kind: String,
    pub status: String,
    pub attributes: BTreeMap<String, String>,
    /// The attributes of the resource (the agent) that sent it.
    pub resource: BTreeMap<String, String>,
}

impl Point {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

impl Span {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// `-> key: Str(value)` / `Int(5)` / `Bool(true)` -> (key, value).
fn attribute(line: &str) -> Option<(String, String)> {
    let (key, value) = line.trim().strip_prefix("-> ")?.split_once(": ")?;
    let open = value.find('(')?;
    let inner = value[open + 1..].strip_suffix(')')?;
    Some((key.to_string(), inner.to_string()))
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.trim()
        .strip_prefix(name)
        .map(|rest| rest.trim_start_matches([' ', ':']).trim())
}

/// Every data point in rotel's detailed metrics log, in the order received.
pub fn parse_points(output: &str) -> Vec<Point> {
    let mut points = Vec::new();
    let mut descriptor = Point {
        metric: String::new(),
        data_type: String::new(),
        monotonic: false,
        cumulative: false,
        unit: String::new(),
        attributes: BTreeMap::new(),
        value: f64::NAN,
    };
    let mut current: Option<Point> = None;
    let mut in_point_attrs = false;
    for line in output.lines() {
        let t = line.trim();
        if t.starts_with("Metric #") || t.starts_with("ResourceSpans #") {
            points.extend(current.take());
            in_point_attrs = false;
            descriptor.metric.clear();
        } else if let Some(v) = field(t, "-> Name") {
            descriptor.metric = v.to_string();
        } else if let Some(v) = field(t, "-> DataType") {
            descriptor.data_type = v.to_string();
            descriptor.monotonic = false;
            descriptor.cumulative = false;
        } else if let Some(v) = field(t, "-> Unit") {
            descriptor.unit = v.to_string();
        } else if let Some(v) = field(t, "-> IsMonotonic") {
            descriptor.monotonic = v == "true";
        } else if let Some(v) = field(t, "-> AggregationTemporality") {
            descriptor.cumulative = v.ends_with("CUMULATIVE");
        } else if t.contains("DataPoints #") && !descriptor.metric.is_empty() {
            points.extend(current.take());
            current = Some(descriptor.clone());
            in_point_attrs = false;
        } else if t == "Data point attributes:" {
            in_point_attrs = true;
        } else if let Some(p) = current.as_mut() {
            if in_point_attrs && let Some((k, v)) = attribute(t) {
                p.attributes.insert(k, v);
                continue;
            }
            in_point_attrs = false;
            if let Some(v) = field(t, "Value").or_else(|| field(t, "Count"))
                && p.value.is_nan()
            {
                p.value = v.parse().unwrap_or(f64::NAN);
            }
        }
    }
    points.extend(current);
    points
}

/// Every span in rotel's detailed traces log.
pub fn parse_spans(output: &str) -> Vec<Span> {
    let mut spans = Vec::new();
    let mut current: Option<Span> = None;
    let mut in_attrs = false;
    let mut resource = BTreeMap::new();
    let mut in_resource = false;
    for line in output.lines() {
        let t = line.trim();
        if t.starts_with("Span #") {
            spans.extend(current.replace(Span {
                resource: resource.clone(),
                ..Span::default()
            }));
            in_attrs = false;
            continue;
        }
        if t.starts_with("ResourceSpans #") || t.starts_with("ResourceMetrics #") {
            spans.extend(current.take());
            resource.clear();
            continue;
        }
        if t == "Resource attributes:" {
            in_resource = true;
            continue;
        }
        if in_resource {
            match attribute(t) {
                Some((k, v)) => {
                    resource.insert(k, v);
                    continue;
                }
                None => in_resource = false,
            }
        }
        let Some(span) = current.as_mut() else {
            continue;
        };
        if t == "Attributes:" {
            in_attrs = true;
        } else if in_attrs && let Some((k, v)) = attribute(t) {
            span.attributes.insert(k, v);
        } else if let Some(v) = field(t, "Trace ID") {
            span.trace_id = v.to_string();
        } else if let Some(v) = field(t, "Parent ID") {
            span.parent_id = v.to_string();
        } else if let Some(v) = field(t, "ID") {
            span.id = v.to_string();
        } else if let Some(v) = field(t, "Name") {
            span.name = v.to_string();
        } else if let Some(v) = field(t, "Kind") {
            span.kind = v.to_string();
        } else if let Some(v) = field(t, "Status code") {
            span.status = v.to_string();
        } else if !t.starts_with("->") {
            in_attrs = false;
        }
    }
    spans.extend(current);
    spans
}

/// The latest value of `metric` among points whose attributes include `attrs`
/// (cumulative points: the latest is the total).
pub fn latest(points: &[Point], metric: &str, attrs: &[(&str, &str)]) -> Option<f64> {
    points
        .iter()
        .rev()
        .find(|p| p.metric == metric && attrs.iter().all(|(k, v)| p.attr(k) == Some(v)))
        .map(|p| p.value)
}
