//! One trace per connection across two nodes: the agent on the client's
//! node and the one on the server's node derive the same trace and span
//! ids from the connection's initial sequence numbers, so a connection
//! between them is one trace of a CLIENT span (node A) and its SERVER
//! child (node B), with no packet touched and no agent-to-agent talk.
//! Each way a handshake can go is exercised, since each leaves the
//! kernel's counters in another state when the probe reads the ISNs.
use std::collections::{BTreeMap, BTreeSet};

use kmesh_tests::{
    harness::{Agent, Metrics, Topology, privileged},
    nodes::{NODE_B_IP, TwoNodes, sysctl, tcp_ext_counter},
    protocol::Ending,
    rotel::{Rotel, Span, parse_spans},
};

const VIP: &str = "198.18.0.10:80";

fn backend(port: u16) -> String {
    format!("{NODE_B_IP}:{port}")
}

/// The same mesh on both nodes: node A routes the VIP to node B's backend,
/// node B names its inbound connections by it.
fn mesh() -> String {
    format!(
        "services:\n  - name: echo\n    vip: {VIP}\n    backends:\n      - address: {}\n",
        backend(8080)
    )
}

fn start_agent(topo: &Topology, rotel: &Rotel, node: &str, ratio: &str) -> Agent {
    let endpoint = format!("http://{}", rotel.grpc);
    topo.start_agent_with(
        &mesh(),
        &[
            "--otlp-endpoint",
            &endpoint,
            "--trace-sample-ratio",
            ratio,
            "--node-name",
            node,
        ],
    )
}

/// Waits until `agent` has read `closes` close records and accounted for a
/// span of each (exported or sampled out), then stops it: its last export
/// goes out as it exits.
fn finish(mut agent: Agent, closes: u64) -> Metrics {
    let accounted = |m: &Metrics| {
        let spans = |o| m.value("kmesh_otlp_spans_total", &[("outcome", o)]);
        m.value("kmesh_probe_events_total", &[("kind", "closed")]) >= closes as f64
            && spans("exported") + spans("sampled_out") >= closes as f64
    };
    let metrics = agent.metrics_when(accounted);
    assert!(accounted(&metrics), "{}", metrics.0);
    assert_eq!(agent.stop().code(), Some(0), "{}", agent.log());
    metrics
}

/// Spans by trace id.
fn traces(spans: &[Span]) -> BTreeMap<&str, Vec<&Span>> {
    let mut by_trace: BTreeMap<&str, Vec<&Span>> = BTreeMap::new();
    for s in spans {
        by_trace.entry(s.trace_id.as_str()).or_default().push(s);
    }
    by_trace
}

/// The trace is one CLIENT span from node A and its SERVER child from node
/// B; returns the backend port it reached.
fn assert_two_node_trace(trace: &[&Span]) -> String {
    assert_eq!(trace.len(), 2, "a whole trace is two spans: {trace:#?}");
    let node = |s: &Span| s.resource.get("k8s.node.name").cloned();
    let client = trace.iter().find(|s| s.kind == "SPAN_KIND_CLIENT");
    let server = trace.iter().find(|s| s.kind == "SPAN_KIND_SERVER");
    let (Some(client), Some(server)) = (client, server) else {
        panic!("a CLIENT and a SERVER span: {trace:#?}");
    };
    assert_eq!(node(client).as_deref(), Some("node-a"), "{client:#?}");
    assert_eq!(node(server).as_deref(), Some("node-b"), "{server:#?}");
    assert_eq!(client.parent_id, "", "the CLIENT span is the root");
    assert_eq!(server.parent_id, client.id, "the SERVER span is its child");
    assert_eq!(client.attr("kmesh.hop.count"), Some("1"));
    assert_eq!(server.attr("kmesh.hop.count"), Some("1"));
    // The same connection, seen from both ends.
    assert_eq!(
        client.attr("network.local.port"),
        server.attr("client.port")
    );
    let port = server.attr("network.local.port").expect("server port");
    assert_eq!(client.attr("network.peer.port"), Some(port));
    port.to_string()
}

