//! What the oracle serves: a case's resources, completed where Envoy needs
//! what a resource read from a file lacks. The agent's file reader keeps
//! only the fields the translation reads, so a config dump comes back
//! without its config sources, HTTP filters and the settings of filters
//! the agent never looks at; Envoy would refuse those for reasons that
//! say nothing about the mesh. Both clients get the completed resources.
use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::Cluster,
            core::v3::{ApiVersion, ConfigSource, config_source},
            listener::v3::{FilterChain, Listener, filter},
        },
        extensions::filters::{
            http::router::v3::Router,
            network::http_connection_manager::v3::{
                HttpConnectionManager, HttpFilter, http_connection_manager, http_filter,
            },
        },
    },
    google::protobuf::{Any, BoolValue},
};
use prost::{Message, Name};

use crate::{
    ads::{self, CLUSTER_TYPE, LISTENER_TYPE},
    xds_data::ResourceMap,
};

/// Over ADS, as istiod's resources say.
fn ads_source() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(
            config_source::ConfigSourceSpecifier::Ads(Default::default()),
        ),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

/// `resources` as served to both clients.
pub fn served(resources: &ResourceMap) -> ResourceMap {
    let mut out = resources.clone();
    for (type_url, items) in out.iter_mut() {
        for (_, any) in items.iter_mut() {
            if any.type_url != *type_url {
                continue;
            }
            if type_url == CLUSTER_TYPE
                && let Ok(mut c) = Cluster::decode(any.value.as_slice())
            {
                complete_cluster(&mut c);
                *any = ads::any(&c);
            } else if type_url == LISTENER_TYPE
                && let Ok(mut l) = Listener::decode(any.value.as_slice())
            {
                complete_listener(&mut l);
                *any = ads::any(&l);
            }
        }
    }
    out
}

fn complete_cluster(c: &mut Cluster) {
    if let Some(eds) = &mut c.eds_cluster_config
        && eds.eds_config.is_none()
    {
        eds.eds_config = Some(ads_source());
    }
}

/// A sidecar's outbound listeners bind no socket: connections reach them
/// from the capture listener. Binding the dumps' VIPs here would fail for
/// a reason of this machine, not of the config.
fn complete_listener(l: &mut Listener) {
    l.bind_to_port = Some(BoolValue { value: false });
    for chain in l
        .filter_chains
        .iter_mut()
        .chain(l.default_filter_chain.iter_mut())
    {
        complete_chain(chain);
    }
}

fn complete_chain(chain: &mut FilterChain) {
    // A filter the reader kept only by type (no settings) cannot be built
    // as the source had it; what it did, the agent never reads.
    chain.filters.retain(|f| match &f.config_type {
        Some(filter::ConfigType::TypedConfig(any)) => {
            !any.value.is_empty()
                || any.type_url == HttpConnectionManager::type_url()
                || any.type_url.ends_with("tcp_proxy.v3.TcpProxy")
        }
        _ => true,
    });
    for f in &mut chain.filters {
        let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type else {
            continue;
        };
        if any.type_url != HttpConnectionManager::type_url() {
            continue;
        }
        let Ok(mut hcm) = HttpConnectionManager::decode(any.value.as_slice()) else {
            continue;
        };
        if let Some(http_connection_manager::RouteSpecifier::Rds(rds)) = &mut hcm.route_specifier
            && rds.config_source.is_none()
        {
            rds.config_source = Some(ads_source());
        }
        if hcm.http_filters.is_empty() {
            hcm.http_filters.push(HttpFilter {
                name: "envoy.filters.http.router".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(Any {
                    type_url: Router::type_url(),
                    value: Router::default().encode_to_vec(),
                })),
                ..Default::default()
            });
        }
        *any = ads::any(&hcm);
    }
}
