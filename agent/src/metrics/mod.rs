//! The aggregator: the one place probe records become figures. Prometheus,
//! the JSON snapshot and (later) OTLP all read from here.
mod labels;
pub mod snapshot;

use std::{collections::HashMap, time::Instant};

use hdrhistogram::Histogram;
use kmesh_common::{ConnEvent, ServiceKey, close_reason, event_kind};

pub use labels::{Direction, LabelTable, SeriesKey, UNKNOWN};

use crate::model::Mesh;

/// Two significant digits: 1% resolution at ~20 KiB per histogram.
const SIGFIGS: u8 = 2;

pub const CLOSE_REASONS: [(u8, &str); 5] = [
    (close_reason::FIN, "fin"),
    (close_reason::RST_SENT, "rst_sent"),
    (close_reason::RST_RECEIVED, "rst_received"),
    (close_reason::CONNECT_REFUSED, "connect_refused"),
    (close_reason::CONNECT_FAILED, "connect_failed"),
];

pub fn close_reason_name(code: u8) -> &'static str {
    CLOSE_REASONS
        .iter()
        .find(|(c, _)| *c == code)
        .map_or("unknown", |(_, n)| n)
}

/// A histogram with its exact sum (HDR keeps counts, not sums).
#[derive(Clone)]
pub struct Distribution {
    pub hist: Histogram<u64>,
    pub sum: u64,
}

impl Default for Distribution {
    fn default() -> Self {
        Self {
            hist: Histogram::new(SIGFIGS).expect("2 significant figures is valid"),
            sum: 0,
        }
    }
}

impl Distribution {
    pub fn record(&mut self, v: u64) {
        // Auto-resizing histograms only fail on values beyond u64 range math.
        let _ = self.hist.record(v);
        self.sum = self.sum.saturating_add(v);
    }
}

#[derive(Clone, Default)]
pub struct SeriesStats {
    pub opened: u64,
    /// Closed after being established, by close reason index in [`CLOSE_REASONS`].
    pub closed: [u64; CLOSE_REASONS.len()],
    /// Never established, by close reason index.
    pub failed: [u64; CLOSE_REASONS.len()],
    pub active: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub retransmits: u64,
    pub connect_latency_us: Distribution,
    pub srtt_us: Distribution,
    pub min_rtt_us: Distribution,
    pub duration_us: Distribution,
    pub conn_bytes_sent: Distribution,
    pub conn_bytes_received: Distribution,
}

impl SeriesStats {
    pub fn closed_total(&self) -> u64 {
        self.closed.iter().sum()
    }
    pub fn failed_total(&self) -> u64 {
        self.failed.iter().sum()
    }
}

/// Running totals of a connection the aggregator has seen open.
struct LiveConn {
    key: SeriesKey,
    bytes_sent: u64,
    bytes_received: u64,
    retransmits: u32,
}

#[derive(Clone, Copy, Default, Debug)]
pub struct AgentStats {
    pub events_established: u64,
    pub events_closed: u64,
    pub events_periodic: u64,
    pub events_malformed: u64,
    pub ringbuf_drops: u64,
    pub config_reloads_ok: u64,
    pub config_reloads_failed: u64,
    pub services: u64,
}

pub struct Aggregator {
    labels: LabelTable,
    series: HashMap<SeriesKey, SeriesStats>,
    live: HashMap<u64, LiveConn>,
    pub agent: AgentStats,
    started: Instant,
}

impl Default for Aggregator {
    fn default() -> Self {
        Self::new()
    }
}

impl Aggregator {
    pub fn new() -> Self {
        Self {
            labels: LabelTable::default(),
            series: HashMap::new(),
            live: HashMap::new(),
            agent: AgentStats::default(),
            started: Instant::now(),
        }
    }

    pub fn update_labels<'a>(
        &mut self,
        mesh: &Mesh,
        ids: impl Iterator<Item = (&'a ServiceKey, u32)>,
    ) {
        self.labels.update(mesh, ids);
        self.agent.services = mesh.services.len() as u64;
    }

