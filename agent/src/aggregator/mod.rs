//! The aggregator: the one place probe records become figures. Prometheus,
//! OTLP and the admin API all read copies of them ([`view`]).
mod counters;
mod distribution;
pub mod families;
pub mod istio;
mod labels;
pub mod peers;
mod recent;
pub mod sketch;
pub mod synthetic;
pub mod view;

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant, SystemTime},
};

use kmesh_common::{ConnEvent, close_reason, event_kind};

pub use self::{
    distribution::{Distribution, DistributionRef},
    labels::{ConfiguredBackend, ConfiguredService, Direction, LabelTable, SeriesKey},
    recent::{ClosedConnection, RECENT_KEPT, RecentConnections},
};

/// The aggregator, shared by the probe reader and its readers.
pub type SharedAggregator = crate::shared::Shared<Aggregator>;

use self::families::HISTOGRAMS;
use crate::model::{Mesh, UNKNOWN};

pub const CLOSE_REASONS: [(u8, &str); 6] = [
    (close_reason::FIN, "fin"),
    (close_reason::RST_SENT, "rst_sent"),
    (close_reason::RST_RECEIVED, "rst_received"),
    (close_reason::TIMEOUT, "timeout"),
    (close_reason::CONNECT_REFUSED, "connect_refused"),
    (close_reason::CONNECT_FAILED, "connect_failed"),
];

pub fn close_reason_name(code: u8) -> &'static str {
    CLOSE_REASONS
        .iter()
        .find(|(c, _)| *c == code)
        .map_or("unknown", |(_, n)| n)
}

/// A series' counts: what the exporters copy out of [`SeriesStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeriesCounts {
    pub opened: u64,
    /// Closed after being established, by close reason index in [`CLOSE_REASONS`].
    pub closed: [u64; CLOSE_REASONS.len()],
    /// Never established, by close reason index.
    pub failed: [u64; CLOSE_REASONS.len()],
    pub active: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub retransmits: u64,
}

impl SeriesCounts {
    pub fn closed_total(&self) -> u64 {
        self.closed.iter().sum()
    }
    pub fn failed_total(&self) -> u64 {
        self.failed.iter().sum()
    }
}

/// A series' figures. The aggregator keeps each boxed, so its map's
/// spare capacity costs a pointer per slot, not the whole struct.
#[derive(Clone)]
pub struct SeriesStats {
    /// When the series began counting: the start of its cumulative values.
    pub created: SystemTime,
    /// The last record that touched it; a removed backend's series expires
    /// some time after this.
    pub last_active: Instant,
    totals: Totals,
    /// Sum, min and max of each distribution, in the order of [`HISTOGRAMS`].
    extremes: [distribution::Extremes; HISTOGRAMS.len()],
    /// Every counter that counts by index, in one allocation: set `2f`
    /// holds the bucket counts of family `f` (a position in
    /// [`HISTOGRAMS`]), set `2f + 1` its sketch's bins, the last set the
    /// connections closed and failed by reason ([`CLOSES`]). A box each
    /// would cost the allocator's overhead a dozen times; the reasons in
    /// words would cost 96 bytes where most are never counted.
    counters: counters::CounterBlock<{ CLOSES + 1 }>,
}

/// The block set of a series' closes: counter `r` counts connections
/// closed for reason `r` (an index in [`CLOSE_REASONS`]), counter
/// `CLOSE_REASONS.len() + r` connections that failed for it.
const CLOSES: usize = 2 * HISTOGRAMS.len();

/// A series' counts but its closes.
#[derive(Clone, Copy, Default)]
struct Totals {
    opened: u64,
    active: u64,
    bytes_sent: u64,
    bytes_received: u64,
    retransmits: u64,
}

impl SeriesStats {
    fn new() -> Self {
        Self {
            created: SystemTime::now(),
            last_active: Instant::now(),
            totals: Totals::default(),
            extremes: Default::default(),
            counters: Default::default(),
        }
    }

    /// Records `v` in the distribution at `family` (a position in
    /// [`HISTOGRAMS`]), bucketed at that family's limits.
    pub fn record(&mut self, family: usize, v: u64) {
        let limits = HISTOGRAMS[family].limits;
        let counts = &mut self.counters.set_mut(2 * family);
        if distribution::record_counts(&mut self.extremes[family], counts, v, limits) {
            sketch::record_in(&mut self.counters.set_mut(2 * family + 1), v);
        }
    }

    /// Counts a connection that ended for reason `reason` (an index in
    /// [`CLOSE_REASONS`]): closed, or failed when it was never established.
    fn count_close(&mut self, reason: usize, established: bool) {
        let at = if established {
            reason
        } else {
            CLOSE_REASONS.len() + reason
        };
        counters::Store::add(&mut self.counters.set_mut(CLOSES), at as u16, 1);
    }

