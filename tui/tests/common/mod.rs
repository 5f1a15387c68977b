//! Two hand-made snapshots one second apart, with deltas chosen so every
//! figure on screen is known in advance, and helpers to read the screen.
#![allow(dead_code)] // each test file uses a different part

use std::{collections::BTreeMap, time::Duration};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use kmesh_api::v1::{
    AgentHealth, Backend, Call, Connection, Direction, Distribution, Figures, Service, Sketch,
    Snapshot,
};
use kmesh_top::{app::App, fetch::Poll, theme::Theme, ui};
use ratatui::{Terminal, backend::TestBackend, buffer::Buffer};

pub const BOUNDS: [u64; 8] = [100, 200, 400, 800, 1600, 3200, 6400, 12800];
pub const T0: u64 = 1_700_000_000_000;
/// A UTC midnight, so feed times are easy to read.
const MIDNIGHT: u64 = 1_699_920_000_000;

/// Value `j` of those recorded in bucket `index`: spread over the bucket
/// by the golden ratio, the same whatever their number, so a later
/// snapshot's values are an earlier one's and some more.
fn value(index: usize, j: u64) -> u64 {
    let lo = if index == 0 { 0 } else { BOUNDS[index - 1] };
    let hi = BOUNDS.get(index).copied().unwrap_or(2 * lo);
    let spread = (j as f64 * 0.618_033_988_75).fract();
    lo + 1 + (spread * (hi - lo - 1) as f64) as u64
}

/// Cumulative buckets and sketch with `count` values in bucket `index`.
fn recorded(filled: &[(usize, u64)]) -> (Vec<u64>, Sketch) {
    let mut b = vec![0; BOUNDS.len() + 1];
    let mut sketch = Sketch::default();
    for &(i, n) in filled {
        b[i] += n;
        for j in 0..n {
            sketch.record(value(i, j));
        }
    }
    (b, sketch)
}

fn distribution(filled: &[(usize, u64)], cumulative_p99: u64) -> Distribution {
    let (buckets, sketch) = recorded(filled);
    Distribution {
        count: buckets.iter().sum(),
        p50: cumulative_p99 / 2,
        p90: cumulative_p99 * 9 / 10,
        p99: cumulative_p99,
        max: cumulative_p99,
        buckets,
        sketch: Some(sketch),
    }
}

/// Figures with `opened` connections so far, their connect latencies in
/// the given buckets, RTTs all in the first bucket.
fn figures(opened: u64, latency: &[(usize, u64)], active: u64, failed: u64) -> Figures {
    Figures {
        opened,
        active,
        closed: opened - active - failed,
        failed,
        resets: 1,
        timeouts: 0,
        bytes_sent: opened * 1000,
        bytes_received: opened * 4000,
        retransmits: 0,
        close_reasons: BTreeMap::new(),
        connect_latency_us: distribution(latency, 5000),
        rtt_us: distribution(&[(0, opened)], 90),
        duration_us: Distribution::default(),
    }
}

fn sum(a: &Figures, b: &Figures) -> Figures {
    let mut latency = a.connect_latency_us.clone();
    latency
        .buckets
        .resize(b.connect_latency_us.buckets.len(), 0);
    for (x, y) in latency
        .buckets
        .iter_mut()
        .zip(&b.connect_latency_us.buckets)
    {
        *x += y;
    }
    latency.count += b.connect_latency_us.count;
    let mut sketch = latency.sketch.take().unwrap_or_default();
    sketch.merge(
        b.connect_latency_us
            .sketch
            .as_ref()
            .expect("fixtures have sketches"),
    );
    latency.sketch = Some(sketch);
    for (x, y) in [
        (&mut latency.p50, b.connect_latency_us.p50),
        (&mut latency.p90, b.connect_latency_us.p90),
        (&mut latency.p99, b.connect_latency_us.p99),
        (&mut latency.max, b.connect_latency_us.max),
    ] {
        *x = (*x).max(y);
    }
    Figures {
        opened: a.opened + b.opened,
        active: a.active + b.active,
        closed: a.closed + b.closed,
        failed: a.failed + b.failed,
        resets: a.resets + b.resets,
        timeouts: a.timeouts + b.timeouts,
        bytes_sent: a.bytes_sent + b.bytes_sent,
        bytes_received: a.bytes_received + b.bytes_received,
        connect_latency_us: latency,
        rtt_us: distribution(&[(0, a.opened + b.opened)], 90),
        ..Figures::default()
    }
}

