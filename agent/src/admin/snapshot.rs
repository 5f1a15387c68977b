//! `/v1/snapshot`: per configured service and backend, with quantiles from
//! the sketches, and the sketches themselves (and the bucket counts) a
//! client differences for quantiles over an interval. Built from a copy of the aggregator's figures
//! ([`AggregateView`]), so the probe reader waits only for the copy.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::SocketAddr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use kmesh_api::v1;
use kmesh_common::close_reason;

use crate::{
    agent_stats::ControlFigures,
    aggregator::{
        CLOSE_REASONS, Direction,
        families::{self, LATENCY_LIMITS_US},
        view::{AggregateView, HistogramView, SeriesView},
    },
    process::ProcessStats,
};

/// A view's sketch (zeros included) as the admin API carries it; empty
/// when the view was taken without it.
fn api_sketch(h: &HistogramView) -> v1::Sketch {
    let mut s = v1::Sketch::new(v1::sketch::RELATIVE_ACCURACY);
    if let Some(sketch) = &h.sketch {
        s.relative_accuracy = sketch.relative_accuracy();
        (s.offset, s.counts) = sketch.dense();
    }
    s.zero_count = h.zeros;
    s
}

/// The sketches of `parts` (views taken with them) as one.
fn merged_sketch(parts: &[&HistogramView]) -> v1::Sketch {
    let mut merged = v1::Sketch::new(v1::sketch::RELATIVE_ACCURACY);
    for p in parts {
        // One agent makes every sketch with the same α: they all add.
        merged.merge(&api_sketch(p));
    }
    merged
}

/// Several series' distributions of one quantity as one (a service over
/// its backends).
fn distribution(parts: &[&HistogramView], with_buckets: bool) -> v1::Distribution {
    if parts.is_empty() {
        return v1::Distribution::default();
    }
    let sketch = merged_sketch(parts);
    let max = parts.iter().map(|p| p.max).max().unwrap_or(0);
    let min = parts
        .iter()
        .filter(|p| p.count > 0)
        .map(|p| p.min)
        .min()
        .unwrap_or(0);
    // Within 2% of the exact quantile; never outside the exact extremes.
    let quantile = |q| {
        sketch
            .quantile(q)
            .map_or(0, |v| (v.round() as u64).clamp(min, max))
    };
    let mut buckets = Vec::new();
    if with_buckets {
        buckets = parts[0].buckets.clone();
        for part in &parts[1..] {
            for (sum, b) in buckets.iter_mut().zip(&part.buckets) {
                *sum += b;
            }
        }
    }
    v1::Distribution {
        count: sketch.count(),
        p50: quantile(0.5),
        p90: quantile(0.9),
        p99: quantile(0.99),
        max,
        buckets,
        sketch: Some(sketch),
    }
}

fn figures(parts: &[&SeriesView]) -> v1::Figures {
    let mut f = v1::Figures::default();
    for s in parts {
        let c = &s.counts;
        f.opened += c.opened;
        f.active += c.active;
        f.closed += c.closed_total();
        f.failed += c.failed_total();
        f.bytes_sent += c.bytes_sent;
        f.bytes_received += c.bytes_received;
        f.retransmits += c.retransmits;
        for (i, (code, name)) in CLOSE_REASONS.iter().enumerate() {
            let n = c.closed[i] + c.failed[i];
            if n > 0 {
                *f.close_reasons.entry(name.to_string()).or_default() += n;
            }
            match *code {
                close_reason::RST_SENT | close_reason::RST_RECEIVED => f.resets += c.closed[i],
                close_reason::TIMEOUT => f.timeouts += c.closed[i],
                _ => {}
            }
        }
    }
    let pick = |family: usize| -> Vec<&HistogramView> {
        parts.iter().map(|s| &s.histograms[family]).collect()
    };
    f.connect_latency_us = distribution(&pick(families::CONNECT_LATENCY), true);
    f.rtt_us = distribution(&pick(families::RTT), true);
    f.duration_us = distribution(&pick(families::DURATION), false);
    f
}

/// A backend's series from one side: (service, backend label, direction).
type BackendKey<'a> = (&'a str, &'a str, Direction);
/// A call's series from one reporter: (direction, client namespace, client
/// workload, service).
type CallKey<'a> = (Direction, &'a str, &'a str, &'a str);
/// A call's server workloads and series.
type CallGroup<'a> = (BTreeSet<String>, Vec<&'a SeriesView>);

/// The series grouped both ways a snapshot shows them, in one pass: by
/// backend (a backend's figures sum its series from every source
/// workload), and by call.
struct Grouped<'a> {
    by_backend: HashMap<BackendKey<'a>, Vec<&'a SeriesView>>,
    by_call: BTreeMap<CallKey<'a>, CallGroup<'a>>,
}

