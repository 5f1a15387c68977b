//! The dashboard as the user sees it, drawn on a `TestBackend` from two
//! fixed snapshots and driven through `App::on_key`.
mod common;

use common::*;
use crossterm::event::KeyCode;
use kmesh_top::fetch::Poll;
use ratatui::style::Color;

const SIZES: [(u16, u16); 2] = [(80, 24), (200, 50)];

#[test]
fn services_table_shows_interval_rates_and_quantiles_at_80x24_and_200x50() {
    let app = app(true);
    for (width, height) in SIZES {
        let screen = screen(&app, width, height);
        let all = screen.join("\n");
        let reviews = row(&screen, "reviews");
        for figure in ["198.18.0.10:9080", " 7 ", " 40 ", "1.54ms", "94µs", " 2 "] {
            assert!(
                reviews.contains(figure),
                "{figure:?} at {width}x{height} in\n{all}"
            );
        }
        let ratings = row(&screen, "ratings");
        for figure in [" 250 ", "6.25ms"] {
            assert!(
                ratings.contains(figure),
                "{figure:?} at {width}x{height} in\n{all}"
            );
        }
        // Idle in the interval: the quantile since the agent started, marked.
        assert!(row(&screen, "details").contains("5.00ms*"), "{all}");

        let health = &screen[0];
        for figure in ["events 500/s", "drops 5 (2/s)", "cpu 5.0%", "rss 50M"] {
            assert!(
                health.contains(figure),
                "{figure:?} at {width}x{height}: {health}"
            );
        }
        let footer = &screen[height as usize - 1];
        for key in ["q quit", "? help", "/ filter", "c feed", "sort:"] {
            assert!(
                footer.contains(key),
                "{key:?} at {width}x{height}: {footer}"
            );
        }
    }
}

#[test]
fn narrow_terminals_drop_the_least_important_columns() {
    let app = app(true);
    let narrow = screen(&app, 80, 24);
    let header = line_with(&narrow, "VIP:PORT");
    for kept in ["VIP:PORT", "ACTIVE", "NEW/s", "P99", "RTT99", "FAIL/s"] {
        assert!(header.contains(kept), "{kept:?} missing: {header}");
    }
    for dropped in ["POLICY", "P90", "RETR/s"] {
        assert!(
            !header.contains(dropped),
            "{dropped:?} should not fit: {header}"
        );
    }
    assert!(
        narrow[23].contains("sort: n v p a r l t b x e"),
        "compact keys: {}",
        narrow[23]
    );

    let wide = screen(&app, 200, 50);
    let header = line_with(&wide, "VIP:PORT");
    for column in [
        "POLICY", "P50", "P90", "P99", "IN/s", "OUT/s", "RETR/s", "RST/s",
    ] {
        assert!(header.contains(column), "{column:?} missing: {header}");
    }
    assert!(wide[49].contains("n name"), "full key names: {}", wide[49]);
}

const SERVICES: [&str; 3] = ["reviews", "ratings", "details"];

#[test]
fn sort_keys_order_the_rows_and_reverse_on_a_second_press() {
    let mut app = app(true);
    assert_eq!(
        order(&screen(&app, 80, 24), &SERVICES),
        ["details", "ratings", "reviews"]
    );
    press(&mut app, "r");
    assert_eq!(
        order(&screen(&app, 80, 24), &SERVICES),
        ["ratings", "reviews", "details"]
    );
    assert!(line_with(&screen(&app, 80, 24), "VIP:PORT").contains("NEW/s▼"));
    press(&mut app, "r");
    assert_eq!(
        order(&screen(&app, 80, 24), &SERVICES),
        ["details", "reviews", "ratings"]
    );
    press(&mut app, "l");
    assert_eq!(
        order(&screen(&app, 80, 24), &SERVICES),
        ["ratings", "details", "reviews"]
    );
    press(&mut app, "a");
    assert_eq!(
        order(&screen(&app, 80, 24), &SERVICES),
        ["reviews", "ratings", "details"]
    );
    press(&mut app, "e");
    assert_eq!(order(&screen(&app, 200, 50), &SERVICES)[0], "reviews");
}

#[test]
fn a_filter_applies_on_enter_and_esc_clears_it() {
    let mut app = app(true);
    press(&mut app, "/rev");
    let typing = screen(&app, 80, 24);
    assert_eq!(
        order(&typing, &SERVICES).len(),
        3,
        "nothing applies before Enter"
    );
    assert!(
        typing[23].contains("/rev"),
        "the footer echoes the filter: {}",
        typing[23]
    );
    press_code(&mut app, KeyCode::Enter);
    assert_eq!(order(&screen(&app, 80, 24), &SERVICES), ["reviews"]);

    press_code(&mut app, KeyCode::Esc);
    assert_eq!(order(&screen(&app, 80, 24), &SERVICES).len(), 3);

    // The VIP matches too.
    press(&mut app, "/0.20:");
    press_code(&mut app, KeyCode::Enter);
    assert_eq!(order(&screen(&app, 80, 24), &SERVICES), ["ratings"]);
}

