//! The services table: one row per configured service, as its clients see it.
use ratatui::{Frame, layout::Rect, widgets::TableState};

use super::columns::{self, Column, bytes_rate, plain, quantile, rate, trouble_rate};
use crate::{app::App, rows::ServiceRow, sort::SortKey};

/// In the order shown; the priorities decide what 80 columns keep.
fn service_columns<'a>() -> Vec<Column<&'a ServiceRow>> {
    vec![
        Column::text("SERVICE", 12, 0, Some(SortKey::Name), |s, _| plain(&s.name)),
        Column::text("VIP:PORT", 16, 3, Some(SortKey::Vip), |s, _| plain(&s.vip)),
        Column::text("POLICY", 11, 9, Some(SortKey::Policy), |s, _| {
            plain(&s.policy)
        }),
        Column::figure("ACTIVE", 3, Some(SortKey::Active), |s, _| {
            plain(s.stats.active.to_string())
        }),
        Column::figure("NEW/s", 1, Some(SortKey::Rate), |s, _| {
            rate(s.stats.rates.map(|r| r.opened))
        }),
        Column::figure("P50", 6, None, |s, t| quantile(s.stats.latency_p50, t)),
        Column::figure("P90", 8, None, |s, t| quantile(s.stats.latency_p90, t)),
        Column::figure("P99", 2, Some(SortKey::Latency), |s, t| {
            quantile(s.stats.latency_p99, t)
        }),
        Column::figure("RTT99", 4, Some(SortKey::Rtt), |s, t| {
            quantile(s.stats.rtt_p99, t)
        }),
        Column::figure("IN/s", 7, Some(SortKey::Bytes), |s, _| {
            bytes_rate(s.stats.rates.map(|r| r.bytes_in))
        }),
        Column::figure("OUT/s", 7, None, |s, _| {
            bytes_rate(s.stats.rates.map(|r| r.bytes_out))
        }),
        Column::figure("RETR/s", 10, Some(SortKey::Retransmits), |s, t| {
            trouble_rate(s.stats.rates.map(|r| r.retransmits), t.warning())
        }),
        Column::figure("FAIL/s", 5, Some(SortKey::Errors), |s, t| {
            trouble_rate(s.stats.rates.map(|r| r.failed), t.alarm())
        }),
        Column::figure("RST/s", 5, None, |s, t| {
            trouble_rate(s.stats.rates.map(|r| r.resets), t.alarm())
        }),
    ]
}

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let visible = app.visible_services();
    let all = service_columns();
    let shown = columns::fit(&all, area.width);
    let table = columns::table(&shown, &visible, &app.theme, Some(app.sort));
    let mut state = TableState::default().with_selected(app.selected_service_index(&visible));
    frame.render_stateful_widget(table, area, &mut state);
    if visible.is_empty() && !app.service_filter.is_empty() {
        columns::no_match_hint(frame, area, "service", &app.service_filter, &app.theme);
    }
}
