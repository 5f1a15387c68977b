//! What telemetry costs the data path and the exporters, on a mesh of 1024
//! series: recording a probe record (the baseline),
//! the same with span assembly, the copy taken under the aggregator lock,
//! formatting outside it for Prometheus and OTLP, and the admin API's
//! snapshot (built under the lock). The `pipeline` group is what the
//! probe reader does per ring-buffer record on its one thread (decode the
//! raw bytes, aggregate), as records per second: the rate beyond which the
//! reader falls behind and the ring buffer fills.
use std::{
    hint::black_box,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kmesh_agent::{
    addr::ip_to_words,
    admin::snapshot,
    agent_stats::{AgentFigures, ControlFigures, ControlStats, ExportHealth},
    aggregator::{Aggregator, SeriesLimits, SharedAggregator, synthetic},
    export::{
        otlp::{metrics::requests, settings::HistogramAggregation},
        prometheus,
    },
    model::Mesh,
    spans::{SamplingSettings, SpanAssembler},
};
use kmesh_common::{ConnEvent, close_reason, direction, event_kind};

/// 8 services x 64 backends, both directions: 1024 series.
fn mesh() -> (Mesh, Vec<SocketAddr>) {
    let (mesh, backends) = synthetic::mesh(8 * 64, 64);
    (mesh, backends.into_iter().map(|(_, b)| b).collect())
}

/// A closed connection to `backend`, seen from `dir`.
fn closed(cookie: u64, backend: SocketAddr, dir: u8) -> ConnEvent {
    let (b, family) = ip_to_words(backend.ip());
    let (client, _) = ip_to_words("10.1.0.1".parse().unwrap());
    let (local, local_port, remote, remote_port) = if dir == direction::INBOUND {
        (b, backend.port(), client, 40000 + (cookie % 20000) as u16)
    } else {
        (client, 40000 + (cookie % 20000) as u16, b, backend.port())
    };
    ConnEvent {
        kind: event_kind::CLOSED,
        direction: dir,
        close_reason: close_reason::FIN,
        family,
        cookie,
        local_addr: local,
        local_port,
        remote_addr: remote,
        remote_port,
        start_ns: 1_000,
        ts_ns: 1_000 + 2_000_000 + cookie % 1_000_000,
        connect_latency_ns: 40_000 + cookie % 50_000,
        bytes_sent: 100 + cookie % 10_000,
        bytes_received: 1000 + cookie % 100_000,
        srtt_us: 20 + (cookie % 3000) as u32,
        min_rtt_us: 10,
        ..ConnEvent::default()
    }
}

fn filled() -> (Aggregator, Vec<ConnEvent>) {
    let (mesh, backends) = mesh();
    let mut agg = Aggregator::new(SeriesLimits::default());
    agg.update_labels(&mesh, std::iter::empty());
    let mut events = Vec::new();
    for (i, b) in backends
        .iter()
        .cycle()
        .take(backends.len() * 20)
        .enumerate()
    {
        for dir in [direction::OUTBOUND, direction::INBOUND] {
            events.push(closed(i as u64 * 2 + u64::from(dir), *b, dir));
        }
    }
    for ev in &events {
        agg.record(ev);
    }
    (agg, events)
}

/// The raw bytes of the records `connections` new connections leave in the
/// ring buffer: established then closed, for both ends.
fn ring_records(backends: &[SocketAddr], first_cookie: u64, connections: u64) -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    for n in 0..connections {
        let backend = backends[(n as usize) % backends.len()];
        for dir in [direction::OUTBOUND, direction::INBOUND] {
            let close = closed((first_cookie + n) * 2 + u64::from(dir), backend, dir);
            let established = ConnEvent {
                kind: event_kind::ESTABLISHED,
                close_reason: close_reason::NONE,
                ts_ns: close.start_ns + close.connect_latency_ns,
                bytes_sent: 0,
                bytes_received: 0,
                ..close
            };
            for ev in [established, close] {
                // SAFETY: ConnEvent is plain old data.
                let bytes = unsafe {
                    std::slice::from_raw_parts((&raw const ev).cast::<u8>(), size_of::<ConnEvent>())
                };
                records.push(bytes.to_vec());
            }
        }
    }
    records
}

