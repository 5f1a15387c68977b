//! Workloads for tests that name both ends of a connection: the mesh
//! file's `workloads:` list, the pods' addresses on the topology's
//! loopback, so a client can bind one (`kmesh-testbed client --source`),
//! and the Istio labels a series between two of them must carry.
use std::{collections::BTreeMap, process::Command};

use kmesh_api::v1::Connection;

use crate::harness::{Topology, run};

/// One instance of a workload with one address. Empty optional fields are
/// left out of the mesh file, so the agent's defaults apply.
#[derive(Clone, Copy, Debug)]
pub struct Pod {
    pub ip: &'static str,
    pub namespace: &'static str,
    pub workload: &'static str,
    /// The `app` label, Istio's canonical service; the workload's name
    /// when empty.
    pub app: &'static str,
    /// The `version` label, the canonical revision (`latest` when empty).
    pub version: &'static str,
    /// The service account in the principal (`default` when empty).
    pub service_account: &'static str,
    /// The node it runs on.
    pub node: &'static str,
}

impl Pod {
    pub const fn new(ip: &'static str, namespace: &'static str, workload: &'static str) -> Self {
        Self {
            ip,
            namespace,
            workload,
            app: "",
            version: "",
            service_account: "",
            node: "",
        }
    }

    pub const fn app(self, app: &'static str, version: &'static str) -> Self {
        Self {
            app,
            version,
            ..self
        }
    }

    pub const fn service_account(self, service_account: &'static str) -> Self {
        Self {
            service_account,
            ..self
        }
    }

    pub const fn on_node(self, node: &'static str) -> Self {
        Self { node, ..self }
    }

    pub fn canonical_service(&self) -> &str {
        if self.app.is_empty() {
            self.workload
        } else {
            self.app
        }
    }

    pub fn canonical_revision(&self) -> &str {
        if self.version.is_empty() {
            "latest"
        } else {
            self.version
        }
    }

    /// Istio's `*_principal`, in the default trust domain.
    pub fn principal(&self) -> String {
        let sa = match self.service_account {
            "" => "default",
            sa => sa,
        };
        format!("spiffe://cluster.local/ns/{}/sa/{sa}", self.namespace)
    }

    /// `namespace/workload`, as the admin API names it.
    pub fn qualified(&self) -> String {
        format!("{}/{}", self.namespace, self.workload)
    }
}

/// The cast of the attribution tests: two client workloads, each in a
/// namespace of its own, calling [`CART_HOST`], which two revisions of one
/// canonical service back.
pub const WEB: Pod = Pod::new("10.77.1.1", "front", "web").service_account("web");
pub const BATCH: Pod = Pod::new("10.77.2.1", "jobs", "batch").service_account("batch");
pub const CART_V1: Pod = Pod::new("10.77.3.1", "shop", "cart-v1")
    .app("cart", "v1")
    .service_account("cart");
pub const CART_V2: Pod = Pod::new("10.77.3.2", "shop", "cart-v2")
    .app("cart", "v2")
    .service_account("cart");
pub const CART_HOST: &str = "cart.shop.svc.cluster.local";

/// `ip:port` of each pod.
pub fn addresses(pods: &[Pod], port: u16) -> Vec<String> {
    pods.iter().map(|p| format!("{}:{port}", p.ip)).collect()
}

/// Connections each (client workload, server workload) pair made when each
/// client made its count of connections `rounds` times, one client after
/// the other, through a round-robin service over `servers`: each server
/// takes an equal share of each run.
pub fn round_robin_pairs(
    clients: &[(Pod, u64)],
    servers: &[Pod],
    rounds: u64,
) -> BTreeMap<(String, String), u64> {
    let mut pairs = BTreeMap::new();
    for (client, n) in clients {
        for server in servers {
            let key = (client.workload.to_string(), server.workload.to_string());
            pairs.insert(key, n / servers.len() as u64 * rounds);
        }
    }
    pairs
}

/// The mesh file's `workloads:` section (put it before `services:`); the
/// instances are named `<workload>-<i>`.
pub fn yaml(pods: &[Pod]) -> String {
    let mut y = String::from("workloads:\n");
    for (i, p) in pods.iter().enumerate() {
        let mut labels = format!("app: {}", p.canonical_service());
        let mut extra = String::new();
        if !p.version.is_empty() {
            labels += &format!(", version: {}", p.version);
        }
        if !p.service_account.is_empty() {
            extra += &format!(", service_account: {}", p.service_account);
        }
        if !p.node.is_empty() {
            extra += &format!(", node: {}", p.node);
        }
        y += &format!(
            "  - {{ name: {w}-{i}, namespace: {ns}, workload: {w}{extra}, labels: {{ {labels} }}, addresses: [{ip}] }}\n",
            w = p.workload,
            ns = p.namespace,
            ip = p.ip,
        );
    }
    y
}

