//! Envoy v3 resources in a file (JSON or YAML), in any of the shapes Envoy
//! users have at hand:
//!
//! - a list of resources (with `@type`, or recognised by their fields, as
//!   Envoy Gateway and go-control-plane print them);
//! - a discovery response (`version_info` + `resources`, Envoy's own
//!   file-based xDS);
//! - a bootstrap's `static_resources`;
//! - an Envoy admin `config_dump` (`configs`), where a listener Envoy
//!   refused (`error_state`) is kept as refused.
mod messages;
pub mod reader;

use envoy_types::pb::envoy::config::{cluster::v3::Cluster, listener::v3::Listener};
use prost::Name;
use serde_json::Value;

use self::reader::{Obj, root};
use super::resources::{Rejected, Resource, ResourceSet, ResourceType, SetAside};

/// Does this document hold Envoy resources (rather than the compact format)?
pub fn is_envoy_document(value: &Value) -> bool {
    match value {
        Value::Array(_) => true,
        Value::Object(m) => [
            "configs",
            "resources",
            "static_resources",
            "staticResources",
            "@type",
        ]
        .iter()
        .any(|k| m.contains_key(*k)),
        _ => false,
    }
}

/// Reads every resource of the document into `set`; `version` is used for
/// resources whose document gives none. Any unreadable or invalid resource
/// fails the whole document, naming where it is.
pub fn read(value: &Value, version: &str, set: &mut ResourceSet) -> Result<(), String> {
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                add(set, item, &format!("[{i}]"), version, None)?;
            }
            Ok(())
        }
        Value::Object(_) => {
            let o = root(value, "").map_err(|e| e.to_string())?;
            if o.has("configs") {
                config_dump(&o, version, set)
            } else if o.has("resources") {
                let version = match o.string("version_info").map_err(|e| e.to_string())? {
                    v if v.is_empty() => version.to_string(),
                    v => v,
                };
                for (i, item) in items_of(&o, "resources")?.iter().enumerate() {
                    add(set, item, &format!("resources[{i}]"), &version, None)?;
                }
                Ok(())
            } else if let Some(sr) = o.child("static_resources").map_err(|e| e.to_string())? {
                for (field, kind) in [
                    ("clusters", ResourceType::Cluster),
                    ("listeners", ResourceType::Listener),
                ] {
                    for (i, item) in items_of(&sr, field)?.iter().enumerate() {
                        let path = format!("static_resources.{field}[{i}]");
                        add(set, item, &path, version, Some(kind))?;
                    }
                }
                Ok(())
            } else {
                add(set, value, "", version, None)
            }
        }
        _ => Err("expected a list of Envoy resources or an object".into()),
    }
}

