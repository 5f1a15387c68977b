//! The file source over real control-plane output (../shared/testdata/xds,
//! see its SOURCES.md) and over hand-made files in every accepted shape.
use std::{net::SocketAddr, path::PathBuf};

use super::*;
use crate::{
    model::{Policy, Service},
    xds::translate::Severity,
};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/xds")
        .join(name)
}

fn service<'m>(loaded: &'m Loaded, vip: &str) -> &'m Service {
    let vip: SocketAddr = vip.parse().unwrap();
    loaded
        .mesh
        .services
        .get(&vip)
        .unwrap_or_else(|| panic!("no service at {vip}"))
}

fn backends(s: &Service) -> Vec<(String, u32)> {
    s.backends
        .iter()
        .map(|b| (b.addr.to_string(), b.weight))
        .collect()
}

fn tmp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kmesh-config-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn deathstarbench_sidecar_dump() {
    let loaded = load(&testdata(
        "istio-1.18-sidecar-deathstarbench.config_dump.json",
    ))
    .unwrap();
    let mesh = &loaded.mesh;
    // 43 tcp_proxy VIP listeners and the VIPs of 97 HTTP listeners' virtual
    // hosts, less 24 passthrough (ORIGINAL_DST) listeners on pod and node IPs.
    assert_eq!(mesh.services.len(), 122);

    // A VIP listener with an HTTP chain (RDS, one `*` virtual host) and a
    // tcp_proxy fallback to the same cluster.
    let jaeger = service(&loaded, "10.68.66.148:16686");
    assert_eq!(jaeger.name, "jaeger.social-network.svc.cluster.local");
    assert_eq!(backends(jaeger), [("172.16.18.195:16686".to_string(), 1)]);
    assert_eq!(jaeger.policy, Policy::Random);
    assert!(
        jaeger
            .origin
            .policy_reason
            .as_deref()
            .is_some_and(|r| r.starts_with("LEAST_REQUEST")),
        "{:?}",
        jaeger.origin
    );
    let cluster = &jaeger.origin.clusters[0];
    assert_eq!(
        cluster.name,
        "outbound|16686||jaeger.social-network.svc.cluster.local"
    );
    assert_eq!(cluster.max_connections, Some(u32::MAX));
    let kinds: Vec<&str> = jaeger.origin.resources.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, ["listener", "route", "cluster", "endpoints"]);
    // Envoy dumps endpoints without a version; the file's time stands in.
    let versions: Vec<&str> = jaeger
        .origin
        .resources
        .iter()
        .map(|r| r.version.as_str())
        .collect();
    assert_eq!(versions[..3], ["2025-02-17T14:49:37Z/296"; 3]);
    assert!(versions[3].starts_with("file modified "), "{versions:?}");

    // A wildcard HTTP listener: the VIP is a domain of route "80".
    let egress = service(&loaded, "10.68.6.62:80");
    assert_eq!(
        egress.name,
        "istio-egressgateway.istio-system.svc.cluster.local"
    );
    assert_eq!(backends(egress), [("172.16.18.238:8080".to_string(), 1)]);

    // Services with several endpoints keep them all, in equal weights.
    let alertmanager = mesh
        .services
        .values()
        .find(|s| {
            s.name == "alertmanager-main.monitoring.svc.cluster.local" && s.vip.port() == 9093
        })
        .expect("alertmanager-main:9093");
    assert_eq!(
        backends(alertmanager),
        [
            ("172.16.18.249:9093".to_string(), 1),
            ("172.16.188.16:9093".to_string(), 1),
            ("172.16.188.40:9093".to_string(), 1)
        ]
    );
    let prometheus_adapter = service(&loaded, "10.68.20.104:443");
    assert_eq!(
        backends(prometheus_adapter),
        [
            ("172.16.18.240:6443".to_string(), 1),
            ("172.16.18.253:6443".to_string(), 1)
        ]
    );

    // Both listeners in error_state are refused with Envoy's reason.
    let rejected = &loaded.report.rejected;
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0].name, "virtualInbound");
    assert!(
        rejected[0]
            .reason
            .contains("Proto constraint validation failed")
    );

    // The capture listener and passthrough listeners are set aside, and said so.
    let ignored = |name: &str| {
        loaded
            .report
            .findings
            .iter()
            .any(|f| f.severity == Severity::Ignored && f.name == name)
    };
    assert!(ignored("virtualOutbound"));
    assert!(ignored("192.168.0.155_10250"));
    assert!(
        !mesh
            .services
            .contains_key(&"192.168.0.155:10250".parse().unwrap())
    );
}

