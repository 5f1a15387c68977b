//! Istio's standard label set, the public contract of the connection
//! metrics: Kiali draws its graph from these labels and skips a series that
//! lacks one, and Istio's dashboards group by them. One function names a
//! series for both exporters and the spans.
use super::{CLOSE_REASONS, Direction, SeriesCounts, SeriesKey};
use kmesh_common::close_reason;

/// Traffic the kernel routes is TCP, seen below any application protocol.
pub const REQUEST_PROTOCOL: &str = "tcp";
/// Connections are not encrypted by kmesh-rs; claiming `mutual_tls` would
/// be a lie Kiali shows as a padlock.
pub const SECURITY_POLICY: &str = "none";
/// Envoy's "no flags".
pub const NO_FLAGS: &str = "-";

/// How many labels a series is written with.
pub const LABELS: usize = 21;

/// The labels of a series, `response_flags` `-`: what every figure but a
/// close counter is labelled with.
pub fn series_labels(key: &SeriesKey) -> [(&'static str, &str); LABELS] {
    series_labels_with_flags(key, NO_FLAGS)
}

/// The labels of a series with `response_flags` `flags` (see
/// [`response_flags`]), in the order they are written.
pub fn series_labels_with_flags<'k>(
    key: &'k SeriesKey,
    flags: &'static str,
) -> [(&'static str, &'k str); LABELS] {
    let (src, dst, svc) = (&key.source, &key.destination, &key.service_names);
    [
        ("reporter", key.direction.reporter()),
        ("source_workload", &src.workload),
        ("source_workload_namespace", &src.namespace),
        ("source_canonical_service", &src.canonical_service),
        ("source_canonical_revision", &src.canonical_revision),
        ("source_principal", &src.principal),
        ("source_cluster", &src.cluster),
        ("destination_workload", &dst.workload),
        ("destination_workload_namespace", &dst.namespace),
        ("destination_canonical_service", &dst.canonical_service),
        ("destination_canonical_revision", &dst.canonical_revision),
        ("destination_principal", &dst.principal),
        ("destination_cluster", &dst.cluster),
        ("destination_service", &key.service),
        ("destination_service_name", &svc.name),
        ("destination_service_namespace", &svc.namespace),
        ("destination_backend", &key.backend),
        ("direction", key.direction.as_str()),
        ("request_protocol", REQUEST_PROTOCOL),
        ("connection_security_policy", SECURITY_POLICY),
        ("response_flags", flags),
    ]
}

/// The labels of a close counter: the series' labels with the response
/// flags of `reason`.
pub fn close_labels(key: &SeriesKey, reason: u8) -> [(&'static str, &str); LABELS] {
    series_labels_with_flags(key, response_flags(reason, key.direction))
}

/// Envoy's response flags for how a connection ended, as the reporting side
/// saw it: `UF` a connect that failed, `UC`/`DC` the far end (upstream) or
/// the near end (downstream) reset it, `UT` the peer stopped answering.
/// For the server's side (`reporter=destination`) upstream is the server
/// itself and downstream the client.
pub fn response_flags(reason: u8, direction: Direction) -> &'static str {
    let source = direction == Direction::Outbound;
    match reason {
        close_reason::FIN => NO_FLAGS,
        close_reason::CONNECT_REFUSED | close_reason::CONNECT_FAILED => "UF",
        close_reason::RST_RECEIVED if source => "UC",
        close_reason::RST_RECEIVED => "DC",
        close_reason::RST_SENT if source => "DC",
        close_reason::RST_SENT => "UC",
        close_reason::TIMEOUT if source => "UT",
        close_reason::TIMEOUT => "DC",
        _ => NO_FLAGS,
    }
}

/// A counter published under Istio's name too (`--metric-names istio`), so
/// Kiali and Istio's dashboards read it unchanged.
pub struct IstioCounter {
    /// The Prometheus name, without `_total`.
    pub name: &'static str,
    pub help: &'static str,
    pub kind: IstioCount,
}

pub enum IstioCount {
    /// Istio's "sent" bytes are the response's, server to client, and its
    /// "received" the request's, whichever side reports: the client's
    /// received bytes, or the server's sent bytes.
    ResponseBytes,
    RequestBytes,
    /// Connections opened: Istio counts an attempt that failed too (it is
    /// closed with `UF`), so opened − closed is what is open.
    Opened,
    /// Connections closed, failed ones included; exported split by
    /// response flags ([`closed_by_flags`]).
    Closed,
}

pub const ISTIO_COUNTERS: [IstioCounter; 4] = [
    IstioCounter {
        name: "istio_tcp_connections_opened",
        help: "TCP connections opened (Istio's name; failed connects included).",
        kind: IstioCount::Opened,
    },
    IstioCounter {
        name: "istio_tcp_connections_closed",
        help: "TCP connections closed (Istio's name; failed connects included), by response flags.",
        kind: IstioCount::Closed,
    },
    IstioCounter {
        name: "istio_tcp_sent_bytes",
        help: "Payload bytes of the responses: server to client (Istio's name).",
        kind: IstioCount::ResponseBytes,
    },
    IstioCounter {
        name: "istio_tcp_received_bytes",
        help: "Payload bytes of the requests: client to server (Istio's name).",
        kind: IstioCount::RequestBytes,
    },
];

