//! Where and how OTLP goes: command-line flags, each with the standard
//! `OTEL_*` environment variable as its fallback, resolved once into
//! [`OtlpSettings`] with errors that name the flag or variable to fix.
use std::time::Duration;

use clap::{Args, ValueEnum};
use percent_encoding::percent_decode_str;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    #[value(name = "grpc")]
    Grpc,
    #[value(name = "http/protobuf")]
    HttpProtobuf,
    /// Accepted so the error can say what to use instead.
    #[value(name = "http/json")]
    HttpJson,
}

/// Whether a signal goes out over OTLP, read from a list as
/// OTEL_METRICS_EXPORTER / OTEL_TRACES_EXPORTER hold it (`otlp,prometheus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExporterChoice {
    Otlp,
    None,
}

/// Exporter names the OpenTelemetry spec defines; all but `otlp` mean "not
/// over OTLP" here (`/metrics` is always served).
const KNOWN_EXPORTERS: [&str; 6] = ["otlp", "none", "prometheus", "console", "logging", "zipkin"];

fn parse_exporters(s: &str) -> Result<ExporterChoice, String> {
    let names: Vec<String> = s
        .split(',')
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    if let Some(unknown) = names
        .iter()
        .find(|n| !KNOWN_EXPORTERS.contains(&n.as_str()))
    {
        return Err(format!(
            "{unknown:?} is not an exporter (also read from OTEL_METRICS_EXPORTER / OTEL_TRACES_EXPORTER); use otlp or none"
        ));
    }
    Ok(if names.iter().any(|n| n == "otlp") {
        ExporterChoice::Otlp
    } else {
        ExporterChoice::None
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HistogramAggregation {
    /// Fixed bucket bounds per quantity, the same as `/metrics`.
    #[value(name = "explicit_bucket_histogram")]
    Explicit,
    /// Base-2 exponential buckets (at most 160), read out of the 2% sketches.
    #[value(name = "base2_exponential_bucket_histogram")]
    Exponential,
}

/// OTLP export flags of `kmesh-agent run`.
#[derive(Args, Clone, Debug)]
pub struct OtlpArgs {
    /// OTLP collector endpoint, e.g. http://otel-collector:4317 (gRPC) or
    /// http://otel-collector:4318 (HTTP; /v1/metrics and /v1/traces are
    /// appended). Unset: no OTLP export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Endpoint for metrics only, used as given.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")]
    pub otlp_metrics_endpoint: Option<String>,
    /// Endpoint for traces only, used as given.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")]
    pub otlp_traces_endpoint: Option<String>,
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        value_enum,
        default_value = "grpc"
    )]
    pub otlp_protocol: Protocol,
    /// Headers sent with every export, `key=value,key2=value2`
    /// (values percent-decoded), e.g. an authorization token.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_HEADERS")]
    pub otlp_headers: Option<String>,
    /// Time one export may take: milliseconds as in OTEL_EXPORTER_OTLP_TIMEOUT, or a duration like `10s`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TIMEOUT", default_value = "10s", value_parser = parse_millis_or_duration)]
    pub otlp_timeout: Duration,
    /// Metric export period: milliseconds as in OTEL_METRIC_EXPORT_INTERVAL, or a duration like `15s`.
    #[arg(long, env = "OTEL_METRIC_EXPORT_INTERVAL", default_value = "15s", value_parser = parse_millis_or_duration)]
    pub otlp_metrics_interval: Duration,
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
        value_enum,
        default_value = "explicit_bucket_histogram"
    )]
    pub otlp_histograms: HistogramAggregation,
    /// Export metrics over OTLP: a list as in OTEL_METRICS_EXPORTER; without
    /// `otlp` (e.g. `none`, `prometheus`) metrics stay on /metrics only.
    #[arg(long, env = "OTEL_METRICS_EXPORTER", default_value = "otlp", value_parser = parse_exporters)]
    pub metrics_exporter: ExporterChoice,
    /// Export a span per connection over OTLP: a list as in OTEL_TRACES_EXPORTER.
    #[arg(long, env = "OTEL_TRACES_EXPORTER", default_value = "otlp", value_parser = parse_exporters)]
    pub traces_exporter: ExporterChoice,
    /// Share of normal connections traced (0 to 1). Failed and reset
    /// connections are always traced, slow ones when both ends are on this
    /// node.
    #[arg(long, env = "KMESH_TRACE_SAMPLE_RATIO", default_value_t = 0.01, value_parser = parse_ratio)]
    pub trace_sample_ratio: f64,
    /// A connection whose connect latency or smoothed RTT reaches this is
    /// slow, and always traced when both its ends are on this node (the
    /// agent on another node could not know, and would drop its half).
    #[arg(long, env = "KMESH_TRACE_SLOW_THRESHOLD", default_value = "200ms", value_parser = parse_duration)]
    pub trace_slow_threshold: Duration,
    /// Spans waiting for export at most; beyond, new spans are dropped and counted.
    #[arg(long, env = "KMESH_OTLP_SPAN_QUEUE", default_value_t = 8192)]
    pub otlp_span_queue: usize,
    /// Kubernetes node name for the `k8s.node.name` resource attribute
    /// (set NODE_NAME from the downward API in a DaemonSet).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub url: String,
    pub protocol: Protocol,
}

