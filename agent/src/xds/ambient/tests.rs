use std::{net::SocketAddr, path::PathBuf, time::Instant};

use super::{
    proto::{Address, NetworkAddress, Port, PortList, Service, Workload, address},
    *,
};
use crate::{
    model::{Mesh, Policy, ProbeSettings},
    xds::{Report, translate::Severity},
};

fn shared(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/xds")
        .join(name)
}

fn layout(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/ztunnel")
        .join(name)
}

fn read_dump(path: &std::path::Path) -> Result<(AddressSet, Mesh, Report), String> {
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(dump::is_dump(&value), "{}", path.display());
    let mut set = AddressSet::default();
    dump::read(&value, "v1", &mut set)?;
    let (mesh, report) = translate::translate(&set, ProbeSettings::default());
    Ok((set, mesh, report))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn backends(mesh: &Mesh, vip: &str) -> Vec<(String, u32, Option<String>)> {
    mesh.services[&addr(vip)]
        .backends
        .iter()
        .map(|b| (b.addr.to_string(), b.weight, b.workload.clone()))
        .collect()
}

#[test]
fn the_istio_1_24_ztunnel_dump_routes_every_vip_and_port_to_its_workloads() {
    let (set, mesh, report) =
        read_dump(&shared("istio-1.24-ambient-ztunnel.config_dump.json")).unwrap();
    assert_eq!(set.workloads.len(), 48);
    assert_eq!(set.services.len(), 39);
    assert_eq!(mesh.workloads.len(), 48);
    // 53 VIP × port pairs; the two headless services have no VIP.
    assert_eq!(mesh.services.len(), 53);
    let reviews = &mesh.services[&addr("10.96.224.224:9080")];
    assert_eq!(reviews.name, "reviews.bookinfo.svc.cluster.local");
    assert_eq!(reviews.namespace.as_deref(), Some("bookinfo"));
    assert_eq!(reviews.policy, Policy::Random);
    let uid = |pod: &str| Some(format!("cluster-default//Pod/bookinfo/{pod}"));
    assert_eq!(
        backends(&mesh, "10.96.224.224:9080"),
        vec![
            (
                "10.244.1.17:9080".into(),
                1,
                uid("reviews-v1-5fc87d67c-r67vp")
            ),
            (
                "10.244.1.18:9080".into(),
                1,
                uid("reviews-v2-f6d449f65-v2qx7")
            ),
            (
                "10.244.1.19:9080".into(),
                1,
                uid("reviews-v3-76f75877b9-g6ds7")
            ),
        ]
    );
    let revisions: Vec<(String, String)> = mesh
        .workloads
        .iter()
        .filter(|w| w.canonical_name == "reviews")
        .map(|w| (w.canonical_revision.clone(), w.workload_name.clone()))
        .collect();
    assert_eq!(
        revisions,
        [
            ("v1", "reviews-v1"),
            ("v2", "reviews-v2"),
            ("v3", "reviews-v3")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let pp = &mesh.services[&addr("10.96.209.124:9080")];
    assert_eq!(pp.name, "productpage.bookinfo.svc.cluster.local");
    assert_eq!(pp.backends.len(), 1);
    let w = mesh.workloads.by_addr(pp.backends[0].addr.ip()).unwrap();
    assert_eq!(w.canonical_name, "productpage");
    assert_eq!(w.service_account, "bookinfo-productpage");
    assert_eq!(
        w.services,
        [
            "bookinfo/productpage-v1.bookinfo.svc.cluster.local",
            "bookinfo/productpage.bookinfo.svc.cluster.local"
        ]
    );
    // Service port 443 → target 6443; a named target port (keycloak's 0)
    // resolved by the workload's own mapping.
    assert_eq!(
        backends(&mesh, "10.96.0.1:443")[0].0.rsplit(':').next(),
        Some("6443")
    );
    assert!(backends(&mesh, "10.96.213.239:80")[0].0.ends_with(":8080"));
    assert!(backends(&mesh, "10.96.213.239:443")[0].0.ends_with(":8443"));
    assert_eq!(backends(&mesh, "10.96.0.10:53").len(), 2);
    // Waypoints are reported, the service routed straight to the pods.
    let waypoint = report
        .findings
        .iter()
        .find(|f| f.name == "bookinfo/reviews.bookinfo.svc.cluster.local")
        .expect("a finding on reviews");
    assert_eq!(waypoint.severity, Severity::Unsupported);
    assert!(
        waypoint
            .message
            .contains("waypoint bookinfo/waypoint.bookinfo.svc.cluster.local"),
        "{waypoint:?}"
    );
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.severity == Severity::Ignored
                && f.name == "keycloak/keycloak-headless.keycloak.svc.cluster.local")
    );
    assert!(report.rejected.is_empty());
}

#[test]
fn the_1_22_layout_maps_by_address() {
    let (_, mesh, _) = read_dump(&layout("ztunnel-1.22-maps.config_dump.json")).unwrap();
    assert_eq!(mesh.workloads.len(), 2);
    // The per-workload mapping wins: v2 listens on 9090.
    assert_eq!(
        backends(&mesh, "10.96.10.1:80")
            .into_iter()
            .map(|b| b.0)
            .collect::<Vec<_>>(),
        ["10.244.0.5:8080", "10.244.0.6:9090"]
    );
    let v2 = mesh
        .workloads
        .get("Kubernetes//Pod/shop/echo-v2-b")
        .unwrap();
    assert_eq!(
        (v2.canonical_revision.as_str(), v2.node.as_str()),
        ("v2", "worker-2")
    );
    assert_eq!(v2.services, ["shop/echo.shop.svc.cluster.local"]);
}

#[test]
fn the_1_21_layout_flattens_the_stores_and_unhealthy_pods_are_excluded() {
    let (_, mesh, _) = read_dump(&layout("ztunnel-1.21-stores.config_dump.json")).unwrap();
    assert_eq!(mesh.workloads.len(), 2);
    let echo = &mesh.services[&addr("10.96.10.1:80")];
    assert_eq!(
        echo.backends
            .iter()
            .map(|b| b.addr.to_string())
            .collect::<Vec<_>>(),
        ["10.244.0.5:8080"]
    );
    assert_eq!(echo.origin.clusters[0].endpoints, 1);
    assert_eq!(echo.origin.clusters[0].excluded_endpoints, 1);
}

#[test]
fn a_dump_with_a_broken_field_is_refused_naming_it() {
    let text = std::fs::read_to_string(layout("ztunnel-1.22-maps.config_dump.json"))
        .unwrap()
        .replace("\"10.244.0.6\"]", "\"10.244.0.x\"]");
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let e = dump::read(&value, "v", &mut AddressSet::default()).unwrap_err();
    assert!(
        e.contains("workloads[\"/10.244.0.6\"].workloadIps[0]") && e.contains("10.244.0.x"),
        "{e}"
    );
    // A compact mesh file with services (and workloads) is not a dump.
    let compact = serde_json::json!({
        "services": [{"name": "a", "vip": "198.18.0.1:80", "backends": []}],
        "workloads": [{"name": "a", "uid": "k/a", "service_account": "a", "addresses": ["10.0.0.1"]}],
    });
    assert!(!dump::is_dump(&compact));
}

pub(crate) fn workload(uid: &str, ip: [u8; 4], services: &[(&str, u32)]) -> Workload {
    Workload {
        uid: uid.into(),
        name: uid.rsplit('/').next().unwrap_or_default().into(),
        namespace: "shop".into(),
        addresses: vec![ip.to_vec()],
        services: services
            .iter()
            .map(|(k, target)| {
                let ports = if *target == 0 {
                    Vec::new()
                } else {
                    vec![Port {
                        service_port: 80,
                        target_port: *target,
                        app_protocol: 0,
                    }]
                };
                (k.to_string(), PortList { ports })
            })
            .collect(),
        ..Workload::default()
    }
}

pub(crate) fn service(host: &str, vip: [u8; 4], target: u32) -> Service {
    Service {
        name: host.split('.').next().unwrap_or_default().into(),
        namespace: "shop".into(),
        hostname: host.into(),
        addresses: vec![NetworkAddress {
            network: String::new(),
            address: vip.to_vec(),
            length: None,
        }],
        ports: vec![Port {
            service_port: 80,
            target_port: target,
            app_protocol: 0,
        }],
        ..Service::default()
    }
}

fn w(x: Workload) -> Address {
    Address {
        r#type: Some(address::Type::Workload(Box::new(x))),
    }
}

fn s(x: Service) -> Address {
    Address {
        r#type: Some(address::Type::Service(Box::new(x))),
    }
}

#[test]
fn capacity_weights_named_ports_and_unknown_services() {
    let mut set = AddressSet::default();
    set.insert(
        "shop/a.shop.svc",
        s(service("a.shop.svc", [10, 96, 0, 1], 0)),
        "1",
    );
    let mut heavy = workload("u1", [10, 0, 0, 1], &[("shop/a.shop.svc", 8080)]);
    heavy.capacity = Some(3);
    set.insert("u1", w(heavy), "1");
    // Named port, and no mapping of its own: left out.
    set.insert(
        "u2",
        w(workload("u2", [10, 0, 0, 2], &[("shop/a.shop.svc", 0)])),
        "1",
    );
    set.insert(
        "u3",
        w(workload(
            "u3",
            [10, 0, 0, 3],
            &[("shop/a.shop.svc", 8081), ("shop/gone.shop.svc", 1)],
        )),
        "1",
    );
    let (mesh, report) = translate::translate(&set, ProbeSettings::default());
    let a = &mesh.services[&addr("10.96.0.1:80")];
    assert_eq!(a.policy, Policy::Weighted);
    assert_eq!(
        backends(&mesh, "10.96.0.1:80"),
        vec![
            ("10.0.0.1:8080".into(), 3, Some("u1".into())),
            ("10.0.0.3:8081".into(), 1, Some("u3".into())),
        ]
    );
    assert_eq!(a.origin.clusters[0].excluded_endpoints, 1);
    let messages: Vec<String> = report
        .findings
        .iter()
        .map(|f| format!("{:?} {}", f.severity, f.message))
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("Unresolved") && m.contains("do not map port 80")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("\"shop/gone.shop.svc\", which was not received")),
        "{messages:?}"
    );
}

