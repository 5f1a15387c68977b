use std::time::Duration;

use kmesh_common::{ConnEvent, close_reason, direction, event_kind};
use opentelemetry::{Value, trace::Status};

use super::*;
use crate::{aggregator::Direction, test_records::Record};

const CLIENT: &str = "127.0.0.9:40000";
const BACKEND: &str = "127.0.0.2:8080";
const VIP: &str = "198.18.0.10:80";

fn keep_all() -> SpanAssembler {
    SpanAssembler::new(SamplingSettings {
        ratio: 1.0,
        slow_threshold: Duration::from_secs(1),
    })
}

fn key(direction: Direction) -> SeriesKey {
    SeriesKey::new("echo", BACKEND, direction)
}

fn record(kind: u8, dir: u8, reason: u8) -> ConnEvent {
    let r = Record::closed(reason)
        .kind(kind)
        .cookie(u64::from(dir) + 1)
        .times(1_000_000, 5_000_000)
        .bytes(10, 20)
        .srtt_us(50);
    if dir == direction::INBOUND {
        return r.inbound(BACKEND, CLIENT).build();
    }
    // The spans read what the client dialled, not the route's service.
    r.outbound(CLIENT, BACKEND)
        .routed(0, BACKEND)
        .dialled(VIP)
        .connect_latency_ns(30_000)
        .build()
}

