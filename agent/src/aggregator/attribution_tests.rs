//! Attribution: each end of a connection named by the workload at its
//! address, as Istio reports it from either side.
use kmesh_common::{ConnEvent, close_reason, direction};

use super::{Aggregator, Direction, SeriesKey, SeriesLimits, istio};
use crate::{config::parse, test_records::Record};

const MESH: &str = r#"
workloads:
  - { name: web-1, namespace: front, workload: web, service_account: web, labels: { app: web, version: v1 }, addresses: [10.1.0.1] }
  - { name: batch-1, namespace: jobs, workload: batch, addresses: [10.2.0.1] }
  - { name: cart-a, namespace: shop, workload: cart-v1, labels: { app: cart, version: v1 }, addresses: [10.3.0.1], cluster: east }
  - { name: cart-b, namespace: shop, workload: cart-v2, labels: { app: cart, version: v2 }, addresses: [10.3.0.2] }
services:
  - name: cart.shop.svc.cluster.local
    vip: 198.18.0.30:80
    backends:
      - address: 10.3.0.1:8080
      - address: 10.3.0.2:8080
"#;

const CART_ID: u32 = 3;

fn aggregator() -> Aggregator {
    let mesh = parse(MESH).unwrap();
    let vip = *mesh.services.keys().next().unwrap();
    let mut agg = Aggregator::new(SeriesLimits::default());
    agg.update_labels(&mesh, [(vip, CART_ID)].into_iter());
    agg
}

/// A close record of `client` -> `server`, from the side `dir`; outbound
/// records are routed through cart's VIP.
fn close(cookie: u64, dir: u8, client: &str, server: &str, reason: u8) -> ConnEvent {
    let r = Record::closed(reason)
        .cookie(cookie)
        .times(0, 1_000_000)
        .bytes(10, 20);
    if dir == direction::OUTBOUND {
        // The socket's peer is the VIP it dialled.
        r.outbound(client, "198.18.0.30:80")
            .routed(CART_ID, server)
            .build()
    } else {
        r.inbound(server, client).build()
    }
}

fn label<'k>(key: &'k SeriesKey, name: &str) -> &'k str {
    label_of(istio::series_labels(key), name)
}

fn label_of<'k>(labels: [(&str, &'k str); istio::LABELS], name: &str) -> &'k str {
    labels
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no label {name}"))
        .1
}

#[test]
fn both_ends_are_named_by_workload_at_both_reporters() {
    let mut agg = aggregator();
    let out = agg
        .record(&close(
            1,
            direction::OUTBOUND,
            "10.1.0.1:40000",
            "10.3.0.2:8080",
            close_reason::FIN,
        ))
        .unwrap();
    let inb = agg
        .record(&close(
            2,
            direction::INBOUND,
            "10.1.0.1:40000",
            "10.3.0.2:8080",
            close_reason::FIN,
        ))
        .unwrap();
    for (key, reporter) in [(&out, "source"), (&inb, "destination")] {
        assert_eq!(label(key, "reporter"), reporter);
        assert_eq!(label(key, "source_workload"), "web");
        assert_eq!(label(key, "source_workload_namespace"), "front");
        assert_eq!(label(key, "source_canonical_service"), "web");
        assert_eq!(label(key, "source_canonical_revision"), "v1");
        assert_eq!(
            label(key, "source_principal"),
            "spiffe://cluster.local/ns/front/sa/web"
        );
        assert_eq!(label(key, "destination_workload"), "cart-v2");
        assert_eq!(label(key, "destination_canonical_revision"), "v2");
        assert_eq!(
            label(key, "destination_service"),
            "cart.shop.svc.cluster.local"
        );
        assert_eq!(label(key, "destination_service_name"), "cart");
        assert_eq!(label(key, "destination_service_namespace"), "shop");
        assert_eq!(label(key, "destination_backend"), "10.3.0.2:8080");
        assert_eq!(label(key, "connection_security_policy"), "none");
    }
    // Both reporters name the same pair, so they fall in one series each.
    assert_eq!(agg.series().count(), 2);
}

#[test]
fn each_source_workload_has_its_own_series_with_its_own_counts() {
    let mut agg = aggregator();
    let mut cookie = 0;
    for (client, n) in [("10.1.0.1", 3), ("10.2.0.1", 5)] {
        for _ in 0..n {
            cookie += 1;
            let c = format!("{client}:{}", 40000 + cookie);
            agg.record(&close(
                cookie,
                direction::OUTBOUND,
                &c,
                "10.3.0.1:8080",
                close_reason::FIN,
            ));
        }
    }
    let by_source: Vec<(String, String, u64, u64)> = {
        let mut v: Vec<_> = agg
            .series()
            .map(|(k, s)| {
                (
                    k.source.workload.to_string(),
                    k.destination.workload.to_string(),
                    s.counts().opened,
                    s.counts().bytes_sent,
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        by_source,
        [
            ("batch".to_string(), "cart-v1".to_string(), 5, 50),
            ("web".to_string(), "cart-v1".to_string(), 3, 30)
        ]
    );
    let batch = agg
        .series()
        .find(|(k, _)| &*k.source.workload == "batch")
        .unwrap()
        .0;
    // No service account given: Kubernetes' default.
    assert_eq!(
        label(batch, "source_principal"),
        "spiffe://cluster.local/ns/jobs/sa/default"
    );
    assert_eq!(label(batch, "destination_cluster"), "east");
    assert_eq!(label(batch, "source_cluster"), "unknown");
}

#[test]
fn a_peer_outside_the_mesh_is_unknown_as_istio_labels_it() {
    let mut agg = aggregator();
    let key = agg
        .record(&close(
            1,
            direction::INBOUND,
            "192.0.2.9:5555",
            "10.3.0.1:8080",
            close_reason::RST_RECEIVED,
        ))
        .unwrap();
    assert_eq!(key.direction, Direction::Inbound);
    for name in [
        "source_workload",
        "source_workload_namespace",
        "source_canonical_service",
        "source_canonical_revision",
        "source_principal",
    ] {
        assert_eq!(label(&key, name), "unknown", "{name}");
    }
    assert_eq!(label(&key, "destination_workload"), "cart-v1");
    assert_eq!(
        label_of(
            istio::close_labels(&key, close_reason::RST_RECEIVED),
            "response_flags"
        ),
        "DC"
    );
}
