//! What the probe reports, checked against what the client actually did.
use kmesh_tests::harness::{Metrics, Topology, echo_mesh, privileged};

const VIP: &str = "198.18.0.20:80";

fn labels(backend: &str) -> [(&'static str, &str); 3] {
    [
        ("destination_service", "echo"),
        ("destination_backend", backend),
        ("direction", "outbound"),
    ]
}

#[test]
fn counters_equal_the_traffic_to_the_byte() {
    if !privileged("counters_equal_the_traffic_to_the_byte") {
        return;
    }
    let topo = Topology::new("counters");
    let backends = ["127.0.0.2:8080", "127.0.0.3:8080"];
    let _servers = topo.serve(&backends, false);
    let agent = topo.start_agent(&echo_mesh(
        VIP,
        "round_robin",
        &[(backends[0], 1), (backends[1], 1)],
    ));
    let n = 300;
    // Odd sizes, and a reply bigger than a segment, so nothing lines up by luck.
    let report = topo.client(
        VIP,
        n,
        &[
            "--concurrency",
            "3",
            "--request-bytes",
            "1237",
            "--reply-bytes",
            "70001",
        ],
    );
    assert_eq!(report.ok, n, "failures: {:?}", report.failures);
    assert_eq!(report.bytes_sent, n * (8 + 1237));
    assert_eq!(report.bytes_received, n * 70001);

    let m = agent.metrics_when(|m| {
        m.value(
            "kmesh_tcp_connections_closed_total",
            &[("destination_service", "echo")],
        ) >= n as f64
    });
    for b in backends {
        let per_backend = report.backends[b] as f64;
        assert_eq!(per_backend, (n / 2) as f64);
        assert_eq!(
            m.value("kmesh_tcp_connections_opened_total", &labels(b)),
            per_backend,
            "opened via {b}"
        );
        let mut closed = labels(b).to_vec();
        closed.push(("close_reason", "fin"));
        assert_eq!(
            m.value("kmesh_tcp_connections_closed_total", &closed),
            per_backend,
            "closed via {b}"
        );
        assert_eq!(
            m.value("kmesh_tcp_sent_bytes_total", &labels(b)),
            per_backend * (8.0 + 1237.0),
            "sent via {b}"
        );
        assert_eq!(
            m.value("kmesh_tcp_received_bytes_total", &labels(b)),
            per_backend * 70001.0,
            "received via {b}"
        );
        assert_eq!(m.value("kmesh_tcp_connections_active", &labels(b)), 0.0);
        assert_eq!(
            m.value("kmesh_tcp_connect_latency_seconds_count", &labels(b)),
            per_backend
        );
        assert_eq!(
            m.value("kmesh_tcp_rtt_seconds_count", &labels(b)),
            per_backend
        );
    }
    // Plausible on loopback: above zero, below a second per connection.
    let lat_sum = m.value(
        "kmesh_tcp_connect_latency_seconds_sum",
        &[("destination_service", "echo")],
    );
    assert!(
        lat_sum > 0.0 && lat_sum < n as f64,
        "connect latency sum {lat_sum}"
    );
    let snap = agent.snapshot();
    let echo = snap
        .services
        .iter()
        .find(|s| s.name == "echo")
        .expect("echo in the snapshot");
    assert_eq!(
        echo.outbound.opened, n,
        "the admin API counts what /metrics counts"
    );
    for b in &echo.backends {
        let f = &b.outbound;
        assert!(
            f.connect_latency_us.p50 > 0 && f.connect_latency_us.p99 < 1_000_000,
            "{b:?}"
        );
        assert!(f.rtt_us.p50 > 0 && f.rtt_us.p99 < 1_000_000, "{b:?}");
        assert_eq!(
            f.rtt_us.buckets.iter().sum::<u64>(),
            f.rtt_us.count,
            "{b:?}"
        );
    }
    assert_eq!(
        m.value("kmesh_probe_ringbuf_dropped_events_total", &[]),
        0.0
    );
}

#[test]
fn a_reset_from_the_server_is_reported_as_rst() {
    if !privileged("a_reset_from_the_server_is_reported_as_rst") {
        return;
    }
    let topo = Topology::new("reset");
    let _servers = topo.serve(&["127.0.0.2:8080"], true);
    let agent = topo.start_agent(&echo_mesh(VIP, "random", &[("127.0.0.2:8080", 1)]));
    let report = topo.client(VIP, 25, &[]);
    assert_eq!(report.failures.get("reset"), Some(&25), "{report:?}");
    let mut rst = labels("127.0.0.2:8080").to_vec();
    rst.push(("close_reason", "rst_received"));
    let m = agent.metrics_when(|m| m.value("kmesh_tcp_connections_closed_total", &rst) >= 25.0);
    assert_eq!(
        m.value("kmesh_tcp_connections_closed_total", &rst),
        25.0,
        "{}",
        m.0
    );
    assert_eq!(
        m.value(
            "kmesh_tcp_connections_opened_total",
            &labels("127.0.0.2:8080")
        ),
        25.0
    );
}

#[test]
fn a_refused_connect_is_reported_as_failed() {
    if !privileged("a_refused_connect_is_reported_as_failed") {
        return;
    }
    let topo = Topology::new("refused");
    // Nothing listens on the backend.
    let agent = topo.start_agent(&echo_mesh(VIP, "random", &[("127.0.0.9:8080", 1)]));
    let report = topo.client(VIP, 10, &[]);
    assert_eq!(report.failures.get("refused"), Some(&10), "{report:?}");
    let mut refused = labels("127.0.0.9:8080").to_vec();
    refused.push(("close_reason", "connect_refused"));
    let m = agent.metrics_when(|m| m.value("kmesh_tcp_connections_failed_total", &refused) >= 10.0);
    assert_eq!(
        m.value("kmesh_tcp_connections_failed_total", &refused),
        10.0,
        "{}",
        m.0
    );
    assert_eq!(
        m.value(
            "kmesh_tcp_connections_opened_total",
            &labels("127.0.0.9:8080")
        ),
        0.0
    );
}

#[test]
fn long_lived_connections_report_while_open() {
    if !privileged("long_lived_connections_report_while_open") {
        return;
    }
    let topo = Topology::new("periodic");
    let backend = "127.0.0.2:8080";
    let _servers = topo.serve(&[backend], false);
    // Reports come with RTT samples, which a client's socket takes when its
    // own data is acknowledged: a 16 MB request takes many, and at a 1 ms
    // interval some of them report while the request is still going out.
    let agent = topo.start_agent(&format!(
        "probe:\n  report_interval_seconds: 0.001\n{}",
        echo_mesh(VIP, "random", &[(backend, 1)])
    ));
    let (n, request, reply) = (3u64, 16_000_000u64, 3_000u64);
    // Held open well past the transfer: what /metrics says meanwhile was
    // reported by connections still open.
    let client = topo.client_in_background(
        VIP,
        n,
        &[
            "--concurrency",
            "3",
            "--request-bytes",
            &request.to_string(),
            "--reply-bytes",
            &reply.to_string(),
            "--hold-ms",
            "8000",
        ],
    );
    let at = |m: &Metrics, name: &str| m.value(name, &labels(backend));
    let periodic = |m: &Metrics| m.value("kmesh_probe_events_total", &[("kind", "periodic")]);
    let (active, closed, sent, received) = (
        "kmesh_tcp_connections_active",
        "kmesh_tcp_connections_closed_total",
        "kmesh_tcp_sent_bytes_total",
        "kmesh_tcp_received_bytes_total",
    );
    let open =
        agent.metrics_when(|m| at(m, active) == n as f64 && periodic(m) > 0.0 && at(m, sent) > 0.0);
    assert_eq!(
        (at(&open, active), at(&open, closed)),
        (n as f64, 0.0),
        "when periodic reports and bytes sent first showed, all {n} connections open and none closed yet (reports that come only at close fail here):\n{}",
        open.0
    );
    assert!(
        periodic(&open) > 0.0 && at(&open, sent) > 0.0,
        "no periodic report, or no bytes sent counted, while the connections were open:\n{}",
        open.0
    );

    let report = client.report();
    assert_eq!(report.ok, n, "{report:?}");
    let end = agent.metrics_when(|m| at(m, closed) >= n as f64);
    // The running totals and the close add up to the traffic, once.
    assert_eq!(
        [closed, active, sent, received].map(|name| at(&end, name)),
        [n, 0, n * (8 + request), n * reply].map(|v| v as f64),
        "closed, active, sent and received after the close:\n{}",
        end.0
    );
}

#[test]
fn backends_in_the_cgroup_report_inbound_under_their_service() {
    if !privileged("backends_in_the_cgroup_report_inbound_under_their_service") {
        return;
    }
    let topo = Topology::new("inbound");
    let backend = "127.0.0.2:8080";
    let _servers = topo.serve_in_cgroup(&[backend], false);
    let agent = topo.start_agent(&echo_mesh(VIP, "random", &[(backend, 1)]));
    let n = 40;
    let report = topo.client(VIP, n, &["--request-bytes", "500", "--reply-bytes", "3000"]);
    assert_eq!(report.ok, n, "{report:?}");
    let inbound = [
        ("destination_service", "echo"),
        ("destination_backend", backend),
        ("direction", "inbound"),
    ];
    let m = agent.metrics_when(|m| {
        m.value("kmesh_tcp_connections_closed_total", &inbound) >= n as f64
            && m.value("kmesh_tcp_connections_closed_total", &labels(backend)) >= n as f64
    });
    // Each side is counted once, from its own point of view.
    assert_eq!(
        m.value("kmesh_tcp_connections_opened_total", &inbound),
        n as f64,
        "{}",
        m.0
    );
    assert_eq!(
        m.value("kmesh_tcp_connections_opened_total", &labels(backend)),
        n as f64
    );
    assert_eq!(
        m.value("kmesh_tcp_received_bytes_total", &inbound),
        (n * 508) as f64
    );
    assert_eq!(
        m.value("kmesh_tcp_sent_bytes_total", &inbound),
        (n * 3000) as f64
    );
    // Inbound connections have no connect() of their own to time.
    assert_eq!(
        m.value("kmesh_tcp_connect_latency_seconds_count", &inbound),
        0.0
    );
}

#[test]
fn the_side_that_resets_reports_rst_sent() {
    if !privileged("the_side_that_resets_reports_rst_sent") {
        return;
    }
    let topo = Topology::new("rstsent");
    let backend = "127.0.0.2:8080";
    let _servers = topo.serve_in_cgroup(&[backend], true);
    let agent = topo.start_agent(&echo_mesh(VIP, "random", &[(backend, 1)]));
    let n = 20;
    let report = topo.client(VIP, n, &[]);
    assert_eq!(report.failures.get("reset"), Some(&n), "{report:?}");
    let sent = [("direction", "inbound"), ("close_reason", "rst_sent")];
    let received = [("direction", "outbound"), ("close_reason", "rst_received")];
    let m = agent.metrics_when(|m| {
        m.value("kmesh_tcp_connections_closed_total", &sent) >= n as f64
            && m.value("kmesh_tcp_connections_closed_total", &received) >= n as f64
    });
    assert_eq!(
        m.value("kmesh_tcp_connections_closed_total", &sent),
        n as f64,
        "{}",
        m.0
    );
    assert_eq!(
        m.value("kmesh_tcp_connections_closed_total", &received),
        n as f64,
        "{}",
        m.0
    );
}
