use kmesh_common::close_reason;
use opentelemetry_proto::tonic::metrics::v1::Metric;

use super::*;
use crate::{
    aggregator::{Aggregator, SeriesLimits, families::LATENCY_BOUNDS_S},
    test_records::Record,
};

fn aggregator() -> Aggregator {
    let mut agg = crate::aggregator::fixtures::echo_aggregator();
    for (cookie, reason, srtt_us) in [
        (1, close_reason::FIN, 40),
        (2, close_reason::FIN, 400),
        (3, close_reason::RST_RECEIVED, 4000),
    ] {
        agg.record(&crate::aggregator::fixtures::echo_close(
            cookie, reason, srtt_us,
        ));
    }
    agg
}

fn export(agg: &Aggregator, histograms: HistogramAggregation) -> ExportMetricsServiceRequest {
    let view = agg.view(histograms == HistogramAggregation::Exponential);
    let agent = AgentFigures::new(&view, Default::default(), Default::default());
    let mut all = requests(&view, &agent, &[], histograms, SystemTime::now());
    assert_eq!(all.len(), 1, "one series fits one request");
    all.remove(0)
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
    let req = export(&aggregator(), HistogramAggregation::Explicit);
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
    let req = export(&aggregator(), HistogramAggregation::Explicit);
    let m = find(&req, "kmesh.tcp.rtt");
    assert_eq!(m.unit, "s");
    let Some(Data::Histogram(h)) = &m.data else {
        panic!("rtt is not a histogram");
    };
    let p = &h.data_points[0];
    assert_eq!(p.count, 3);
    assert_eq!(p.explicit_bounds, LATENCY_BOUNDS_S);
    // 40 µs in (25, 50], 400 µs in (250, 500], 4 ms in (2.5, 5] ms.
    let mut expected = vec![0u64; LATENCY_BOUNDS_S.len() + 1];
    expected[1] = 1;
    expected[4] = 1;
    expected[7] = 1;
    assert_eq!(p.bucket_counts, expected);
    let sum = p.sum.unwrap();
    assert!((sum - 0.004_44).abs() < 1e-9, "{sum}");
    assert_eq!((p.min, p.max), (Some(0.000_04), Some(0.004)));
}

#[test]
fn exponential_histograms_are_an_option() {
    let req = export(&aggregator(), HistogramAggregation::Exponential);
    let Some(Data::ExponentialHistogram(h)) = &find(&req, "kmesh.tcp.rtt").data else {
        panic!("rtt is not an exponential histogram");
    };
    let p = &h.data_points[0];
    assert_eq!(p.count, 3);
    assert_eq!(p.zero_count, 0);
    // 40 µs .. 4 ms spans log2(100) = 6.64 powers of two: at scale 4 (16
    // buckets a power) that is 107 buckets, within 160; scale 5 would need
    // 213. Bucket i is (2^(i/16), 2^((i+1)/16)] seconds, and
    // ceil(16 log2 x) - 1 is, by hand (not by the code under test, so a
    // wrong scale or offset fails here): 40 µs: 16 (2 - 16.61) = -233.75
    // -> -234; 400 µs: 16 (2 - 13.29) = -180.60 -> -181; 4 ms:
    // 16 (2 - 9.97) = -127.45 -> -128.
    assert_eq!(p.scale, 4, "{p:?}");
    let buckets = p.positive.as_ref().unwrap();
    assert_eq!(buckets.offset, -234, "40 µs is the first bucket");
    let mut expected = vec![0u64; 107];
    expected[0] = 1; // 40 µs, bucket -234
    expected[53] = 1; // 400 µs, bucket -181
    expected[106] = 1; // 4 ms, bucket -128
    assert_eq!(buckets.bucket_counts, expected);
    let sum = p.sum.unwrap();
    assert!((sum - 0.004_44).abs() < 1e-9, "{sum}");
    assert_eq!((p.min, p.max), (Some(0.000_04), Some(0.004)));
    assert!(p.negative.is_none());
}