    pub fn counts(&self) -> SeriesCounts {
        let t = self.totals;
        let closes = self.counters.set(CLOSES);
        SeriesCounts {
            opened: t.opened,
            closed: std::array::from_fn(|r| closes.get(r as u16)),
            failed: std::array::from_fn(|r| closes.get((CLOSE_REASONS.len() + r) as u16)),
            active: t.active,
            bytes_sent: t.bytes_sent,
            bytes_received: t.bytes_received,
            retransmits: t.retransmits,
        }
    }

    /// The distribution at `family` (a position in [`HISTOGRAMS`]).
    pub fn distribution(&self, family: usize) -> DistributionRef<'_> {
        DistributionRef::new(
            self.extremes[family],
            self.counters.set(2 * family),
            self.counters.set(2 * family + 1),
        )
    }

    /// Bytes the series owns on the heap besides this struct (which the
    /// aggregator boxes): its bucket counters and sketches.
    pub fn heap_bytes(&self) -> usize {
        self.counters.heap_bytes()
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
    /// Connections counted in an overflow series because the series limit was reached.
    pub series_overflow: u64,
    /// Series dropped after their service or backend left the config.
    pub series_expired: u64,
    /// Connections closed by the agent because the kernel no longer had
    /// them and their close record never arrived.
    pub lost_closes: u64,
    /// connect()s to a VIP refused (EPERM) because the service had no
    /// backends, and because its backend vanished twice within one connect().
    pub refused_no_backends: u64,
    pub refused_backend_missing: u64,
}

/// Bounds on the aggregator's label sets.
#[derive(Clone, Copy, Debug)]
pub struct SeriesLimits {
    /// Series (service, backend, direction) kept at most; connections beyond
    /// go to an overflow series per direction.
    pub max_series: usize,
    /// How long the series of a removed service or backend stays after its
    /// last connection closed, so scrapers read its final values.
    pub expiry: Duration,
}

impl Default for SeriesLimits {
    fn default() -> Self {
        Self {
            max_series: 10_000,
            expiry: Duration::from_secs(300),
        }
    }
}

pub struct Aggregator {
    labels: LabelTable,
    series: HashMap<SeriesKey, Box<SeriesStats>>,
    live: HashMap<u64, LiveConn>,
    limits: SeriesLimits,
    recent: RecentConnections,
    pub agent: AgentStats,
    started: Instant,
    started_at: SystemTime,
}

impl Default for Aggregator {
    fn default() -> Self {
        Self::new(SeriesLimits::default())
    }
}

impl Aggregator {
    pub fn new(limits: SeriesLimits) -> Self {
        Self {
            labels: LabelTable::default(),
            series: HashMap::new(),
            live: HashMap::new(),
            limits,
            recent: RecentConnections::new(RECENT_KEPT),
            agent: AgentStats::default(),
            started: Instant::now(),
            started_at: SystemTime::now(),
        }
    }

    /// The most recent closed connections.
    pub fn recent(&self) -> &RecentConnections {
        &self.recent
    }

    pub fn limits(&self) -> SeriesLimits {
        self.limits
    }

    pub fn labels(&self) -> &LabelTable {
        &self.labels
    }

    /// The series a connection's records go to: its own, or the overflow
    /// series once the limit is reached.
    fn admit(&mut self, key: SeriesKey) -> SeriesKey {
        if self.series.contains_key(&key) {
            return key;
        }
        // Overflow series do not count against the limit.
        let overflow_series = [Direction::Outbound, Direction::Inbound]
            .into_iter()
            .filter(|d| self.series.contains_key(&SeriesKey::overflow(*d)))
            .count();
        if key.is_overflow() || self.series.len() - overflow_series < self.limits.max_series {
            return key;
        }
        self.agent.series_overflow += 1;
        SeriesKey::overflow(key.direction)
    }

    fn stats(&mut self, key: &SeriesKey) -> &mut SeriesStats {
        let stats = self
            .series
            .entry(key.clone())
            .or_insert_with(|| Box::new(SeriesStats::new()));
        stats.last_active = Instant::now();
        stats
    }

    /// Sockets the aggregator holds open.
    pub fn open_cookies(&self) -> Vec<u64> {
        self.live.keys().copied().collect()
    }

    /// Closes connections whose close record was lost: they no longer
    /// count as active, and their series can expire.
    pub fn close_lost(&mut self, cookies: &[u64]) {
        for cookie in cookies {
            if let Some(live) = self.live.remove(cookie) {
                self.agent.lost_closes += 1;
                if let Some(stats) = self.series.get_mut(&live.key) {
                    stats.totals.active = stats.totals.active.saturating_sub(1);
                }
            }
        }
    }

    /// Drops the series of services and backends no longer configured once
    /// they have had no open connection for the expiry time.
    pub fn expire_series(&mut self, now: Instant) {
        let before = self.series.len();
        let (labels, expiry) = (&self.labels, self.limits.expiry);
        self.series.retain(|key, s| {
            key.is_overflow()
                || &*key.service == UNKNOWN
                || s.totals.active > 0
                || now.saturating_duration_since(s.last_active) < expiry
                || labels.is_configured(key)
        });
        self.agent.series_expired += (before - self.series.len()) as u64;
    }

