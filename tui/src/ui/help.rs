//! The `?` overlay: every key, and what window each figure covers.
use ratatui::{
    Frame,
    layout::{Constraint, Rect},
    text::{Line, Span},
    widgets::{Block, Clear, Paragraph, Wrap},
};

use crate::{app::App, feed::CAPACITY, history::SAMPLES};

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let every = humantime::format_duration(app.interval);
    let window = humantime::format_duration(app.interval * SAMPLES as u32);
    let key = |k: &'static str, what: String| {
        Line::from(vec![
            Span::styled(format!("{k:<12}"), t.key()),
            Span::raw(what),
        ])
    };
    let note = |what: String| Line::from(what);
    let lines = vec![
        key("q  Ctrl-C", "quit".into()),
        key("c", "connection feed; c again goes back".into()),
        key("w", "who calls whom: client workload → service; w again goes back".into()),
        key("/", "filter (name or VIP; in the feed and calls any name): Enter applies, Esc clears".into()),
        key("↑↓ j k", "move; PgUp PgDn, Home End (g G)".into()),
        key("Enter", "backends of the selected service".into()),
        key("Esc Bksp", "back".into()),
        key("space", format!("pause the feed: it keeps polling and holds up to {CAPACITY} new records")),
        key("n v p a r", "sort by name, VIP, policy, active, new/s".into()),
        key("l t b x e", "sort by p99 latency, RTT p99, bytes/s, retransmits/s, errors/s".into()),
        key("", "the same key again reverses (calls: n v p sort by source, service, reporter)".into()),
        Line::default(),
        note(format!("Rates and quantiles are over the last interval ({every}).")),
        note("P50/P90/P99: connect latency. A * marks a quantile since the agent started, shown when nothing connected in the interval.".into()),
        note("WEIGHT: configured weight (its share); SHARE: observed share of new connections since kmesh-top started.".into()),
        note(format!("Sparklines: the selected backend's last {SAMPLES} intervals ({window}).")),
        note(format!("Feed: the newest {CAPACITY} closed connections, newest first; times in UTC.")),
    ];
    let width = area.width.min(100);
    let inner_width = width.saturating_sub(2).max(1) as usize;
    // Wrapped notes take more than one row each; word wrap may need one more.
    let rows: usize = lines
        .iter()
        .map(|l| l.width().max(1).div_ceil(inner_width))
        .sum();
    let height = (rows as u16 + 3).min(area.height);
    let popup = area.centered(Constraint::Length(width), Constraint::Length(height));
    frame.render_widget(Clear, popup);
    let block = Block::bordered().title(Line::styled(
        " kmesh-top help (? or Esc closes) ",
        t.header(),
    ));
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        popup,
    );
}