impl<'a> Grouped<'a> {
    fn of(series: &'a [SeriesView]) -> Self {
        let mut by_backend: HashMap<BackendKey<'a>, Vec<&'a SeriesView>> = HashMap::new();
        let mut by_call: BTreeMap<CallKey<'a>, CallGroup<'a>> = BTreeMap::new();
        for s in series {
            let k = &s.key;
            by_backend
                .entry((&k.service, &k.backend, k.direction))
                .or_default()
                .push(s);
            let call = by_call
                .entry((
                    k.direction,
                    &k.source.namespace,
                    &k.source.workload,
                    &k.service,
                ))
                .or_default();
            call.0.insert(k.destination.display());
            call.1.push(s);
        }
        Self {
            by_backend,
            by_call,
        }
    }
}

/// Who calls whom: series grouped by (client workload, service) from each
/// reporter; a pair the client's side saw is not listed again from the
/// server's (the same connections, on one node).
fn calls(groups: &BTreeMap<CallKey<'_>, CallGroup<'_>>) -> Vec<v1::Call> {
    let seen_by_source: HashSet<(&str, &str, &str)> = groups
        .keys()
        .filter(|(d, ..)| *d == Direction::Outbound)
        .map(|(_, ns, wl, svc)| (*ns, *wl, *svc))
        .collect();
    groups
        .iter()
        .filter(|((d, ns, wl, svc), _)| {
            *d == Direction::Outbound || !seen_by_source.contains(&(*ns, *wl, *svc))
        })
        .map(|((d, ns, wl, svc), (destinations, parts))| v1::Call {
            reporter: d.reporter().to_string(),
            source_workload: wl.to_string(),
            source_namespace: ns.to_string(),
            destination_service: svc.to_string(),
            destination_workloads: destinations.iter().cloned().collect(),
            figures: figures(parts),
        })
        .collect()
}

/// The sketches a snapshot reads: pass them to
/// [`Aggregator::view_with_sketches`](crate::aggregator::Aggregator::view_with_sketches).
pub const QUANTILE_FAMILIES: [usize; 3] =
    [families::CONNECT_LATENCY, families::RTT, families::DURATION];

/// The snapshot of `view`, a copy taken with the sketches of
/// [`QUANTILE_FAMILIES`].
pub fn build(
    view: &AggregateView,
    control: ControlFigures,
    process: Option<ProcessStats>,
) -> v1::Snapshot {
    let grouped = Grouped::of(&view.series);
    let series = &grouped.by_backend;
    let get = |service: &Arc<str>, backend: &Arc<str>, direction| {
        series
            .get(&(&**service, &**backend, direction))
            .cloned()
            .unwrap_or_default()
    };
    // Every configured service, backends or not; backends attach by
    // (name, VIP), as a service may listen on several VIPs.
    let mut services: Vec<v1::Service> = view
        .services
        .iter()
        .map(|s| v1::Service {
            name: s.name.to_string(),
            vip: s.vip.to_string(),
            policy: s.policy.as_str().to_string(),
            outbound: v1::Figures::default(),
            backends: Vec::new(),
        })
        .collect();
    let index: HashMap<(&str, SocketAddr), usize> = view
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| ((&*s.name, s.vip), i))
        .collect();
    let mut outbound_parts: Vec<Vec<&SeriesView>> = vec![Vec::new(); services.len()];
    let mut configured = HashSet::new();
    for b in &view.configured {
        configured.insert((b.service.clone(), b.label.clone()));
        let Some(&i) = index.get(&(&*b.service, b.vip)) else {
            continue;
        };
        let out = get(&b.service, &b.label, Direction::Outbound);
        let inb = get(&b.service, &b.label, Direction::Inbound);
        outbound_parts[i].extend(&out);
        services[i].backends.push(v1::Backend {
            address: b.label.to_string(),
            weight: b.weight,
            workload: b.workload.as_ref().map(|w| w.display()),
            outbound: figures(&out),
            inbound: figures(&inb),
        });
    }
    for (service, parts) in services.iter_mut().zip(&outbound_parts) {
        service.outbound = figures(parts);
    }
    let mut other: Vec<v1::Series> = series
        .iter()
        .filter(|((service, backend, _), _)| {
            !configured.contains(&(Arc::from(*service), Arc::from(*backend)))
        })
        .map(|((service, backend, direction), parts)| v1::Series {
            service: service.to_string(),
            backend: backend.to_string(),
            direction: (*direction).into(),
            figures: figures(parts),
        })
        .collect();
    other.sort_by(|a, b| {
        (&a.service, &a.backend, a.direction).cmp(&(&b.service, &b.backend, b.direction))
    });

    let calls = calls(&grouped.by_call);
    let a = &view.agent;
    let process = process.unwrap_or_default();
    v1::Snapshot {
        version: v1::VERSION.to_string(),
        taken_at_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        calls,
        uptime_seconds: view.uptime.as_secs_f64(),
        latency_bounds_us: LATENCY_LIMITS_US.to_vec(),
        agent: v1::AgentHealth {
            events_established: a.events_established,
            events_closed: a.events_closed,
            events_periodic: a.events_periodic,
            events_malformed: a.events_malformed,
            ringbuf_drops: a.ringbuf_drops,
            lost_closes: a.lost_closes,
            config_reloads_ok: control.config_reloads_ok,
            config_reloads_failed: control.config_reloads_failed,
            series: view.regular_series() as u64,
            series_limit: view.max_series as u64,
            series_overflow: a.series_overflow,
            cpu_seconds: process.cpu_seconds,
            resident_bytes: process.resident_bytes,
        },
        services,
        other,
    }
}

