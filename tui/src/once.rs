//! `kmesh-top --once`: the dashboard's figures as plain-text tables for
//! scripts, from two snapshots `--interval` apart.
use kmesh_api::v1::Snapshot;

use crate::{
    format,
    rows::{self, ServiceRow},
    stats::{Quantile, Stats},
};

/// The agent, services and backends tables, separated by blank lines.
/// A backend's WANT is its configured share of new connections (by
/// weight), SHARE its observed share in the interval.
/// `before` is ignored when the agent restarted in between.
pub fn text(before: &Snapshot, now: &Snapshot) -> String {
    let before = Some(before).filter(|b| b.uptime_seconds <= now.uptime_seconds);
    let services = rows::services(before, now);
    [
        agent_table(before, now),
        services_table(&services),
        backends_table(&services),
    ]
    .join("\n")
}

fn agent_table(before: Option<&Snapshot>, now: &Snapshot) -> String {
    let h = rows::health(before, now);
    let row = vec![
        format::uptime(h.uptime_seconds),
        or_dash(h.events_per_s.map(format::rate)),
        h.drops_total.to_string(),
        or_dash(h.drops_per_s.map(format::rate)),
        or_dash(h.cpu_percent.map(|p| format!("{p:.1}"))),
        format::bytes(h.resident_bytes as f64),
        h.lost_closes.to_string(),
        format!("{}/{}", h.series, h.series_limit),
    ];
    table(
        &[
            "UPTIME",
            "EVENTS/s",
            "DROPS",
            "DROPS/s",
            "CPU%",
            "RSS",
            "LOST_CLOSES",
            "SERIES",
        ],
        0,
        vec![row],
    )
}

fn services_table(services: &[ServiceRow]) -> String {
    let rows = services
        .iter()
        .map(|s| {
            [
                vec![s.name.clone(), s.vip.clone(), s.policy.clone()],
                figures(&s.stats),
            ]
            .concat()
        })
        .collect();
    table(
        &[&["SERVICE", "VIP:PORT", "POLICY"][..], &FIGURES].concat(),
        3,
        rows,
    )
}

fn backends_table(services: &[ServiceRow]) -> String {
    let mut rows = Vec::new();
    for s in services {
        let interval_total: u64 = s.backends.iter().filter_map(|b| b.opened_in_interval).sum();
        for (i, b) in s.backends.iter().enumerate() {
            let share = b
                .opened_in_interval
                .filter(|_| interval_total > 0)
                .map(|n| format!("{:.1}%", n as f64 * 100.0 / interval_total as f64));
            let head = vec![
                s.name.clone(),
                b.address.clone(),
                b.weight.to_string(),
                format!("{:.1}%", s.configured_share(i) * 100.0),
                or_dash(share),
            ];
            rows.push([head, figures(&b.stats)].concat());
        }
    }
    table(
        &[
            &["SERVICE", "BACKEND", "WEIGHT", "WANT", "SHARE"][..],
            &FIGURES,
        ]
        .concat(),
        2,
        rows,
    )
}

const FIGURES: [&str; 16] = [
    "ACTIVE", "NEW/s", "P50", "P90", "P99", "RTT99", "IN/s", "OUT/s", "RETR/s", "FAIL/s", "RST/s",
    "OPENED", "CLOSED", "FAILED", "IN", "OUT",
];

fn figures(s: &Stats) -> Vec<String> {
    let rate = |pick: fn(&crate::stats::Rates) -> f64| {
        or_dash(s.rates.as_ref().map(|r| format::rate(pick(r))))
    };
    let bytes = |pick: fn(&crate::stats::Rates) -> f64| {
        or_dash(s.rates.as_ref().map(|r| format::bytes(pick(r))))
    };
    vec![
        s.active.to_string(),
        rate(|r| r.opened),
        quantile(s.latency_p50),
        quantile(s.latency_p90),
        quantile(s.latency_p99),
        quantile(s.rtt_p99),
        bytes(|r| r.bytes_in),
        bytes(|r| r.bytes_out),
        rate(|r| r.retransmits),
        rate(|r| r.failed),
        rate(|r| r.resets),
        s.totals.opened.to_string(),
        s.totals.closed.to_string(),
        s.totals.failed.to_string(),
        format::bytes(s.totals.bytes_in as f64),
        format::bytes(s.totals.bytes_out as f64),
    ]
}

fn quantile(q: Option<Quantile>) -> String {
    match q {
        Some(Quantile { us, cumulative }) => format!(
            "{}{}",
            format::micros(us),
            if cumulative { "*" } else { "" }
        ),
        None => "-".into(),
    }
}

fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".into())
}

/// Columns two spaces apart; the first `text_columns` left-aligned, the
/// figures after them right-aligned.
fn table(headers: &[&str], text_columns: usize, rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, &width))| match i < text_columns {
                true => format!("{cell:<width$}"),
                false => format!("{cell:>width$}"),
            })
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in &rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}