#[test]
fn envoy_gateway_weighted_route_from_a_directory_of_lists() {
    let dir = tmp_dir("eg");
    for kind in ["clusters", "endpoints", "listeners", "routes"] {
        let name = format!("envoy-gateway-weighted.{kind}.yaml");
        std::fs::copy(testdata(&name), dir.join(&name)).unwrap();
    }
    let loaded = load(&dir).unwrap();
    // The listener is on [::]:10080 with a `*` virtual host: no address
    // leads there, so it is derived and reported, not programmed.
    assert!(loaded.mesh.services.is_empty());
    let [unrouted] = loaded.report.unrouted.as_slice() else {
        panic!("{:?}", loaded.report.unrouted);
    };
    assert_eq!(unrouted.listener, "first-listener");
    assert_eq!(unrouted.port, 10080);
    assert_eq!(unrouted.policy, Policy::Weighted);
    let weights: Vec<(String, u32)> = unrouted
        .backends
        .iter()
        .map(|b| (b.addr.to_string(), b.weight))
        .collect();
    // 30% over backend/0's two endpoints, 70% over backend/1's two.
    assert_eq!(
        weights,
        [
            ("1.2.3.4:8080".to_string(), 3),
            ("2.3.4.5:8080".to_string(), 3),
            ("3.4.5.6:9090".to_string(), 7),
            ("4.5.6.7:9090".to_string(), 7)
        ]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn endpoints_only_dump_loads_without_services() {
    let loaded = load(&testdata("istio-bookinfo-endpoints.config_dump.json")).unwrap();
    assert!(loaded.mesh.services.is_empty());
}

#[test]
fn a_ztunnel_dump_is_read_as_istio_ambient_workload_discovery() {
    let loaded = load(&testdata("istio-1.24-ambient-ztunnel.config_dump.json")).unwrap();
    assert_eq!(loaded.mesh.workloads.len(), 48);
    assert_eq!(loaded.mesh.services.len(), 53);
    let reviews = service(&loaded, "10.96.224.224:9080");
    assert_eq!(reviews.name, "reviews.bookinfo.svc.cluster.local");
    assert_eq!(reviews.backends.len(), 3);
    assert_eq!(reviews.origin.resources[0].kind, "service");
    // One format per directory, and one ztunnel per directory.
    let dir = std::env::temp_dir().join(format!("kmesh-ztunnel-mix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dump =
        std::fs::read_to_string(testdata("istio-1.24-ambient-ztunnel.config_dump.json")).unwrap();
    std::fs::write(dir.join("a.json"), &dump).unwrap();
    std::fs::write(dir.join("b.json"), &dump).unwrap();
    let e = load(&dir).unwrap_err().to_string();
    assert!(e.contains("both ztunnel config dumps"), "{e}");
    std::fs::write(dir.join("b.json"), "[]").unwrap();
    let e = load(&dir).unwrap_err().to_string();
    assert!(e.contains("holds another format"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The productpage route config behind a VIP listener of our own: its five
/// path routes all name a cluster the dump does not have (only the v1
/// subset), which is reported rather than routed.
#[test]
fn routes_to_missing_clusters_are_reported() {
    let dir = tmp_dir("pp");
    std::fs::copy(
        testdata("istio-productpage-subset.http_config.json"),
        dir.join("a-dump.json"),
    )
    .unwrap();
    std::fs::write(dir.join("b-listener.yaml"), VIP_LISTENER).unwrap();
    let loaded = load(&dir).unwrap();
    assert!(
        loaded.mesh.services.is_empty(),
        "{:?}",
        loaded.mesh.services
    );
    let missing = loaded
        .report
        .findings
        .iter()
        .find(|f| f.severity == Severity::Unresolved)
        .expect("a finding for the missing cluster");
    assert_eq!(
        missing.name,
        "outbound|9080||productpage.default.svc.cluster.local"
    );
    assert!(missing.message.contains("does not exist"), "{missing:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

const VIP_LISTENER: &str = r#"
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: 10.96.0.20_80
  address: { socket_address: { address: 10.96.0.20, port_value: 80 } }
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: http
        rds: { route_config_name: http.8080 }
"#;

const HEADER_ROUTES: &str = r#"
static_resources:
  listeners:
  - name: reviews
    address: { socket_address: { address: 10.96.0.30, port_value: 9080 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: reviews
          route_config:
            name: reviews
            virtual_hosts:
            - name: reviews.default.svc.cluster.local:9080
              domains: ["*"]
              routes:
              - match: { prefix: /, headers: [{ name: end-user, string_match: { exact: jason } }] }
                route: { cluster: reviews-v2 }
              - match: { prefix: / }
                route:
                  weighted_clusters:
                    clusters:
                    - { name: reviews-v1, weight: 9000 }
                    - { name: reviews-v3, weight: 1000 }
  clusters:
  - name: reviews-v1
    # Host names need a DNS type: Envoy refuses them in a STATIC cluster.
    type: STRICT_DNS
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: reviews-v1
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 10.1.0.1, port_value: 9080 } } }
        - endpoint: { address: { socket_address: { address: 10.1.0.2, port_value: 9080 } } }
          health_status: UNHEALTHY
        - endpoint: { address: { socket_address: { address: reviews.example, port_value: 9080 } } }
  - name: reviews-v2
    type: STATIC
    load_assignment:
      cluster_name: reviews-v2
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 10.2.0.1, port_value: 9080 } } }
  - name: reviews-v3
    type: STATIC
    load_assignment:
      cluster_name: reviews-v3
      endpoints:
      - priority: 0
        lb_endpoints:
        - endpoint: { address: { socket_address: { address: 10.3.0.1, port_value: 9080 } } }
          load_balancing_weight: 3
        - endpoint: { address: { socket_address: { address: 10.3.0.2, port_value: 9080 } } }
      - priority: 1
        lb_endpoints:
        - endpoint: { address: { socket_address: { address: 10.3.9.9, port_value: 9080 } } }
"#;

#[test]
fn bootstrap_with_header_routes_weights_health_and_priorities() {
    let dir = tmp_dir("bootstrap");
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, HEADER_ROUTES).unwrap();
    let loaded = load(&path).unwrap();
    let reviews = service(&loaded, "10.96.0.30:9080");
    assert_eq!(reviews.name, "reviews.default.svc.cluster.local");
    assert_eq!(reviews.policy, Policy::Weighted);
    // 90% to v1's one healthy IP endpoint (the unhealthy one and the host
    // name are out); 10% over v3's priority-0 endpoints as 3:1.
    assert_eq!(
        backends(reviews),
        [
            ("10.1.0.1:9080".to_string(), 36),
            ("10.3.0.1:9080".to_string(), 3),
            ("10.3.0.2:9080".to_string(), 1)
        ]
    );
    let findings = &loaded.report.findings;
    let unsupported: Vec<&str> = findings
        .iter()
        .filter(|f| f.severity == Severity::Unsupported)
        .map(|f| f.message.as_str())
        .collect();
    assert!(
        unsupported.iter().any(|m| m.contains("headers end-user")),
        "{unsupported:?}"
    );
    assert!(
        unsupported.iter().any(|m| m.contains("reviews.example")),
        "{unsupported:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hostile_documents_give_errors_that_name_the_place() {
    let cases: &[(&str, &str)] = &[
        (
            r#"[{"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "a"}, {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "a"}]"#,
            "listed twice",
        ),
        (
            r#"[{"@type": "type.googleapis.com/envoy.api.v2.Cluster", "name": "a"}]"#,
            "v2 API",
        ),
        (
            r#"[{"@type": "type.googleapis.com/istio.workload.Address"}]"#,
            "not supported",
        ),
        (r#"[{"name": "mystery"}]"#, "add \"@type\""),
        (
            r#"[{"cluster_name": "c", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": 70000}}}}]}]}]"#,
            "above 65535",
        ),
        (
            r#"[{"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [{"name": "a", "weight": 0}]}}}]}]}]"#,
            "sum to 0",
        ),
        (
            r#"{"configs": [{"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump"}]}"#,
            "holds no Envoy",
        ),
        (
            r#"[{"cluster_name": 7}]"#,
            "[0].cluster_name: expected a string",
        ),
    ];
    let dir = tmp_dir("hostile");
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = dir.join(format!("case{i}.json"));
        std::fs::write(&path, text).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains(expected), "case {i}: {err}");
        std::fs::remove_file(&path).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn compact_and_envoy_documents_do_not_mix() {
    let dir = tmp_dir("mixed");
    std::fs::write(dir.join("a.yaml"), "services: []\n").unwrap();
    std::fs::write(dir.join("b.yaml"), VIP_LISTENER).unwrap();
    let err = load(&dir).unwrap_err().to_string();
    assert!(err.contains("use one format"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A truncated write or an empty ConfigMap must not read as "route nothing":
/// files with no document, and directories with no mesh file, are refused.
#[test]
fn files_and_directories_without_a_document_are_refused() {
    let dir = tmp_dir("empty");
    for (i, text) in [
        "",
        "  \n\t\n",
        "# only a comment\n\n\t# and another\n",
        "---\n...\n",
        "~\n",
    ]
    .iter()
    .enumerate()
    {
        let path = dir.join(format!("mesh{i}.yaml"));
        std::fs::write(&path, text).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string())
                && err.contains("is empty")
                && err.contains("services: []"),
            "{text:?}: {err}"
        );
        std::fs::remove_file(&path).unwrap();
    }

    let err = load(&dir).unwrap_err().to_string();
    assert!(
        err.contains(&dir.display().to_string()) && err.contains("no mesh file"),
        "empty directory: {err}"
    );
    std::fs::write(dir.join("README.txt"), "not a mesh\n").unwrap();
    std::fs::write(dir.join(".hidden.yaml"), "services: []\n").unwrap();
    let err = load(&dir).unwrap_err().to_string();
    assert!(
        err.contains("no mesh file") && err.contains("services: []"),
        "directory without a mesh file: {err}"
    );

    // One empty file among good ones is as much an accident.
    std::fs::write(dir.join("a.yaml"), VIP_LISTENER).unwrap();
    std::fs::write(dir.join("b.yaml"), "").unwrap();
    let err = load(&dir).unwrap_err().to_string();
    assert!(
        err.contains(&dir.join("b.yaml").display().to_string()) && err.contains("is empty"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let err = load_text("\n").unwrap_err().to_string();
    assert!(err.contains("<memory> is empty"), "{err}");
}

/// Removing every service is a decision, written down: an empty service
/// list, or an empty list of Envoy resources.
#[test]
fn explicitly_empty_meshes_are_accepted() {
    for text in [
        "services: []\n",
        "probe:\n  report_interval_seconds: 5\nservices: []\n",
        "[]\n",
        "[]",
        r#"{"version_info": "1", "resources": []}"#,
        "static_resources: {}\n",
    ] {
        let loaded = load_text(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert!(loaded.mesh.services.is_empty(), "{text:?}");
    }
}

/// A compact file cut short before its service list (only `probe:` left,
/// or `services:` with nothing after it) is refused, not read as empty.
#[test]
fn a_compact_document_without_its_service_list_is_refused() {
    for text in [
        "probe:\n  report_interval_seconds: 5\n",
        "services:\n",
        "{}\n",
    ] {
        let err = load_text(text).unwrap_err().to_string();
        assert!(err.contains("services: []"), "{text:?}: {err}");
    }
}

#[test]
fn two_compact_files_in_a_directory_are_refused_naming_both() {
    let dir = tmp_dir("two-compact");
    let service = |name: &str, vip: &str| {
        format!(
            "services:\n  - name: {name}\n    vip: {vip}\n    backends:\n      - address: 127.0.0.1:8080\n"
        )
    };
    std::fs::write(dir.join("a.yaml"), service("a", "198.18.0.1:80")).unwrap();
    std::fs::write(dir.join("b.yaml"), service("b", "198.18.0.2:80")).unwrap();
    let err = load(&dir).unwrap_err().to_string();
    for file in ["a.yaml", "b.yaml"] {
        let path = dir.join(file).display().to_string();
        assert!(err.contains(&path), "{file} not named: {err}");
    }
    assert!(
        err.contains("one compact-format file") && !err.contains("more than one document"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    // Two compact documents in one file are the other mistake, named as such.
    let err = load_text(&format!(
        "{}---\n{}",
        service("a", "198.18.0.1:80"),
        service("b", "198.18.0.2:80")
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("more than one document"), "{err}");
}

/// What the agent prints is the `{:#}` chain: each cause once.
#[test]
fn read_errors_name_the_file_and_say_the_cause_once() {
    let dir = tmp_dir("unreadable");
    let missing = dir.join("missing.yaml");
    let not_utf8 = dir.join("latin1.yaml");
    std::fs::write(&not_utf8, b"services:\n  - name: caf\xe9\n").unwrap();
    for (path, cause) in [
        (&missing, "No such file or directory (os error 2)"),
        (&not_utf8, "stream did not contain valid UTF-8"),
    ] {
        let chain = format!("{:#}", anyhow::Error::from(load(path).unwrap_err()));
        assert!(chain.contains(&path.display().to_string()), "{chain}");
        assert_eq!(chain.matches(cause).count(), 1, "{chain}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
