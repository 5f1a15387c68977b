//! One span per connection hop, from the probe's records. A connection whose
//! client and backend both run on this node is seen twice, as the client's
//! outbound hop and the backend's inbound hop; both become spans of one
//! trace, the inbound hop a child of the outbound one.
//!
//! The ids come from the connection itself (`ids`): the agent on another
//! node that sees the other end derives the same ones, so a connection
//! between two nodes is one trace too, its SERVER span (on the server's
//! node) a child of its CLIENT span (on the client's node). A connect that
//! failed has no peer ISN and gets random ids: its trace is its one span.
//!
//! A hop's span is made when its close record arrives. Whether the trace is
//! kept is decided once, at the first close of the connection, so the hops
//! of one trace are kept or dropped together.
mod attributes;
mod clock;
pub mod ids;
mod queue;
pub mod sampling;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use kmesh_common::{ConnEvent, direction, event_flags, event_kind, map_capacity};
use opentelemetry::{
    InstrumentationScope,
    trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SpanData, SpanEvents, SpanLinks};

pub use self::{
    queue::{SpanQueue, SpanReceiver},
    sampling::{Decision, SamplingSettings},
};
use crate::{addr::socket_addr, agent_stats::ExportHealth, aggregator::SeriesKey};

/// Connections followed at once; beyond, new connections are not traced
/// (and counted), so lost close records cannot grow memory without bound.
pub const MAX_FLOWS: usize = 2 * map_capacity::CONNS as usize;

/// The client and server sockets of a connection, the same from either side,
/// and for a loopback connection its network namespace: two pods may use the
/// same loopback addresses and ports at once, while pod addresses are unique
/// on the node (and the two ends of a pod-to-pod connection sit in
/// different namespaces).
type FlowKey = (u64, SocketAddr, SocketAddr);

const OUTBOUND: usize = 0;
const INBOUND: usize = 1;

struct Hop {
    /// The socket; a record of another socket with the same addresses is a
    /// new connection (the old one's close record was lost).
    cookie: u64,
    /// Its series' labels: service, backend and both workloads.
    key: SeriesKey,
    vip: Option<SocketAddr>,
    connect_latency_ns: u64,
}

struct Flow {
    trace_id: TraceId,
    /// The CLIENT (outbound) and SERVER (inbound) span ids.
    span_ids: [SpanId; 2],
    /// What the ids were derived from; `None`: random ids, which no other
    /// agent shares.
    key: Option<ids::ConnectionKey>,
    hops: [Option<Hop>; 2],
    /// Whether each hop has closed.
    closed: [bool; 2],
    /// Whether each hop's span was sent (a dropped parent makes its child a root).
    sent: [bool; 2],
    decision: Option<Decision>,
}

impl Flow {
    fn new(key: Option<ids::ConnectionKey>, random: &RandomIdGenerator) -> Self {
        let (trace_id, span_ids) = match key.map(|k| k.ids()) {
            Some(ids) => (ids.trace_id, [ids.client_span, ids.server_span]),
            None => (
                random.new_trace_id(),
                [random.new_span_id(), random.new_span_id()],
            ),
        };
        Self {
            trace_id,
            span_ids,
            key,
            hops: [None, None],
            closed: [false; 2],
            sent: [false; 2],
            decision: None,
        }
    }
}

/// What a record produced.
#[derive(Debug)]
pub enum SpanOutcome {
    Span(Box<SpanData>),
    SampledOut,
    /// The connection was not followed: the flow table was full.
    Untracked,
}

/// Span assembly on the probe reader's thread, and the queue it fills.
pub struct SpanSink {
    assembler: SpanAssembler,
    queue: SpanQueue,
}

impl SpanSink {
    /// Takes one record and the series it was counted in.
    pub fn record(&mut self, ev: &ConnEvent, key: &SeriesKey) {
        if let Some(outcome) = self.assembler.record(ev, key) {
            self.queue.push(outcome);
        }
    }

    /// Stops following connections whose close record was lost.
    pub fn forget(&mut self, cookies: &[u64]) {
        self.assembler.forget(cookies);
    }
}

/// The span pipeline: the probe reader's end, and the exporter's end of a
/// queue of at most `capacity` spans.
pub fn pipeline(
    sampling: SamplingSettings,
    capacity: usize,
    health: Arc<ExportHealth>,
) -> (SpanSink, SpanReceiver) {
    let (queue, rx) = queue::queue(capacity, health);
    let sink = SpanSink {
        assembler: SpanAssembler::new(sampling),
        queue,
    };
    (sink, rx)
}

pub struct SpanAssembler {
    flows: HashMap<FlowKey, Flow>,
    sampling: SamplingSettings,
    random: RandomIdGenerator,
    clock: clock::WallClock,
    clock_read: Instant,
    scope: InstrumentationScope,
}

/// How often the monotonic-to-wall-clock offset is read again, so a
/// stepped wall clock (NTP) moves spans with it.
const CLOCK_REREAD: Duration = Duration::from_secs(60);

fn flow_key(ev: &ConnEvent) -> (FlowKey, usize) {
    let local = socket_addr(ev.local_addr, ev.family, ev.local_port);
    let remote = socket_addr(ev.remote_addr, ev.family, ev.remote_port);
    let netns = if local.ip().is_loopback() {
        ev.netns_cookie
    } else {
        0
    };
    if ev.direction == direction::INBOUND {
        ((netns, remote, local), INBOUND)
    } else {
        ((netns, local, remote), OUTBOUND)
    }
}

impl SpanAssembler {
    pub fn new(sampling: SamplingSettings) -> Self {
        Self {
            flows: HashMap::new(),
            sampling,
            random: RandomIdGenerator::default(),
            clock: clock::WallClock::now(),
            clock_read: Instant::now(),
            scope: InstrumentationScope::builder("kmesh-agent")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        }
    }