#[test]
fn a_filter_that_matches_nothing_says_so_and_how_to_clear_it() {
    let mut app = app(true);
    press(&mut app, "/xyz");
    press_code(&mut app, KeyCode::Enter);
    for (width, height) in SIZES {
        let screen = screen(&app, width, height);
        line_with(
            &screen,
            "no service matches \"xyz\" (Esc clears the filter)",
        );
    }
    press_code(&mut app, KeyCode::Esc);
    let cleared = screen(&app, 80, 24);
    assert_eq!(order(&cleared, &SERVICES).len(), 3);
    assert!(
        !cleared.join("\n").contains("matches"),
        "{}",
        cleared.join("\n")
    );

    press(&mut app, "c/xyz");
    press_code(&mut app, KeyCode::Enter);
    line_with(
        &screen(&app, 80, 24),
        "no connection matches \"xyz\" (Esc clears the filter)",
    );
    press_code(&mut app, KeyCode::Esc);
    assert!(
        screen(&app, 80, 24).join("\n").contains("40002"),
        "Esc clears the feed's filter"
    );
}

#[test]
fn enter_shows_the_backends_with_weight_and_observed_share() {
    let mut app = app(true);
    press(&mut app, "G"); // reviews is last by name
    press_code(&mut app, KeyCode::Enter);
    for (width, height) in SIZES {
        let screen = screen(&app, width, height);
        let all = screen.join("\n");
        assert!(screen[1].contains("BACKENDS of reviews"), "{all}");
        let first = row(&screen, "10.0.0.1:9080");
        for figure in ["3 (75.0%)", "70.0%", " 28 ", "1.54ms"] {
            assert!(
                first.contains(figure),
                "{figure:?} at {width}x{height}:\n{all}"
            );
        }
        let second = row(&screen, "10.0.0.2:9080");
        for figure in ["1 (25.0%)", "30.0%", " 12 ", "365µs"] {
            assert!(
                second.contains(figure),
                "{figure:?} at {width}x{height}:\n{all}"
            );
        }
        assert!(
            all.contains("10.0.0.1:9080 new connections/s, last 1m: now 28"),
            "{all}"
        );
        assert!(
            all.contains("10.0.0.1:9080 connect p99, last 1m: now 1.54ms"),
            "{all}"
        );
        assert!(!all.contains("ratings"), "{all}");
    }
    press(&mut app, "j");
    assert!(
        screen(&app, 80, 24)
            .join("\n")
            .contains("10.0.0.2:9080 connect p99")
    );
    press_code(&mut app, KeyCode::Esc);
    assert_eq!(order(&screen(&app, 80, 24), &SERVICES).len(), 3);
}

#[test]
fn the_feed_shows_closed_connections_newest_first_and_pauses() {
    let mut app = app(true);
    press(&mut app, "c");
    let wide = screen(&app, 200, 50);
    let newest = wide
        .iter()
        .position(|l| l.contains("10.0.9.9:40002 → 198.18.0.10:9080 → 10.0.0.2:9080"));
    let older = wide
        .iter()
        .position(|l| l.contains("10.0.9.9:40001 → 198.18.0.10:9080 → 10.0.0.1:9080"));
    assert!(newest.is_some() && newest < older, "{}", wide.join("\n"));
    let row = line_with(&wide, "40002");
    for figure in [
        "01:02:03.006",
        "reviews",
        "12.3ms",
        "1.5K",
        "4.0K",
        "150µs",
        "rst_received",
    ] {
        assert!(row.contains(figure), "{figure:?} in {row}");
    }
    let narrow = screen(&app, 80, 24);
    assert!(
        line_with(&narrow, "40002").contains("rst_received"),
        "{}",
        narrow.join("\n")
    );
    assert!(narrow[23].contains("space pause"), "{}", narrow[23]);

    press(&mut app, " ");
    app.on_poll(Poll {
        snapshot: Some(snapshot(true)),
        records: vec![connection(3, "10.0.0.1:9080", "fin")],
        ..Poll::default()
    });
    let paused = screen(&app, 80, 24);
    assert!(paused[1].contains("PAUSED, 1 new held"), "{}", paused[1]);
    assert!(
        !paused.join("\n").contains("40003"),
        "paused: nothing new shown"
    );
    press(&mut app, " ");
    let resumed = screen(&app, 80, 24);
    assert!(resumed[3].contains("40003"), "{}", resumed.join("\n"));

    press(&mut app, "/rst");
    press_code(&mut app, KeyCode::Enter);
    let filtered = screen(&app, 80, 24).join("\n");
    assert!(
        filtered.contains("40002") && !filtered.contains("40001") && !filtered.contains("40003"),
        "{filtered}"
    );

    press(&mut app, "c");
    assert_eq!(
        order(&screen(&app, 80, 24), &SERVICES).len(),
        3,
        "c goes back"
    );
}

