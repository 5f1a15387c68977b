//! OTLP out, into a real collector (rotel): metrics whose counts equal the
//! traffic made, one span per kept connection hop, error status on resets,
//! and an agent that survives its collector going away.
use std::time::{Duration, Instant};

use kmesh_tests::{
    harness::{Agent, Metrics, Topology, privileged},
    rotel::{Rotel, Span, latest, parse_points, parse_spans},
    sessions::Session,
};

const ECHO_VIP: &str = "198.18.0.10:80";
const RESET_VIP: &str = "198.18.0.11:80";
const ECHO_BACKEND: &str = "127.0.0.2:8080";
const RESET_BACKEND: &str = "127.0.0.3:8080";

/// `echo` answers; `reset` aborts every connection it accepts.
fn mesh() -> String {
    format!(
        "services:
  - name: echo
    vip: {ECHO_VIP}
    backends:
      - address: {ECHO_BACKEND}
  - name: reset
    vip: {RESET_VIP}
    backends:
      - address: {RESET_BACKEND}
"
    )
}

/// Polls `cond` for up to 20 s.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_agent(topo: &Topology, endpoint: &str, flags: &[&str]) -> Agent {
    let mut all = vec!["--otlp-endpoint", endpoint, "--otlp-metrics-interval", "1s"];
    all.extend_from_slice(flags);
    topo.start_agent_with(&mesh(), &all)
}

#[test]
fn metrics_and_error_spans_reach_a_real_collector_over_grpc() {
    if !privileged("metrics_and_error_spans_reach_a_real_collector_over_grpc") {
        return;
    }
    let topo = Topology::new("otlp-grpc");
    let rotel = Rotel::start(&topo.workdir);
    // Both backends run in the cgroup, so each connection is seen twice:
    // the client's outbound hop and the backend's inbound hop.
    let _echo = topo.serve_in_cgroup(&[ECHO_BACKEND], false);
    let _reset = topo.serve_in_cgroup(&[RESET_BACKEND], true);
    // Ratio 0: only failed, reset and slow connections are traced.
    let mut agent = start_agent(
        &topo,
        &format!("http://{}", rotel.grpc),
        &[
            "--trace-sample-ratio",
            "0",
            "--node-name",
            "node-under-test",
        ],
    );
    let (ok, resets) = (20u64, 5u64);
    assert_eq!(topo.client(ECHO_VIP, ok, &[]).ok, ok);
    let report = topo.client(RESET_VIP, resets, &[]);
    assert_eq!(
        report.ok, 0,
        "every connection to `reset` fails: {report:?}"
    );

    // Every close read, and the kept spans through the exporter.
    let done = |m: &kmesh_tests::harness::Metrics| {
        m.value("kmesh_probe_events_total", &[("kind", "closed")]) >= ((ok + resets) * 2) as f64
            && m.value("kmesh_otlp_spans_total", &[("outcome", "exported")]) >= (resets * 2) as f64
    };
    let metrics = agent.metrics_when(done);
    assert!(done(&metrics), "the probe saw every close:\n{}", metrics.0);
    assert_eq!(agent.stop().code(), Some(0), "{}", agent.log());

    // The agent's own account of its spans.
    let spans_total = |outcome| metrics.value("kmesh_otlp_spans_total", &[("outcome", outcome)]);
    assert_eq!(spans_total("sampled_out"), (ok * 2) as f64, "{}", metrics.0);

    let out = rotel.output();
    let points = parse_points(&out);
    let source = [("destination_service", "echo"), ("reporter", "source")];
    let opened = latest(&points, "kmesh.tcp.connections.opened", &source);
    assert_eq!(opened, Some(ok as f64), "echo opened, client side");
    let inbound = [("destination_service", "echo"), ("reporter", "destination")];
    assert_eq!(
        latest(&points, "kmesh.tcp.connections.opened", &inbound),
        Some(ok as f64)
    );
    let reset_client = [
        ("destination_service", "reset"),
        ("reporter", "source"),
        ("kmesh.close_reason", "rst_received"),
    ];
    assert_eq!(
        latest(&points, "kmesh.tcp.connections.closed", &reset_client),
        Some(resets as f64)
    );
    let counter = points
        .iter()
        .find(|p| p.metric == "kmesh.tcp.connections.opened")
        .expect("opened exported");
    assert_eq!(counter.data_type, "Sum");
    assert!(counter.monotonic && counter.cumulative, "{counter:?}");
    assert_eq!(counter.attr("server.address"), Some("198.18.0.10"));
    assert_eq!(counter.attr("server.port"), Some("80"));
    assert_eq!(counter.attr("network.peer.address"), Some("127.0.0.2"));
    assert_eq!(counter.attr("network.transport"), Some("tcp"));
    let latency = points
        .iter()
        .rev()
        .find(|p| {
            p.metric == "kmesh.tcp.connect.duration"
                && p.attr("destination_service") == Some("echo")
                && p.attr("reporter") == Some("source")
        })
        .expect("connect latency exported");
    assert_eq!(latency.data_type, "Histogram");
    assert_eq!((latency.unit.as_str(), latency.value), ("s", ok as f64));
    for name in [
        "kmesh.tcp.rtt",
        "kmesh.tcp.connection.duration",
        "kmesh.tcp.connection.sent",
        "kmesh.tcp.sent",
        "kmesh.tcp.connections.active",
        "kmesh.probe.events",
    ] {
        assert!(points.iter().any(|p| p.metric == name), "{name} missing");
    }
    assert!(
        out.contains("k8s.node.name: Str(node-under-test)"),
        "resource names the node"
    );
    assert!(out.contains("service.name: Str(kmesh-agent)"));

    // Spans: both hops of every reset connection, and nothing else.
    let spans = parse_spans(&out);
    assert_eq!(spans.len() as u64, resets * 2, "{spans:#?}");
    assert_eq!(spans_total("exported") as u64, resets * 2);
    let clients: Vec<_> = spans
        .iter()
        .filter(|s| s.kind == "SPAN_KIND_CLIENT")
        .collect();
    assert_eq!(clients.len() as u64, resets);
    for client in &clients {
        assert_eq!(client.name, "connect reset");
        assert_eq!(client.status, "STATUS_CODE_ERROR");
        assert_eq!(client.parent_id, "", "the client hop is the root");
        assert_eq!(client.attr("kmesh.close_reason"), Some("rst_received"));
        assert_eq!(client.attr("kmesh.vip"), Some(RESET_VIP));
        assert_eq!(client.attr("kmesh.backend"), Some(RESET_BACKEND));
        assert_eq!(client.attr("kmesh.hop.count"), Some("2"));
        assert!(client.attr("kmesh.tcp.srtt_us").is_some());
        assert!(client.attr("kmesh.bytes.sent").is_some());
        let server = spans
            .iter()
            .find(|s| s.parent_id == client.id)
            .expect("the backend's hop is a child of the client's");
        assert_eq!(server.trace_id, client.trace_id);
        assert_eq!(server.kind, "SPAN_KIND_SERVER");
        assert_eq!(server.attr("kmesh.close_reason"), Some("rst_sent"));
        assert_eq!(server.status, "STATUS_CODE_ERROR");
    }
}

