//! Rules Envoy enforces that the Envoy oracle (tests/src/oracle) found the
//! agent missing: each is checked here so a NACK from kmesh-rs means what
//! it means from Envoy 1.40.
use std::collections::HashSet;

use envoy_types::pb::envoy::{
    config::{
        cluster::v3::{
            Cluster,
            cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy},
        },
        core::v3::{address, socket_address},
        listener::v3::{FilterChain, Listener, filter},
    },
    extensions::filters::network::{
        http_connection_manager::v3::HttpConnectionManager, tcp_proxy::v3::TcpProxy,
    },
};
use prost::{Message, Name};

fn discovery_type(c: &Cluster) -> Option<i32> {
    match c.cluster_discovery_type {
        None => Some(DiscoveryType::Static as i32),
        Some(ClusterDiscoveryType::Type(t)) => Some(t),
        Some(_) => None,
    }
}

pub(super) fn cluster(c: &Cluster) -> Result<(), String> {
    let kind = discovery_type(c);
    if kind == Some(DiscoveryType::OriginalDst as i32)
        && c.load_balancing_policy.is_none()
        && c.lb_policy != LbPolicy::ClusterProvided as i32
    {
        return Err(format!(
            "lb_policy {} is not valid for an ORIGINAL_DST cluster; it takes CLUSTER_PROVIDED only",
            LbPolicy::try_from(c.lb_policy).map_or("unknown", |p| p.as_str_name())
        ));
    }
    if kind == Some(DiscoveryType::LogicalDns as i32)
        && let Some(la) = &c.load_assignment
        && (la.endpoints.len() != 1 || la.endpoints[0].lb_endpoints.len() != 1)
    {
        return Err(
            "a LOGICAL_DNS cluster takes a single locality with a single endpoint (one host name); use STRICT_DNS for several"
                .into(),
        );
    }
    Ok(())
}

/// A listener's own address is an IP address (its port is checked with
/// every address).
pub(super) fn listener(l: &Listener) -> Result<(), String> {
    if let Some(address::Address::SocketAddress(sa)) =
        l.address.as_ref().and_then(|a| a.address.as_ref())
        && matches!(
            sa.port_specifier,
            Some(socket_address::PortSpecifier::PortValue(_)) | None
        )
        && sa.address.parse::<std::net::IpAddr>().is_err()
    {
        return Err(format!("address: {:?} is not an IP address", sa.address));
    }
    // Envoy picks a chain by its match; two chains with the same match
    // leave it no way to choose.
    let mut matches = HashSet::new();
    for (c, chain) in l.filter_chains.iter().enumerate() {
        let key = chain
            .filter_chain_match
            .clone()
            .unwrap_or_default()
            .encode_to_vec();
        if !matches.insert(key) {
            return Err(format!(
                "filter_chains[{c}] has the same filter_chain_match as an earlier chain; give each chain a distinct match"
            ));
        }
    }
    Ok(())
}

/// tcp_proxy and http_connection_manager name their statistics.
pub(super) fn chain(chain: &FilterChain) -> Result<(), String> {
    for (f, filter) in chain.filters.iter().enumerate() {
        let Some(filter::ConfigType::TypedConfig(any)) = &filter.config_type else {
            continue;
        };
        let stat_prefix = if any.type_url == TcpProxy::type_url() {
            TcpProxy::decode(any.value.as_slice()).map(|t| t.stat_prefix)
        } else if any.type_url == HttpConnectionManager::type_url() {
            HttpConnectionManager::decode(any.value.as_slice()).map(|h| h.stat_prefix)
        } else {
            continue;
        };
        if stat_prefix.is_ok_and(|p| p.is_empty()) {
            return Err(format!(
                "filters[{f}] ({}): stat_prefix is empty; Envoy requires one",
                filter.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::{
        core::v3::{Address, SocketAddress},
        endpoint::v3::{ClusterLoadAssignment, LbEndpoint, LocalityLbEndpoints},
        listener::v3::{Filter, FilterChainMatch},
    };
    use envoy_types::pb::google::protobuf::{Any, UInt32Value};

    use super::*;

    fn typed(kind: DiscoveryType, lb: LbPolicy) -> Cluster {
        Cluster {
            name: "c".into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(kind as i32)),
            lb_policy: lb as i32,
            ..Default::default()
        }
    }

    #[test]
    fn original_dst_takes_cluster_provided_and_logical_dns_one_host() {
        assert!(
            cluster(&typed(
                DiscoveryType::OriginalDst,
                LbPolicy::ClusterProvided
            ))
            .is_ok()
        );
        let e = cluster(&typed(DiscoveryType::OriginalDst, LbPolicy::RoundRobin)).unwrap_err();
        assert!(
            e.contains("ROUND_ROBIN") && e.contains("CLUSTER_PROVIDED"),
            "{e}"
        );
        let mut dns = typed(DiscoveryType::LogicalDns, LbPolicy::RoundRobin);
        let hosts = |n: usize| ClusterLoadAssignment {
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint::default(); n],
                ..Default::default()
            }],
            ..Default::default()
        };
        dns.load_assignment = Some(hosts(1));
        assert!(cluster(&dns).is_ok());
        dns.load_assignment = Some(hosts(2));
        assert!(cluster(&dns).unwrap_err().contains("single endpoint"));
    }

    #[test]
    fn listeners_need_an_ip_distinct_chain_matches_and_stat_prefixes() {
        let at = |ip: &str| Listener {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: ip.into(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(80)),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        };
        assert!(listener(&at("10.0.0.1")).is_ok());
        assert!(
            listener(&at("not-an-ip"))
                .unwrap_err()
                .contains("not an IP")
        );
        let mut twice = at("0.0.0.0");
        let m = FilterChainMatch {
            destination_port: Some(UInt32Value { value: 80 }),
            ..Default::default()
        };
        twice.filter_chains = vec![
            FilterChain {
                filter_chain_match: Some(m.clone()),
                ..Default::default()
            },
            FilterChain {
                filter_chain_match: Some(m),
                ..Default::default()
            },
        ];
        assert!(
            listener(&twice)
                .unwrap_err()
                .contains("same filter_chain_match")
        );
        let tcp = |prefix: &str| FilterChain {
            filters: vec![Filter {
                name: "tcp".into(),
                config_type: Some(filter::ConfigType::TypedConfig(Any {
                    type_url: TcpProxy::type_url(),
                    value: TcpProxy {
                        stat_prefix: prefix.into(),
                        ..Default::default()
                    }
                    .encode_to_vec(),
                })),
            }],
            ..Default::default()
        };
        assert!(chain(&tcp("svc")).is_ok());
        assert!(chain(&tcp("")).unwrap_err().contains("stat_prefix"));
    }
}
