//! Who calls whom: the calls view (`w`), `--once --calls`, and the
//! workload names in the feed and the backends view, from the scripted
//! snapshots of `common` (their calls are described on `snapshot`).
mod common;

use common::*;
use crossterm::event::KeyCode;
use kmesh_top::{fetch::Poll, once};

const SOURCES: [&str; 3] = ["front/web", "jobs/batch", "unknown"];

/// The rows of the calls table as (source, service), top to bottom.
fn pairs(screen: &[String]) -> Vec<(String, String)> {
    screen
        .iter()
        .filter(|l| SOURCES.iter().any(|s| l.starts_with(&format!("{s} "))))
        .map(|l| {
            let mut words = l.split_whitespace();
            let source = words.next().unwrap_or_default().to_string();
            (source, words.next().unwrap_or_default().to_string())
        })
        .collect()
}

fn pair_names(screen: &[String]) -> Vec<String> {
    pairs(screen)
        .into_iter()
        .map(|(source, service)| format!("{source} → {service}"))
        .collect()
}

/// The one row of `source` calling `service`.
fn call_row<'a>(screen: &'a [String], source: &str, service: &str) -> &'a str {
    let found: Vec<&String> = screen
        .iter()
        .filter(|l| l.starts_with(&format!("{source} ")) && l.contains(&format!(" {service} ")))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{source} → {service} in\n{}",
        screen.join("\n")
    );
    found[0]
}

#[test]
fn the_calls_view_shows_each_pair_with_interval_rates_errors_and_destinations() {
    let mut app = app(true);
    press(&mut app, "w");
    for (width, height) in [(80, 24), (200, 50)] {
        let screen = screen(&app, width, height);
        let all = screen.join("\n");
        assert!(screen[1].contains("CALLS 4/4"), "{all}");
        let header = line_with(&screen, "SOURCE");
        for column in ["SERVICE", "NEW/s", "P99", "ERR/s", "DESTINATIONS"] {
            assert!(header.contains(column), "{column} at {width}: {header}");
        }
        let web = call_row(&screen, "front/web", "reviews");
        for figure in [" 30 ", "1.54ms", " 6 ", "shop/reviews-v1"] {
            assert!(
                web.contains(figure),
                "{figure:?} at {width}x{height}:\n{all}"
            );
        }
        let batch = call_row(&screen, "jobs/batch", "reviews");
        for figure in [" 10 ", "365µs", " 0 ", "shop/reviews-v2"] {
            assert!(
                batch.contains(figure),
                "{figure:?} at {width}x{height}:\n{all}"
            );
        }
        assert!(!batch.contains("reviews-v1"), "{all}");
        let outside = call_row(&screen, "unknown", "ratings");
        for figure in [" 250 ", "6.25ms", "shop/ratings-v1"] {
            assert!(
                outside.contains(figure),
                "{figure:?} at {width}x{height}:\n{all}"
            );
        }
        // New in the later snapshot: no interval to take a rate over.
        let new = call_row(&screen, "jobs/batch", "details");
        assert!(new.contains(" - "), "{all}");
        let footer = &screen[height as usize - 1];
        for key in ["/ filter", "w back", "c feed", "sort:"] {
            assert!(footer.contains(key), "{key:?}: {footer}");
        }
    }
    let wide = screen(&app, 200, 50);
    let web = call_row(&wide, "front/web", "reviews");
    for figure in ["shop/reviews-v1,shop/reviews-v2", "94µs", "source", " 4 "] {
        assert!(web.contains(figure), "{figure:?}: {web}");
    }
    assert!(call_row(&wide, "unknown", "ratings").contains("destination"));
}