#[test]
fn a_connection_between_two_nodes_is_one_trace_however_its_handshake_went() {
    let test = "a_connection_between_two_nodes_is_one_trace_however_its_handshake_went";
    if !privileged(test) {
        return;
    }
    let nodes = TwoNodes::new("trace2");
    let rotel = Rotel::start(&nodes.a.workdir);
    let agent_a = start_agent(&nodes.a, &rotel, "node-a", "1");
    let agent_b = start_agent(&nodes.b, &rotel, "node-b", "1");
    // Fast Open without cookies, so every connection's SYN carries data.
    sysctl(&nodes.a, "ipv4.tcp_fastopen", "5");
    sysctl(&nodes.b, "ipv4.tcp_fastopen", "514");
    let serve = |port: u16, extra: &[&str]| {
        nodes
            .b
            .serve_with(&[&backend(port)], Ending::Close, true, extra)
    };
    // port, connections, server flags, client flags, what it exercises
    type Phase<'a> = (u16, u64, &'a [&'a str], &'a [&'a str], &'a str);
    let phases: [Phase; 5] = [
        (8080, 500, &[], &[], "plain, routed through the VIP"),
        (
            8081,
            100,
            &["--greeting-bytes", "3000"],
            &[],
            "server first",
        ),
        (
            8082,
            100,
            &["--defer-accept"],
            &[],
            "data completes the handshake",
        ),
        (
            8083,
            100,
            &[],
            &["--ack-with-data"],
            "last ACK rides on data",
        ),
        (
            8084,
            100,
            &["--fastopen"],
            &["--fastopen"],
            "data on the SYN",
        ),
    ];
    let mut expected = BTreeMap::new();
    for (port, n, server_flags, client_flags, what) in phases {
        let _server = serve(port, server_flags);
        let target = if port == 8080 {
            VIP.to_string()
        } else {
            backend(port)
        };
        let report = nodes.a.client(&target, n, client_flags);
        assert_eq!(report.ok, n, "{what}: {report:?}");
        expected.insert(port.to_string(), n);
    }
    // SYN cookies: the server's ISN is a cookie.
    sysctl(&nodes.b, "ipv4.tcp_syncookies", "2");
    {
        let _server = serve(8085, &[]);
        let report = nodes.a.client(&backend(8085), 100, &[]);
        assert_eq!(report.ok, 100, "syncookies: {report:?}");
        expected.insert("8085".to_string(), 100);
    }
    // The handshakes went as meant.
    assert!(tcp_ext_counter(&nodes.b, "TCPDeferAcceptDrop") > 0);
    assert!(tcp_ext_counter(&nodes.a, "TCPFastOpenActive") >= 100);
    assert!(tcp_ext_counter(&nodes.b, "TCPFastOpenPassive") >= 100);
    assert!(tcp_ext_counter(&nodes.b, "SyncookiesRecv") >= 100);

    let total: u64 = expected.values().sum();
    finish(agent_a, total);
    finish(agent_b, total);
    let out = rotel.output();
    let spans = parse_spans(&out);
    assert_eq!(spans.len() as u64, total * 2, "a span per connection end");
    let by_trace = traces(&spans);
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for trace in by_trace.values() {
        *seen.entry(assert_two_node_trace(trace)).or_default() += 1;
    }
    assert_eq!(seen, expected, "whole traces by backend port");
    // For the record (visible with --nocapture): one trace as rotel printed it.
    let first = &spans[0].trace_id;
    let lines: Vec<&str> = out.lines().collect();
    for (i, _) in lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains(first.as_str()))
    {
        let excerpt = &lines[i.saturating_sub(1)..(i + 24).min(lines.len())];
        eprintln!(
            "one end of a two-node trace, as rotel printed it:\n{}",
            excerpt.join("\n")
        );
    }
    let routed = spans
        .iter()
        .filter(|s| s.kind == "SPAN_KIND_CLIENT" && s.attr("kmesh.vip") == Some(VIP))
        .count();
    assert_eq!(routed, 500);
}

#[test]
fn both_nodes_sample_a_trace_alike_and_both_keep_a_reset_one() {
    if !privileged("both_nodes_sample_a_trace_alike_and_both_keep_a_reset_one") {
        return;
    }
    let nodes = TwoNodes::new("trace2s");
    let rotel = Rotel::start(&nodes.a.workdir);
    let agent_a = start_agent(&nodes.a, &rotel, "node-a", "0.1");
    let agent_b = start_agent(&nodes.b, &rotel, "node-b", "0.1");
    let (n, resets) = (500u64, 20u64);
    {
        let _echo = nodes
            .b
            .serve_with(&[&backend(8080)], Ending::Close, true, &[]);
        assert_eq!(nodes.a.client(VIP, n, &[]).ok, n);
    }
    {
        let _reset = nodes
            .b
            .serve_with(&[&backend(8081)], Ending::Reset, true, &[]);
        assert_eq!(nodes.a.client(&backend(8081), resets, &[]).ok, 0);
    }
    let total = n + resets;
    let ma = finish(agent_a, total);
    let mb = finish(agent_b, total);
    let spans = parse_spans(&rotel.output());
    let by_trace = traces(&spans);
    let mut kept = 0;
    let mut reset_traces = BTreeSet::new();
    for (id, trace) in &by_trace {
        // Whole or absent: never one end alone.
        let port = assert_two_node_trace(trace);
        if port == "8081" {
            for s in trace {
                assert_eq!(s.status, "STATUS_CODE_ERROR", "{s:#?}");
                assert_eq!(s.attr("kmesh.sampled_because"), Some("error"));
            }
            reset_traces.insert(*id);
        } else {
            assert!(trace.iter().all(|s| s.status != "STATUS_CODE_ERROR"));
            kept += 1;
        }
    }
    assert_eq!(reset_traces.len() as u64, resets, "every reset connection");
    // 10 % of 500: 50 expected, sd ~6.7; far outside means the ratio is off.
    assert!((15..=100).contains(&kept), "{kept} of {n} kept at 0.1");
    // Each agent's own account agrees with what arrived.
    for m in [&ma, &mb] {
        let exported = m.value("kmesh_otlp_spans_total", &[("outcome", "exported")]);
        assert_eq!(exported as u64, kept + resets, "{}", m.0);
    }
}
