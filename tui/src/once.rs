//! `kmesh-top --once`: the dashboard's figures as plain-text tables for
//! scripts, from two snapshots `--interval` apart.
use kmesh_api::v1::Snapshot;

use crate::{
    calls::{self, CallRow},
    format,
    rows::{self, ServiceRow},
    stats::{Quantile, Rates, Stats},
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

/// `--once --calls`: the calls table alone (who calls whom), so a script
/// reads one header and its rows. DESTINATIONS is last: a comma-separated
/// list of any length.
pub fn calls_text(before: &Snapshot, now: &Snapshot) -> String {
    let before = Some(before).filter(|b| b.uptime_seconds <= now.uptime_seconds);
    calls_table(&calls::rows(before, now))
}

fn calls_table(calls: &[CallRow]) -> String {
    let rows = calls
        .iter()
        .map(|c| {
            let s = &c.stats;
            vec![
                c.source.clone(),
                c.service.clone(),
                c.reporter.clone(),
                s.active.to_string(),
                rate(s, |r| r.opened),
                quantile(s.latency_p50),
                quantile(s.latency_p99),
                quantile(s.rtt_p99),
                rate(s, Rates::errors),
                bytes(s, |r| r.bytes_in),
                bytes(s, |r| r.bytes_out),
                s.totals.opened.to_string(),
                s.totals.failed.to_string(),
                c.destinations_text(),
            ]
        })
        .collect();
    let headers = [
        "SOURCE",
        "SERVICE",
        "REPORTER",
        "ACTIVE",
        "NEW/s",
        "P50",
        "P99",
        "RTT99",
        "ERR/s",
        "IN/s",
        "OUT/s",
        "OPENED",
        "FAILED",
        "DESTINATIONS",
    ];
    table(&headers, 3, 1, rows)
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
        0,
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
            let workload = b.workload.clone().unwrap_or_else(|| "-".into());
            rows.push([head, figures(&b.stats), vec![workload]].concat());
        }
    }
    table(
        &[
            &["SERVICE", "BACKEND", "WEIGHT", "WANT", "SHARE"][..],
            &FIGURES,
            &["WORKLOAD"],
        ]
        .concat(),
        2,
        1,
        rows,
    )
}

const FIGURES: [&str; 16] = [
    "ACTIVE", "NEW/s", "P50", "P90", "P99", "RTT99", "IN/s", "OUT/s", "RETR/s", "FAIL/s", "RST/s",
    "OPENED", "CLOSED", "FAILED", "IN", "OUT",
];

/// A rate of the interval, `-` before there is one.
fn rate(s: &Stats, pick: fn(&Rates) -> f64) -> String {
    or_dash(s.rates.as_ref().map(|r| format::rate(pick(r))))
}

fn bytes(s: &Stats, pick: fn(&Rates) -> f64) -> String {
    or_dash(s.rates.as_ref().map(|r| format::bytes(pick(r))))
}

fn figures(s: &Stats) -> Vec<String> {
    vec![
        s.active.to_string(),
        rate(s, |r| r.opened),
        quantile(s.latency_p50),
        quantile(s.latency_p90),
        quantile(s.latency_p99),
        quantile(s.rtt_p99),
        bytes(s, |r| r.bytes_in),
        bytes(s, |r| r.bytes_out),
        rate(s, |r| r.retransmits),
        rate(s, |r| r.failed),
        rate(s, |r| r.resets),
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

/// Columns two spaces apart; the first `text_columns` and the last
/// `trailing_text` left-aligned, the figures between them right-aligned.
fn table(
    headers: &[&str],
    text_columns: usize,
    trailing_text: usize,
    rows: Vec<Vec<String>>,
) -> String {
    let figures_end = headers.len() - trailing_text;
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
            .map(
                |(i, (cell, &width))| match i < text_columns || i >= figures_end {
                    true => format!("{cell:<width$}"),
                    false => format!("{cell:>width$}"),
                },
            )
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in &rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}
