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
            "1.03ms",
            "1.49ms",
            "1.59ms",
            "99µs",
            "156K",
            "39K",
            "0",
            "2",
            "0"
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
    let last_header = header.rfind("RST/s").expect("RST/s header") + "RST/s".len();
    for row in &services[1..] {
        assert_eq!(
            row.chars().count(),
            header[..last_header].chars().count(),
            "{row}"
        );
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
