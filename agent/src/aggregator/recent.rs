//! The most recent closed connections, for the admin API's feed. Kept with
//! shared label strings so the data path pays no allocation beyond the
//! ring's own slot; turned into API records only when a client reads.
use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use kmesh_api::v1;
use kmesh_common::{ConnEvent, direction, event_flags};

use super::{Direction, SeriesKey, close_reason_name};
use crate::addr::socket_addr;

struct Recent {
    seq: u64,
    closed_at: SystemTime,
    direction: Direction,
    service: Arc<str>,
    backend: Arc<str>,
    vip: Option<SocketAddr>,
    source: SocketAddr,
    duration_us: u64,
    connect_latency_us: u64,
    bytes_sent: u64,
    bytes_received: u64,
    srtt_us: u32,
    retransmits: u32,
    close_reason: u8,
}

pub struct RecentConnections {
    ring: VecDeque<Recent>,
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
        self.ring.push_back(Recent {
            seq: self.last_seq,
            closed_at: SystemTime::now(),
            direction: key.direction,
            service: key.service.clone(),
            backend: key.backend.clone(),
            vip: routed_vip.or(vip),
            source,
            duration_us: ev.ts_ns.saturating_sub(ev.start_ns) / 1000,
            connect_latency_us: ev.connect_latency_ns / 1000,
            bytes_sent: ev.bytes_sent,
            bytes_received: ev.bytes_received,
            srtt_us: ev.srtt_us,
            retransmits: ev.total_retrans,
            close_reason: ev.close_reason,
        });
    }

    /// Records with a sequence number above `after`, oldest first, at most `limit`.
    pub fn page(&self, after: u64, limit: usize) -> v1::ConnectionsPage {
        // A cursor beyond the newest record comes from before this agent
        // started (a restart the client did not notice): start it over.
        let after = if after > self.last_seq { 0 } else { after };
        let oldest = self.ring.front().map_or(self.last_seq + 1, |r| r.seq);
        let missed = oldest
            .saturating_sub(after + 1)
            .min(self.last_seq.saturating_sub(after));
        let records: Vec<v1::Connection> = self
            .ring
            .iter()
            .skip_while(|r| r.seq <= after)
            .take(limit)
            .map(to_api)
            .collect();
        v1::ConnectionsPage {
            next_after: records.last().map_or(after.max(oldest - 1), |r| r.seq),
            missed,
            records,
        }
    }
}

fn to_api(r: &Recent) -> v1::Connection {
    v1::Connection {
        seq: r.seq,
        closed_at_unix_ms: r
            .closed_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        direction: r.direction.into(),
        service: r.service.to_string(),
        vip: r.vip.map(|v| v.to_string()),
        backend: r.backend.to_string(),
        source: r.source.to_string(),
        duration_us: r.duration_us,
        connect_latency_us: r.connect_latency_us,
        bytes_sent: r.bytes_sent,
        bytes_received: r.bytes_received,
        srtt_us: r.srtt_us,
        retransmits: r.retransmits,
        close_reason: close_reason_name(r.close_reason).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SeriesKey {
        SeriesKey {
            service: Arc::from("echo"),
            backend: Arc::from("127.0.0.2:8080"),
            direction: Direction::Outbound,
        }
    }

    #[test]
    fn pages_follow_the_cursor_and_say_what_was_missed() {
        let mut r = RecentConnections::new(3);
        let ev = ConnEvent {
            close_reason: kmesh_common::close_reason::RST_RECEIVED,
            ..ConnEvent::default()
        };
        for _ in 0..5 {
            r.push(&ev, &key(), None);
        }
        // Kept: 3, 4, 5. A client at 1 missed 2 (seq 2 fell out).
        let p = r.page(1, 10);
        assert_eq!(
            p.records.iter().map(|c| c.seq).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!((p.missed, p.next_after), (1, 5));
        assert_eq!(p.records[0].close_reason, "rst_received");
        let p = r.page(5, 10);
        assert_eq!((p.records.len(), p.missed, p.next_after), (0, 0, 5));
        let p = r.page(3, 1);
        assert_eq!((p.records[0].seq, p.next_after), (4, 4));
        // A new client starts from 0 and gets everything kept.
        assert_eq!(r.page(0, 10).missed, 2);
        // A cursor from a previous agent's life starts over.
        let p = r.page(99, 10);
        assert_eq!((p.records.len(), p.next_after), (3, 5));
    }
}
