//! Translation rules on small hand-made resource sets (the real dumps are
//! in config/tests.rs).
use super::*;

pub(super) fn set_of(yaml: &str) -> ResourceSet {
    let value: serde_json::Value = serde_yaml_ng::from_str(yaml).unwrap();
    let mut set = ResourceSet::default();
    crate::xds::json::read(&value, "v1", &mut set).unwrap();
    set
}

const EDS_CLUSTER: &str = r#"
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: outbound|80||echo.test.svc.cluster.local
  type: EDS
  eds_cluster_config: { service_name: outbound|80||echo.test.svc.cluster.local }
"#;

pub(super) fn tcp_listener(name: &str, ip: &str, cluster: &str) -> String {
    format!(
        r#"
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: {name}
  address: {{ socket_address: {{ address: {ip}, port_value: 80 }} }}
  filter_chains:
  - filters:
    - name: envoy.filters.network.tcp_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
        stat_prefix: s
        cluster: {cluster}
"#
    )
}

#[test]
fn services_wait_for_missing_endpoints_and_routes() {
    let mut yaml = String::from(EDS_CLUSTER);
    yaml.push_str(&tcp_listener(
        "10.96.0.1_80",
        "10.96.0.1",
        "outbound|80||echo.test.svc.cluster.local",
    ));
    yaml.push_str(
        r#"
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: 10.96.0.2_80
  address: { socket_address: { address: 10.96.0.2, port_value: 80 } }
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: h
        rds: { route_config_name: "80" }
"#,
    );
    let t = translate(&set_of(&yaml));
    let pending: Vec<String> = t.pending.iter().map(ToString::to_string).collect();
    assert_eq!(pending, ["10.96.0.1:80", "10.96.0.2:80"]);
    let service = &t.services[&"10.96.0.1:80".parse().unwrap()];
    assert!(service.backends.is_empty());
    assert_eq!(service.name, "echo.test.svc.cluster.local");
}

#[test]
fn a_listener_bound_to_the_vip_beats_a_wildcard_domain() {
    let mut yaml = String::from(
        r#"
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: a
  type: STATIC
  load_assignment:
    cluster_name: a
    endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 10.0.0.1, port_value: 80 } } } }] }]
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: b
  type: STATIC
  load_assignment:
    cluster_name: b
    endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 10.0.0.2, port_value: 80 } } } }] }]
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: 0.0.0.0_80
  address: { socket_address: { address: 0.0.0.0, port_value: 80 } }
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: h
        route_config:
          name: "80"
          virtual_hosts:
          - name: a.test:80
            domains: [a.test, 10.96.0.9]
            routes: [{ match: { prefix: / }, route: { cluster: a } }]
"#,
    );
    // Sorts after 0.0.0.0_80, so it is translated second.
    yaml.push_str(&tcp_listener("10.96.0.9_80", "10.96.0.9", "b"));
    let t = translate(&set_of(&yaml));
    let service = &t.services[&"10.96.0.9:80".parse().unwrap()];
    assert_eq!(service.backends[0].addr.to_string(), "10.0.0.2:80");
    assert!(
        t.findings
            .iter()
            .any(|f| f.severity == Severity::Adjusted && f.message.contains("10.96.0.9:80")),
        "{:?}",
        t.findings
    );
}

#[test]
fn istio_names_become_service_names() {
    assert_eq!(
        service_name_of_cluster("outbound|9080|v1|reviews.default.svc.cluster.local"),
        "reviews.default.svc.cluster.local"
    );
    assert_eq!(service_name_of_cluster("my-cluster"), "my-cluster");
    assert_eq!(
        domain_addr("[fd00::1]:8080", 80),
        Some("[fd00::1]:8080".parse().unwrap())
    );
    assert_eq!(
        domain_addr("10.0.0.1", 80),
        Some("10.0.0.1:80".parse().unwrap())
    );
    assert_eq!(
        domain_addr("::ffff:10.0.0.1", 80),
        Some("10.0.0.1:80".parse().unwrap())
    );
    assert_eq!(domain_addr("reviews", 80), None);
    assert_eq!(
        checked_name("overflow", "10.0.0.1:80".parse().unwrap()),
        "overflow@10.0.0.1:80"
    );
}
