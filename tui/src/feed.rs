//! The connection feed: the most recent closed connections, newest first.
//!
//! Pausing freezes what is shown but keeps polling: records that arrive
//! meanwhile are held (up to [`CAPACITY`], the oldest dropped first) and
//! appear on resume, so a pause loses nothing unless it outlasts the bound.
use std::collections::VecDeque;

use kmesh_api::v1::Connection;

/// Records kept for display, and held while paused.
pub const CAPACITY: usize = 1000;

#[derive(Debug, Default)]
pub struct Feed {
    /// Newest first.
    shown: VecDeque<Connection>,
    /// Arrived while paused, newest first.
    held: VecDeque<Connection>,
    paused: bool,
    /// Records the agent no longer had when asked (kmesh-top fell behind).
    pub missed_by_agent: u64,
    /// Records that arrived while paused beyond [`CAPACITY`].
    pub dropped_while_paused: u64,
}

impl Feed {
    /// `records` oldest first, as the agent sends them.
    pub fn push(&mut self, records: Vec<Connection>, missed: u64) {
        self.missed_by_agent += missed;
        let into = if self.paused {
            &mut self.held
        } else {
            &mut self.shown
        };
        for record in records {
            into.push_front(record);
        }
        if into.len() > CAPACITY {
            let excess = into.len() - CAPACITY;
            into.truncate(CAPACITY);
            if self.paused {
                self.dropped_while_paused += excess as u64;
            }
        }
    }

    pub fn toggle_pause(&mut self) {
        self.paused = !self.paused;
        if !self.paused {
            while let Some(record) = self.held.pop_back() {
                self.shown.push_front(record);
            }
            self.shown.truncate(CAPACITY);
        }
    }

    pub fn paused(&self) -> bool {
        self.paused
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Shown records matching `filter` (see [`matches`]), newest first.
    pub fn visible<'a>(&'a self, filter: &'a str) -> impl Iterator<Item = &'a Connection> + 'a {
        self.shown.iter().filter(move |c| matches(c, filter))
    }
}

/// Case-insensitive substring match on service, source, VIP, backend,
/// both workloads and close reason; an empty filter matches everything.
pub fn matches(c: &Connection, filter: &str) -> bool {
    if filter.is_empty() {
        return true;
    }
    let needle = filter.to_lowercase();
    [
        c.service.as_str(),
        c.source.as_str(),
        c.vip.as_deref().unwrap_or(""),
        c.backend.as_str(),
        c.source_workload.as_deref().unwrap_or(""),
        c.destination_workload.as_deref().unwrap_or(""),
        c.close_reason.as_str(),
    ]
    .iter()
    .any(|field| field.to_lowercase().contains(&needle))
}

#[cfg(test)]
mod tests {
    use kmesh_api::v1::Direction;

    use super::*;

    fn record(seq: u64) -> Connection {
        Connection {
            seq,
            closed_at_unix_ms: seq,
            direction: Direction::Outbound,
            service: if seq.is_multiple_of(2) {
                "reviews"
            } else {
                "ratings"
            }
            .into(),
            vip: None,
            backend: "10.0.0.1:9080".into(),
            source: "10.0.9.9:40000".into(),
            source_workload: None,
            destination_workload: None,
            duration_us: 1,
            connect_latency_us: 1,
            bytes_sent: 1,
            bytes_received: 1,
            srtt_us: 1,
            min_rtt_us: 1,
            retransmits: 0,
            close_reason: "fin".into(),
        }
    }

    fn seqs(feed: &Feed, filter: &str) -> Vec<u64> {
        feed.visible(filter).map(|c| c.seq).collect()
    }

    #[test]
    fn newest_first_and_bounded() {
        let mut feed = Feed::default();
        feed.push((1..=CAPACITY as u64 + 10).map(record).collect(), 3);
        assert_eq!(feed.visible("").count(), CAPACITY);
        assert_eq!(feed.visible("").next().unwrap().seq, CAPACITY as u64 + 10);
        assert_eq!(feed.missed_by_agent, 3);
        assert_eq!(
            seqs(&feed, "REVIEWS")[..2],
            [CAPACITY as u64 + 10, CAPACITY as u64 + 8]
        );
    }

    #[test]
    fn pause_holds_new_records_until_resumed() {
        let mut feed = Feed::default();
        feed.push(vec![record(1), record(2)], 0);
        feed.toggle_pause();
        feed.push(vec![record(3), record(4)], 0);
        assert_eq!(seqs(&feed, ""), [2, 1]);
        assert_eq!(feed.held(), 2);
        feed.toggle_pause();
        assert_eq!(seqs(&feed, ""), [4, 3, 2, 1]);
        assert_eq!(feed.held(), 0);
    }

    #[test]
    fn a_long_pause_drops_the_oldest_held_records() {
        let mut feed = Feed::default();
        feed.toggle_pause();
        feed.push((1..=CAPACITY as u64 + 7).map(record).collect(), 0);
        assert_eq!(feed.held(), CAPACITY);
        assert_eq!(feed.dropped_while_paused, 7);
        feed.toggle_pause();
        assert_eq!(feed.visible("").last().unwrap().seq, 8);
    }
}
