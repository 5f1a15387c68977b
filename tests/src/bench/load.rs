//! The traffic of the benchmark: servers (echo and sink) and the loads that
//! time them. Each runs in a process of its own, placed in the network
//! namespace and cgroup of its side, so the kernel sees its sockets where a
//! pod's would be.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long an operation may take before the load counts it as failed: a
/// broken path (nothing routes the VIP) must fail the run, not hang it.
const IO_TIMEOUT: Duration = Duration::from_secs(3);
const BULK_CHUNK: usize = 128 * 1024;

/// Latency percentiles of one load, in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        Self {
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// What one load did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LoadReport {
    /// Completed operations (requests, connections) after the warm-up.
    pub ops: u64,
    pub failures: u64,
    /// The first failure, to say what broke.
    pub first_error: Option<String>,
    pub seconds: f64,
    /// Operations per second.
    pub rate: f64,
    pub latency: Latency,
    /// Bytes the server received (bulk loads).
    pub bytes: u64,
}

/// Which load to run against `target`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Load {
    /// Requests of `payload` bytes echoed back, one at a time on each of
    /// `connections` persistent connections.
    RequestResponse { payload: usize, connections: usize },
    /// A new connection per 1-byte request, from `workers` threads; `rate`
    /// paces them (connections per second over all workers; 0: flat out).
    Connections { workers: usize, rate: f64 },
    /// One connection writing as fast as it can; the sink counts the bytes.
    Bulk,
}

/// Runs `load` for `warmup` (not recorded) and then `duration`.
pub fn run(target: SocketAddr, load: Load, warmup: Duration, duration: Duration) -> LoadReport {
    match load {
        Load::RequestResponse {
            payload,
            connections,
        } => request_response(target, payload, connections.max(1), warmup, duration),
        Load::Connections { workers, rate } => {
            connections(target, workers.max(1), rate, warmup, duration)
        }
        Load::Bulk => bulk(target, warmup, duration),
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// What the workers of one load share.
struct Tally {
    latency: Histogram<u64>,
    ops: u64,
    failures: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency: histogram(),
            ops: 0,
            failures: 0,
            first_error: None,
        }
    }

    fn fail(&mut self, what: String) {
        self.failures += 1;
        self.first_error.get_or_insert(what);
    }

    fn merge(&mut self, other: Tally) {
        self.latency.add(&other.latency).expect("same bounds");
        self.ops += other.ops;
        self.failures += other.failures;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn report(self, seconds: f64) -> LoadReport {
        LoadReport {
            ops: self.ops,
            failures: self.failures,
            first_error: self.first_error,
            seconds,
            rate: self.ops as f64 / seconds,
            latency: Latency::of(&self.latency),
            bytes: 0,
        }
    }
}

fn connect(target: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&target, IO_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// Runs `worker` on `threads` threads until the deadline; each gets the
/// time recording starts and the time to stop.
fn on_threads(
    threads: usize,
    warmup: Duration,
    duration: Duration,
    worker: impl Fn(usize, Instant, Instant) -> Tally + Sync,
) -> LoadReport {
    let start = Instant::now();
    let (record_from, until) = (start + warmup, start + warmup + duration);
    let total = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let worker = &worker;
                s.spawn(move || worker(i, record_from, until))
            })
            .collect();
        let mut total = Tally::new();
        for h in handles {
            total.merge(h.join().expect("load worker panicked"));
        }
        total
    });
    let seconds = Instant::now()
        .saturating_duration_since(record_from)
        .as_secs_f64();
    total.report(seconds.max(f64::EPSILON))
}