#[test]
fn invalid_resources_are_named_with_the_reason() {
    let mut no_uid = workload("", [10, 0, 0, 1], &[]);
    no_uid.name = "pod-a".into();
    let mut bad_ip = workload("u", [10, 0, 0, 1], &[]);
    bad_ip.addresses = vec![vec![10, 0, 0]];
    let bad_key = workload("u", [10, 0, 0, 1], &[("no-slash", 80)]);
    let mut big_port = service("a.shop.svc", [10, 96, 0, 1], 70000);
    let mut no_host = service("", [10, 96, 0, 1], 80);
    no_host.name = "a".into();
    big_port.ports[0].target_port = 70000;
    for (a, expected) in [
        (w(no_uid), "has no uid"),
        (w(bad_ip), "addresses[0] is an IP address of 3 bytes"),
        (w(bad_key), "\"no-slash\" is not namespace/hostname"),
        (s(big_port), "ports[0].target_port 70000 is above 65535"),
        (s(no_host), "has no hostname"),
        (Address { r#type: None }, "neither a workload nor a service"),
    ] {
        let e = validate(&a).unwrap_err();
        assert!(e.contains(expected), "{e}");
    }
}

/// Ten times the 1.24 fixture: 480 workloads behind 390 services.
#[test]
fn ten_times_the_fixture_translates_quickly() {
    let mut set = AddressSet::default();
    for i in 0..390u32 {
        let host = format!("svc{i}.shop.svc.cluster.local");
        set.insert(
            &format!("shop/{host}"),
            s(service(&host, [10, 96, (i >> 8) as u8, i as u8], 8080)),
            "1",
        );
    }
    for i in 0..480u32 {
        let backs = [
            format!("shop/svc{}.shop.svc.cluster.local", i % 390),
            format!("shop/svc{}.shop.svc.cluster.local", (i * 7) % 390),
        ];
        let keys: Vec<(&str, u32)> = backs.iter().map(|k| (k.as_str(), 0)).collect();
        set.insert(
            &format!("u{i}"),
            w(workload(
                &format!("u{i}"),
                [10, 1, (i >> 8) as u8, i as u8],
                &keys,
            )),
            "1",
        );
    }
    let started = Instant::now();
    let (mesh, report) = translate::translate(&set, ProbeSettings::default());
    let took = started.elapsed();
    assert_eq!(mesh.services.len(), 390);
    assert_eq!(mesh.workloads.len(), 480);
    let total: usize = mesh.services.values().map(|s| s.backends.len()).sum();
    assert!(total >= 480, "{total}");
    assert!(report.findings.is_empty(), "{:?}", report.findings.first());
    assert!(took.as_millis() < 500, "{took:?}");
}

#[test]
fn huge_capacities_are_scaled_to_fit_the_kernel() {
    let mut set = AddressSet::default();
    set.insert(
        "shop/a.shop.svc",
        s(service("a.shop.svc", [10, 96, 0, 1], 80)),
        "1",
    );
    for (i, cap) in [u32::MAX, u32::MAX, 1].into_iter().enumerate() {
        let mut x = workload(
            &format!("u{i}"),
            [10, 0, 0, i as u8 + 1],
            &[("shop/a.shop.svc", 0)],
        );
        x.capacity = Some(cap);
        set.insert(&format!("u{i}"), w(x), "1");
    }
    let (mesh, report) = translate::translate(&set, ProbeSettings::default());
    let a = &mesh.services[&addr("10.96.0.1:80")];
    let total: u64 = a.backends.iter().map(|b| u64::from(b.weight)).sum();
    assert!(total <= u64::from(u32::MAX), "{total}");
    assert!(a.backends.iter().all(|b| b.weight > 0));
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.message.contains("scaled down"))
    );
}
