//! One service's backends: how the policy is meant to split new connections
//! beside how it did, and each backend's figures and last minute.
use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    text::Line,
    widgets::{Block, Paragraph, Sparkline, TableState},
};

use super::columns::{self, Column, bytes_rate, plain, quantile, rate, trouble_rate};
use crate::{
    app::App,
    format,
    history::{History, SAMPLES},
    rows::BackendRow,
    sort::SortKey,
};

/// A backend with its shares, which depend on its siblings.
pub struct BackendLine<'a> {
    pub row: &'a BackendRow,
    pub configured_share: f64,
    /// Since kmesh-top started.
    pub observed_share: Option<f64>,
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// With `with_workload`, a column naming each backend's workload.
fn backend_columns<'a>(with_workload: bool) -> Vec<Column<BackendLine<'a>>> {
    let mut columns: Vec<Column<BackendLine<'a>>> = vec![
        Column::text("BACKEND", 15, 0, Some(SortKey::Name), |b, _| {
            plain(&b.row.address)
        }),
        Column::text("WEIGHT", 12, 1, None, |b, _| {
            plain(format!(
                "{} ({})",
                b.row.weight,
                percent(b.configured_share)
            ))
        }),
        Column::figure("SHARE", 1, None, |b, _| {
            plain(b.observed_share.map_or("-".into(), percent))
        }),
        Column::figure("ACTIVE", 4, Some(SortKey::Active), |b, _| {
            plain(b.row.stats.active.to_string())
        }),
        Column::figure("NEW/s", 2, Some(SortKey::Rate), |b, _| {
            rate(b.row.stats.rates.map(|r| r.opened))
        }),
        Column::figure("P50", 6, None, |b, t| quantile(b.row.stats.latency_p50, t)),
        Column::figure("P99", 3, Some(SortKey::Latency), |b, t| {
            quantile(b.row.stats.latency_p99, t)
        }),
        Column::figure("RTT99", 5, Some(SortKey::Rtt), |b, t| {
            quantile(b.row.stats.rtt_p99, t)
        }),
        Column::figure("FAIL/s", 5, Some(SortKey::Errors), |b, t| {
            trouble_rate(b.row.stats.rates.map(|r| r.failed), t.alarm())
        }),
        Column::figure("RST/s", 5, None, |b, t| {
            trouble_rate(b.row.stats.rates.map(|r| r.resets), t.alarm())
        }),
        Column::figure("IN/s", 7, Some(SortKey::Bytes), |b, _| {
            bytes_rate(b.row.stats.rates.map(|r| r.bytes_in))
        }),
        Column::figure("OUT/s", 7, None, |b, _| {
            bytes_rate(b.row.stats.rates.map(|r| r.bytes_out))
        }),
        Column::figure("RETR/s", 8, Some(SortKey::Retransmits), |b, t| {
            trouble_rate(b.row.stats.rates.map(|r| r.retransmits), t.warning())
        }),
    ];
    if with_workload {
        let column = Column::text("WORKLOAD", 16, 3, None, |b: &BackendLine, _| {
            plain(b.row.workload.as_deref().unwrap_or("-"))
        });
        columns.insert(1, column);
    }
    columns
}

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let Some(service) = app.selected_service() else {
        frame.render_widget(
            Paragraph::new("The service is gone from the agent's configuration."),
            area,
        );
        return;
    };
    let visible = app.visible_backends(service);
    let lines: Vec<BackendLine> = visible
        .iter()
        .map(|&(i, row)| BackendLine {
            row,
            configured_share: service.configured_share(i),
            observed_share: app.observed_share(service, i),
        })
        .collect();
    let selected = app.selected_backend_index(&visible);
    // Room for two sparklines of at least one row each, borders included.
    let table_height = (lines.len() as u16 + 1)
        .min(area.height.saturating_sub(7))
        .max(2);
    let [table_area, rate_area, latency_area] = Layout::vertical([
        Constraint::Length(table_height),
        Constraint::Fill(1),
        Constraint::Fill(1),
    ])
    .areas(area);
    // Only when the mesh names the workloads behind the backends.
    let all = backend_columns(service.backends.iter().any(|b| b.workload.is_some()));
    let shown = columns::fit(&all, table_area.width);
    let table = columns::table(&shown, &lines, &app.theme, Some(app.sort));
    let mut state = TableState::default().with_selected(selected);
    frame.render_stateful_widget(table, table_area, &mut state);

    let Some(backend) = selected.map(|i| visible[i].1) else {
        return;
    };
    let empty = History::default();
    let history = app
        .history(&service.id(), &backend.address)
        .unwrap_or(&empty);
    sparklines(frame, [rate_area, latency_area], app, backend, history);
}

fn sparklines(
    frame: &mut Frame,
    areas: [Rect; 2],
    app: &App,
    backend: &BackendRow,
    history: &History,
) {
    let window = humantime::format_duration(app.interval * SAMPLES as u32);
    let [rate_area, latency_area] = areas;
    let rates = &history.opened_per_s;
    let rate_title = format!(
        " {} new connections/s, last {window}: now {}, max {} ",
        backend.address,
        rates.back().map_or("-".into(), |r| format::rate(*r)),
        format::rate(rates.iter().copied().fold(0.0, f64::max)),
    );
    let latencies = &history.latency_p99_us;
    let latency_title = format!(
        " {} connect p99, last {window}: now {}, max {} ",
        backend.address,
        latencies
            .back()
            .copied()
            .flatten()
            .map_or("-".into(), format::micros),
        latencies
            .iter()
            .flatten()
            .max()
            .map_or("-".into(), |us| format::micros(*us)),
    );
    let width = |area: Rect| area.width.saturating_sub(2) as usize;
    // The sparkline draws from the left: hand it only the newest samples that fit.
    let newest = |len: usize, area: Rect| len.saturating_sub(width(area));
    // Bars are whole numbers; hundredths keep a 0.5/s rate from reading as 0.
    let rate_bars = rates
        .iter()
        .skip(newest(rates.len(), rate_area))
        .map(|r| (r * 100.0).round() as u64);
    let latency_bars = latencies
        .iter()
        .skip(newest(latencies.len(), latency_area))
        .copied();
    let block = |title: String| {
        Block::bordered()
            .title(Line::from(title))
            .border_style(app.theme.dim())
    };
    frame.render_widget(
        Sparkline::default()
            .block(block(rate_title))
            .data(rate_bars.collect::<Vec<_>>())
            .style(app.theme.rate_line()),
        rate_area,
    );
    frame.render_widget(
        Sparkline::default()
            .block(block(latency_title))
            .data(latency_bars.collect::<Vec<_>>())
            .style(app.theme.latency_line()),
        latency_area,
    );
}