fn request_response(
    target: SocketAddr,
    payload: usize,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> LoadReport {
    on_threads(connections, warmup, duration, |_, record_from, until| {
        let mut tally = Tally::new();
        let mut stream = match connect(target) {
            Ok(s) => s,
            Err(e) => {
                tally.fail(format!("connecting to {target}: {e}"));
                return tally;
            }
        };
        let request = vec![0x5a; payload];
        let mut reply = vec![0; payload];
        loop {
            let t0 = Instant::now();
            if t0 >= until {
                return tally;
            }
            let done = stream
                .write_all(&request)
                .and_then(|()| stream.read_exact(&mut reply));
            if let Err(e) = done {
                tally.fail(format!("request on {target}: {e}"));
                return tally;
            }
            if t0 >= record_from {
                tally.ops += 1;
                let _ = tally.latency.record(t0.elapsed().as_nanos() as u64);
            }
        }
    })
}

/// One connection: connect, a 1-byte request and its echo, close.
fn one_connection(target: SocketAddr) -> std::io::Result<()> {
    let mut stream = connect(target)?;
    stream.write_all(&[1])?;
    let mut byte = [0u8];
    stream.read_exact(&mut byte)
}

fn connections(
    target: SocketAddr,
    workers: usize,
    rate: f64,
    warmup: Duration,
    duration: Duration,
) -> LoadReport {
    // Paced workers share one schedule, so the rate holds whatever each
    // connection takes.
    let next = Mutex::new(0u64);
    let start = Instant::now();
    on_threads(workers, warmup, duration, |_, record_from, until| {
        let mut tally = Tally::new();
        loop {
            if rate > 0.0 {
                let n = {
                    let mut next = next.lock().unwrap_or_else(|p| p.into_inner());
                    *next += 1;
                    *next - 1
                };
                let due = start + Duration::from_secs_f64(n as f64 / rate);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            let t0 = Instant::now();
            if t0 >= until {
                return tally;
            }
            match one_connection(target) {
                Ok(()) if t0 >= record_from => {
                    tally.ops += 1;
                    let _ = tally.latency.record(t0.elapsed().as_nanos() as u64);
                }
                Ok(()) => {}
                Err(e) => tally.fail(format!("connection to {target}: {e}")),
            }
        }
    })
}

fn bulk(target: SocketAddr, warmup: Duration, duration: Duration) -> LoadReport {
    let fail = |what: String| LoadReport {
        failures: 1,
        first_error: Some(what),
        ..LoadReport::default()
    };
    let mut stream = match connect(target) {
        Ok(s) => s,
        Err(e) => return fail(format!("connecting to {target}: {e}")),
    };
    let chunk = vec![0xa5; BULK_CHUNK];
    // The sink reports the bytes it has read whenever asked; the warm-up's
    // share is what it had read when the measured part began.
    let write_for = |stream: &mut TcpStream, d: Duration| -> std::io::Result<()> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            stream.write_all(&chunk)?;
        }
        Ok(())
    };
    if let Err(e) = write_for(&mut stream, warmup) {
        return fail(format!("writing to {target}: {e}"));
    }
    let start = Instant::now();
    let mut sent = 0u64;
    let until = start + duration;
    while Instant::now() < until {
        if let Err(e) = stream.write_all(&chunk) {
            return fail(format!("writing to {target}: {e}"));
        }
        sent += BULK_CHUNK as u64;
    }
    // Everything written has been read once the sink answers the shutdown.
    if let Err(e) = stream.shutdown(std::net::Shutdown::Write) {
        return fail(format!("shutting down the write side to {target}: {e}"));
    }
    let mut total = [0u8; 8];
    if let Err(e) = stream.read_exact(&mut total) {
        return fail(format!("reading the sink's byte count from {target}: {e}"));
    }
    let seconds = start.elapsed().as_secs_f64();
    let received = u64::from_le_bytes(total);
    if received < sent {
        return fail(format!(
            "the sink at {target} read {received} bytes of the {sent} written"
        ));
    }
    LoadReport {
        ops: 1,
        seconds,
        rate: sent as f64 / seconds,
        bytes: sent,
        ..LoadReport::default()
    }
}

/// What [`open_many`] reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HeldReport {
    pub opened: usize,
    pub failures: u64,
    pub first_error: Option<String>,
}

/// Opens `count` idle connections, round robin over `targets`; they close
/// when the returned streams are dropped.
pub fn open_many(targets: &[SocketAddr], count: usize) -> (Vec<TcpStream>, HeldReport) {
    let mut streams = Vec::with_capacity(count);
    let mut report = HeldReport::default();
    for target in targets.iter().cycle().take(count) {
        match TcpStream::connect_timeout(target, IO_TIMEOUT) {
            Ok(s) => streams.push(s),
            Err(e) => {
                report.failures += 1;
                report
                    .first_error
                    .get_or_insert(format!("connecting to {target}: {e}"));
            }
        }
    }
    report.opened = streams.len();
    (streams, report)
}

/// Serves the echo protocol on `echo` (every byte read is written back)
/// and the sink on `sink` (bytes are read and counted; after the client's
/// shutdown the count goes back as a little-endian u64). Returns once every
/// address listens; the tasks serve until the runtime ends.
pub async fn serve(echo: &[SocketAddr], sink: &[SocketAddr]) -> anyhow::Result<Vec<ServeTask>> {
    let mut tasks = Vec::new();
    for (addrs, handler) in [(echo, Handler::Echo), (sink, Handler::Sink)] {
        for &addr in addrs {
            let listener = bind(addr).with_context(|| format!("listening on {addr}"))?;
            tasks.push(tokio::spawn(accept_loop(listener, handler)));
        }
    }
    Ok(tasks)
}

pub type ServeTask = tokio::task::JoinHandle<()>;

/// A listener with a backlog deep enough for a burst of new connections.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

#[derive(Clone, Copy)]
enum Handler {
    Echo,
    Sink,
}

async fn accept_loop(listener: tokio::net::TcpListener, handler: Handler) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let _ = match handler {
                        Handler::Echo => echo(stream).await,
                        Handler::Sink => sink(stream).await,
                    };
                });
            }
            // Out of descriptors, or a connection reset before it was
            // accepted: the listener itself is fine.
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

async fn echo(mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
    }
}

async fn sink(mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; BULK_CHUNK];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return stream.write_all(&total.to_le_bytes()).await;
        }
        total += n as u64;
    }
}