#[derive(Clone, Debug)]
pub struct OtlpSettings {
    pub metrics: Option<Endpoint>,
    pub traces: Option<Endpoint>,
    pub headers: Vec<Header>,
    pub timeout: Duration,
    pub metrics_interval: Duration,
    pub histograms: HistogramAggregation,
    pub sample_ratio: f64,
    pub slow_threshold: Duration,
    pub span_queue: usize,
    pub node_name: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SettingsError {
    #[error(
        "--otlp-protocol / OTEL_EXPORTER_OTLP_PROTOCOL: http/json is not supported; use grpc or http/protobuf"
    )]
    JsonProtocol,
    #[error(
        "{what}: {url:?} is not an http:// URL (kmesh-agent sends OTLP in plain text; terminate TLS at a collector on the node)"
    )]
    Endpoint { what: &'static str, url: String },
    /// `header` is the header's name, or the whole entry when it has none;
    /// values are never shown, as they are often tokens.
    #[error(
        "--otlp-headers / OTEL_EXPORTER_OTLP_HEADERS: header {header:?}: {reason} (headers are key=value, separated by commas, values percent-encoded)"
    )]
    Header { header: String, reason: String },
    #[error("--otlp-span-queue / KMESH_OTLP_SPAN_QUEUE must be at least 1")]
    SpanQueue,
    #[error("--otlp-metrics-interval / OTEL_METRIC_EXPORT_INTERVAL must be more than 0")]
    Interval,
}

/// The duration flags of `kmesh-agent run`, in humantime's units.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|_| format!("{s:?} is not a duration; write one like 500ms, 5m or 1h30m"))
}

fn parse_millis_or_duration(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<u64>() {
        Ok(ms) => Ok(Duration::from_millis(ms)),
        Err(_) => parse_duration(s).map_err(|e| format!("{e}, or milliseconds (10000)")),
    }
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        Ok(r) => Err(format!("{r} is outside 0..=1")),
        Err(e) => Err(format!("{s:?}: {e}")),
    }
}

/// One export header, checked to be valid for HTTP and gRPC alike.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Lowercase, as gRPC metadata requires.
    pub name: String,
    /// Percent-decoded.
    pub value: String,
    /// As given, for the trace exporter library, which decodes it itself.
    pub raw_value: String,
}

/// `key=value,key2=value2`, values percent-decoded (W3C baggage style, as
/// the OTLP exporter spec asks).
pub fn parse_headers(s: &str) -> Result<Vec<Header>, SettingsError> {
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let bad = |header: &str, reason: String| SettingsError::Header {
                header: header.to_string(),
                reason,
            };
            let (k, v) = entry
                .split_once('=')
                .ok_or_else(|| bad(entry, "not key=value".into()))?;
            let name = k.trim().to_ascii_lowercase();
            let bad_value = |reason: String| bad(&name, reason);
            let raw_value = v.trim().to_string();
            check_percent_escapes(&raw_value).map_err(bad_value)?;
            let value = percent_decode_str(&raw_value)
                .decode_utf8()
                .map_err(|_| bad_value("the decoded value is not UTF-8".into()))?
                .into_owned();
            http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad_value("not a valid header name".into()))?;
            // gRPC metadata is stricter than HTTP: visible ASCII only.
            if value.is_empty() || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                return Err(bad_value(
                    "the value must be printable ASCII (percent-encode anything else)".into(),
                ));
            }
            Ok(Header {
                name,
                value,
                raw_value,
            })
        })
        .collect()
}

