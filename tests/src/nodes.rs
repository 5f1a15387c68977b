//! Two nodes on one machine: two topologies (each its own network
//! namespace, cgroup, bpffs directory and work directory, so two agents
//! attach, pin and listen without clashing), their namespaces joined by a
//! veth pair, as two hosts on one link. Packets stay between the two
//! namespaces; both go, with the link, when the topologies are dropped.
use std::process::Command;

use crate::{
    harness::{Topology, run},
    workloads,
};

/// Node A's address on the link.
pub const NODE_A_IP: &str = "10.213.0.1";
/// Node B's address on the link.
pub const NODE_B_IP: &str = "10.213.0.2";

pub struct TwoNodes {
    pub a: Topology,
    pub b: Topology,
}

impl TwoNodes {
    pub fn new(tag: &str) -> Self {
        let nodes = Self {
            a: Topology::new(&format!("{tag}-a")),
            b: Topology::new(&format!("{tag}-b")),
        };
        // Made inside A with its peer moved straight into B: the root
        // namespace never holds either end.
        run(Command::new("ip").args([
            "-n",
            &nodes.a.netns,
            "link",
            "add",
            "link0",
            "type",
            "veth",
            "peer",
            "name",
            "link0",
            "netns",
            &nodes.b.netns,
        ]));
        for (topo, ip) in [(&nodes.a, NODE_A_IP), (&nodes.b, NODE_B_IP)] {
            let cidr = format!("{ip}/24");
            run(Command::new("ip").args(["-n", &topo.netns, "addr", "add", &cidr, "dev", "link0"]));
            run(Command::new("ip").args(["-n", &topo.netns, "link", "set", "link0", "up"]));
        }
        nodes
    }

    /// Pods on both nodes, as a cluster's pod network gives them: each
    /// node holds its pods' addresses (on its loopback) and routes the
    /// other node's pods over the link, so a pod on A reaches a pod on B
    /// by the pod's own address, and the reply finds its way back.
    pub fn place_pods(&self, on_a: &[&str], on_b: &[&str]) {
        let sides = [
            (&self.a, on_a, on_b, NODE_B_IP),
            (&self.b, on_b, on_a, NODE_A_IP),
        ];
        for (topo, own, other, via) in sides {
            workloads::add_addresses(topo, own);
            for ip in other {
                let dest = format!("{ip}/32");
                run(Command::new("ip").args([
                    "-n",
                    &topo.netns,
                    "route",
                    "add",
                    &dest,
                    "via",
                    via,
                    "dev",
                    "link0",
                ]));
            }
        }
    }
}

/// Sets `net.<key>` (a per-namespace sysctl such as `ipv4.tcp_fastopen`)
/// inside `topo`'s namespace only.
pub fn sysctl(topo: &Topology, key: &str, value: &str) {
    let path = format!("/proc/sys/net/{}", key.replace('.', "/"));
    run(Command::new("ip").args([
        "netns",
        "exec",
        &topo.netns,
        "sh",
        "-c",
        &format!("echo {value} > {path}"),
    ]));
}

/// A `TcpExt` counter of `topo`'s namespace (/proc/net/netstat), such as
/// `TCPFastOpenActive` or `SyncookiesSent`.
pub fn tcp_ext_counter(topo: &Topology, name: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", &topo.netns, "cat", "/proc/net/netstat"])
        .output()
        .expect("reading /proc/net/netstat");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no TcpExt counter {name} in {}: {text}", topo.netns))
}