#[test]
fn open_connections_are_a_non_monotonic_sum() {
    let req = export(&aggregator(), HistogramAggregation::Explicit);
    let Some(Data::Sum(active)) = &find(&req, "kmesh.tcp.connections.active").data else {
        panic!("active is not a sum");
    };
    assert!(!active.is_monotonic);
    assert_eq!(active.aggregation_temporality, CUMULATIVE);
}

#[test]
fn a_large_mesh_is_split_into_requests_a_receiver_accepts() {
    use prost::Message;

    use crate::model::{Backend, Mesh, Policy, Service};
    // 4 services of 250 backends; a connection to each backend makes 1000 series.
    let mut mesh = Mesh::default();
    let mut addrs = Vec::new();
    for svc in 0..4u8 {
        let vip: std::net::SocketAddr = format!("198.18.1.{svc}:80").parse().unwrap();
        let backends: Vec<Backend> = (0..250u8)
            .map(|i| Backend::new(format!("10.0.{svc}.{i}:8080").parse().unwrap(), 1))
            .collect();
        addrs.extend(backends.iter().map(|b| b.addr));
        let name = format!("svc-{svc}");
        mesh.services.insert(
            vip,
            Service {
                name,
                namespace: None,
                vip,
                policy: Policy::Random,
                backends,
                origin: Default::default(),
            },
        );
    }
    let mut agg = Aggregator::new(SeriesLimits::default());
    agg.update_labels(&mesh, std::iter::empty());
    for (cookie, addr) in addrs.iter().enumerate() {
        agg.record(
            &Record::closed(close_reason::FIN)
                .outbound("0.0.0.0:0", &addr.to_string())
                .cookie(cookie as u64)
                .times(0, 1_000_000)
                .srtt_us(40 + cookie as u32)
                .build(),
        );
    }
    let view = agg.view(false);
    assert_eq!(view.series.len(), 1000);
    let agent = AgentFigures::new(&view, Default::default(), Default::default());
    let all = requests(
        &view,
        &agent,
        &[],
        HistogramAggregation::Explicit,
        SystemTime::now(),
    );
    assert_eq!(all.len(), 1000usize.div_ceil(SERIES_PER_REQUEST));
    let points: usize = all
        .iter()
        .flat_map(|r| &r.resource_metrics[0].scope_metrics[0].metrics)
        .filter(|m| m.name == "kmesh.tcp.connections.opened")
        .map(|m| match &m.data {
            Some(Data::Sum(s)) => s.data_points.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(points, 1000, "every series exactly once");
    let sizes: Vec<usize> = all.iter().map(|r| r.encoded_len()).collect();
    assert!(
        sizes.iter().all(|&n| n < 1 << 20),
        "every request under 1 MiB: {sizes:?}"
    );
}

#[test]
fn every_agent_wide_figure_is_exported_with_its_attributes() {
    let agg = aggregator();
    let view = agg.view(false);
    let control = crate::agent_stats::ControlFigures {
        config_reloads_ok: 3,
        config_reloads_failed: 2,
        services: 1,
        map_services: 1,
        map_backends: 1,
    };
    let agent = AgentFigures::new(&view, control, Default::default());
    let req = requests(
        &view,
        &agent,
        &[],
        HistogramAggregation::Explicit,
        SystemTime::now(),
    )
    .remove(0);
    for family in &AGENT_FAMILIES {
        find(&req, family.otlp_name);
    }
    let Some(Data::Sum(reloads)) = &find(&req, "kmesh.config.reloads").data else {
        panic!("reloads are a sum");
    };
    let failed = reloads
        .data_points
        .iter()
        .find(|p| attr(&p.attributes, "kmesh.result") == Some(&s("failure")))
        .expect("a failure point");
    assert_eq!(failed.value, Some(number_data_point::Value::AsInt(2)));
    assert!(reloads.is_monotonic);
    let Some(Data::Gauge(entries)) = &find(&req, "kmesh.map.entries").data else {
        panic!("map entries are a gauge");
    };
    assert_eq!(entries.data_points.len(), 2, "services and backends");
}
