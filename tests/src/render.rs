//! A plain-text table of an agent snapshot: the demo's live view.
use std::{fmt::Write, net::SocketAddr};

use kmesh_agent::metrics::snapshot::Snapshot;

fn us(v: u64) -> String {
    if v >= 10_000 {
        format!("{:.1}ms", v as f64 / 1000.0)
    } else {
        format!("{v}µs")
    }
}

fn bytes(v: u64) -> String {
    match v {
        0..1024 => format!("{v}B"),
        1024..1_048_576 => format!("{:.1}KiB", v as f64 / 1024.0),
        _ => format!("{:.1}MiB", v as f64 / 1_048_576.0),
    }
}

pub fn snapshot_table(s: &Snapshot, agent: SocketAddr) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "kmesh-rs agent {agent}  up {:.0}s  services {}  probe events {}  ring-buffer drops {}  config reloads ok/failed {}/{}",
        s.uptime_seconds,
        s.services_configured,
        s.events_total,
        s.ringbuf_drops,
        s.config_reloads_ok,
        s.config_reloads_failed
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<12} {:<22} {:<8} {:>7} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "SERVICE",
        "BACKEND",
        "DIR",
        "OPENED",
        "ACTIVE",
        "FAILED",
        "CONN p50",
        "CONN p99",
        "RTT p50",
        "RTT p99",
        "SENT",
        "RECEIVED"
    );
    for r in &s.series {
        let _ = writeln!(
            out,
            "{:<12} {:<22} {:<8} {:>7} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            r.service,
            r.backend,
            r.direction.to_string(),
            r.opened,
            r.active,
            r.failed,
            us(r.connect_latency_us.p50),
            us(r.connect_latency_us.p99),
            us(r.srtt_us.p50),
            us(r.srtt_us.p99),
            bytes(r.bytes_sent),
            bytes(r.bytes_received),
        );
    }
    let _ = writeln!(out, "\nCtrl-C to stop and remove everything the demo made.");
    out
}
