//! `kmesh-top --once`: plain-text tables from two snapshots.
mod common;

use common::*;
use kmesh_top::once;

fn columns(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

#[test]
fn prints_agent_services_and_backends_with_interval_rates() {
    let text = once::text(&snapshot(false), &snapshot(true));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        columns(lines[0]),
        [
            "UPTIME",
            "EVENTS/s",
            "DROPS",
            "DROPS/s",
            "CPU%",
            "RSS",
            "LOST_CLOSES",
            "SERIES"
        ]
    );
    assert_eq!(
        columns(lines[1]),
        ["1m41s", "500", "5", "2", "5.0", "50M", "0", "7/10000"]
    );

    let reviews = lines
        .iter()
        .find(|l| l.starts_with("reviews "))
        .expect("a reviews row");
    assert_eq!(
        columns(reviews),
        [
            "reviews",
            "198.18.0.10:9080",
            "weighted",
            "7",
            "40",
            "993µs",
            "1.48ms",
            "1.54ms",
            "94µs",
            "156K",
            "39K",
            "0",
            "2",
            "0",
            "440",
            "431",
            "2",
            "1.7M",
            "430K"
        ]
    );
    let details = lines
        .iter()
        .find(|l| l.starts_with("details "))
        .expect("a details row");
    assert!(details.contains("5.00ms*"), "{details}");

    let backend = lines
        .iter()
        .find(|l| l.contains("10.0.0.2:9080"))
        .expect("a backend row");
    assert_eq!(
        columns(lines[lines.len() - 5])[..5],
        ["SERVICE", "BACKEND", "WEIGHT", "WANT", "SHARE"]
    );
    assert_eq!(
        columns(backend)[..6],
        ["reviews", "10.0.0.2:9080", "1", "25.0%", "30.0%", "2"]
    );
    // Figures line up under their headers: every row of a table is as wide.
    let services: Vec<&&str> = lines
        .iter()
        .skip_while(|l| !l.starts_with("SERVICE "))
        .take(4)
        .collect();
    let header = services[0];
    assert!(header.ends_with("  OUT"), "{header}");
    for row in &services[1..] {
        assert_eq!(row.chars().count(), header.chars().count(), "{row}");
    }
}

#[test]
fn a_restart_between_the_snapshots_leaves_no_rates() {
    let mut restarted = snapshot(true);
    restarted.uptime_seconds = 1.0;
    let text = once::text(&snapshot(false), &restarted);
    let reviews = text
        .lines()
        .find(|l| l.starts_with("reviews "))
        .expect("a reviews row");
    assert_eq!(columns(reviews)[4], "-", "{reviews}");
}

/// The row of the table whose header starts with `header` that starts
/// with `first`: column title -> value.
fn row(text: &str, header: &str, first: &str) -> std::collections::HashMap<String, String> {
    let table: Vec<&str> = text
        .split("\n\n")
        .find(|t| t.starts_with(header))
        .unwrap_or_else(|| panic!("no table headed {header:?} in\n{text}"))
        .lines()
        .collect();
    let values = table
        .iter()
        .find(|l| l.starts_with(first))
        .unwrap_or_else(|| panic!("no {first} row in\n{text}"));
    columns(table[0])
        .into_iter()
        .map(String::from)
        .zip(columns(values).into_iter().map(String::from))
        .collect()
}

#[test]
fn totals_since_the_agent_started_remain_after_the_traffic_stops() {
    // A second with no traffic: every counter as it was.
    let before = snapshot(true);
    let mut idle = snapshot(true);
    idle.uptime_seconds += 1.0;
    idle.taken_at_unix_ms += 1000;
    let text = once::text(&before, &idle);

    let reviews = row(&text, "SERVICE  VIP:PORT", "reviews ");
    assert_eq!(reviews["NEW/s"], "0", "{text}");
    for (column, total) in [
        ("OPENED", "440"),
        ("CLOSED", "431"),
        ("FAILED", "2"),
        ("IN", "1.7M"),
        ("OUT", "430K"),
    ] {
        assert_eq!(
            reviews.get(column).map(String::as_str),
            Some(total),
            "{column}: {text}"
        );
    }
    let backend = row(&text, "SERVICE  BACKEND", "reviews  10.0.0.1:9080");
    for (column, total) in [
        ("OPENED", "328"),
        ("CLOSED", "321"),
        ("FAILED", "2"),
        ("IN", "1.3M"),
        ("OUT", "320K"),
    ] {
        assert_eq!(
            backend.get(column).map(String::as_str),
            Some(total),
            "{column}: {text}"
        );
    }
}
