//! Aggregators and probe records for unit tests.
use kmesh_common::{ConnEvent, direction, event_flags, event_kind};

use super::{Aggregator, SeriesLimits};
use crate::{addr::ip_to_words, model::fixtures};

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
    let (backend, family) = ip_to_words("127.0.0.2".parse().unwrap());
    let mut ev = ConnEvent {
        kind: event_kind::CLOSED,
        direction: direction::OUTBOUND,
        flags: event_flags::ROUTED,
        close_reason: reason,
        family,
        cookie,
        ts_ns: 1_000_000,
        connect_latency_ns: 50_000,
        bytes_sent: 100,
        bytes_received: 1000,
        srtt_us,
        ..ConnEvent::default()
    };
    ev.route.service_id = ECHO_ID;
    ev.route.backend_addr = backend;
    ev.route.backend_port = 8080;
    ev.route.family = family;
    ev
}