#[test]
fn help_lists_the_keys_and_fits_80x24() {
    let mut app = app(true);
    press(&mut app, "?");
    let all = screen(&app, 80, 24).join("\n");
    for text in [
        "q  Ctrl-C",
        "space",
        "sort by name",
        "the same key again reverses",
        "since kmesh-top started",
        "times in UTC",
    ] {
        assert!(all.contains(text), "{text:?} in\n{all}");
    }
    press_code(&mut app, KeyCode::Esc);
    assert!(
        !screen(&app, 80, 24)
            .join("\n")
            .contains("the same key again reverses")
    );
    press(&mut app, "q");
    assert!(app.quit);
}

#[test]
fn an_unreachable_agent_shows_in_the_status_line_and_figures_stay() {
    let mut app = app(true);
    app.on_poll(Poll {
        error: Some(
            "the agent at /run/kmesh-rs/admin.sock is not accepting connections: is it running?"
                .into(),
        ),
        ..Poll::default()
    });
    let screen = screen(&app, 80, 24);
    let all = screen.join("\n");
    assert!(all.contains("is not accepting"), "{all}");
    assert!(all.contains("retrying every 1s"), "{all}");
    assert!(row(&screen, "reviews").contains("1.54ms"), "{all}");
    app.on_poll(Poll {
        snapshot: Some(snapshot(true)),
        ..Poll::default()
    });
    assert!(
        !screen_text(&app).contains("retrying"),
        "a good poll clears the error"
    );
}

fn screen_text(app: &kmesh_top::app::App) -> String {
    screen(app, 80, 24).join("\n")
}

#[test]
fn no_color_leaves_every_cell_in_the_default_colors() {
    let views: [&str; 5] = ["", "G\n", "c", "c ", "?"];
    for color in [true, false] {
        let mut colored_cells = 0;
        for keys in views {
            let mut app = app(color);
            app.error = None;
            for key in keys.chars() {
                match key {
                    '\n' => press_code(&mut app, KeyCode::Enter),
                    c => press(&mut app, &c.to_string()),
                }
            }
            for (width, height) in SIZES {
                let buffer = render(&app, width, height);
                colored_cells += buffer
                    .content
                    .iter()
                    .filter(|c| {
                        c.fg != Color::Reset
                            || c.bg != Color::Reset
                            || c.underline_color != Color::Reset
                    })
                    .count();
            }
        }
        let mut broken = app(color);
        broken.on_poll(Poll {
            error: Some("the agent went away".into()),
            ..Poll::default()
        });
        let buffer = render(&broken, 80, 24);
        colored_cells += buffer
            .content
            .iter()
            .filter(|c| c.fg != Color::Reset || c.bg != Color::Reset)
            .count();
        if color {
            assert!(colored_cells > 0, "with colour on, something is coloured");
        } else {
            assert_eq!(colored_cells, 0, "NO_COLOR: no cell may have a colour");
        }
    }
}

#[test]
fn a_restarted_agent_shows_no_rates_for_one_interval_and_keeps_the_shares() {
    let mut app = app(true);
    let mut restarted = snapshot(false);
    restarted.uptime_seconds = 1.0;
    restarted.taken_at_unix_ms = T0 + 2000;
    app.on_poll(Poll {
        snapshot: Some(restarted),
        ..Poll::default()
    });
    let services = screen(&app, 80, 24);
    let reviews: Vec<&str> = row(&services, "reviews").split_whitespace().collect();
    assert_eq!(reviews[3], "-", "no new/s across a restart: {reviews:?}");
    assert!(services[0].contains("events -/s"), "{}", services[0]);

    press(&mut app, "G");
    press_code(&mut app, KeyCode::Enter);
    let backends = screen(&app, 80, 24);
    assert!(
        row(&backends, "10.0.0.1:9080").contains("70.0%"),
        "{}",
        backends.join("\n")
    );
}

#[test]
fn one_service_name_on_two_vips_is_two_rows_the_cursor_reaches() {
    // A service on two ports: one name, two VIPs, counters of its own each.
    let twice = |later: bool| {
        let mut s = snapshot(later);
        let mut other = s.services[0].clone();
        other.vip = "198.18.9.9:9443".into();
        other.outbound.opened /= 2;
        s.services.insert(1, other);
        s
    };
    let mut app = kmesh_top::app::App::new(
        kmesh_top::theme::Theme { color: false },
        std::time::Duration::from_secs(1),
    );
    for later in [false, true] {
        app.on_poll(Poll {
            snapshot: Some(twice(later)),
            ..Poll::default()
        });
    }
    let visible = app.visible_services();
    let rows = visible.len();
    let name = snapshot(false).services[0].name.clone();
    let same = visible.iter().filter(|s| s.name == name).count();
    assert_eq!(same, 2, "both VIPs listed");
    // Walk down past the first row: the cursor must reach every row.
    for _ in 0..rows {
        press_code(&mut app, KeyCode::Down);
    }
    let last = app.selected_service_index(&app.visible_services());
    assert_eq!(
        last,
        Some(rows - 1),
        "the cursor is not stuck on a duplicate name"
    );
}