#[test]
fn calls_sort_by_their_figures_and_names() {
    let mut app = app(true);
    press(&mut app, "w");
    assert_eq!(
        pair_names(&screen(&app, 80, 24)),
        [
            "front/web → reviews",
            "jobs/batch → details",
            "jobs/batch → reviews",
            "unknown → ratings"
        ]
    );
    press(&mut app, "r");
    assert_eq!(
        pair_names(&screen(&app, 80, 24)),
        [
            "unknown → ratings",
            "front/web → reviews",
            "jobs/batch → reviews",
            "jobs/batch → details"
        ]
    );
    assert!(line_with(&screen(&app, 80, 24), "SOURCE").contains("NEW/s▼"));
    press(&mut app, "e");
    assert_eq!(pair_names(&screen(&app, 80, 24))[0], "front/web → reviews");
    press(&mut app, "l");
    assert_eq!(
        pair_names(&screen(&app, 80, 24))[..3],
        [
            "unknown → ratings",
            // Nothing in the interval: its p99 since the series began, 5.00ms*.
            "jobs/batch → details",
            "front/web → reviews"
        ]
    );
    // v: by service, then source.
    press(&mut app, "v");
    assert_eq!(
        pairs(&screen(&app, 80, 24))
            .into_iter()
            .map(|(_, service)| service)
            .collect::<Vec<_>>(),
        ["details", "ratings", "reviews", "reviews"]
    );
    press(&mut app, "n");
    press(&mut app, "n");
    assert_eq!(pair_names(&screen(&app, 80, 24))[0], "unknown → ratings");
}

#[test]
fn a_calls_filter_matches_sources_services_and_destinations() {
    let mut app = app(true);
    press(&mut app, "w/batch");
    press_code(&mut app, KeyCode::Enter);
    assert_eq!(
        pair_names(&screen(&app, 80, 24)),
        ["jobs/batch → details", "jobs/batch → reviews"]
    );
    assert!(screen(&app, 80, 24)[1].contains("CALLS 2/4  filter \"batch\""));
    press_code(&mut app, KeyCode::Esc);
    press(&mut app, "/reviews-v1");
    press_code(&mut app, KeyCode::Enter);
    assert_eq!(pair_names(&screen(&app, 80, 24)), ["front/web → reviews"]);
    press_code(&mut app, KeyCode::Esc);
    press(&mut app, "/RATINGS");
    press_code(&mut app, KeyCode::Enter);
    assert_eq!(pair_names(&screen(&app, 80, 24)), ["unknown → ratings"]);
    press_code(&mut app, KeyCode::Esc);
    press(&mut app, "/nobody");
    press_code(&mut app, KeyCode::Enter);
    line_with(
        &screen(&app, 80, 24),
        "no call matches \"nobody\" (Esc clears the filter)",
    );
    press_code(&mut app, KeyCode::Esc);
    assert_eq!(pairs(&screen(&app, 80, 24)).len(), 4);
    // The services keep their own filter.
    press(&mut app, "w");
    assert!(screen(&app, 80, 24)[1].starts_with("SERVICES 3/3"));
}

#[test]
fn w_goes_to_the_calls_and_back_and_the_cursor_follows_a_pair() {
    let mut app = app(true);
    press(&mut app, "G"); // reviews
    press_code(&mut app, KeyCode::Enter);
    press(&mut app, "w");
    assert!(screen(&app, 80, 24)[1].starts_with("CALLS"));
    press(&mut app, "w");
    assert!(screen(&app, 80, 24)[1].contains("BACKENDS of reviews"));
    press(&mut app, "w");
    // c from the calls opens the feed, c again comes back to the calls.
    press(&mut app, "c");
    assert!(screen(&app, 80, 24)[1].starts_with("CONNECTIONS"));
    press(&mut app, "c");
    assert!(screen(&app, 80, 24)[1].starts_with("CALLS"));

    press(&mut app, "jj");
    let selected = app.selected_call_index(&app.visible_calls());
    assert_eq!(selected, Some(2));
    // A re-sort keeps the cursor on jobs/batch → reviews.
    press(&mut app, "r");
    let visible = app.visible_calls();
    let at = app.selected_call_index(&visible).unwrap();
    assert_eq!(
        (visible[at].source.as_str(), visible[at].service.as_str()),
        ("jobs/batch", "reviews")
    );
    press_code(&mut app, KeyCode::Esc);
    assert!(screen(&app, 80, 24)[1].contains("BACKENDS of reviews"));
    press(&mut app, "?");
    let help = screen(&app, 80, 24).join("\n");
    assert!(help.contains("who calls whom"), "{help}");
    assert!(
        help.contains("times in UTC"),
        "the help still fits:\n{help}"
    );
}