    /// Names the kernel's service ids (given per VIP) by the applied mesh.
    pub fn update_labels(&mut self, mesh: &Mesh, ids: impl Iterator<Item = (SocketAddr, u32)>) {
        self.labels.update(mesh, ids);
    }

    pub fn series(&self) -> impl Iterator<Item = (&SeriesKey, &SeriesStats)> {
        self.series.iter().map(|(k, s)| (k, &**s))
    }

    /// Wall-clock start: where the agent-wide counters begin.
    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Decodes one ring-buffer record; a short one is counted as malformed.
    pub fn decode(&mut self, bytes: &[u8]) -> Option<ConnEvent> {
        if bytes.len() < size_of::<ConnEvent>() {
            self.agent.events_malformed += 1;
            return None;
        }
        // SAFETY: ConnEvent is plain old data and the slice is long enough;
        // read_unaligned copes with any alignment.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<ConnEvent>()) })
    }

    /// Decodes and records one ring-buffer record.
    pub fn record_bytes(&mut self, bytes: &[u8]) {
        if let Some(ev) = self.decode(bytes) {
            self.record(&ev);
        }
    }

    /// The labels a record is named by (before the series limit applies).
    pub fn series_key(&mut self, ev: &ConnEvent) -> SeriesKey {
        self.labels.resolve(ev)
    }

    /// Records one probe record; returns its labels when it had to look
    /// them up (every record but a running total of a known connection), so
    /// the caller does not look them up again.
    pub fn record(&mut self, ev: &ConnEvent) -> Option<SeriesKey> {
        match ev.kind {
            event_kind::ESTABLISHED => {
                self.agent.events_established += 1;
                let key = self.labels.resolve(ev);
                self.open(ev, key.clone());
                Some(key)
            }
            event_kind::PERIODIC => {
                self.agent.events_periodic += 1;
                let key = (!self.live.contains_key(&ev.cookie)).then(|| {
                    // Its established record was lost: count it open now.
                    let key = self.labels.resolve(ev);
                    self.open(ev, key.clone());
                    key
                });
                self.add_totals(ev);
                key
            }
            event_kind::CLOSED => {
                self.agent.events_closed += 1;
                let key = self.labels.resolve(ev);
                self.close(ev, key.clone());
                Some(key)
            }
            _ => {
                self.agent.events_malformed += 1;
                None
            }
        }
    }

    fn open(&mut self, ev: &ConnEvent, key: SeriesKey) {
        let key = self.admit(key);
        let stats = self.stats(&key);
        stats.totals.opened += 1;
        stats.totals.active += 1;
        if ev.connect_latency_ns > 0 {
            stats.record(families::CONNECT_LATENCY, ev.connect_latency_ns / 1000);
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
        let stats = self
            .series
            .entry(live.key.clone())
            .or_insert_with(|| Box::new(SeriesStats::new()));
        stats.last_active = Instant::now();
        let totals = &mut stats.totals;
        totals.bytes_sent += ev.bytes_sent.saturating_sub(live.bytes_sent);
        totals.bytes_received += ev.bytes_received.saturating_sub(live.bytes_received);
        totals.retransmits += u64::from(ev.total_retrans.saturating_sub(live.retransmits));
        live.bytes_sent = live.bytes_sent.max(ev.bytes_sent);
        live.bytes_received = live.bytes_received.max(ev.bytes_received);
        live.retransmits = live.retransmits.max(ev.total_retrans);
    }

    fn close(&mut self, ev: &ConnEvent, key: SeriesKey) {
        let reason_idx = CLOSE_REASONS
            .iter()
            .position(|(c, _)| *c == ev.close_reason)
            .unwrap_or(0);
        let never_established = matches!(
            ev.close_reason,
            close_reason::CONNECT_REFUSED | close_reason::CONNECT_FAILED
        );
        let local = crate::addr::socket_addr(ev.local_addr, ev.family, ev.local_port);
        let vip = (key.direction == Direction::Inbound)
            .then(|| self.labels.vip_of_backend(&local))
            .flatten();
        self.recent.push(ev, &key, vip);
        if never_established {
            let key = self.admit(key);
            self.stats(&key).count_close(reason_idx, false);
            return;
        }
        if !self.live.contains_key(&ev.cookie) {
            self.open(ev, key);
        }
        self.add_totals(ev);
        let live = self.live.remove(&ev.cookie).expect("opened above");
        let stats = self.stats(&live.key);
        stats.totals.active = stats.totals.active.saturating_sub(1);
        stats.count_close(reason_idx, true);
        if ev.srtt_us > 0 {
            stats.record(families::RTT, u64::from(ev.srtt_us));
        }
        if ev.min_rtt_us > 0 && ev.min_rtt_us != u32::MAX {
            stats.record(families::MIN_RTT, u64::from(ev.min_rtt_us));
        }
        let duration_us = ev.ts_ns.saturating_sub(ev.start_ns) / 1000;
        stats.record(families::DURATION, duration_us);
        stats.record(families::SENT, ev.bytes_sent);
        stats.record(families::RECEIVED, ev.bytes_received);
    }
}

#[cfg(test)]
mod attribution_tests;
#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;
