//! `/v1/connections`: the closed-connection feed, paged by sequence number.
use std::time::UNIX_EPOCH;

use kmesh_api::v1;

use crate::aggregator::{ClosedConnection, RecentConnections, close_reason_name};

/// What a page needs of the ring, copied under the aggregator's lock.
pub struct FeedCopy {
    /// The cursor the copy was taken from.
    after: u64,
    oldest: u64,
    last: u64,
    records: Vec<ClosedConnection>,
}

/// Copies at most `limit` records after the client's cursor `after`.
pub fn copy(recent: &RecentConnections, after: u64, limit: usize) -> FeedCopy {
    // A cursor beyond the newest record comes from before this agent
    // started (a restart the client did not notice): start it over.
    let after = if after > recent.last_seq() { 0 } else { after };
    FeedCopy {
        after,
        oldest: recent.oldest_seq(),
        last: recent.last_seq(),
        records: recent.copy_after(after, limit),
    }
}

/// The page: its records, where the next one starts, and how many records
/// after the cursor were no longer kept.
pub fn page(copy: FeedCopy) -> v1::ConnectionsPage {
    let FeedCopy {
        after,
        oldest,
        last,
        records,
    } = copy;
    let missed = oldest
        .saturating_sub(after + 1)
        .min(last.saturating_sub(after));
    let records: Vec<v1::Connection> = records.iter().map(to_api).collect();
    v1::ConnectionsPage {
        next_after: records.last().map_or(after.max(oldest - 1), |r| r.seq),
        missed,
        records,
    }
}

fn to_api(r: &ClosedConnection) -> v1::Connection {
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
        source_workload: Some(r.source_workload.display()),
        destination_workload: Some(r.destination_workload.display()),
        duration_us: r.duration_us,
        connect_latency_us: r.connect_latency_us,
        bytes_sent: r.bytes_sent,
        bytes_received: r.bytes_received,
        srtt_us: r.srtt_us,
        min_rtt_us: r.min_rtt_us,
        retransmits: r.retransmits,
        close_reason: close_reason_name(r.close_reason).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        aggregator::{Direction, SeriesKey},
        test_records::Record,
    };

    fn page_of(r: &RecentConnections, after: u64, limit: usize) -> v1::ConnectionsPage {
        page(copy(r, after, limit))
    }

    fn key() -> SeriesKey {
        SeriesKey::new("echo", "127.0.0.2:8080", Direction::Outbound)
    }

    #[test]
    fn pages_follow_the_cursor_and_say_what_was_missed() {
        let mut r = RecentConnections::new(3);
        let ev = Record::bare()
            .reason(kmesh_common::close_reason::RST_RECEIVED)
            .build();
        for _ in 0..5 {
            r.push(&ev, &key(), None);
        }
        // Kept: 3, 4, 5. A client at 1 missed 2 (seq 2 fell out).
        let p = page_of(&r, 1, 10);
        assert_eq!(
            p.records.iter().map(|c| c.seq).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!((p.missed, p.next_after), (1, 5));
        assert_eq!(p.records[0].close_reason, "rst_received");
        let p = page_of(&r, 5, 10);
        assert_eq!((p.records.len(), p.missed, p.next_after), (0, 0, 5));
        let p = page_of(&r, 3, 1);
        assert_eq!((p.records[0].seq, p.next_after), (4, 4));
        // A new client starts from 0 and gets everything kept.
        assert_eq!(page_of(&r, 0, 10).missed, 2);
        // A cursor from a previous agent's life starts over.
        let p = page_of(&r, 99, 10);
        assert_eq!((p.records.len(), p.next_after), (3, 5));
    }
}
