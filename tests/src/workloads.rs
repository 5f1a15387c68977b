//! Workloads for tests that name both ends of a connection: the mesh
//! file's `workloads:` list, and the pods' addresses on the topology's
//! loopback, so a client can bind one (`kmesh-testbed client --source`).
use std::process::Command;

use crate::harness::{Topology, run};

/// One instance of a workload with one address.
#[derive(Clone, Copy, Debug)]
pub struct Pod {
    pub ip: &'static str,
    pub namespace: &'static str,
    pub workload: &'static str,
}

/// The mesh file's `workloads:` section (put it before `services:`); the
/// instances are named `<workload>-<i>`.
pub fn yaml(pods: &[Pod]) -> String {
    let mut y = String::from("workloads:\n");
    for (i, p) in pods.iter().enumerate() {
        y += &format!(
            "  - {{ name: {w}-{i}, namespace: {ns}, workload: {w}, labels: {{ app: {w} }}, addresses: [{ip}] }}\n",
            w = p.workload,
            ns = p.namespace,
            ip = p.ip,
        );
    }
    y
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