    /// Connections being followed now.
    pub fn open_flows(&self) -> usize {
        self.flows.len()
    }

    /// Stops following connections whose close record was lost.
    pub fn forget(&mut self, cookies: &[u64]) {
        let cookies: std::collections::HashSet<u64> = cookies.iter().copied().collect();
        let lost = |h: &Option<Hop>| h.as_ref().is_some_and(|h| cookies.contains(&h.cookie));
        self.flows.retain(|_, f| !f.hops.iter().any(lost));
    }

    /// Takes one record and the series it was counted in; returns the span
    /// or the sampling outcome when the record closed a hop.
    pub fn record(&mut self, ev: &ConnEvent, key: &SeriesKey) -> Option<SpanOutcome> {
        let (fk, side) = flow_key(ev);
        if !self.flows.contains_key(&fk) && self.flows.len() >= MAX_FLOWS {
            return (ev.kind == event_kind::CLOSED).then_some(SpanOutcome::Untracked);
        }
        let conn = ids::ConnectionKey::of(ev);
        let random = &self.random;
        let flow = self
            .flows
            .entry(fk)
            .or_insert_with(|| Flow::new(conn, random));
        let stale_hop = flow.hops[side]
            .as_ref()
            .is_some_and(|h| h.cookie != ev.cookie);
        // Other ISNs on the same addresses: the other end's record is of an
        // earlier connection.
        let other_connection = conn.is_some() && flow.key.is_some() && conn != flow.key;
        if stale_hop || other_connection {
            // The same addresses on a new socket: what was kept of the old
            // connection lost its close record. Start over.
            *flow = Flow::new(conn, random);
        }
        if flow.hops[side].is_none() {
            let routed = ev.flags & event_flags::ROUTED != 0;
            flow.hops[side] = Some(Hop {
                cookie: ev.cookie,
                key: key.clone(),
                vip: routed
                    .then(|| socket_addr(ev.route.orig_addr, ev.route.family, ev.route.orig_port)),
                connect_latency_ns: ev.connect_latency_ns,
            });
        }
        if ev.kind != event_kind::CLOSED {
            return None;
        }
        if self.clock_read.elapsed() >= CLOCK_REREAD {
            self.clock = clock::WallClock::now();
            self.clock_read = Instant::now();
        }
        let flow = self.flows.get_mut(&fk).expect("inserted above");
        let connect_latency = flow.hops[OUTBOUND]
            .as_ref()
            .map_or(ev.connect_latency_ns, |h| {
                h.connect_latency_ns.max(ev.connect_latency_ns)
            });
        // Slowness keeps a trace only where this agent holds all of it:
        // random ids, or both ends here.
        let whole_here = flow.key.is_none() || flow.hops.iter().all(Option::is_some);
        let own = sampling::decide(
            &self.sampling,
            flow.trace_id,
            ev,
            connect_latency,
            whole_here,
        );
        // The first close decides for the trace, so its hops are kept or
        // dropped together; a hop that is itself failed, reset or slow is
        // kept even when an earlier hop was dropped.
        let decision = match (*flow.decision.get_or_insert(own), own) {
            (Decision::Drop, Decision::Keep(why)) if why != "ratio" => own,
            (first, _) => first,
        };
        flow.closed[side] = true;
        let outcome = match decision {
            Decision::Drop => SpanOutcome::SampledOut,
            Decision::Keep(why) => {
                flow.sent[side] = true;
                SpanOutcome::Span(Box::new(self.span(&fk, side, ev, why)))
            }
        };
        let flow = &self.flows[&fk];
        let done = (0..2).all(|i| flow.hops[i].is_none() || flow.closed[i]);
        if done {
            self.flows.remove(&fk);
        }
        Some(outcome)
    }

    fn span(&self, fk: &FlowKey, side: usize, ev: &ConnEvent, why: &'static str) -> SpanData {
        let flow = &self.flows[fk];
        let hop = flow.hops[side].as_ref().expect("the hop was just recorded");
        // The inbound hop is a child of the outbound one: on this node,
        // unless that was sampled out here (then it would point at a span
        // nobody has); on the client's node (remote), when the ids are
        // derived, as that node's agent derives the same.
        let (parent, remote_parent) = match (side, &flow.hops[OUTBOUND]) {
            (INBOUND, Some(_)) if !flow.closed[OUTBOUND] || flow.sent[OUTBOUND] => {
                (flow.span_ids[OUTBOUND], false)
            }
            (INBOUND, None) if flow.key.is_some() => (flow.span_ids[OUTBOUND], true),
            _ => (SpanId::INVALID, false),
        };
        // The inbound side learns the VIP from its outbound partner.
        let vip = hop
            .vip
            .or_else(|| flow.hops[OUTBOUND].as_ref().and_then(|h| h.vip));
        let hop_count = flow.hops.iter().flatten().count();
        let facts = attributes::HopFacts {
            ev,
            key: &hop.key,
            vip,
            hop_count,
            sampled_because: why,
        };
        let (kind, verb) = if side == OUTBOUND {
            (SpanKind::Client, "connect")
        } else {
            (SpanKind::Server, "accept")
        };
        let status = match attributes::error_type(ev.close_reason) {
            Some(reason) => Status::error(reason),
            None => Status::Unset,
        };
        SpanData {
            span_context: SpanContext::new(
                flow.trace_id,
                flow.span_ids[side],
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: parent,
            parent_span_is_remote: remote_parent,
            span_kind: kind,
            name: format!("{verb} {}", hop.key.service).into(),
            start_time: self.clock.at(ev.start_ns),
            end_time: self.clock.at(ev.ts_ns.max(ev.start_ns)),
            attributes: attributes::of_hop(&facts),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
