//! The most recent closed connections, for the admin API's feed. Kept with
//! shared label strings so the data path pays no allocation beyond the
//! ring's own slot; readers copy out what they page through.
use std::{collections::VecDeque, net::SocketAddr, sync::Arc, time::SystemTime};

use kmesh_common::{ConnEvent, direction, event_flags};

use super::{Direction, SeriesKey, peers::WorkloadLabels};
use crate::addr::socket_addr;

/// Closed connections kept.
pub const RECENT_KEPT: usize = 4096;

#[derive(Clone, Debug)]
pub struct ClosedConnection {
    /// 1 for the first connection the agent saw close, then one more each.
    pub seq: u64,
    pub closed_at: SystemTime,
    pub direction: Direction,
    pub service: Arc<str>,
    pub backend: Arc<str>,
    /// What the client dialled, when known.
    pub vip: Option<SocketAddr>,
    pub source: SocketAddr,
    pub source_workload: Arc<WorkloadLabels>,
    pub destination_workload: Arc<WorkloadLabels>,
    pub duration_us: u64,
    pub connect_latency_us: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub srtt_us: u32,
    pub min_rtt_us: u32,
    pub retransmits: u32,
    pub close_reason: u8,
}

pub struct RecentConnections {
    ring: VecDeque<ClosedConnection>,
    capacity: usize,
    /// Sequence number of the newest record (0: none yet).
    last_seq: u64,
}

impl RecentConnections {
    pub fn new(capacity: usize) -> Self {
        Self {
            ring: VecDeque::with_capacity(capacity),
            capacity,
            last_seq: 0,
        }
    }

    /// Keeps a closed connection; `vip` is what its client dialled, when known.
    pub fn push(&mut self, ev: &ConnEvent, key: &SeriesKey, vip: Option<SocketAddr>) {
        if self.capacity == 0 {
            return;
        }
        if self.ring.len() == self.capacity {
            self.ring.pop_front();
        }
        self.last_seq += 1;
        let inbound = ev.direction == direction::INBOUND;
        let routed_vip = (ev.flags & event_flags::ROUTED != 0)
            .then(|| socket_addr(ev.route.orig_addr, ev.route.family, ev.route.orig_port));
        let source = if inbound {
            socket_addr(ev.remote_addr, ev.family, ev.remote_port)
        } else {
            socket_addr(ev.local_addr, ev.family, ev.local_port)
        };
        self.ring.push_back(ClosedConnection {
            seq: self.last_seq,
            closed_at: SystemTime::now(),
            direction: key.direction,
            service: key.service.clone(),
            backend: key.backend.clone(),
            vip: routed_vip.or(vip),
            source,
            source_workload: key.source.clone(),
            destination_workload: key.destination.clone(),
            duration_us: ev.ts_ns.saturating_sub(ev.start_ns) / 1000,
            connect_latency_us: ev.connect_latency_ns / 1000,
            bytes_sent: ev.bytes_sent,
            bytes_received: ev.bytes_received,
            srtt_us: ev.srtt_us,
            min_rtt_us: ev.min_rtt_us,
            retransmits: ev.total_retrans,
            close_reason: ev.close_reason,
        });
    }

    /// Sequence number of the newest record (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Sequence number of the oldest record kept (`last_seq() + 1`: none).
    pub fn oldest_seq(&self) -> u64 {
        self.ring.front().map_or(self.last_seq + 1, |r| r.seq)
    }

    /// Copies of the records after sequence number `after`, oldest first,
    /// at most `limit`.
    pub fn copy_after(&self, after: u64, limit: usize) -> Vec<ClosedConnection> {
        self.ring
            .iter()
            .skip_while(|r| r.seq <= after)
            .take(limit)
            .cloned()
            .collect()
    }
}
