//! Rendering: a pure function of [`App`], so tests draw on a `TestBackend`.
mod backends;
mod bars;
mod calls;
mod columns;
mod feed;
mod help;
mod services;

use ratatui::{
    Frame,
    layout::{Constraint, Layout},
    widgets::{Paragraph, Wrap},
};

use crate::app::{App, View};

/// An error in the status line may take this many rows, so the whole
/// message (the socket path, the likely cause) stays readable.
const MAX_STATUS_ROWS: u16 = 3;

pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    let status = bars::status(app);
    let status_rows = match app.error {
        Some(_) => (status.width() as u16)
            .div_ceil(area.width.max(1))
            .clamp(1, MAX_STATUS_ROWS),
        None => 1,
    };
    let [health_area, status_area, body, footer_area] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(status_rows),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(bars::health(app, health_area.width), health_area);
    frame.render_widget(
        Paragraph::new(status).wrap(Wrap { trim: false }),
        status_area,
    );
    match app.view {
        View::Services => services::draw(frame, body, app),
        View::Backends => backends::draw(frame, body, app),
        View::Feed => feed::draw(frame, body, app),
        View::Calls => calls::draw(frame, body, app),
    }
    frame.render_widget(bars::footer(app, footer_area.width), footer_area);
    if app.help {
        help::draw(frame, area, app);
    }
}
