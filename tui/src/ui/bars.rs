//! The lines around the tables: the agent's health at the top, what is
//! shown (or what went wrong) below it, and the keys at the bottom.
use ratatui::{
    style::Style,
    text::{Line, Span},
};

use crate::{
    app::{App, View},
    feed::CAPACITY,
    format,
    sort::SortKey,
};

/// Segments in order of importance; those that do not fit in `width` are
/// left out whole rather than cut.
fn segments<'a>(parts: Vec<Vec<Span<'a>>>, width: u16, separator: Span<'a>) -> Line<'a> {
    let mut line: Vec<Span> = Vec::new();
    let mut used = 0;
    for part in parts {
        let len: usize = part.iter().map(|s| s.width()).sum();
        let extra = if line.is_empty() {
            0
        } else {
            separator.width()
        };
        if used + extra + len > width as usize {
            continue;
        }
        if !line.is_empty() {
            line.push(separator.clone());
        }
        used += extra + len;
        line.extend(part);
    }
    Line::from(line)
}

fn or_dash(value: Option<f64>, show: impl Fn(f64) -> String) -> String {
    value.map_or("-".into(), show)
}

pub fn health(app: &App, width: u16) -> Line<'static> {
    let h = &app.health;
    let t = &app.theme;
    let trouble = |bad: bool| if bad { t.alarm() } else { Style::new() };
    let mut parts = vec![
        vec![
            Span::styled("agent", t.header()),
            Span::raw(format!(" up {}", format::uptime(h.uptime_seconds))),
        ],
        vec![Span::raw(format!(
            "events {}/s",
            or_dash(h.events_per_s, format::rate)
        ))],
        vec![Span::styled(
            format!(
                "drops {} ({}/s)",
                h.drops_total,
                or_dash(h.drops_per_s, format::rate)
            ),
            // Red while the probe is losing events, yellow for past losses.
            match h.drops_per_s {
                Some(rate) if rate > 0.0 => t.alarm(),
                _ if h.drops_total > 0 => t.warning(),
                _ => Style::new(),
            },
        )],
        vec![Span::raw(format!(
            "cpu {}%",
            or_dash(h.cpu_percent, |p| format!("{p:.1}"))
        ))],
        vec![Span::raw(format!(
            "rss {}",
            format::bytes(h.resident_bytes as f64)
        ))],
        vec![Span::styled(
            format!("lost closes {}", h.lost_closes),
            trouble(h.lost_closes > 0),
        )],
        vec![Span::styled(
            format!("series {}/{}", h.series, h.series_limit),
            trouble(h.series_limit > 0 && h.series >= h.series_limit),
        )],
    ];
    if h.reloads_failed > 0 {
        parts.push(vec![Span::styled(
            format!("failed reloads {}", h.reloads_failed),
            t.alarm(),
        )]);
    }
    segments(parts, width, Span::styled(" │ ", t.dim()))
}

/// What the body shows, or why the figures are stale.
pub fn status(app: &App) -> Line<'static> {
    let t = &app.theme;
    let since = app
        .snapshot()
        .map_or("-".into(), |s| format::utc_time_of_day(s.taken_at_unix_ms));
    if let Some(error) = &app.error {
        let every = humantime::format_duration(app.interval);
        return Line::styled(
            format!("⚠ {error} (retrying every {every}; figures from {since} UTC)"),
            t.alarm(),
        );
    }
    let filter = |f: &str| {
        if f.is_empty() {
            String::new()
        } else {
            format!("  filter \"{f}\"")
        }
    };
    // `shown/all`, the filter and the order of a table.
    let table = |title: &'static str, shown: usize, all: usize, f: &str| {
        let arrow = if app.sort.descending { "▼" } else { "▲" };
        vec![
            Span::styled(title, t.header()),
            Span::raw(format!(
                " {shown}/{all}{}  by {}{arrow}",
                filter(f),
                app.sort.key.label(),
            )),
        ]
    };
    let mut line = match app.view {
        View::Services => table(
            "SERVICES",
            app.visible_services().len(),
            app.rows.len(),
            &app.service_filter,
        ),
        View::Backends => match app.selected_service() {
            Some(s) => vec![
                Span::styled("BACKENDS", t.header()),
                Span::raw(format!(
                    " of {} {} ({})  SHARE since kmesh-top started",
                    s.name, s.vip, s.policy
                )),
            ],
            None => vec![Span::styled("BACKENDS", t.header())],
        },
        View::Calls => {
            let (shown, all) = (app.visible_calls().len(), app.calls.len());
            let mut spans = table("CALLS", shown, all, &app.calls_filter);
            spans.push(Span::raw("  client workload → service"));
            spans
        }
        View::Feed => {
            let mut spans = vec![
                Span::styled("CONNECTIONS", t.header()),
                Span::raw(format!(
                    " {} (newest {CAPACITY} kept){}",
                    app.feed.visible(&app.feed_filter).count(),
                    filter(&app.feed_filter),
                )),
            ];
            if app.feed.paused() {
                spans.push(Span::styled(
                    format!("  PAUSED, {} new held", app.feed.held()),
                    t.warning(),
                ));
            }
            let lost = app.feed.missed_by_agent + app.feed.dropped_while_paused;
            if lost > 0 {
                spans.push(Span::styled(format!("  {lost} not shown"), t.warning()));
            }
            spans
        }
    };
    line.push(Span::styled(format!("  at {since} UTC"), t.dim()));
    Line::from(line)
}

/// The keys of the current view; with `compact` just the letters.
pub fn footer(app: &App, width: u16) -> Line<'static> {
    let t = &app.theme;
    if let Some(typed) = &app.typing {
        return Line::from(vec![
            Span::styled("/", t.key()),
            Span::raw(format!("{typed}█  ")),
            Span::styled("Enter", t.key()),
            Span::raw(" apply  "),
            Span::styled("Esc", t.key()),
            Span::raw(" clear"),
        ]);
    }
    let full = keys(app, false);
    let fits = full.iter().map(|s| s.width()).sum::<usize>() <= width as usize;
    Line::from(if fits { full } else { keys(app, true) })
}

fn keys(app: &App, compact: bool) -> Vec<Span<'static>> {
    let t = &app.theme;
    let mut keys: Vec<(&str, &str)> = vec![("q", "quit"), ("?", "help")];
    match app.view {
        View::Services => keys.extend([
            ("/", "filter"),
            ("⏎", "backends"),
            ("c", "feed"),
            ("w", "calls"),
        ]),
        View::Backends => keys.extend([("Esc", "back"), ("c", "feed"), ("w", "calls")]),
        View::Calls => keys.extend([("/", "filter"), ("w", "back"), ("c", "feed")]),
        View::Feed => {
            let pause = if app.feed.paused() { "resume" } else { "pause" };
            keys.extend([("/", "filter"), ("space", pause), ("c", "back")]);
        }
    }
    let mut spans = Vec::new();
    for (key, label) in keys {
        spans.push(Span::styled(key.to_string(), t.key()));
        spans.push(Span::raw(format!(" {label}  ")));
    }
    if app.view != View::Feed {
        spans.push(Span::raw("sort:"));
        for sort in SortKey::ALL {
            spans.push(Span::raw(" "));
            spans.push(Span::styled(sort.key().to_string(), t.key()));
            if !compact {
                spans.push(Span::raw(format!(" {}", sort.label())));
            }
        }
    }
    spans
}
