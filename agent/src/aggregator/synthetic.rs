//! Close records with the spread a busy backend shows, for measuring what
//! a series costs (the aggregator's tests, `kmesh-bench series`): each
//! figure is log-normal around a typical median, wide enough that a
//! series' sketches fill as many bins as real traffic's do.
//!
//! | figure | median | σ (of the log) | 1st..99th percentile |
//! |---|---|---|---|
//! | connect latency | 200 µs | 0.8 | 31 µs .. 1.3 ms |
//! | smoothed RTT | 300 µs | 0.6 | 74 µs .. 1.2 ms |
//! | minimum RTT | 150 µs | 0.4 | 59 µs .. 380 µs |
//! | duration | 50 ms | 1.5 | 1.5 ms .. 1.6 s |
//! | bytes sent | 2 KB | 1.2 | 120 B .. 33 KB |
//! | bytes received | 20 KB | 1.5 | 610 B .. 660 KB, and 5% none |
use std::net::SocketAddr;

use kmesh_common::{ConnEvent, close_reason, direction, event_flags, event_kind};

use crate::{
    addr::ip_to_words,
    model::{Backend, Mesh, Policy, Service},
};

/// A mesh of `backends` backends, `per_service` to a service
/// (`svc-0`, `svc-1`, ...), with every backend as (the kernel's id of its
/// service, its address): the ids are 1, 2, ... in VIP order, as
/// `Aggregator::update_labels` takes them from `mesh.services.keys()`.
pub fn mesh(backends: usize, per_service: usize) -> (Mesh, Vec<(u32, SocketAddr)>) {
    let mut mesh = Mesh::default();
    let mut all = Vec::new();
    for svc in 0..backends.div_ceil(per_service) {
        // VIPs sort as their services are numbered.
        let vip = SocketAddr::from(([198, 18, (svc / 250) as u8, (svc % 250) as u8], 80));
        let first = svc * per_service;
        let list: Vec<Backend> = (first..backends.min(first + per_service))
            .map(|b| {
                Backend::new(
                    SocketAddr::from(([10, (b >> 16) as u8, (b >> 8) as u8, b as u8], 8080)),
                    1,
                )
            })
            .collect();
        all.extend(list.iter().map(|b| (svc as u32 + 1, b.addr)));
        let service = Service {
            name: format!("svc-{svc}"),
            namespace: None,
            vip,
            policy: Policy::Random,
            backends: list,
            origin: Default::default(),
        };
        mesh.services.insert(vip, service);
    }
    (mesh, all)
}

/// A deterministic generator (splitmix64), so runs compare.
pub struct Spread {
    state: u64,
    cookie: u64,
}

impl Spread {
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed,
            cookie: seed << 32,
        }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Log-normal (Box-Muller), rounded to a whole unit.
    fn log_normal(&mut self, median: f64, sigma: f64) -> u64 {
        let (u, v) = (self.unit(), self.unit());
        let normal = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
        (median * (sigma * normal).exp()).round() as u64
    }

    /// A client's connection to `backend` of service `service_id` (as the
    /// kernel numbers it), routed and closed with a FIN.
    pub fn close(&mut self, service_id: u32, backend: SocketAddr) -> ConnEvent {
        self.cookie += 1;
        let (addr, family) = ip_to_words(backend.ip());
        let duration_ns = self.log_normal(50_000.0, 1.5).max(1) * 1000;
        let received = match self.next() % 20 {
            0 => 0,
            _ => self.log_normal(20_000.0, 1.5),
        };
        let mut ev = ConnEvent {
            kind: event_kind::CLOSED,
            direction: direction::OUTBOUND,
            flags: event_flags::ROUTED,
            close_reason: close_reason::FIN,
            family,
            cookie: self.cookie,
            start_ns: 1_000,
            ts_ns: 1_000 + duration_ns,
            connect_latency_ns: self.log_normal(200.0, 0.8).max(1) * 1000,
            bytes_sent: self.log_normal(2_000.0, 1.2),
            bytes_received: received,
            srtt_us: self.log_normal(300.0, 0.6).max(1) as u32,
            min_rtt_us: self.log_normal(150.0, 0.4).max(1) as u32,
            ..ConnEvent::default()
        };
        ev.route.service_id = service_id;
        ev.route.backend_addr = addr;
        ev.route.backend_port = backend.port();
        ev.route.family = family;
        ev
    }
}
