//! The calls table: who calls whom, one row per client workload and the
//! service it calls, with the workloads that answered.
use ratatui::{Frame, layout::Rect, widgets::TableState};

use super::columns::{self, Column, bytes_rate, plain, quantile, rate, trouble_rate};
use crate::{app::App, calls::CallRow, sort::SortKey};

/// In the order shown; the priorities decide what 80 columns keep: the
/// pair, its rate, errors and p99, and where it went.
fn call_columns<'a>() -> Vec<Column<&'a CallRow>> {
    vec![
        Column::text("SOURCE", 14, 0, Some(SortKey::Name), |c, _| {
            plain(&c.source)
        }),
        Column::text("SERVICE", 20, 1, Some(SortKey::Vip), |c, _| {
            plain(&c.service)
        }),
        Column::figure("ACTIVE", 7, Some(SortKey::Active), |c, _| {
            plain(c.stats.active.to_string())
        }),
        Column::figure("NEW/s", 2, Some(SortKey::Rate), |c, _| {
            rate(c.stats.rates.map(|r| r.opened))
        }),
        Column::figure("P99", 4, Some(SortKey::Latency), |c, t| {
            quantile(c.stats.latency_p99, t)
        }),
        Column::figure("RTT99", 6, Some(SortKey::Rtt), |c, t| {
            quantile(c.stats.rtt_p99, t)
        }),
        Column::figure("ERR/s", 3, Some(SortKey::Errors), |c, t| {
            trouble_rate(c.stats.rates.map(|r| r.errors()), t.alarm())
        }),
        Column::figure("IN/s", 9, Some(SortKey::Bytes), |c, _| {
            bytes_rate(c.stats.rates.map(|r| r.bytes_in))
        }),
        Column::figure("OUT/s", 9, None, |c, _| {
            bytes_rate(c.stats.rates.map(|r| r.bytes_out))
        }),
        Column::text("DESTINATIONS", 20, 5, None, |c: &&CallRow, _| {
            plain(c.destinations_text())
        })
        .filling(),
        Column::text("REPORTER", 11, 8, Some(SortKey::Policy), |c, _| {
            plain(&c.reporter)
        }),
    ]
}

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let visible = app.visible_calls();
    let all = call_columns();
    let shown = columns::fit(&all, area.width);
    let table = columns::table(&shown, &visible, &app.theme, Some(app.sort));
    let mut state = TableState::default().with_selected(app.selected_call_index(&visible));
    frame.render_stateful_widget(table, area, &mut state);
    if visible.is_empty() && !app.calls_filter.is_empty() {
        columns::no_match_hint(frame, area, "call", &app.calls_filter, &app.theme);
    }
}
