//! Aggregators and probe records for unit tests.
use kmesh_common::ConnEvent;

use super::{Aggregator, SeriesLimits};
use crate::{model::fixtures, test_records::Record};

/// The service id [`echo_aggregator`] gives `echo`.
pub const ECHO_ID: u32 = 7;

/// An aggregator labelling with [`fixtures::echo`].
pub fn echo_aggregator() -> Aggregator {
    let mesh = fixtures::echo();
    let vip = *mesh.services.keys().next().unwrap();
    let mut agg = Aggregator::new(SeriesLimits::default());
    agg.update_labels(&mesh, [(vip, ECHO_ID)].into_iter());
    agg
}

/// The close record of a client's connection routed to echo's backend:
/// 1 ms long, 50 µs to connect, 100 bytes out and 1000 in.
pub fn echo_close(cookie: u64, reason: u8, srtt_us: u32) -> ConnEvent {
    Record::closed(reason)
        .cookie(cookie)
        .routed(ECHO_ID, "127.0.0.2:8080")
        .times(0, 1_000_000)
        .connect_latency_ns(50_000)
        .bytes(100, 1000)
        .srtt_us(srtt_us)
        .build()
}