impl IstioCount {
    /// The counter's value for one series, over all response flags.
    pub fn value(&self, key: &SeriesKey, c: &SeriesCounts) -> u64 {
        let client = key.direction == Direction::Outbound;
        match self {
            IstioCount::Opened => c.opened + c.failed_total(),
            IstioCount::Closed => c.closed_total() + c.failed_total(),
            IstioCount::ResponseBytes if client => c.bytes_received,
            IstioCount::ResponseBytes => c.bytes_sent,
            IstioCount::RequestBytes if client => c.bytes_sent,
            IstioCount::RequestBytes => c.bytes_received,
        }
    }
}

/// Closed connections (failed ones included) of a series by response
/// flags, in a stable order, zero counts left out.
pub fn closed_by_flags(key: &SeriesKey, counts: &SeriesCounts) -> Vec<(&'static str, u64)> {
    let mut out: Vec<(&'static str, u64)> = Vec::new();
    for (i, (code, _)) in CLOSE_REASONS.iter().enumerate() {
        let n = counts.closed[i] + counts.failed[i];
        if n == 0 {
            continue;
        }
        let flags = response_flags(*code, key.direction);
        match out.iter_mut().find(|(f, _)| *f == flags) {
            Some((_, total)) => *total += n,
            None => out.push((flags, n)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kiali_graph_label_is_written() {
        // kiali/kiali graph/telemetry/istio: the TCP graph groups by these
        // and filters on reporter; a series without one is skipped.
        let kiali = [
            "source_workload_namespace",
            "source_workload",
            "source_canonical_service",
            "source_canonical_revision",
            "destination_service_namespace",
            "destination_service",
            "destination_service_name",
            "destination_workload_namespace",
            "destination_workload",
            "destination_canonical_service",
            "destination_canonical_revision",
            "response_flags",
            "reporter",
        ];
        let key = SeriesKey::new("reviews", "10.0.0.1:9080", Direction::Outbound);
        let labels = series_labels(&key);
        for name in kiali {
            let value = labels.iter().find(|(n, _)| *n == name);
            assert!(value.is_some_and(|(_, v)| !v.is_empty()), "{name}");
        }
        let mut names: Vec<&str> = labels.iter().map(|(n, _)| *n).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), LABELS, "a label is written twice");
    }

    #[test]
    fn failed_connects_are_closed_with_uf_and_resets_by_side() {
        let out = SeriesKey::new("s", "b", Direction::Outbound);
        let inb = SeriesKey::new("s", "b", Direction::Inbound);
        let mut c = SeriesCounts::default();
        let idx = |code| CLOSE_REASONS.iter().position(|(c, _)| *c == code).unwrap();
        c.closed[idx(close_reason::FIN)] = 3;
        c.closed[idx(close_reason::RST_RECEIVED)] = 2;
        c.failed[idx(close_reason::CONNECT_REFUSED)] = 1;
        c.failed[idx(close_reason::CONNECT_FAILED)] = 4;
        assert_eq!(closed_by_flags(&out, &c), [("-", 3), ("UC", 2), ("UF", 5)]);
        assert_eq!(closed_by_flags(&inb, &c)[1], ("DC", 2));
        let flags_of = |labels: [(&str, &str); LABELS]| {
            labels
                .into_iter()
                .find(|(n, _)| *n == "response_flags")
                .map(|(_, v)| v.to_string())
        };
        assert_eq!(
            flags_of(close_labels(&out, close_reason::TIMEOUT)).as_deref(),
            Some("UT")
        );
        assert_eq!(flags_of(series_labels(&out)).as_deref(), Some(NO_FLAGS));
        let split: u64 = closed_by_flags(&out, &c).iter().map(|(_, n)| n).sum();
        assert_eq!(IstioCount::Closed.value(&out, &c), split);
        assert_eq!(split, 10);
    }

    #[test]
    fn istio_bytes_are_by_request_and_response_whoever_reports() {
        let c = SeriesCounts {
            bytes_sent: 100,
            bytes_received: 2000,
            ..SeriesCounts::default()
        };
        let client = SeriesKey::new("s", "b", Direction::Outbound);
        let server = SeriesKey::new("s", "b", Direction::Inbound);
        assert_eq!(IstioCount::ResponseBytes.value(&client, &c), 2000);
        assert_eq!(IstioCount::RequestBytes.value(&client, &c), 100);
        // The server's sent bytes are the response.
        assert_eq!(IstioCount::ResponseBytes.value(&server, &c), 100);
        assert_eq!(IstioCount::RequestBytes.value(&server, &c), 2000);
    }
}