#[test]
fn once_calls_prints_one_table_of_the_pairs() {
    let text = once::calls_text(&snapshot(false), &snapshot(true));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "a header and four calls:\n{text}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header[..3], ["SOURCE", "SERVICE", "REPORTER"]);
    assert_eq!(header.last(), Some(&"DESTINATIONS"));
    let row = |source: &str, service: &str| -> Vec<(String, String)> {
        let values = lines
            .iter()
            .find(|l| l.starts_with(&format!("{source} ")) && l.contains(&format!(" {service} ")))
            .unwrap_or_else(|| panic!("{source} → {service} in\n{text}"));
        header
            .iter()
            .map(|h| h.to_string())
            .zip(values.split_whitespace().map(String::from))
            .collect()
    };
    let get = |row: &[(String, String)], column: &str| {
        row.iter()
            .find(|(h, _)| h == column)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let web = row("front/web", "reviews");
    for (column, value) in [
        ("REPORTER", "source"),
        ("ACTIVE", "4"),
        ("NEW/s", "30"),
        ("P99", "1.54ms"),
        ("RTT99", "94µs"),
        ("ERR/s", "6"),
        ("OPENED", "230"),
        ("FAILED", "2"),
        ("DESTINATIONS", "shop/reviews-v1,shop/reviews-v2"),
    ] {
        assert_eq!(get(&web, column), value, "{column}:\n{text}");
    }
    let outside = row("unknown", "ratings");
    assert_eq!(get(&outside, "REPORTER"), "destination");
    assert_eq!(get(&outside, "NEW/s"), "250");
    assert_eq!(get(&outside, "ERR/s"), "0");
    assert_eq!(get(&row("jobs/batch", "details"), "NEW/s"), "-");
    // The default --once output keeps its three tables; backends name
    // their workload last.
    let all = once::text(&snapshot(false), &snapshot(true));
    assert_eq!(all.split("\n\n").count(), 3, "{all}");
    let backend = all
        .lines()
        .find(|l| l.contains("10.0.0.2:9080"))
        .expect("a backend row");
    assert!(backend.ends_with("  shop/reviews-v2"), "{backend}");
}

#[test]
fn the_feed_and_the_backends_name_the_workloads() {
    let mut app = app(true);
    // No workload in the records yet: no column saying nothing.
    press(&mut app, "c");
    assert!(!screen(&app, 200, 50).join("\n").contains("WORKLOADS"));
    app.on_poll(Poll {
        snapshot: Some(snapshot(true)),
        records: vec![named_connection(3, "10.0.0.2:9080")],
        ..Poll::default()
    });
    for width in [100, 200] {
        let screen = screen(&app, width, 30);
        let row = line_with(&screen, "40003");
        assert!(
            row.contains("front/web → shop/reviews-v2"),
            "at {width}:\n{}",
            screen.join("\n")
        );
    }
    // Wide enough for the VIP as well.
    assert!(line_with(&screen(&app, 200, 50), "40003").contains("→ 198.18.0.10:9080 →"));
    press(&mut app, "/reviews-v2");
    press_code(&mut app, KeyCode::Enter);
    let filtered = screen(&app, 200, 50).join("\n");
    assert!(
        filtered.contains("40003") && !filtered.contains("40002"),
        "{filtered}"
    );

    let mut backends = common::app(true);
    press(&mut backends, "G");
    press_code(&mut backends, KeyCode::Enter);
    for (width, height) in [(80, 24), (200, 50)] {
        let screen = screen(&backends, width, height);
        assert!(line_with(&screen, "WEIGHT").contains("WORKLOAD"));
        assert!(row(&screen, "10.0.0.1:9080").contains("shop/reviews-v1"));
        assert!(row(&screen, "10.0.0.2:9080").contains("shop/reviews-v2"));
    }
}
