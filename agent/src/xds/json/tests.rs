//! Config dumps as Envoy writes them: what a real Istio sidecar's dump
//! holds besides clusters, endpoints, listeners and routes never refuses
//! it, and each part is used or reported as ignored with why.
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::{
    config::{Loaded, load, load_text},
    xds::translate::Severity,
};

fn ignored<'l>(loaded: &'l Loaded, name: &str) -> Option<&'l str> {
    loaded
        .report
        .findings
        .iter()
        .find(|f| f.severity == Severity::Ignored && f.name == name)
        .map(|f| f.message.as_str())
}

/// An HTTP chain for connections to `prefix` whose route configuration
/// (named `route`) sends them to `cluster`.
fn inline_chain(route: &str, cluster: &str, prefix: &str) -> Value {
    json!({
        "filter_chain_match": {"prefix_ranges": [{"address_prefix": prefix, "prefix_len": 32}]},
        "filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": route,
                "route_config": {"name": route, "virtual_hosts": [{
                    "name": "all", "domains": [prefix],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]
                }]}
            }
        }]
    })
}

fn static_cluster(name: &str, ip: &str) -> Value {
    json!({"cluster": {
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": name, "type": "STATIC",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": ip, "port_value": 80}}}}
        ]}]}
    }})
}

/// An Istio sidecar's dump in miniature: a listener whose two filter
/// chains carry one route configuration name inline, with other contents
/// (so the dump lists the name twice among the static route configs), an
/// internal listener, and the ECDS, secrets and scoped-routes sections.
fn istio_like_dump() -> Value {
    let inline = |cluster: &str| {
        json!({"route_config": {
            "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            "name": "InboundPassthroughClusterIpv4",
            "virtual_hosts": [{"name": "all", "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]
        }})
    };
    json!({"configs": [
        {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
         "static_clusters": [static_cluster("a", "127.0.0.2"), static_cluster("b", "127.0.0.3")]},
        {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
         "dynamic_listeners": [
            {"name": "0.0.0.0_80", "active_state": {"version_info": "1", "listener": {
                "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
                "name": "0.0.0.0_80",
                "address": {"socket_address": {"address": "0.0.0.0", "port_value": 80}},
                "filter_chains": [
                    inline_chain("InboundPassthroughClusterIpv4", "a", "198.18.0.1"),
                    inline_chain("InboundPassthroughClusterIpv4", "b", "198.18.0.2")
                ]
            }}},
            {"name": "main_internal", "active_state": {"version_info": "1", "listener": {
                "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
                "name": "main_internal",
                "internal_listener": {},
                "filter_chains": [inline_chain("internal", "a", "0.0.0.0")]
            }}}
        ]},
        {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
         "static_route_configs": [inline("a"), inline("b"), inline("a")]},
        {"@type": "type.googleapis.com/envoy.admin.v3.ScopedRoutesConfigDump",
         "dynamic_scoped_route_configs": [{"name": "scopes", "scoped_route_configs": []}]},
        {"@type": "type.googleapis.com/envoy.admin.v3.EcdsConfigDump",
         "ecds_filters": [{"ecds_filter": {"@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig", "name": "istio.stats"}}]},
        {"@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
         "dynamic_active_secrets": [{"name": "default", "secret": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
            "name": "default", "tls_certificate": {"private_key": {"inline_bytes": "W3JlZGFjdGVkXQ=="}}}}]}
    ]})
}

#[test]
fn an_istio_like_dump_loads_with_every_part_used_or_ignored() {
    let loaded = load_text(&istio_like_dump().to_string()).expect("the dump loads");
    assert!(
        loaded.report.rejected.is_empty(),
        "{:?}",
        loaded.report.rejected
    );
    // Each chain's inline route is its own: 198.18.0.1 goes to a, .2 to b.
    let backend = |vip: &str| {
        let s = &loaded.mesh.services[&vip.parse().unwrap()];
        s.backends
            .iter()
            .map(|b| b.addr.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(backend("198.18.0.1:80"), ["127.0.0.2:80"]);
    assert_eq!(backend("198.18.0.2:80"), ["127.0.0.3:80"]);
    assert!(ignored(&loaded, "main_internal").is_some_and(|m| m.contains("internal listener")));
    assert!(ignored(&loaded, "default").is_some_and(|m| m.contains("secret")));
    assert!(ignored(&loaded, "istio.stats").is_some_and(|m| m.contains("ECDS")));
    assert!(ignored(&loaded, "scopes").is_some_and(|m| m.contains("scoped route")));
}

#[test]
fn a_listener_with_neither_address_nor_internal_listener_is_still_refused() {
    let mut dump = istio_like_dump();
    let internal = &mut dump["configs"][1]["dynamic_listeners"][1]["active_state"]["listener"];
    internal
        .as_object_mut()
        .unwrap()
        .remove("internal_listener");
    let e = load_text(&dump.to_string()).unwrap_err().to_string();
    assert!(
        e.contains("main_internal") && e.contains("needs an address"),
        "{e}"
    );
}

#[test]
fn real_dumps_load_with_nothing_refused_that_envoy_ran() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/xds");
    for name in [
        "istio-1.18-sidecar-deathstarbench.config_dump.json",
        "istio-bookinfo-endpoints.config_dump.json",
        "istio-productpage-subset.http_config.json",
    ] {
        let loaded = load(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        // The only refusals are Envoy's own (error_state).
        for r in &loaded.report.rejected {
            assert!(
                r.reason
                    .starts_with("refused by the Envoy that produced the dump"),
                "{name}: {r:?}"
            );
        }
    }
    let dsb = load(&dir.join("istio-1.18-sidecar-deathstarbench.config_dump.json")).unwrap();
    // Its SDS secret is named and set aside; its empty scoped-routes
    // section says nothing.
    assert!(ignored(&dsb, "default").is_some_and(|m| m.contains("without TLS")));
    assert!(
        !dsb.report
            .findings
            .iter()
            .any(|f| f.message.contains("scoped"))
    );
}