fn items_of<'a>(o: &Obj<'a>, field: &str) -> Result<&'a [Value], String> {
    match o.get(field) {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(format!("{}: expected a list", join(o.path(), field))),
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn add(
    set: &mut ResourceSet,
    value: &Value,
    path: &str,
    version: &str,
    expected: Option<ResourceType>,
) -> Result<(), String> {
    let mut resource = resource(value, path, expected)?;
    // Envoy makes up names for unnamed static listeners; so does this.
    if let Resource::Listener(l) = &mut resource
        && l.name.is_empty()
        && let Some((ip, port)) = listener_address(l)
    {
        l.name = format!("{ip}_{port}");
    }
    // A dump lists the route configuration a filter chain carries inline
    // among the static ones, once per chain that carries it: several chains
    // (Istio's inbound passthrough on IPv4 and IPv6, say) give the same name,
    // even with other contents. Envoy resolves no RDS name to them, and each
    // listener holds its own copy, which is validated and used with it.
    if matches!(resource, Resource::Route(_)) && path.contains("static_route_configs") {
        return Ok(());
    }
    let at = |e: String| {
        let place = if path.is_empty() { "" } else { " at " };
        format!(
            "{} {:?}{place}{path}: {e}",
            resource.kind(),
            resource.name()
        )
    };
    resource.validate().map_err(at)?;
    set.insert(resource.clone(), version).map_err(at)
}

fn resource(value: &Value, path: &str, expected: Option<ResourceType>) -> Result<Resource, String> {
    let o = root(value, path).map_err(|e| e.to_string())?;
    let kind = match o.type_url() {
        Some(url) => ResourceType::from_type_url(url).ok_or_else(|| {
            let hint = if url.contains("envoy.api.v2") {
                "; the v2 API is gone, export v3 resources"
            } else {
                "; kmesh-rs reads clusters, cluster load assignments, listeners and route configurations"
            };
            format!("{path}: resource type {url:?} is not supported{hint}")
        })?,
        None => match expected.or_else(|| infer(&o)) {
            Some(kind) => kind,
            None => {
                return Err(format!(
                    "{}: cannot tell which Envoy resource this is; add \"@type\" (e.g. {:?})",
                    if path.is_empty() { "document" } else { path },
                    Cluster::type_url()
                ));
            }
        },
    };
    if let Some(expected) = expected
        && expected != kind
    {
        return Err(format!("{path}: expected a {expected}, found a {kind}"));
    }
    let parsed = match kind {
        ResourceType::Cluster => messages::cluster(o).map(|r| Resource::Cluster(Box::new(r))),
        ResourceType::Endpoints => {
            messages::load_assignment(o).map(|r| Resource::Endpoints(Box::new(r)))
        }
        ResourceType::Listener => messages::listener(o).map(|r| Resource::Listener(Box::new(r))),
        ResourceType::Route => {
            messages::route_configuration(o).map(|r| Resource::Route(Box::new(r)))
        }
        // `from_type_url` and `infer` give Envoy types only.
        ResourceType::Workload | ResourceType::WorkloadService => {
            return Err(format!(
                "{path}: an istio.workload resource among Envoy resources; give a ztunnel config dump in a file of its own"
            ));
        }
    };
    parsed.map_err(|e| e.to_string())
}

/// Resources written without `@type`, recognised by fields only their type has.
fn infer(o: &Obj) -> Option<ResourceType> {
    if o.has("cluster_name") {
        Some(ResourceType::Endpoints)
    } else if o.has("virtual_hosts") || o.has("vhds") {
        Some(ResourceType::Route)
    } else if o.has("filter_chains") || o.has("default_filter_chain") || o.has("address") {
        Some(ResourceType::Listener)
    } else if [
        "type",
        "cluster_type",
        "lb_policy",
        "eds_cluster_config",
        "load_assignment",
        "connect_timeout",
    ]
    .iter()
    .any(|f| o.has(f))
    {
        Some(ResourceType::Cluster)
    } else {
        None
    }
}

fn config_dump(o: &Obj, version: &str, set: &mut ResourceSet) -> Result<(), String> {
    let mut sections = 0;
    for (i, config) in items_of(o, "configs")?.iter().enumerate() {
        let path = format!("configs[{i}]");
        let c = root(config, &path).map_err(|e| e.to_string())?;
        let section_version = match c.string("version_info").map_err(|e| e.to_string())? {
            v if v.is_empty() => version.to_string(),
            v => v,
        };
        let dump = c.type_url().unwrap_or_default();
        let entries: &[(&str, &str, ResourceType)] = match dump {
            "type.googleapis.com/envoy.admin.v3.ClustersConfigDump" => &[
                ("static_clusters", "cluster", ResourceType::Cluster),
                ("dynamic_active_clusters", "cluster", ResourceType::Cluster),
            ],
            "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump" => &[
                (
                    "static_endpoint_configs",
                    "endpoint_config",
                    ResourceType::Endpoints,
                ),
                (
                    "dynamic_endpoint_configs",
                    "endpoint_config",
                    ResourceType::Endpoints,
                ),
            ],
            "type.googleapis.com/envoy.admin.v3.ListenersConfigDump" => {
                &[("static_listeners", "listener", ResourceType::Listener)]
            }
            "type.googleapis.com/envoy.admin.v3.RoutesConfigDump" => &[
                ("static_route_configs", "route_config", ResourceType::Route),
                ("dynamic_route_configs", "route_config", ResourceType::Route),
            ],
            other => {
                set_aside(&c, other, set)?;
                continue;
            }
        };
        sections += 1;
        for &(list, field, kind) in entries {
            for (j, entry) in items_of(&c, list)?.iter().enumerate() {
                let path = format!("{path}.{list}[{j}]");
                let e = root(entry, &path).map_err(|e| e.to_string())?;
                let Some(inner) = e.get(field) else {
                    continue;
                };
                let v = entry_version(&e, &section_version)?;
                add(set, inner, &join(&path, field), &v, Some(kind))?;
            }
        }
        if dump.ends_with("ListenersConfigDump") {
            dynamic_listeners(&c, &path, &section_version, set)?;
        }
    }
    if sections == 0 {
        return Err(format!(
            "configs holds no Envoy clusters, endpoints, listeners or routes (looked for {}, {}, {} and {} dumps)",
            "ClustersConfigDump", "EndpointsConfigDump", "ListenersConfigDump", "RoutesConfigDump"
        ));
    }
    Ok(())
}

/// Sections of a dump that hold no clusters, endpoints, listeners or
/// routes, and why each is of no use to a data plane that routes at
/// connect(): named in the report, never a reason to refuse the dump.
const SET_ASIDE: &[(&str, &str, ResourceType, &str)] = &[
    (
        "type.googleapis.com/envoy.admin.v3.ScopedRoutesConfigDump",
        "scoped_route_configs",
        ResourceType::Route,
        "a scoped route configuration picks routes by request headers, which connect() does not see; a listener using scoped routes is reported and not routed",
    ),
    (
        "type.googleapis.com/envoy.admin.v3.EcdsConfigDump",
        "ecds_filters",
        ResourceType::Listener,
        "an extension config (ECDS) configures a listener's filter; filters other than tcp_proxy and http_connection_manager have no kernel counterpart",
    ),
    (
        "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
        "secrets",
        ResourceType::Cluster,
        "a secret (TLS keys and certificates, redacted in a dump) is for Envoy's TLS; the kernel routes connections as they are, without TLS",
    ),
];

/// Records what a set-aside section holds (by name where its entries
/// give one) as ignored; other sections (bootstrap, admin) say nothing
/// of the mesh.
fn set_aside(c: &Obj, dump: &str, set: &mut ResourceSet) -> Result<(), String> {
    let Some(&(_, kind_name, kind, why)) = SET_ASIDE.iter().find(|(url, ..)| *url == dump) else {
        return Ok(());
    };
    let mut names = Vec::new();
    for (field, value) in c.entries() {
        let Value::Array(items) = value else {
            continue;
        };
        for (j, item) in items.iter().enumerate() {
            let e =
                root(item, &join(c.path(), &format!("{field}[{j}]"))).map_err(|e| e.to_string())?;
            let name = ["name", "ecds_filter", "secret", "scoped_route_config"]
                .iter()
                .find_map(|f| match e.get(f) {
                    Some(Value::String(n)) => Some(n.clone()),
                    Some(Value::Object(o)) => {
                        o.get("name").and_then(Value::as_str).map(str::to_string)
                    }
                    _ => None,
                })
                .unwrap_or_else(|| format!("{field}[{j}]"));
            names.push(name);
        }
    }
    for name in names {
        set.set_aside.push(SetAside {
            kind,
            name,
            reason: format!("{kind_name}: {why}"),
        });
    }
    Ok(())
}

fn entry_version(e: &Obj, default: &str) -> Result<String, String> {
    Ok(match e.string("version_info").map_err(|e| e.to_string())? {
        v if v.is_empty() => default.to_string(),
        v => v,
    })
}

/// Active listeners are in force; a listener in `error_state` is one Envoy
/// refused, and stays refused here with Envoy's reason.
fn dynamic_listeners(
    c: &Obj,
    path: &str,
    version: &str,
    set: &mut ResourceSet,
) -> Result<(), String> {
    for (j, entry) in items_of(c, "dynamic_listeners")?.iter().enumerate() {
        let path = format!("{path}.dynamic_listeners[{j}]");
        let e = root(entry, &path).map_err(|e| e.to_string())?;
        if let Some(a) = e.child("active_state").map_err(|e| e.to_string())?
            && let Some(inner) = a.get("listener")
        {
            let v = entry_version(&a, version)?;
            let p = join(&path, "active_state.listener");
            add(set, inner, &p, &v, Some(ResourceType::Listener))?;
        }
        if let Some(err) = e.child("error_state").map_err(|e| e.to_string())? {
            let failed = err
                .child("failed_configuration")
                .map_err(|e| e.to_string())?;
            let name = match (e.string("name"), &failed) {
                (Ok(n), _) if !n.is_empty() => n,
                (_, Some(f)) => f.string("name").unwrap_or_default(),
                _ => String::new(),
            };
            let details = err.string("details").unwrap_or_default();
            let rejected = Rejected {
                kind: ResourceType::Listener,
                name,
                version: err.string("version_info").unwrap_or_default(),
                reason: format!(
                    "refused by the Envoy that produced the dump: {}",
                    if details.is_empty() {
                        "no details"
                    } else {
                        details.trim()
                    }
                ),
            };
            // Envoy lists one refused update under each listener it touched.
            if !set.rejected.contains(&rejected) {
                set.rejected.push(rejected);
            }
        }
    }
    Ok(())
}

fn listener_address(l: &Listener) -> Option<(String, u32)> {
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
    let address::Address::SocketAddress(sa) = l.address.as_ref()?.address.as_ref()? else {
        return None;
    };
    match sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => Some((sa.address.clone(), p)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
