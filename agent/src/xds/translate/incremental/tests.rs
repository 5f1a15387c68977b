//! An incremental update must give what a full translation of the new
//! resources gives, service for service and finding for finding.
use std::collections::BTreeSet;

use super::*;
use crate::xds::translate::{
    tests::{set_of, tcp_listener},
    translate,
};

fn cluster(host: &str) -> String {
    format!(
        r#"
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: outbound|80||{host}
  type: EDS
  eds_cluster_config: {{ service_name: outbound|80||{host} }}
"#
    )
}

fn endpoints(host: &str, ips: &[&str]) -> String {
    let eps: Vec<String> = ips
        .iter()
        .map(|ip| format!("{{ endpoint: {{ address: {{ socket_address: {{ address: \"{ip}\", port_value: 8080 }} }} }} }}"))
        .collect();
    format!(
        r#"
- "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
  cluster_name: outbound|80||{host}
  endpoints: [ {{ lb_endpoints: [ {} ] }} ]
"#,
        eps.join(", ")
    )
}

/// Three TCP services (`a`, `b`, `c`), the HTTP services of a wildcard
/// listener's route (`d` at 10.96.0.4, `e` split 1:3 with `a`), and a
/// `*` virtual host to `f` no address leads to.
fn mesh(extra: &str) -> String {
    let mut y = String::new();
    for h in ["a", "b", "c", "d", "e", "f"] {
        y.push_str(&cluster(h));
    }
    for (vip, h) in [("10.96.0.1", "a"), ("10.96.0.2", "b"), ("10.96.0.3", "c")] {
        y.push_str(&tcp_listener(
            &format!("{vip}_80"),
            vip,
            &format!("outbound|80||{h}"),
        ));
    }
    y.push_str(
        r#"
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: 0.0.0.0_80
  address: { socket_address: { address: 0.0.0.0, port_value: 80 } }
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: h
        rds: { route_config_name: "80" }
- "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
  name: "80"
  virtual_hosts:
  - name: d:80
    domains: ["10.96.0.4"]
    routes: [ { match: { prefix: / }, route: { cluster: "outbound|80||d" } } ]
  - name: e:80
    domains: ["10.96.0.5"]
    routes:
    - match: { prefix: / }
      route:
        weighted_clusters:
          clusters: [ { name: "outbound|80||e", weight: 1 }, { name: "outbound|80||a", weight: 3 } ]
  - name: f:80
    domains: ["*"]
    routes: [ { match: { prefix: / }, route: { cluster: "outbound|80||f" } } ]
"#,
    );
    y.push_str(extra);
    y
}

fn same(a: &Translation, b: &Translation) {
    assert_eq!(a.services, b.services);
    assert_eq!(a.pending, b.pending);
    assert_eq!(a.findings, b.findings);
    assert_eq!(a.unrouted, b.unrouted);
}

fn changed(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|h| format!("outbound|80||{h}")).collect()
}

#[test]
fn one_changed_assignment_re_resolves_only_its_services() {
    let base = [
        endpoints("a", &["10.0.0.1"]),
        endpoints("b", &["10.0.0.2"]),
        endpoints("c", &["10.0.0.3", "fd00::3"]),
        endpoints("d", &["10.0.0.4"]),
        endpoints("e", &["10.0.0.5"]),
        endpoints("f", &["10.0.0.6"]),
    ]
    .concat();
    let before = set_of(&mesh(&base));
    let mut t = translate(&before);
    // `a` gets a second endpoint: its own service and `e`, which splits
    // traffic with it, are redone; nothing else.
    let next = base.replace(
        &endpoints("a", &["10.0.0.1"]),
        &endpoints("a", &["10.0.0.1", "10.0.0.11"]),
    );
    let after = set_of(&mesh(&next));
    let vips = update_endpoints(&mut t, &after, &changed(&["a"])).unwrap();
    let vips: Vec<String> = vips.iter().map(ToString::to_string).collect();
    assert_eq!(vips, ["10.96.0.1:80", "10.96.0.5:80"]);
    same(&t, &translate(&after));
    assert_eq!(
        t.services[&"10.96.0.1:80".parse().unwrap()].backends.len(),
        2
    );
    // `c` loses its IPv6 endpoint: the finding about it goes too.
    let fixed = next.replace(
        &endpoints("c", &["10.0.0.3", "fd00::3"]),
        &endpoints("c", &["10.0.0.3"]),
    );
    let later = set_of(&mesh(&fixed));
    assert!(t.findings.iter().any(|f| f.message.contains("fd00::3")));
    update_endpoints(&mut t, &later, &changed(&["c"])).unwrap();
    same(&t, &translate(&later));
    assert!(!t.findings.iter().any(|f| f.message.contains("fd00::3")));
}

#[test]
fn endpoints_arriving_and_leaving_move_services_in_and_out_of_pending() {
    let base = [endpoints("a", &["10.0.0.1"]), endpoints("f", &["10.0.0.6"])].concat();
    let before = set_of(&mesh(&base));
    let mut t = translate(&before);
    assert!(t.pending.contains(&"10.96.0.2:80".parse().unwrap()));
    let more = [base.clone(), endpoints("b", &["10.0.0.2"])].concat();
    let after = set_of(&mesh(&more));
    update_endpoints(&mut t, &after, &changed(&["b"])).unwrap();
    same(&t, &translate(&after));
    assert!(!t.pending.contains(&"10.96.0.2:80".parse().unwrap()));
    // And back: the assignment removed.
    update_endpoints(&mut t, &before, &changed(&["b"])).unwrap();
    same(&t, &translate(&before));
}

#[test]
fn what_only_a_full_translation_redoes_is_refused() {
    let base = [endpoints("a", &["10.0.0.1"]), endpoints("f", &["10.0.0.6"])].concat();
    let set = set_of(&mesh(&base));
    let mut t = translate(&set);
    // `f` is behind the `*` virtual host: listed among the unrouted.
    assert!(update_endpoints(&mut t, &set, &changed(&["f"])).is_none());
    // A VIP two listeners claim.
    let contested = set_of(&mesh(
        &[
            base,
            tcp_listener("10.96.0.4_80", "10.96.0.4", "outbound|80||b"),
        ]
        .concat(),
    ));
    let mut t = translate(&contested);
    assert!(update_endpoints(&mut t, &contested, &changed(&["d"])).is_none());
    assert!(update_endpoints(&mut t, &contested, &changed(&["c"])).is_some());
}
