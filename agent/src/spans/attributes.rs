//! A hop's span attributes: OpenTelemetry's network conventions where one
//! exists, Istio's `destination_service`, and `kmesh.*` for the rest.
use std::net::SocketAddr;

use kmesh_common::{ConnEvent, close_reason, direction};
use opentelemetry::KeyValue;

use crate::{
    addr::socket_addr,
    aggregator::{SeriesKey, close_reason_name, istio},
};

pub struct HopFacts<'a> {
    pub ev: &'a ConnEvent,
    pub key: &'a SeriesKey,
    pub vip: Option<SocketAddr>,
    pub hop_count: usize,
    pub sampled_because: &'static str,
}

/// `error.type` of a close that was not orderly.
pub fn error_type(reason: u8) -> Option<&'static str> {
    (reason != close_reason::FIN).then(|| close_reason_name(reason))
}

fn addr_pair(prefix: &str, addr: SocketAddr) -> [KeyValue; 2] {
    [
        KeyValue::new(format!("{prefix}.address"), addr.ip().to_string()),
        KeyValue::new(format!("{prefix}.port"), i64::from(addr.port())),
    ]
}

pub fn of_hop(f: &HopFacts<'_>) -> Vec<KeyValue> {
    let ev = f.ev;
    let local = socket_addr(ev.local_addr, ev.family, ev.local_port);
    let remote = socket_addr(ev.remote_addr, ev.family, ev.remote_port);
    let mut attrs = vec![
        KeyValue::new("network.transport", "tcp"),
        KeyValue::new(
            "network.type",
            if remote.is_ipv4() { "ipv4" } else { "ipv6" },
        ),
        KeyValue::new("kmesh.backend", f.key.backend.to_string()),
        KeyValue::new("kmesh.hop.count", f.hop_count as i64),
        KeyValue::new("kmesh.close_reason", close_reason_name(ev.close_reason)),
        KeyValue::new(
            "kmesh.bytes.sent",
            ev.bytes_sent.min(i64::MAX as u64) as i64,
        ),
        KeyValue::new(
            "kmesh.bytes.received",
            ev.bytes_received.min(i64::MAX as u64) as i64,
        ),
        KeyValue::new("kmesh.tcp.srtt_us", i64::from(ev.srtt_us)),
        KeyValue::new("kmesh.tcp.retransmits", i64::from(ev.total_retrans)),
        KeyValue::new("kmesh.sampled_because", f.sampled_because),
    ];
    // Istio's labels, as on the metrics: who called whom, and the flags of
    // how it ended.
    attrs.extend(
        istio::close_labels(f.key, ev.close_reason)
            .into_iter()
            .filter(|(name, _)| !matches!(*name, "destination_backend" | "direction"))
            .map(|(name, value)| KeyValue::new(name, value.to_string())),
    );
    if ev.min_rtt_us != 0 && ev.min_rtt_us != u32::MAX {
        attrs.push(KeyValue::new(
            "kmesh.tcp.min_rtt_us",
            i64::from(ev.min_rtt_us),
        ));
    }
    attrs.extend(addr_pair("network.peer", remote));
    attrs.extend(addr_pair("network.local", local));
    if let Some(vip) = f.vip {
        attrs.push(KeyValue::new("kmesh.vip", vip.to_string()));
    }
    if ev.direction == direction::INBOUND {
        attrs.extend(addr_pair("server", local));
        attrs.extend(addr_pair("client", remote));
    } else {
        // The client addressed the VIP; the peer it got is the backend.
        attrs.extend(addr_pair("server", f.vip.unwrap_or(remote)));
        if ev.connect_latency_ns > 0 {
            attrs.push(KeyValue::new(
                "kmesh.tcp.connect_latency_us",
                (ev.connect_latency_ns / 1000).min(i64::MAX as u64) as i64,
            ));
        }
    }
    if let Some(error) = error_type(ev.close_reason) {
        attrs.push(KeyValue::new("error.type", error));
    }
    attrs
}
