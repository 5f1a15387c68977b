//! Probe records for unit tests, built field by field from addresses as
//! written, so a test states only what it is about and every record is
//! laid out as the probe lays it out (family, address words, ports).
use std::net::SocketAddr;

use kmesh_common::{ConnEvent, direction, event_flags, event_kind};

use crate::addr::ip_to_words;

/// A [`ConnEvent`] under construction; every field not set is zero.
#[derive(Clone, Copy, Debug)]
pub struct Record(ConnEvent);

fn addr(text: &str) -> SocketAddr {
    text.parse()
        .unwrap_or_else(|_| panic!("{text:?} is not an address:port"))
}

impl Record {
    fn of_kind(kind: u8) -> Self {
        Self(ConnEvent {
            kind,
            ..ConnEvent::default()
        })
    }

    pub fn established() -> Self {
        Self::of_kind(event_kind::ESTABLISHED)
    }

    /// A close record ending with `reason` (a `close_reason` code).
    pub fn closed(reason: u8) -> Self {
        let mut r = Self::of_kind(event_kind::CLOSED);
        r.0.close_reason = reason;
        r
    }

    /// A record of no kind the probe writes: only its other fields count.
    pub fn bare() -> Self {
        Self::of_kind(0)
    }

    /// How it ended (a `close_reason` code), on a record of any kind.
    pub fn reason(mut self, reason: u8) -> Self {
        self.0.close_reason = reason;
        self
    }

    pub fn kind(mut self, kind: u8) -> Self {
        self.0.kind = kind;
        self
    }

    pub fn cookie(mut self, cookie: u64) -> Self {
        self.0.cookie = cookie;
        self
    }

    /// The client's side: its socket is `local`, its peer `remote`.
    pub fn outbound(self, local: &str, remote: &str) -> Self {
        self.sockets(direction::OUTBOUND, local, remote)
    }

    /// The server's side: its socket is `local`, its peer `remote`.
    pub fn inbound(self, local: &str, remote: &str) -> Self {
        self.sockets(direction::INBOUND, local, remote)
    }

    /// The side `dir` (a `direction` code) with its socket's two ends.
    pub fn sockets(mut self, dir: u8, local: &str, remote: &str) -> Self {
        let (local, remote) = (addr(local), addr(remote));
        let ev = &mut self.0;
        ev.direction = dir;
        (ev.local_addr, ev.family) = ip_to_words(local.ip());
        ev.local_port = local.port();
        ev.remote_addr = ip_to_words(remote.ip()).0;
        ev.remote_port = remote.port();
        self
    }

    /// The client's side, routed by the kernel to `backend` of service
    /// `service_id`; the socket is of the backend's family unless
    /// [`Self::outbound`] set it.
    pub fn routed(mut self, service_id: u32, backend: &str) -> Self {
        let backend = addr(backend);
        let ev = &mut self.0;
        ev.direction = direction::OUTBOUND;
        if ev.family == 0 {
            ev.family = ip_to_words(backend.ip()).1;
        }
        ev.flags |= event_flags::ROUTED;
        ev.route.service_id = service_id;
        (ev.route.backend_addr, ev.route.family) = ip_to_words(backend.ip());
        ev.route.backend_port = backend.port();
        self
    }

    /// The address the client dialled (the route's original destination).
    pub fn dialled(mut self, vip: &str) -> Self {
        let vip = addr(vip);
        let ev = &mut self.0;
        (ev.route.orig_addr, ev.route.family) = ip_to_words(vip.ip());
        ev.route.orig_port = vip.port();
        self
    }

    /// Started at `start_ns`, written at `ts_ns`.
    pub fn times(mut self, start_ns: u64, ts_ns: u64) -> Self {
        (self.0.start_ns, self.0.ts_ns) = (start_ns, ts_ns);
        self
    }

    pub fn connect_latency_ns(mut self, ns: u64) -> Self {
        self.0.connect_latency_ns = ns;
        self
    }

    pub fn bytes(mut self, sent: u64, received: u64) -> Self {
        (self.0.bytes_sent, self.0.bytes_received) = (sent, received);
        self
    }

    pub fn srtt_us(mut self, us: u32) -> Self {
        self.0.srtt_us = us;
        self
    }

    pub fn min_rtt_us(mut self, us: u32) -> Self {
        self.0.min_rtt_us = us;
        self
    }

    /// The initial sequence numbers the probe read at establishment.
    pub fn isns(mut self, local: u32, remote: u32) -> Self {
        self.0.flags |= event_flags::ISNS;
        (self.0.local_isn, self.0.remote_isn) = (local, remote);
        self
    }

    pub fn build(self) -> ConnEvent {
        self.0
    }
}

/// A record to change further.
impl From<ConnEvent> for Record {
    fn from(ev: ConnEvent) -> Self {
        Self(ev)
    }
}