/// A whole mesh file: `pods`, and one round-robin service `host` (a
/// cluster-local name, `<name>.<namespace>.svc.cluster.local`) at `vip`
/// over `backends` (`address:port`).
pub fn mesh(pods: &[Pod], host: &str, vip: &str, backends: &[&str]) -> String {
    let mut m = yaml(pods);
    m += &format!(
        "services:\n  - name: {host}\n    vip: {vip}\n    policy: round_robin\n    backends:\n"
    );
    for b in backends {
        m += &format!("      - address: {b}\n");
    }
    m
}

/// The pod of `pods` whose workload is `workload`.
pub fn find<'a>(pods: &'a [Pod], workload: &str) -> Option<&'a Pod> {
    pods.iter().find(|p| p.workload == workload)
}

/// Asserts the Istio labels of a series (its opened counter: no response
/// flags) from `client` to `server` through the service `host` (a
/// cluster-local name): both workloads, their namespaces, canonical names
/// and principals, the service's parts and the TCP constants.
pub fn assert_istio_labels(l: &BTreeMap<String, String>, client: &Pod, server: &Pod, host: &str) {
    let mut parts = host.split('.');
    let (name, namespace) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let expected = [
        ("source_workload", client.workload.to_string()),
        ("source_workload_namespace", client.namespace.to_string()),
        (
            "source_canonical_service",
            client.canonical_service().into(),
        ),
        (
            "source_canonical_revision",
            client.canonical_revision().into(),
        ),
        ("source_principal", client.principal()),
        ("destination_workload", server.workload.to_string()),
        (
            "destination_workload_namespace",
            server.namespace.to_string(),
        ),
        (
            "destination_canonical_service",
            server.canonical_service().into(),
        ),
        (
            "destination_canonical_revision",
            server.canonical_revision().into(),
        ),
        ("destination_principal", server.principal()),
        ("destination_service", host.to_string()),
        ("destination_service_name", name.to_string()),
        ("destination_service_namespace", namespace.to_string()),
        ("request_protocol", "tcp".to_string()),
        ("connection_security_policy", "none".to_string()),
        ("response_flags", "-".to_string()),
    ];
    for (label, value) in expected {
        assert_eq!(l.get(label), Some(&value), "{label} of {l:?}");
    }
}

/// Adds each address (not already there) to the topology's loopback.
pub fn add_addresses(topo: &Topology, ips: &[&str]) {
    for ip in ips {
        if ip.starts_with("127.") {
            continue; // the loopback's own /8
        }
        run(Command::new("ip").args([
            "-n",
            &topo.netns,
            "addr",
            "add",
            &format!("{ip}/32"),
            "dev",
            "lo",
        ]));
    }
}

/// `n` connections from `client`'s address to `target`, made in `topo`'s
/// namespace and cgroup, each a request of `request` bytes answered by
/// `reply` bytes; asserts every one went through.
pub fn call_from(topo: &Topology, client: &Pod, target: &str, n: u64, request: u32, reply: u32) {
    let (request, reply) = (request.to_string(), reply.to_string());
    let flags = [
        "--source",
        client.ip,
        "--request-bytes",
        &request,
        "--reply-bytes",
        &reply,
    ];
    let report = topo.client(target, n, &flags);
    assert_eq!(report.ok, n, "client {}: {report:?}", client.workload);
}

/// Asserts each connection of an admin-API feed names its client's and
/// its server's workload (`namespace/workload`): the client found by its
/// source address, the server by its address and `port`.
pub fn assert_connections_named(feed: &[Connection], clients: &[Pod], servers: &[Pod], port: u16) {
    for c in feed {
        let client = clients
            .iter()
            .find(|p| c.source.starts_with(&format!("{}:", p.ip)))
            .unwrap_or_else(|| panic!("a connection from elsewhere: {c:?}"));
        assert_eq!(
            c.source_workload.as_deref(),
            Some(client.qualified().as_str()),
            "{c:?}"
        );
        let server = servers
            .iter()
            .find(|p| c.backend == format!("{}:{port}", p.ip))
            .unwrap_or_else(|| panic!("a connection to elsewhere: {c:?}"));
        assert_eq!(
            c.destination_workload.as_deref(),
            Some(server.qualified().as_str()),
            "{c:?}"
        );
    }
}