/// Every `%` must start an escape of two hex digits: decoding passes a bad
/// one through as text, which would send a value nobody wrote.
fn check_percent_escapes(value: &str) -> Result<(), String> {
    for (i, _) in value.match_indices('%') {
        let escape = value.as_bytes().get(i + 1..i + 3);
        if !escape.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
            let shown: String = value[i..].chars().take(3).collect();
            return Err(format!(
                "invalid percent-encoding {shown:?}: % must be followed by two hex digits (a literal % is %25)"
            ));
        }
    }
    Ok(())
}

/// The URL one signal goes to: the signal's own endpoint as given, or the
/// general one (with `/v1/<signal>` appended for HTTP, per the OTLP spec).
fn signal_endpoint(
    general: Option<&str>,
    specific: Option<&str>,
    protocol: Protocol,
    signal: &str,
    what: &'static str,
) -> Result<Option<Endpoint>, SettingsError> {
    let url = match (specific, general) {
        (Some(url), _) => url.to_string(),
        (None, Some(base)) if protocol == Protocol::HttpProtobuf => {
            format!("{}/v1/{signal}", base.trim_end_matches('/'))
        }
        (None, Some(base)) => base.to_string(),
        (None, None) => return Ok(None),
    };
    if !url.starts_with("http://") {
        return Err(SettingsError::Endpoint { what, url });
    }
    Ok(Some(Endpoint { url, protocol }))
}

