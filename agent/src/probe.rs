//! Reads the probe's ring buffer into the aggregator, on a thread of its own
//! so that a slow control plane or scrape never delays it.
use std::{thread::JoinHandle, time::Duration};

use std::collections::HashSet;

use aya::maps::{HashMap, Map, MapData, MapError, PerCpuArray, RingBuf};
use kmesh_common::{ConnState, refused};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::watch,
};
use tracing::{error, warn};

use crate::{aggregator::SharedAggregator, spans::SpanSink};

#[derive(Debug, thiserror::Error)]
pub enum ProbeReaderError {
    #[error("probe map {map}")]
    Map {
        map: &'static str,
        source: aya::maps::MapError,
    },
    #[error("watching the ring buffer: {0}")]
    Io(std::io::Error),
}

// Not `#[from]`, which would make the error its source as well: the reader
// thread logs its error with `%`, so the message carries the cause.
impl From<std::io::Error> for ProbeReaderError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// How often the per-CPU drop counter is summed into the aggregator and
/// expired series are swept.
const DROPS_POLL: Duration = Duration::from_secs(1);
/// How often connections the agent holds open are checked against the
/// kernel's table, to close those whose close record was lost.
const LOST_CLOSE_SWEEP: Duration = Duration::from_secs(60);
/// The probe wakes the reader only once a quarter of the ring buffer is
/// filled; records below that are read at this interval, so none waits
/// longer. One wake-up per record cost more CPU than the probe's own work
/// (docs/benchmarks.md).
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(50);

/// Bytes waiting in a ring buffer of `ringbuf_bytes` that make the probe
/// wake the reader.
pub fn wakeup_bytes(ringbuf_bytes: u32) -> u32 {
    ringbuf_bytes / 4
}

/// The kernel maps the reader owns: the probe's, and orchestration's
/// refused-connects counter, which it sums with the drop counter.
pub struct ProbeMaps {
    pub events: Map,
    pub drops: Map,
    pub refused: Map,
    /// The probe's per-socket table: a socket missing from it is closed.
    pub conns: Map,
}

/// Starts the reader; it drains what is left and returns when `stop` turns true.
pub fn spawn(
    maps: ProbeMaps,
    aggregator: SharedAggregator,
    spans: Option<SpanSink>,
    stop: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, ProbeReaderError> {
    let ring = RingBuf::try_from(maps.events).map_err(|source| ProbeReaderError::Map {
        map: "events",
        source,
    })?;
    let drops: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(maps.drops).map_err(|source| ProbeReaderError::Map {
            map: "drops",
            source,
        })?;
    let refused: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(maps.refused).map_err(|source| ProbeReaderError::Map {
            map: "refused connects",
            source,
        })?;
    let counters = KernelCounters { drops, refused };
    let conns: HashMap<MapData, u64, ConnState> =
        HashMap::try_from(maps.conns).map_err(|source| ProbeReaderError::Map {
            map: "conns",
            source,
        })?;
    let handle = std::thread::Builder::new()
        .name("probe-reader".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime");
            if let Err(e) = runtime.block_on(read_loop(ring, counters, conns, aggregator, spans, stop)) {
                error!(error = %e, "probe reader stopped; no more connection records will be counted");
            }
        })?;
    Ok(handle)
}

/// Per-CPU counters the kernel programs keep, summed into the aggregator.
struct KernelCounters {
    drops: PerCpuArray<MapData, u64>,
    refused: PerCpuArray<MapData, u64>,
}

async fn read_loop(
    ring: RingBuf<MapData>,
    counters: KernelCounters,
    conns: HashMap<MapData, u64, ConnState>,
    aggregator: SharedAggregator,
    mut spans: Option<SpanSink>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ProbeReaderError> {
    // SAFETY: the ring buffer owns its map fd, which stays open and the same
    // for as long as the AsyncFd owns the ring buffer.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    let mut tick = tokio::time::interval(DROPS_POLL);
    let mut sweep = tokio::time::interval(LOST_CLOSE_SWEEP);
    let mut timed_drain = tokio::time::interval(DRAIN_INTERVAL);
    timed_drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut suspects = HashSet::new();
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), &aggregator, &mut spans);
                guard.clear_ready();
            }
            _ = timed_drain.tick() => drain(fd.get_mut(), &aggregator, &mut spans),
            _ = tick.tick() => {
                publish_counters(&counters, &aggregator);
                aggregator
                    .lock()
                    .expire_series(std::time::Instant::now());
            }
            _ = sweep.tick() => suspects = close_lost(&conns, &aggregator, &mut spans, suspects),
            _ = stop.changed() => {
                drain(fd.get_mut(), &aggregator, &mut spans);
                publish_counters(&counters, &aggregator);
                return Ok(());
            }
        }
    }
}

fn drain(ring: &mut RingBuf<MapData>, aggregator: &SharedAggregator, spans: &mut Option<SpanSink>) {
    let mut agg = aggregator.lock();
    while let Some(item) = ring.next() {
        let Some(ev) = agg.decode(&item) else {
            continue;
        };
        let key = agg.record(&ev);
        if let Some(spans) = spans {
            let key = key.unwrap_or_else(|| agg.series_key(&ev));
            spans.record(&ev, &key);
        }
    }
}

/// Closes connections the agent holds open but the kernel no longer has:
/// their close record was lost (ring buffer full). A socket must be missing
/// at two sweeps in a row, so a close record still on its way is not
/// mistaken for a lost one. Returns this sweep's missing sockets.
fn close_lost(
    conns: &HashMap<MapData, u64, ConnState>,
    aggregator: &SharedAggregator,
    spans: &mut Option<SpanSink>,
    suspects: HashSet<u64>,
) -> HashSet<u64> {
    let open = aggregator.lock().open_cookies();
    let missing: HashSet<u64> = open
        .into_iter()
        .filter(|c| matches!(conns.get(c, 0), Err(MapError::KeyNotFound)))
        .collect();
    let lost: Vec<u64> = missing.intersection(&suspects).copied().collect();
    if !lost.is_empty() {
        aggregator.lock().close_lost(&lost);
        if let Some(spans) = spans {
            spans.forget(&lost);
        }
        warn!(
            connections = lost.len(),
            "closed connections whose close record was lost (ring buffer full?)"
        );
    }
    missing
}

fn publish_counters(counters: &KernelCounters, aggregator: &SharedAggregator) {
    let sum = |map: &PerCpuArray<MapData, u64>, slot: u32, what: &str| match map.get(&slot, 0) {
        Ok(per_cpu) => Some(per_cpu.iter().sum::<u64>()),
        Err(e) => {
            warn!(error = %e, "cannot read the {what} counter");
            None
        }
    };
    let drops = sum(&counters.drops, 0, "ring-buffer drop");
    let no_backends = sum(&counters.refused, refused::NO_BACKENDS, "refused-connects");
    let backend_missing = sum(
        &counters.refused,
        refused::BACKEND_MISSING,
        "refused-connects",
    );
    let mut agg = aggregator.lock();
    if let Some(n) = drops {
        agg.agent.ringbuf_drops = n;
    }
    if let Some(n) = no_backends {
        agg.agent.refused_no_backends = n;
    }
    if let Some(n) = backend_missing {
        agg.agent.refused_backend_missing = n;
    }
}