/// `later`: the second snapshot, one second after the first.
///
/// In that second (quantiles are the sketches' estimates, within 2% of the
/// exact ones, given in brackets):
/// - reviews (weighted 3:1): 10.0.0.1 +28 connections at 800-1600µs,
///   10.0.0.2 +12 at 200-400µs: 40/s, p50 993µs (989), p90 1.48ms (1466),
///   p99 1.54ms (1555), RTT p99 94µs (95); backend p99s 1.54ms (1555) and
///   365µs (370); observed shares 70% and 30%; +2 failed.
/// - ratings (round robin): +250 at 3200-6400µs: 250/s, p99 6.25ms (6347).
/// - details (random): idle, so its p99 is the cumulative 5.00ms*.
///
/// Backends are workloads `shop/<service>-v<n>`. The calls (see [`calls`]):
/// - front/web → reviews: +30 at 800-1600µs, 30/s, p99 1.54ms (sketch), +2 failed,
///   +3 resets, +1 timeout: 6 errors/s; reached both reviews workloads.
/// - jobs/batch → reviews: +10 at 200-400µs, 10/s, p99 365µs, no errors.
/// - unknown → ratings (seen by the destination): 250/s, p99 6.25ms.
/// - jobs/batch → details: only in the later snapshot, so no rate yet.
pub fn snapshot(later: bool) -> Snapshot {
    let step = u64::from(later);
    let r1 = figures(300 + 28 * step, &[(1, 300), (4, 28 * step)], 5, 2 * step);
    let r2 = figures(100 + 12 * step, &[(1, 100), (2, 12 * step)], 2, 0);
    let ratings = figures(1000 + 250 * step, &[(0, 1000), (6, 250 * step)], 2, 0);
    let details = figures(50, &[(3, 50)], 0, 0);
    let backend = |address: &str, weight, outbound: &Figures| Backend {
        address: address.into(),
        weight,
        workload: Some(backend_workload(address).into()),
        outbound: outbound.clone(),
        inbound: Figures::default(),
    };
    let service = |name: &str, vip: &str, policy: &str, backends: Vec<Backend>| Service {
        name: name.into(),
        vip: vip.into(),
        policy: policy.into(),
        outbound: backends
            .iter()
            .fold(Figures::default(), |total, b| sum(&total, &b.outbound)),
        backends,
    };
    Snapshot {
        version: "v1".into(),
        taken_at_unix_ms: T0 + 1000 * step,
        uptime_seconds: 100.0 + step as f64,
        latency_bounds_us: BOUNDS.to_vec(),
        agent: AgentHealth {
            events_established: 1000 + 500 * step,
            ringbuf_drops: 3 + 2 * step,
            cpu_seconds: 10.0 + 0.05 * step as f64,
            resident_bytes: 50 << 20,
            series: 7,
            series_limit: 10_000,
            ..AgentHealth::default()
        },
        services: vec![
            service(
                "reviews",
                "198.18.0.10:9080",
                "weighted",
                vec![
                    backend("10.0.0.1:9080", 3, &r1),
                    backend("10.0.0.2:9080", 1, &r2),
                ],
            ),
            service(
                "ratings",
                "198.18.0.20:9080",
                "round_robin",
                vec![backend("10.0.1.1:9080", 1, &ratings)],
            ),
            service(
                "details",
                "198.18.0.30:9080",
                "random",
                vec![backend("10.0.2.1:9080", 1, &details)],
            ),
        ],
        other: Vec::new(),
        calls: calls(later),
    }
}

/// The workload each backend address of [`snapshot`] belongs to.
pub fn backend_workload(address: &str) -> &'static str {
    match address {
        "10.0.0.1:9080" => "shop/reviews-v1",
        "10.0.0.2:9080" => "shop/reviews-v2",
        "10.0.1.1:9080" => "shop/ratings-v1",
        _ => "shop/details-v1",
    }
}