    pub fn series(&self) -> impl Iterator<Item = (&SeriesKey, &SeriesStats)> {
        self.series.iter()
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Decodes and records one ring-buffer record.
    pub fn record_bytes(&mut self, bytes: &[u8]) {
        if bytes.len() < size_of::<ConnEvent>() {
            self.agent.events_malformed += 1;
            return;
        }
        // SAFETY: ConnEvent is plain old data and the slice is long enough;
        // read_unaligned copes with any alignment.
        let ev = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<ConnEvent>()) };
        self.record(&ev);
    }

    pub fn record(&mut self, ev: &ConnEvent) {
        match ev.kind {
            event_kind::ESTABLISHED => {
                self.agent.events_established += 1;
                let key = self.labels.resolve(ev);
                self.open(ev, key);
            }
            event_kind::PERIODIC => {
                self.agent.events_periodic += 1;
                if !self.live.contains_key(&ev.cookie) {
                    // Its established record was lost: count it open now.
                    let key = self.labels.resolve(ev);
                    self.open(ev, key);
                }
                self.add_totals(ev);
            }
            event_kind::CLOSED => {
                self.agent.events_closed += 1;
                self.close(ev);
            }
            _ => self.agent.events_malformed += 1,
        }
    }

    fn open(&mut self, ev: &ConnEvent, key: SeriesKey) {
        let stats = self.series.entry(key.clone()).or_default();
        stats.opened += 1;
        stats.active += 1;
        if ev.connect_latency_ns > 0 {
            stats
                .connect_latency_us
                .record(ev.connect_latency_ns / 1000);
        }
        self.live.insert(
            ev.cookie,
            LiveConn {
                key,
                bytes_sent: 0,
                bytes_received: 0,
                retransmits: 0,
            },
        );
    }

    /// Adds what a connection did since its last record.
    fn add_totals(&mut self, ev: &ConnEvent) {
        let Some(live) = self.live.get_mut(&ev.cookie) else {
            return;
        };
        let stats = self.series.entry(live.key.clone()).or_default();
        stats.bytes_sent += ev.bytes_sent.saturating_sub(live.bytes_sent);
        stats.bytes_received += ev.bytes_received.saturating_sub(live.bytes_received);
        stats.retransmits += u64::from(ev.total_retrans.saturating_sub(live.retransmits));
        live.bytes_sent = live.bytes_sent.max(ev.bytes_sent);
        live.bytes_received = live.bytes_received.max(ev.bytes_received);
        live.retransmits = live.retransmits.max(ev.total_retrans);
    }

    fn close(&mut self, ev: &ConnEvent) {
        let reason_idx = CLOSE_REASONS
            .iter()
            .position(|(c, _)| *c == ev.close_reason)
            .unwrap_or(0);
        let never_established = matches!(
            ev.close_reason,
            close_reason::CONNECT_REFUSED | close_reason::CONNECT_FAILED
        );
        if never_established {
            let key = self.labels.resolve(ev);
            self.series.entry(key).or_default().failed[reason_idx] += 1;
            return;
        }
        if !self.live.contains_key(&ev.cookie) {
            let key = self.labels.resolve(ev);
            self.open(ev, key);
        }
        self.add_totals(ev);
        let live = self.live.remove(&ev.cookie).expect("opened above");
        let stats = self.series.entry(live.key).or_default();
        stats.active = stats.active.saturating_sub(1);
        stats.closed[reason_idx] += 1;
        if ev.srtt_us > 0 {
            stats.srtt_us.record(u64::from(ev.srtt_us));
        }
        if ev.min_rtt_us > 0 && ev.min_rtt_us != u32::MAX {
            stats.min_rtt_us.record(u64::from(ev.min_rtt_us));
        }
        stats
            .duration_us
            .record(ev.ts_ns.saturating_sub(ev.start_ns) / 1000);
        stats.conn_bytes_sent.record(ev.bytes_sent);
        stats.conn_bytes_received.record(ev.bytes_received);
    }
}

#[cfg(test)]
mod tests;