fn pipeline(c: &mut Criterion) {
    let (mesh, backends) = mesh();
    const CONNECTIONS: u64 = 1024;
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(CONNECTIONS * 4));
    let mut agg = Aggregator::new(SeriesLimits::default());
    agg.update_labels(&mesh, std::iter::empty());
    let mut next = 0u64;
    // Fresh cookies each round, so every record opens or closes a
    // connection the aggregator tracks, as in the ring buffer.
    g.bench_function("decode + aggregate (4 records per connection)", |b| {
        b.iter_batched(
            || {
                next += CONNECTIONS;
                ring_records(&backends, next, CONNECTIONS)
            },
            |records| {
                for r in &records {
                    agg.record_bytes(black_box(r));
                }
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    let (agg, events) = filled();
    assert_eq!(agg.series().count(), 1024);
    let mut g = c.benchmark_group("per record");
    let mut i = 0usize;
    let (mut base, _) = filled();
    g.bench_function("aggregate (baseline)", |b| {
        b.iter(|| {
            i = (i + 1) % events.len();
            base.record(black_box(&events[i]));
        })
    });
    let (mut with_spans, _) = filled();
    let mut assembler = SpanAssembler::new(SamplingSettings {
        ratio: 0.01,
        slow_threshold: Duration::from_millis(200),
    });
    g.bench_function("aggregate + span assembly", |b| {
        b.iter(|| {
            i = (i + 1) % events.len();
            let ev = &events[i];
            let key = with_spans.record(ev);
            let key = key.unwrap_or_else(|| with_spans.series_key(ev));
            black_box(assembler.record(ev, &key));
        })
    });
    g.finish();

    let mut g = c.benchmark_group("export of 1024 series");
    g.bench_function("copy under the lock", |b| {
        b.iter(|| black_box(agg.view(false)))
    });
    g.bench_function("copy under the lock, with the sketches", |b| {
        b.iter(|| black_box(agg.view(true)))
    });
    g.bench_function("admin API snapshot: copy under the lock", |b| {
        b.iter(|| black_box(agg.view_with_sketches(&snapshot::QUANTILE_FAMILIES)))
    });
    let quantiles = agg.view_with_sketches(&snapshot::QUANTILE_FAMILIES);
    g.bench_function(
        "admin API snapshot: built from the copy, lock released",
        |b| b.iter(|| black_box(snapshot::build(&quantiles, ControlFigures::default(), None))),
    );
    let view = agg.view(true);
    let agent = AgentFigures::new(&view, ControlFigures::default(), Default::default());
    g.bench_function("OTLP requests (explicit)", |b| {
        b.iter(|| {
            black_box(requests(
                &view,
                &agent,
                &[],
                HistogramAggregation::Explicit,
                SystemTime::now(),
            ))
        })
    });
    g.bench_function("OTLP requests (exponential)", |b| {
        b.iter(|| {
            black_box(requests(
                &view,
                &agent,
                &[],
                HistogramAggregation::Exponential,
                SystemTime::now(),
            ))
        })
    });
    let registry = prometheus::registry(
        SharedAggregator::new(filled().0),
        ControlStats::default(),
        Arc::new(ExportHealth::default()),
        kmesh_agent::export::MetricNames::Istio,
    );
    g.bench_function("Prometheus scrape (copy + format)", |b| {
        b.iter(|| {
            let mut body = String::new();
            prometheus_client::encoding::text::encode(&mut body, &registry).unwrap();
            black_box(body)
        })
    });
    g.finish();
}

criterion_group!(benches, bench, pipeline);
criterion_main!(benches);