fn calls(later: bool) -> Vec<Call> {
    let step = u64::from(later);
    let call = |reporter: &str, source: &str, service: &str, to: &[&str], figures| {
        let (namespace, workload) = source.split_once('/').unwrap_or(("unknown", source));
        Call {
            reporter: reporter.into(),
            source_workload: workload.into(),
            source_namespace: namespace.into(),
            destination_service: service.into(),
            destination_workloads: to.iter().map(|w| w.to_string()).collect(),
            figures,
        }
    };
    let mut web = figures(200 + 30 * step, &[(1, 200), (4, 30 * step)], 4, 2 * step);
    web.resets += 3 * step;
    web.timeouts += step;
    let batch = figures(100 + 10 * step, &[(1, 100), (2, 10 * step)], 1, 0);
    let outside = figures(1000 + 250 * step, &[(0, 1000), (6, 250 * step)], 2, 0);
    let reviews = ["shop/reviews-v1", "shop/reviews-v2"];
    let mut calls = vec![
        call("source", "front/web", "reviews", &reviews, web),
        call("source", "jobs/batch", "reviews", &reviews[1..], batch),
        call(
            "destination",
            "unknown",
            "ratings",
            &["shop/ratings-v1"],
            outside,
        ),
    ];
    if later {
        let new = figures(5, &[(1, 5)], 0, 0);
        let details = call("source", "jobs/batch", "details", &["shop/details-v1"], new);
        calls.push(details);
    }
    calls
}

pub fn connection(seq: u64, backend: &str, close_reason: &str) -> Connection {
    Connection {
        seq,
        closed_at_unix_ms: MIDNIGHT + 3_723_004 + seq,
        direction: Direction::Outbound,
        service: "reviews".into(),
        vip: Some("198.18.0.10:9080".into()),
        backend: backend.into(),
        source: format!("10.0.9.9:{}", 40000 + seq),
        source_workload: None,
        destination_workload: None,
        duration_us: 12_345,
        connect_latency_us: 900,
        bytes_sent: 1536,
        bytes_received: 4096,
        srtt_us: 150,
        min_rtt_us: 120,
        retransmits: 0,
        close_reason: close_reason.into(),
    }
}

/// A connection between two named workloads.
pub fn named_connection(seq: u64, backend: &str) -> Connection {
    Connection {
        source_workload: Some("front/web".into()),
        destination_workload: Some(backend_workload(backend).into()),
        ..connection(seq, backend, "fin")
    }
}

/// A dashboard that has seen both snapshots and two closed connections.
pub fn app(color: bool) -> App {
    let mut app = App::new(Theme { color }, Duration::from_secs(1));
    app.on_poll(Poll {
        snapshot: Some(snapshot(false)),
        ..Poll::default()
    });
    app.on_poll(Poll {
        snapshot: Some(snapshot(true)),
        records: vec![
            connection(1, "10.0.0.1:9080", "fin"),
            connection(2, "10.0.0.2:9080", "rst_received"),
        ],
        ..Poll::default()
    });
    app
}

pub fn press(app: &mut App, keys: &str) {
    for c in keys.chars() {
        app.on_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
    }
}

pub fn press_code(app: &mut App, code: KeyCode) {
    app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
}

pub fn render(app: &App, width: u16, height: u16) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("a test terminal");
    terminal
        .draw(|frame| ui::draw(frame, app))
        .expect("drawing");
    terminal.backend().buffer().clone()
}

pub fn lines(buffer: &Buffer) -> Vec<String> {
    let width = buffer.area.width as usize;
    buffer
        .content
        .chunks(width)
        .map(|row| row.iter().map(|cell| cell.symbol()).collect())
        .collect()
}

pub fn screen(app: &App, width: u16, height: u16) -> Vec<String> {
    lines(&render(app, width, height))
}

/// The one line that mentions `needle`; fails when none or several do.
pub fn line_with<'a>(screen: &'a [String], needle: &str) -> &'a str {
    let found: Vec<&String> = screen.iter().filter(|l| l.contains(needle)).collect();
    assert_eq!(
        found.len(),
        1,
        "{needle:?} on {} lines of\n{}",
        found.len(),
        screen.join("\n")
    );
    found[0]
}

/// The table row that starts with `first`; fails when none or several do.
pub fn row<'a>(screen: &'a [String], first: &str) -> &'a str {
    let found: Vec<&String> = screen.iter().filter(|l| l.starts_with(first)).collect();
    assert_eq!(
        found.len(),
        1,
        "{first:?} starts {} lines of\n{}",
        found.len(),
        screen.join("\n")
    );
    found[0]
}

/// The order in which `names` appear top to bottom.
pub fn order<'a>(screen: &[String], names: &[&'a str]) -> Vec<&'a str> {
    let mut found: Vec<(usize, &str)> = names
        .iter()
        .filter_map(|name| {
            let row = screen.iter().position(|l| {
                l.contains(&format!(" {name} ")) || l.starts_with(&format!("{name} "))
            });
            row.map(|y| (y, *name))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, name)| name).collect()
}