#[test]
fn every_connection_is_a_span_at_ratio_one_over_http() {
    if !privileged("every_connection_is_a_span_at_ratio_one_over_http") {
        return;
    }
    let topo = Topology::new("otlp-http");
    let rotel = Rotel::start(&topo.workdir);
    // The backend outside the cgroup: one hop per connection.
    let _echo = topo.serve(&[ECHO_BACKEND], false);
    let mut agent = start_agent(
        &topo,
        &format!("http://{}", rotel.http),
        &[
            "--otlp-protocol",
            "http/protobuf",
            "--trace-sample-ratio",
            "1",
            "--otlp-histograms",
            "base2_exponential_bucket_histogram",
        ],
    );
    let n = 12u64;
    assert_eq!(topo.client(ECHO_VIP, n, &[]).ok, n);
    let closed = |m: &kmesh_tests::harness::Metrics| {
        m.value("kmesh_probe_events_total", &[("kind", "closed")]) >= n as f64
    };
    let m = agent.metrics_when(closed);
    assert!(closed(&m), "the probe saw every close:\n{}", m.0);
    assert_eq!(agent.stop().code(), Some(0), "{}", agent.log());

    let out = rotel.output();
    let spans = parse_spans(&out);
    assert_eq!(spans.len() as u64, n, "one span per connection");
    for s in &spans {
        assert_eq!(
            (s.kind.as_str(), s.parent_id.as_str()),
            ("SPAN_KIND_CLIENT", "")
        );
        assert_eq!(s.status, "STATUS_CODE_UNSET");
        assert_eq!(s.attr("kmesh.sampled_because"), Some("ratio"));
        assert_eq!(s.attr("kmesh.hop.count"), Some("1"));
    }
    let points = parse_points(&out);
    let rtt = points
        .iter()
        .rev()
        .find(|p| p.metric == "kmesh.tcp.rtt" && p.attr("reporter") == Some("source"))
        .expect("rtt exported");
    assert_eq!(
        (rtt.data_type.as_str(), rtt.value),
        ("ExponentialHistogram", n as f64)
    );
}

