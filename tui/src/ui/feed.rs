//! The connection feed: closed connections, newest at the top.
use kmesh_api::v1::{Connection, Direction};
use ratatui::{Frame, layout::Rect, style::Style, widgets::TableState};

use super::columns::{self, Column, Text, plain};
use crate::{app::App, format, theme::Theme};

/// `source → VIP → backend`; an inbound connection has no VIP.
fn full_path(c: &Connection) -> Text {
    match (&c.vip, c.direction) {
        (Some(vip), Direction::Outbound) => plain(format!("{} → {vip} → {}", c.source, c.backend)),
        _ => short_path(c),
    }
}

/// The service column names the VIP when there is no room for it.
fn short_path(c: &Connection) -> Text {
    plain(format!("{} → {}", c.source, c.backend))
}

/// `client workload → server workload`, each `namespace/workload` or
/// `unknown`.
fn workloads(c: &Connection) -> Text {
    let name = |w: &Option<String>| w.clone().unwrap_or_else(|| "-".into());
    plain(format!(
        "{} → {}",
        name(&c.source_workload),
        name(&c.destination_workload)
    ))
}

/// Whether a record names a workload at either end: a mesh that knows no
/// workloads (Envoy resources, a mesh file without `workloads:`) calls
/// every peer `unknown`, and the column would say nothing.
fn names_a_workload(c: &Connection) -> bool {
    [&c.source_workload, &c.destination_workload]
        .into_iter()
        .flatten()
        .any(|w| w != "unknown")
}

fn reason(c: &Connection, theme: &Theme) -> Text {
    let style = match c.close_reason.as_str() {
        "fin" => Style::new(),
        _ => theme.alarm(),
    };
    (c.close_reason.clone(), style)
}

/// The path column fits an IPv4 `source → VIP → backend` (48) or
/// `source → backend` (30); the workloads column, two short
/// `namespace/workload` names, takes what is left.
fn connection_columns<'a>(with_vip: bool, with_workloads: bool) -> Vec<Column<&'a Connection>> {
    let path: Column<&Connection> = match with_vip {
        true => Column::text("SOURCE → VIP → BACKEND", 48, 0, None, |c, _| {
            full_path(c)
        }),
        false => Column::text("SOURCE → BACKEND", 30, 0, None, |c, _| short_path(c)),
    };
    let mut columns: Vec<Column<&'a Connection>> = vec![
        Column::text("TIME (UTC)", 12, 1, None, |c, _| {
            plain(format::utc_time_of_day(c.closed_at_unix_ms))
        }),
        path,
        Column::text("SERVICE", 10, 3, None, |c, _| plain(&c.service)),
        Column::figure("DUR", 4, None, |c, _| plain(format::micros(c.duration_us))),
        Column::figure("SENT", 6, None, |c, _| {
            plain(format::bytes(c.bytes_sent as f64))
        }),
        Column::figure("RECV", 6, None, |c, _| {
            plain(format::bytes(c.bytes_received as f64))
        }),
        Column::figure("RTT", 5, None, |c, _| {
            plain(format::micros(u64::from(c.srtt_us)))
        }),
        Column::figure("RETR", 7, None, |c, t| match c.retransmits {
            0 => plain("0"),
            n => (n.to_string(), t.warning()),
        }),
        Column::text("REASON", 15, 2, None, |c, t| reason(c, t)),
    ];
    if with_workloads {
        let column = Column::text("WORKLOADS", 28, 4, None, |c: &&Connection, _| workloads(c));
        let column = column.filling();
        columns.insert(2, column);
    }
    columns
}

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let records: Vec<&Connection> = app.feed.visible(&app.feed_filter).collect();
    // The VIP only when it costs no other column; the workloads before it.
    let named = records.iter().any(|c| names_a_workload(c));
    let with_vip = connection_columns(true, named);
    let without = connection_columns(false, named);
    let shown = match columns::fit(&with_vip, area.width) {
        shown if shown.len() == with_vip.len() => shown,
        _ => columns::fit(&without, area.width),
    };
    let table = columns::table(&shown, &records, &app.theme, None);
    let cursor = (!records.is_empty()).then(|| app.feed_cursor.min(records.len() - 1));
    let mut state = TableState::default().with_selected(cursor);
    frame.render_stateful_widget(table, area, &mut state);
    if records.is_empty() && !app.feed_filter.is_empty() {
        columns::no_match_hint(frame, area, "connection", &app.feed_filter, &app.theme);
    }
}