fn attr(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

fn span(outcome: Option<SpanOutcome>) -> SpanData {
    match outcome {
        Some(SpanOutcome::Span(s)) => *s,
        other => panic!("expected a span, got {other:?}"),
    }
}

#[test]
fn both_hops_of_a_local_connection_share_a_trace_and_the_inbound_is_the_child() {
    let mut a = keep_all();
    let (out, inb) = (key(Direction::Outbound), key(Direction::Inbound));
    let fin = close_reason::FIN;
    assert!(
        a.record(
            &record(event_kind::ESTABLISHED, direction::OUTBOUND, 0),
            &out
        )
        .is_none()
    );
    assert!(
        a.record(
            &record(event_kind::ESTABLISHED, direction::INBOUND, 0),
            &inb
        )
        .is_none()
    );
    let client = span(a.record(&record(event_kind::CLOSED, direction::OUTBOUND, fin), &out));
    assert_eq!(a.open_flows(), 1, "the inbound hop is still open");
    let server = span(a.record(&record(event_kind::CLOSED, direction::INBOUND, fin), &inb));
    assert_eq!(a.open_flows(), 0);

    assert_eq!(
        client.span_context.trace_id(),
        server.span_context.trace_id()
    );
    assert_eq!(server.parent_span_id, client.span_context.span_id());
    assert_eq!(client.parent_span_id, SpanId::INVALID);
    assert_eq!(
        (client.span_kind.clone(), server.span_kind.clone()),
        (SpanKind::Client, SpanKind::Server)
    );
    assert_eq!(client.name, "connect echo");
    assert_eq!(attr(&client, "kmesh.hop.count"), Some(Value::I64(2)));
    assert_eq!(
        attr(&client, "server.address"),
        Some(Value::from("198.18.0.10"))
    );
    assert_eq!(attr(&client, "network.peer.port"), Some(Value::I64(8080)));
    assert_eq!(
        attr(&server, "kmesh.vip"),
        Some(Value::from(VIP)),
        "learnt from the outbound hop"
    );
    assert_eq!(
        attr(&client, "kmesh.tcp.connect_latency_us"),
        Some(Value::I64(30))
    );
    assert_eq!(client.status, Status::Unset);
    let took = client.end_time.duration_since(client.start_time).unwrap();
    assert_eq!(took, Duration::from_millis(4));
}

#[test]
fn a_reset_is_an_error_and_kept_even_at_ratio_zero() {
    let mut a = SpanAssembler::new(SamplingSettings {
        ratio: 0.0,
        slow_threshold: Duration::from_secs(1),
    });
    let out = key(Direction::Outbound);
    let rst = record(
        event_kind::CLOSED,
        direction::OUTBOUND,
        close_reason::RST_RECEIVED,
    );
    let s = span(a.record(&rst, &out));
    assert_eq!(s.status, Status::error("rst_received"));
    assert_eq!(attr(&s, "error.type"), Some(Value::from("rst_received")));
    assert_eq!(attr(&s, "kmesh.hop.count"), Some(Value::I64(1)));
    // Istio's labels, as on the metrics, with the flags of the reset.
    assert_eq!(attr(&s, "response_flags"), Some(Value::from("UC")));
    assert_eq!(attr(&s, "reporter"), Some(Value::from("source")));
    assert_eq!(attr(&s, "source_workload"), Some(Value::from("unknown")));
    assert_eq!(attr(&s, "destination_service"), Some(Value::from("echo")));

    let fin = record(event_kind::CLOSED, direction::OUTBOUND, close_reason::FIN);
    assert!(matches!(
        a.record(&fin, &out),
        Some(SpanOutcome::SampledOut)
    ));
    assert_eq!(a.open_flows(), 0);
}

/// An assembler keeping only failed and slow connections, with both hops
/// of one connection established.
fn both_hops_open_at_ratio_zero() -> (SpanAssembler, SeriesKey, SeriesKey) {
    let mut a = SpanAssembler::new(SamplingSettings {
        ratio: 0.0,
        slow_threshold: Duration::from_secs(1),
    });
    let (out, inb) = (key(Direction::Outbound), key(Direction::Inbound));
    a.record(
        &record(event_kind::ESTABLISHED, direction::OUTBOUND, 0),
        &out,
    );
    a.record(
        &record(event_kind::ESTABLISHED, direction::INBOUND, 0),
        &inb,
    );
    (a, out, inb)
}

#[test]
fn the_hops_of_a_trace_follow_the_first_decision() {
    let (mut a, out, inb) = both_hops_open_at_ratio_zero();
    // The server resets first; the client's side then closes with FIN
    // (as it would after a clean half-close): the trace stays kept.
    let server = span(a.record(
        &record(
            event_kind::CLOSED,
            direction::INBOUND,
            close_reason::RST_SENT,
        ),
        &inb,
    ));
    let client = span(a.record(
        &record(event_kind::CLOSED, direction::OUTBOUND, close_reason::FIN),
        &out,
    ));
    assert_eq!(server.parent_span_id, client.span_context.span_id());
}

#[test]
fn a_reset_hop_is_kept_as_a_root_after_its_partner_was_sampled_out() {
    let (mut a, out, inb) = both_hops_open_at_ratio_zero();
    // The client's side saw a FIN (dropped at ratio 0); the server's side a reset.
    let fin = record(event_kind::CLOSED, direction::OUTBOUND, close_reason::FIN);
    assert!(matches!(
        a.record(&fin, &out),
        Some(SpanOutcome::SampledOut)
    ));
    let rst = record(
        event_kind::CLOSED,
        direction::INBOUND,
        close_reason::RST_SENT,
    );
    let server = span(a.record(&rst, &inb));
    assert_eq!(
        server.parent_span_id,
        SpanId::INVALID,
        "its parent was never sent"
    );
    assert_eq!(server.status, Status::error("rst_sent"));
}

#[test]
fn a_new_socket_on_the_same_addresses_starts_a_new_trace() {
    let mut a = keep_all();
    let out = key(Direction::Outbound);
    // The first connection's close record was lost.
    a.record(
        &record(event_kind::ESTABLISHED, direction::OUTBOUND, 0),
        &out,
    );
    let mut again = record(event_kind::ESTABLISHED, direction::OUTBOUND, 0);
    again.cookie = 99;
    again.connect_latency_ns = 70_000;
    a.record(&again, &out);
    let mut close = record(event_kind::CLOSED, direction::OUTBOUND, close_reason::FIN);
    close.cookie = 99;
    close.connect_latency_ns = 70_000;
    let s = span(a.record(&close, &out));
    assert_eq!(
        attr(&s, "kmesh.tcp.connect_latency_us"),
        Some(Value::I64(70))
    );
    assert_eq!(a.open_flows(), 0, "the stale hop went with the old flow");
}

#[test]
fn loopback_connections_in_different_namespaces_are_not_paired() {
    let mut a = keep_all();
    let (out, inb) = (key(Direction::Outbound), key(Direction::Inbound));
    let mut client = record(event_kind::ESTABLISHED, direction::OUTBOUND, 0);
    client.netns_cookie = 1;
    let mut server = record(event_kind::ESTABLISHED, direction::INBOUND, 0);
    server.netns_cookie = 2;
    a.record(&client, &out);
    a.record(&server, &inb);
    assert_eq!(
        a.open_flows(),
        2,
        "same addresses, two namespaces: two connections"
    );
    client.kind = event_kind::CLOSED;
    client.close_reason = close_reason::FIN;
    let s = span(a.record(&client, &out));
    assert_eq!(attr(&s, "kmesh.hop.count"), Some(Value::I64(1)));
}

/// `record` with the ISNs the probe reads at establishment: the client's
/// local ISN is the server's remote one and the other way round.
fn with_isns(ev: ConnEvent) -> ConnEvent {
    const CLIENT_ISN: u32 = 0x1111_2222;
    const SERVER_ISN: u32 = 0xdead_beef;
    let (local, remote) = if ev.direction == direction::INBOUND {
        (SERVER_ISN, CLIENT_ISN)
    } else {
        (CLIENT_ISN, SERVER_ISN)
    };
    Record::from(ev).isns(local, remote).build()
}

fn closed_span(a: &mut SpanAssembler, dir: u8, reason: u8) -> SpanData {
    let k = key(if dir == direction::INBOUND {
        Direction::Inbound
    } else {
        Direction::Outbound
    });
    a.record(&with_isns(record(event_kind::ESTABLISHED, dir, 0)), &k);
    span(a.record(&with_isns(record(event_kind::CLOSED, dir, reason)), &k))
}

#[test]
fn two_agents_each_seeing_one_end_emit_one_trace_with_the_derived_ids() {
    let (mut node_a, mut node_b) = (keep_all(), keep_all());
    let client = closed_span(&mut node_a, direction::OUTBOUND, close_reason::FIN);
    let server = closed_span(&mut node_b, direction::INBOUND, close_reason::FIN);
    let expected = ids::ConnectionKey {
        client_isn: 0x1111_2222,
        server_isn: 0xdead_beef,
        server: BACKEND.parse().unwrap(),
    }
    .ids();
    assert_eq!(client.span_context.trace_id(), expected.trace_id);
    assert_eq!(server.span_context.trace_id(), expected.trace_id);
    assert_eq!(client.span_context.span_id(), expected.client_span);
    assert_eq!(server.span_context.span_id(), expected.server_span);
    assert_eq!(client.parent_span_id, SpanId::INVALID);
    assert_eq!(server.parent_span_id, expected.client_span);
    assert!(server.parent_span_is_remote, "the client span is on node A");
}

#[test]
fn one_node_seeing_both_ends_emits_the_ids_two_nodes_would() {
    let mut both = keep_all();
    let (out, inb) = (key(Direction::Outbound), key(Direction::Inbound));
    for (dir, k) in [(direction::OUTBOUND, &out), (direction::INBOUND, &inb)] {
        both.record(&with_isns(record(event_kind::ESTABLISHED, dir, 0)), k);
    }
    let fin = close_reason::FIN;
    let client = span(both.record(
        &with_isns(record(event_kind::CLOSED, direction::OUTBOUND, fin)),
        &out,
    ));
    let server = span(both.record(
        &with_isns(record(event_kind::CLOSED, direction::INBOUND, fin)),
        &inb,
    ));
    let (mut node_a, mut node_b) = (keep_all(), keep_all());
    let apart = [
        closed_span(&mut node_a, direction::OUTBOUND, fin),
        closed_span(&mut node_b, direction::INBOUND, fin),
    ];
    for (here, there) in [client, server].iter().zip(&apart) {
        assert_eq!(here.span_context, there.span_context);
        assert_eq!(here.parent_span_id, there.parent_span_id);
    }
    assert_eq!(attr(&apart[1], "kmesh.hop.count"), Some(Value::I64(1)));
}

#[test]
fn slowness_keeps_a_trace_only_where_one_agent_holds_all_of_it() {
    let slow = |a: &mut SpanAssembler, dir: u8, k: &SeriesKey, kind: u8| {
        let mut ev = with_isns(record(kind, dir, close_reason::FIN));
        ev.srtt_us = 2_000_000;
        a.record(&ev, k)
    };
    let at_zero = || {
        SpanAssembler::new(SamplingSettings {
            ratio: 0.0,
            slow_threshold: Duration::from_secs(1),
        })
    };
    let (out, inb) = (key(Direction::Outbound), key(Direction::Inbound));
    // Alone on its node, the client cannot know the server's node decides alike.
    let mut node_a = at_zero();
    slow(
        &mut node_a,
        direction::OUTBOUND,
        &out,
        event_kind::ESTABLISHED,
    );
    assert!(matches!(
        slow(&mut node_a, direction::OUTBOUND, &out, event_kind::CLOSED),
        Some(SpanOutcome::SampledOut)
    ));
    // Both ends on one node: one decision for the whole trace.
    let mut both = at_zero();
    slow(
        &mut both,
        direction::OUTBOUND,
        &out,
        event_kind::ESTABLISHED,
    );
    slow(&mut both, direction::INBOUND, &inb, event_kind::ESTABLISHED);
    let s = span(slow(
        &mut both,
        direction::OUTBOUND,
        &out,
        event_kind::CLOSED,
    ));
    assert_eq!(attr(&s, "kmesh.sampled_because"), Some(Value::from("slow")));
    // Random ids (no ISNs): the trace is this agent's alone.
    let mut alone = at_zero();
    let mut ev = record(event_kind::CLOSED, direction::OUTBOUND, close_reason::FIN);
    ev.srtt_us = 2_000_000;
    let s = span(alone.record(&ev, &out));
    assert_eq!(attr(&s, "kmesh.sampled_because"), Some(Value::from("slow")));
}

#[test]
fn another_connection_on_the_same_addresses_is_not_paired_with_a_stale_end() {
    let mut a = keep_all();
    let inb = key(Direction::Inbound);
    // The server's end of an earlier connection, whose close was lost.
    let mut old = with_isns(record(event_kind::ESTABLISHED, direction::INBOUND, 0));
    old.local_isn = 5;
    a.record(&old, &inb);
    let client = closed_span(&mut a, direction::OUTBOUND, close_reason::FIN);
    assert_eq!(attr(&client, "kmesh.hop.count"), Some(Value::I64(1)));
    assert_eq!(a.open_flows(), 0);
}
