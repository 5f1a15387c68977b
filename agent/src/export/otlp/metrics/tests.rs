use kmesh_common::{ConnEvent, close_reason, direction, event_flags, event_kind};
use opentelemetry_proto::tonic::metrics::v1::Metric;

use super::*;
use crate::{
    addr::ip_to_words,
    metrics::{SeriesLimits, families::LATENCY_BOUNDS_S},
};

fn aggregator() -> Aggregator {
    let mesh = crate::model::fixtures::echo();
    let vip = "198.18.0.10:80".parse().unwrap();
    let key = crate::maps::service_key(&mesh.services[&vip]);
    let mut agg = Aggregator::new(SeriesLimits::default());
    agg.update_labels(&mesh, [(&key, 7u32)].into_iter());
    let (backend, family) = ip_to_words("127.0.0.2".parse().unwrap());
    for (cookie, reason, srtt_us) in [
        (1, close_reason::FIN, 40),
        (2, close_reason::FIN, 400),
        (3, close_reason::RST_RECEIVED, 4000),
    ] {
        let mut ev = ConnEvent {
            kind: event_kind::CLOSED,
            direction: direction::OUTBOUND,
            flags: event_flags::ROUTED,
            close_reason: reason,
            family,
            cookie,
            start_ns: 0,
            ts_ns: 1_000_000,
            connect_latency_ns: 50_000,
            bytes_sent: 100,
            bytes_received: 1000,
            srtt_us,
            ..ConnEvent::default()
        };
        ev.route.service_id = 7;
        ev.route.backend_addr = backend;
        ev.route.backend_port = 8080;
        ev.route.family = family;
        agg.record(&ev);
    }
    agg
}

fn find<'a>(req: &'a ExportMetricsServiceRequest, name: &str) -> &'a Metric {
    req.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("{name} not exported"))
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

#[test]
fn counters_are_cumulative_monotonic_sums_with_model_attributes() {
    let req = request(
        &aggregator(),
        &[],
        HistogramAggregation::Explicit,
        SystemTime::now(),
    );
    let Some(Data::Sum(sum)) = &find(&req, "kmesh.tcp.connections.opened").data else {
        panic!("opened is not a sum");
    };
    assert!(sum.is_monotonic);
    assert_eq!(sum.aggregation_temporality, CUMULATIVE);
    let p = &sum.data_points[0];
    assert_eq!(p.value, Some(number_data_point::Value::AsInt(3)));
    assert!(p.start_time_unix_nano > 0 && p.start_time_unix_nano <= p.time_unix_nano);
    let a = &p.attributes;
    assert_eq!(attr(a, "destination_service"), Some(&s("echo")));
    assert_eq!(attr(a, "reporter"), Some(&s("source")));
    assert_eq!(attr(a, "server.address"), Some(&s("198.18.0.10")));
    assert_eq!(attr(a, "server.port"), Some(&Value::IntValue(80)));
    assert_eq!(attr(a, "network.peer.address"), Some(&s("127.0.0.2")));
    assert_eq!(attr(a, "network.type"), Some(&s("ipv4")));

    let Some(Data::Sum(closed)) = &find(&req, "kmesh.tcp.connections.closed").data else {
        panic!("closed is not a sum");
    };
    let by_reason: Vec<(String, Option<number_data_point::Value>)> = closed
        .data_points
        .iter()
        .map(|p| match attr(&p.attributes, "kmesh.close_reason") {
            Some(Value::StringValue(r)) => (r.clone(), p.value),
            other => panic!("close reason {other:?}"),
        })
        .collect();
    assert_eq!(
        by_reason,
        [
            ("fin".to_string(), Some(number_data_point::Value::AsInt(2))),
            (
                "rst_received".to_string(),
                Some(number_data_point::Value::AsInt(1))
            ),
        ]
    );
    assert_eq!(find(&req, "kmesh.tcp.sent").unit, "By");
}

#[test]
fn explicit_histograms_match_the_prometheus_buckets() {
    let agg = aggregator();
    let req = request(&agg, &[], HistogramAggregation::Explicit, SystemTime::now());
    let m = find(&req, "kmesh.tcp.rtt");
    assert_eq!(m.unit, "s");
    let Some(Data::Histogram(h)) = &m.data else {
        panic!("rtt is not a histogram");
    };
    let p = &h.data_points[0];
    assert_eq!(p.count, 3);
    assert_eq!(p.explicit_bounds, LATENCY_BOUNDS_S);
    assert_eq!(p.bucket_counts.len(), LATENCY_BOUNDS_S.len() + 1);
    let (_, stats) = agg.series().next().unwrap();
    assert_eq!(
        p.bucket_counts,
        families::bucket_counts(&stats.srtt_us, &LATENCY_BOUNDS_S, 1e-6)
    );
    let sum = p.sum.unwrap();
    assert!((sum - 0.004_44).abs() < 1e-9, "{sum}");
    assert_eq!(p.bucket_counts.iter().sum::<u64>(), 3);
}

#[test]
fn exponential_histograms_are_an_option() {
    let req = request(
        &aggregator(),
        &[],
        HistogramAggregation::Exponential,
        SystemTime::now(),
    );
    let Some(Data::ExponentialHistogram(h)) = &find(&req, "kmesh.tcp.rtt").data else {
        panic!("rtt is not an exponential histogram");
    };
    let p = &h.data_points[0];
    assert_eq!(p.count, 3);
    let buckets = p.positive.as_ref().unwrap();
    assert_eq!(buckets.bucket_counts.iter().sum::<u64>(), 3);
}
