//! kmesh-top's calls view on a real agent: two client workloads (their own
//! pod addresses) call one service whose backends are two workloads, and
//! `kmesh-top --once --calls` prints one row per pair with what each made;
//! the backends table names each backend's workload.
use std::{collections::HashMap, path::Path, process::Command};

use kmesh_tests::{
    harness::{Topology, privileged, target_bin},
    workloads::{self, Pod},
};

const VIP: &str = "198.18.0.70:80";
/// (client pod, connections it makes).
const CLIENTS: [(Pod, u64); 2] = [
    (pod("10.77.1.1", "front", "web"), 12),
    (pod("10.77.2.1", "jobs", "batch"), 6),
];
const BACKENDS: [(Pod, &str); 2] = [
    (pod("10.77.3.1", "shop", "cart-v1"), "10.77.3.1:8080"),
    (pod("10.77.3.2", "shop", "cart-v2"), "10.77.3.2:8080"),
];

const fn pod(ip: &'static str, namespace: &'static str, workload: &'static str) -> Pod {
    Pod::new(ip, namespace, workload)
}

fn mesh() -> String {
    let pods: Vec<Pod> = CLIENTS
        .iter()
        .map(|c| c.0)
        .chain(BACKENDS.iter().map(|b| b.0))
        .collect();
    let mut m = workloads::yaml(&pods);
    m += &format!(
        "services:\n  - name: cart\n    namespace: shop\n    vip: {VIP}\n    policy: round_robin\n    backends:\n"
    );
    for (_, address) in BACKENDS {
        m += &format!("      - address: {address}\n");
    }
    m
}

fn kmesh_top(socket: &Path, args: &[&str]) -> String {
    let out = Command::new(target_bin("kmesh-top"))
        .arg("--admin-socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("running kmesh-top");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The rows of a table printed by `--once`: column title -> value, by the
/// first column's value. Cells hold no spaces.
fn rows(table: &str) -> HashMap<String, HashMap<String, String>> {
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    lines
        .map(|l| {
            let row: HashMap<String, String> = header
                .iter()
                .map(|h| h.to_string())
                .zip(l.split_whitespace().map(String::from))
                .collect();
            (row[header[0]].clone(), row)
        })
        .collect()
}

#[test]
fn kmesh_top_shows_who_calls_whom_by_workload() {
    if !privileged("kmesh_top_shows_who_calls_whom_by_workload") {
        return;
    }
    let topo = Topology::new("top-calls");
    let ips: Vec<&str> = CLIENTS
        .iter()
        .map(|c| c.0.ip)
        .chain(BACKENDS.iter().map(|b| b.0.ip))
        .collect();
    workloads::add_addresses(&topo, &ips);
    let addresses: Vec<&str> = BACKENDS.iter().map(|b| b.1).collect();
    let _servers = topo.serve_in_cgroup(&addresses, false);
    let agent = topo.start_agent(&mesh());
    for (client, n) in CLIENTS {
        let report = topo.client(VIP, n, &["--source", client.ip]);
        assert_eq!(report.ok, n, "{}: {report:?}", client.workload);
    }
    let total: u64 = CLIENTS.iter().map(|c| c.1).sum();
    agent.metrics_when(|m| {
        m.value(
            "kmesh_tcp_connections_closed_total",
            &[("reporter", "source")],
        ) as u64
            == total
    });

    let text = kmesh_top(
        &agent.admin_socket,
        &["--once", "--calls", "--interval", "300ms"],
    );
    let calls = rows(&text);
    assert_eq!(calls.len(), CLIENTS.len(), "one row per client:\n{text}");
    for (client, n) in CLIENTS {
        let name = format!("{}/{}", client.namespace, client.workload);
        let row = calls
            .get(&name)
            .unwrap_or_else(|| panic!("no {name} row:\n{text}"));
        assert_eq!(row["SERVICE"], "cart", "{text}");
        assert_eq!(row["REPORTER"], "source", "{text}");
        assert_eq!(row["OPENED"], n.to_string(), "{text}");
        assert_eq!(row["FAILED"], "0", "{text}");
        // Round robin: each client reached both backends' workloads.
        assert_eq!(row["DESTINATIONS"], "shop/cart-v1,shop/cart-v2", "{text}");
    }

    let text = kmesh_top(&agent.admin_socket, &["--once", "--interval", "300ms"]);
    let backends = text
        .split("\n\n")
        .find(|t| t.starts_with("SERVICE  BACKEND"))
        .unwrap_or_else(|| panic!("no backends table:\n{text}"));
    for line in backends.lines().skip(1) {
        let (pod, address) = BACKENDS
            .iter()
            .find(|b| line.contains(b.1))
            .unwrap_or_else(|| panic!("an unknown backend: {line}"));
        assert!(
            line.ends_with(&format!("  shop/{}", pod.workload)),
            "{address}'s workload: {line}"
        );
    }
}
