//! Which clusters a virtual host sends a connection to. Envoy picks a route
//! per request by path and headers; the kernel picks once per connection and
//! sees neither, so a virtual host's catch-all route decides, and every
//! route it cannot honour is reported.
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteConfiguration, VirtualHost, route, route_action, route_match,
};

use super::{Findings, Severity, backends::Target};
use crate::xds::resources::ResourceType;

/// A route that matches every request: no header, query, gRPC or runtime
/// condition, and a path match everything passes.
fn is_catch_all(r: &Route) -> bool {
    let Some(m) = &r.r#match else {
        return false;
    };
    let path_all = match &m.path_specifier {
        Some(route_match::PathSpecifier::Prefix(p)) => p.is_empty() || p == "/",
        Some(route_match::PathSpecifier::SafeRegex(re)) => re.regex == ".*" || re.regex == "/.*",
        _ => false,
    };
    path_all
        && m.headers.is_empty()
        && m.query_parameters.is_empty()
        && m.cookies.is_empty()
        && m.grpc.is_none()
        && m.runtime_fraction.is_none()
        && m.tls_context.is_none()
        && m.dynamic_metadata.is_empty()
}

/// What matches this route, for reports.
fn describe_match(r: &Route) -> String {
    let Some(m) = &r.r#match else {
        return "no match".into();
    };
    let mut parts = Vec::new();
    match &m.path_specifier {
        Some(route_match::PathSpecifier::Prefix(p)) => parts.push(format!("prefix {p:?}")),
        Some(route_match::PathSpecifier::Path(p)) => parts.push(format!("path {p:?}")),
        Some(route_match::PathSpecifier::SafeRegex(re)) => {
            parts.push(format!("regex {:?}", re.regex))
        }
        Some(route_match::PathSpecifier::PathSeparatedPrefix(p)) => {
            parts.push(format!("path-separated prefix {p:?}"))
        }
        Some(route_match::PathSpecifier::ConnectMatcher(_)) => parts.push("CONNECT".into()),
        Some(route_match::PathSpecifier::PathMatchPolicy(p)) => {
            parts.push(format!("path policy {}", p.name))
        }
        None => {}
    }
    if !m.headers.is_empty() {
        let names: Vec<&str> = m.headers.iter().map(|h| h.name.as_str()).collect();
        parts.push(format!("headers {}", names.join(", ")));
    }
    if !m.query_parameters.is_empty() {
        parts.push("query parameters".into());
    }
    if m.grpc.is_some() {
        parts.push("gRPC".into());
    }
    if m.runtime_fraction.is_some() {
        parts.push("a runtime fraction".into());
    }
    parts.join(" and ")
}

fn route_label(r: &Route, i: usize) -> String {
    if r.name.is_empty() {
        format!("routes[{i}]")
    } else {
        format!("route {:?}", r.name)
    }
}

/// The clusters a route forwards to, or why it forwards nowhere.
fn target_of(r: &Route) -> Result<Target, String> {
    match &r.action {
        Some(route::Action::Route(action)) => match &action.cluster_specifier {
            Some(route_action::ClusterSpecifier::Cluster(c)) => Ok(vec![(c.clone(), 1)]),
            Some(route_action::ClusterSpecifier::WeightedClusters(wc)) => {
                if wc.clusters.iter().any(|c| c.name.is_empty()) {
                    return Err("picks a weighted cluster by a request header".into());
                }
                Ok(wc
                    .clusters
                    .iter()
                    .map(|c| (c.name.clone(), c.weight.map_or(0, |w| w.value)))
                    .filter(|(_, w)| *w > 0)
                    .collect())
            }
            Some(route_action::ClusterSpecifier::ClusterHeader(h)) => {
                Err(format!("picks its cluster from the request header {h:?}"))
            }
            Some(_) => Err("picks its cluster with a cluster-specifier plugin".into()),
            None => Err("names no cluster".into()),
        },
        Some(route::Action::Redirect(_)) => Err("answers with a redirect".into()),
        Some(route::Action::DirectResponse(d)) => {
            Err(format!("answers directly with status {}", d.status))
        }
        Some(_) => Err("does not forward (a filter or non-forwarding action)".into()),
        None => Err("has no action".into()),
    }
}

/// The clusters every connection to this virtual host goes to.
pub fn virtual_host_target(
    rc: &RouteConfiguration,
    vh: &VirtualHost,
    f: &mut Findings,
) -> Option<Target> {
    let report = |f: &mut Findings, msg: String| {
        f.add(
            Severity::Unsupported,
            ResourceType::Route,
            &rc.name,
            format!("virtual host {:?}: {msg}", vh.name),
        )
    };
    let chosen = match vh.routes.iter().position(is_catch_all) {
        Some(i) => i,
        None if vh.routes.is_empty() => {
            report(f, "has no routes; connections are not routed".into());
            return None;
        }
        None => {
            let first = target_of(&vh.routes[0]);
            let all_same = vh.routes.iter().all(|r| target_of(r) == first);
            if !all_same {
                report(
                    f,
                    format!(
                        "no route matches every request; connections follow the first, {} ({})",
                        route_label(&vh.routes[0], 0),
                        describe_match(&vh.routes[0])
                    ),
                );
            }
            0
        }
    };
    let target = match target_of(&vh.routes[chosen]) {
        Ok(t) => t,
        Err(why) => {
            report(
                f,
                format!(
                    "{} {why}, which a connection-level data plane cannot do; connections are not routed",
                    route_label(&vh.routes[chosen], chosen)
                ),
            );
            return None;
        }
    };
    // Narrower routes before the catch-all that go elsewhere are lost.
    for (i, r) in vh.routes.iter().enumerate().take(chosen) {
        if target_of(r).as_ref() != Ok(&target) {
            report(
                f,
                format!(
                    "{} matches on {}, which the kernel cannot see; its requests follow {} instead",
                    route_label(r, i),
                    describe_match(r),
                    route_label(&vh.routes[chosen], chosen)
                ),
            );
        }
    }
    Some(target)
}