#[cfg(test)]
mod tests {
    use kmesh_common::close_reason;

    use super::*;
    use crate::{aggregator::fixtures, model::fixtures as mesh_fixtures};

    #[test]
    fn services_carry_their_backends_figures_and_the_sum() {
        let mut agg = fixtures::echo_aggregator();
        for (cookie, reason, srtt) in [
            (1, close_reason::FIN, 40),
            (2, close_reason::RST_RECEIVED, 400),
            (3, close_reason::CONNECT_REFUSED, 0),
        ] {
            agg.record(&fixtures::echo_close(cookie, reason, srtt));
        }
        let snap = build(
            &agg.view_with_sketches(&QUANTILE_FAMILIES),
            ControlFigures::default(),
            None,
        );
        assert_eq!(snap.version, "v1");
        let [svc] = snap.services.as_slice() else {
            panic!("{:?}", snap.services);
        };
        assert_eq!(
            (svc.name.as_str(), svc.vip.as_str(), svc.policy.as_str()),
            ("echo", "198.18.0.10:80", "round_robin")
        );
        let b = &svc.backends[0];
        assert_eq!((b.address.as_str(), b.weight), ("127.0.0.2:8080", 1));
        let f = &b.outbound;
        assert_eq!((f.opened, f.closed, f.failed, f.resets), (2, 2, 1, 1));
        assert_eq!(f.close_reasons["connect_refused"], 1);
        assert_eq!(f.rtt_us.count, 2);
        assert_eq!(f.rtt_us.buckets.len(), snap.latency_bounds_us.len() + 1);
        assert_eq!(svc.outbound, *f, "one backend: the service is its backend");
        assert_eq!(b.inbound, v1::Figures::default(), "no inbound series");
        assert!(snap.other.is_empty());
    }

    #[test]
    fn quantiles_and_sketches_come_from_every_value() {
        let mut agg = fixtures::echo_aggregator();
        // RTTs 1..=1000 µs: quantiles read within 2% of the exact ones.
        for srtt in 1..=1000 {
            agg.record(&fixtures::echo_close(srtt.into(), close_reason::FIN, srtt));
        }
        let snap = build(
            &agg.view_with_sketches(&QUANTILE_FAMILIES),
            ControlFigures::default(),
            None,
        );
        let rtt = &snap.services[0].outbound.rtt_us;
        for (got, exact) in [(rtt.p50, 500), (rtt.p90, 900), (rtt.p99, 990)] {
            assert!(
                got.abs_diff(exact) as f64 <= 0.02 * exact as f64,
                "{got} for {exact}"
            );
        }
        assert_eq!(rtt.max, 1000);
        let sketch = rtt.sketch.as_ref().expect("a sketch");
        assert_eq!(sketch.count(), 1000);
        assert_eq!(sketch.zero_count, 0);
        assert_eq!(sketch.offset, 0, "1 µs is in bin 0");
        assert_eq!(rtt.buckets[..3], [25, 25, 50], "the buckets stay exact");
        // Durations (1 ms each) are sketched too; the bytes are not shipped.
        let duration = &snap.services[0].outbound.duration_us;
        assert_eq!((duration.p50, duration.count), (1000, 1000));
        assert_eq!(duration.sketch.as_ref().map(|s| s.count()), Some(1000));
    }

    #[test]
    fn a_service_without_backends_is_listed() {
        use crate::model::{Policy, Service};
        let mut mesh = mesh_fixtures::echo();
        let vip = "198.18.0.11:80".parse().unwrap();
        let empty = Service {
            name: "drained".into(),
            namespace: None,
            vip,
            policy: Policy::Random,
            backends: Vec::new(),
            origin: Default::default(),
        };
        mesh.services.insert(vip, empty);
        let mut agg = crate::aggregator::Aggregator::new(Default::default());
        agg.update_labels(&mesh, std::iter::empty());
        let snap = build(
            &agg.view_with_sketches(&QUANTILE_FAMILIES),
            ControlFigures::default(),
            None,
        );
        let names: Vec<&str> = snap.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["echo", "drained"]);
        assert!(snap.services[1].backends.is_empty());
    }
}