#[test]
fn a_dead_collector_is_counted_and_the_agent_recovers_when_it_returns() {
    if !privileged("a_dead_collector_is_counted_and_the_agent_recovers_when_it_returns") {
        return;
    }
    let topo = Topology::new("otlp-dead");
    let mut rotel = Rotel::start(&topo.workdir);
    let _echo = topo.serve(&[ECHO_BACKEND], false);
    let agent = start_agent(
        &topo,
        &format!("http://{}", rotel.grpc),
        &["--trace-sample-ratio", "1"],
    );
    let exports = |result| {
        agent.metrics().value(
            "kmesh_otlp_exports_total",
            &[("signal", "metrics"), ("result", result)],
        )
    };
    eventually("a first successful metrics export", || {
        exports("success") >= 1.0
    });

    rotel.stop();
    // Routing and observing go on without the collector.
    let n = 10u64;
    assert_eq!(topo.client(ECHO_VIP, n, &[]).ok, n);
    eventually("counted metrics export failures", || {
        exports("failure") >= 2.0
    });
    eventually("failed span exports counted", || {
        agent
            .metrics()
            .value("kmesh_otlp_spans_total", &[("outcome", "export_failed")])
            >= 1.0
    });
    let opened = |m: &Metrics| {
        m.value(
            "kmesh_tcp_connections_opened_total",
            &[("destination_service", "echo")],
        )
    };
    let m = agent.metrics_when(|m| opened(m) >= n as f64);
    assert_eq!(opened(&m), n as f64, "the probe kept counting:\n{}", m.0);
    // The failure itself, not the start-up line that names the endpoint too.
    let failure = format!("OTLP export to http://{} failed", rotel.grpc);
    assert!(
        agent.log().contains(&failure),
        "the failure is logged with the endpoint ({failure}):\n{}",
        agent.log()
    );

    rotel.restart();
    let before = exports("success");
    eventually("exports to succeed again", || exports("success") > before);
    // Three connections whose client addresses the test knows, so their
    // spans can be told from any other.
    let after: Vec<Session> = serde_json::from_value(topo.testbed_json(&[
        "sessions",
        "--target",
        ECHO_VIP,
        "--connections",
        "3",
        "--order",
        "server-first",
    ]))
    .expect("sessions as JSON");
    assert!(after.iter().all(|s| s.outcome == "ok"), "{after:?}");
    let m2 = n + after.len() as u64;
    eventually("the returned collector to get the totals", || {
        let points = parse_points(&rotel.output());
        latest(
            &points,
            "kmesh.tcp.connections.opened",
            &[("destination_service", "echo"), ("reporter", "source")],
        ) == Some(m2 as f64)
    });
    // Each of the three is one span in the returned collector, the client
    // hop of that very connection.
    let of = |spans: &[Span], session: &Session| -> Vec<Span> {
        spans
            .iter()
            .filter(|s| {
                s.attr("network.local.address")
                    .zip(s.attr("network.local.port"))
                    .is_some_and(|(a, p)| format!("{a}:{p}") == session.local)
            })
            .cloned()
            .collect()
    };
    eventually("a span of each new connection after recovery", || {
        let spans = parse_spans(&rotel.output_since_start());
        after.iter().all(|c| !of(&spans, c).is_empty())
    });
    let spans = parse_spans(&rotel.output_since_start());
    for c in &after {
        let mine = of(&spans, c);
        assert_eq!(mine.len(), 1, "spans of {}: {mine:#?}", c.local);
        let span = &mine[0];
        assert_eq!(span.kind, "SPAN_KIND_CLIENT", "{span:#?}");
        assert_eq!(span.attr("kmesh.vip"), Some(ECHO_VIP), "{span:#?}");
        assert_eq!(span.attr("kmesh.backend"), Some(ECHO_BACKEND), "{span:#?}");
        assert_eq!(
            span.attr("kmesh.bytes.sent"),
            Some(c.written.to_string().as_str()),
            "{span:#?}"
        );
        assert_eq!(
            span.attr("kmesh.bytes.received"),
            Some(c.read.to_string().as_str()),
            "{span:#?}"
        );
    }
    assert!(
        agent.log().contains("OTLP export recovered"),
        "{}",
        agent.log()
    );
}