impl OtlpArgs {
    /// `None` when no endpoint is set or both signals are turned off.
    pub fn resolve(&self) -> Result<Option<OtlpSettings>, SettingsError> {
        if self.otlp_protocol == Protocol::HttpJson {
            return Err(SettingsError::JsonProtocol);
        }
        let general = self.otlp_endpoint.as_deref();
        let metrics = match self.metrics_exporter {
            ExporterChoice::None => None,
            ExporterChoice::Otlp => signal_endpoint(
                general,
                self.otlp_metrics_endpoint.as_deref(),
                self.otlp_protocol,
                "metrics",
                "--otlp-metrics-endpoint / OTEL_EXPORTER_OTLP_METRICS_ENDPOINT (or --otlp-endpoint)",
            )?,
        };
        let traces = match self.traces_exporter {
            ExporterChoice::None => None,
            ExporterChoice::Otlp => signal_endpoint(
                general,
                self.otlp_traces_endpoint.as_deref(),
                self.otlp_protocol,
                "traces",
                "--otlp-traces-endpoint / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (or --otlp-endpoint)",
            )?,
        };
        if metrics.is_none() && traces.is_none() {
            return Ok(None);
        }
        if self.otlp_span_queue == 0 {
            return Err(SettingsError::SpanQueue);
        }
        if self.otlp_metrics_interval.is_zero() {
            return Err(SettingsError::Interval);
        }
        Ok(Some(OtlpSettings {
            metrics,
            traces,
            headers: match &self.otlp_headers {
                Some(h) => parse_headers(h)?,
                None => Vec::new(),
            },
            timeout: self.otlp_timeout,
            metrics_interval: self.otlp_metrics_interval,
            histograms: self.otlp_histograms,
            sample_ratio: self.trace_sample_ratio,
            slow_threshold: self.trace_slow_threshold,
            span_queue: self.otlp_span_queue,
            node_name: self.node_name.clone().filter(|n| !n.is_empty()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        otlp: OtlpArgs,
    }

    fn resolve(args: &[&str]) -> Result<Option<OtlpSettings>, SettingsError> {
        Cli::try_parse_from(std::iter::once("kmesh-agent").chain(args.iter().copied()))
            .expect("flags parse")
            .otlp
            .resolve()
    }

    #[test]
    fn http_appends_the_signal_path_and_grpc_does_not() {
        let s = resolve(&[
            "--otlp-endpoint",
            "http://collector:4318/",
            "--otlp-protocol",
            "http/protobuf",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.metrics.unwrap().url, "http://collector:4318/v1/metrics");
        assert_eq!(s.traces.unwrap().url, "http://collector:4318/v1/traces");
        let s = resolve(&["--otlp-endpoint", "http://collector:4317"])
            .unwrap()
            .unwrap();
        assert_eq!(s.metrics.unwrap().url, "http://collector:4317");
    }

    #[test]
    fn a_signal_endpoint_is_used_as_given_and_none_turns_a_signal_off() {
        let s = resolve(&[
            "--otlp-traces-endpoint",
            "http://tempo:4318/custom",
            "--otlp-protocol",
            "http/protobuf",
            "--metrics-exporter",
            "none",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.metrics, None);
        assert_eq!(s.traces.unwrap().url, "http://tempo:4318/custom");
        assert!(resolve(&[]).unwrap().is_none(), "no endpoint: no OTLP");
    }

    #[test]
    fn bad_settings_name_what_to_fix() {
        let e = resolve(&["--otlp-endpoint", "https://c:4317"]).unwrap_err();
        assert!(e.to_string().contains("--otlp-endpoint"), "{e}");
        let e = resolve(&[
            "--otlp-endpoint",
            "http://c:4317",
            "--otlp-protocol",
            "http/json",
        ])
        .unwrap_err();
        assert_eq!(e, SettingsError::JsonProtocol);
        let e = resolve(&[
            "--otlp-endpoint",
            "http://c:4317",
            "--otlp-headers",
            "novalue",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("\"novalue\""), "{e}");
    }

    #[test]
    fn exporter_lists_follow_the_spec() {
        assert_eq!(parse_exporters("otlp,prometheus"), Ok(ExporterChoice::Otlp));
        assert_eq!(parse_exporters("prometheus"), Ok(ExporterChoice::None));
        assert_eq!(parse_exporters(" None "), Ok(ExporterChoice::None));
        let e = parse_exporters("jaegr").unwrap_err();
        assert!(e.contains("OTEL_METRICS_EXPORTER"), "{e}");
    }

    #[test]
    fn headers_are_percent_decoded_and_timeouts_take_millis() {
        let h = parse_headers("Authorization=Bearer%20abc, x-tenant = a%3Db").unwrap();
        let got: Vec<_> = h
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str()))
            .collect();
        assert_eq!(got, [("authorization", "Bearer abc"), ("x-tenant", "a=b")]);
        assert_eq!(h[0].raw_value, "Bearer%20abc");
        for bad in [
            "bad name=v",
            "k=%FF",
            "k=caf%C3%A9",
            "k=",
            "k=%zz",
            "k=50%",
            "k=%4",
        ] {
            let e = parse_headers(bad).unwrap_err().to_string();
            assert!(e.contains("OTEL_EXPORTER_OTLP_HEADERS"), "{bad}: {e}");
        }
        for bad in ["token=%zz", "token=abc%4", "token=100%"] {
            let e = parse_headers(bad).unwrap_err().to_string();
            assert!(
                e.contains("\"token\"") && e.contains("invalid percent-encoding"),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            parse_millis_or_duration("2500"),
            Ok(Duration::from_millis(2500))
        );
        assert_eq!(parse_millis_or_duration("3s"), Ok(Duration::from_secs(3)));
    }

    #[test]
    fn a_bad_duration_says_what_form_is_expected() {
        for flag in ["--otlp-timeout", "--trace-slow-threshold"] {
            let Err(e) = Cli::try_parse_from(["kmesh-agent", flag, "forever"]) else {
                panic!("{flag} forever accepted");
            };
            let e = e.to_string();
            assert!(
                e.contains("\"forever\"") && e.contains("1h30m"),
                "{flag}: {e}"
            );
        }
    }
}
