//! Two pods on one node: a client network namespace and a server one,
//! joined by a veth pair, both processes in one cgroup the agent attaches
//! to. Built for one run and removed afterwards, also when the run fails.
use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
};

use crate::harness::{Proc, Topology, run, target_bin};

/// RFC 2544's benchmarking range: never routed anywhere real.
pub const CLIENT_IP: &str = "198.18.0.1";
pub const SERVER_IP: &str = "198.18.0.2";
/// The service address clients dial; no interface has it.
pub const VIP: &str = "198.19.0.10";
pub const ECHO_PORT: u16 = 7000;
pub const SINK_PORT: u16 = 7001;

pub fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("a literal address"), port)
}

/// A network namespace deleted when dropped.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

pub struct BenchTopology {
    /// The client's namespace, the cgroup, the bpffs directory and a work
    /// directory, with their clean-up.
    pub client: Topology,
    pub server_netns: String,
    _server: Netns,
}

impl BenchTopology {
    pub fn new() -> Self {
        let client = Topology::new("bench");
        let server_netns = format!("{}-srv", client.netns);
        run(Command::new("ip").args(["netns", "add", &server_netns]));
        let server = Netns(server_netns.clone());
        let topo = Self {
            client,
            server_netns,
            _server: server,
        };
        let (c, s) = (&topo.client.netns, &topo.server_netns);
        run(Command::new("ip").args([
            "-n", c, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", s,
        ]));
        for (ns, ip) in [(c, CLIENT_IP), (s, SERVER_IP)] {
            run(Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]));
            run(Command::new("ip").args([
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ]));
            run(Command::new("ip").args(["-n", ns, "link", "set", "eth0", "up"]));
            // As in a pod: everything leaves through eth0, so a VIP nobody
            // rewrites is sent to the other side and never answered.
            run(Command::new("ip").args(["-n", ns, "route", "add", "default", "dev", "eth0"]));
            // Connection-rate loads open tens of thousands of connections a
            // run; the closing side keeps each port in TIME_WAIT for 60 s.
            // The servers' and proxies' ports are kept out of the ephemeral
            // range: a client's TIME_WAIT socket on one would stop a proxy
            // from binding it.
            run(Command::new("ip").args([
                "netns",
                "exec",
                ns,
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.ip_local_port_range=1024 65000",
                "net.ipv4.ip_local_reserved_ports=7000-7099,15000-15099",
                "net.ipv4.tcp_tw_reuse=1",
                "net.core.somaxconn=4096",
            ]));
        }
        topo
    }

    /// Starts `kmesh-bench serve` in the server namespace (and the cgroup,
    /// so the probe sees the server's side too, as it would on a node).
    pub fn serve(&self, echo: &[SocketAddr], sink: &[SocketAddr], in_cgroup: bool) -> Proc {
        let mut cmd = Command::new(target_bin("kmesh-bench"));
        cmd.args(["--netns", &self.server_netns]);
        if in_cgroup {
            cmd.arg("--cgroup").arg(&self.client.cgroup);
        }
        cmd.arg("serve");
        for a in echo {
            cmd.args(["--echo", &a.to_string()]);
        }
        for a in sink {
            cmd.args(["--sink", &a.to_string()]);
        }
        spawn_until_ready(cmd, "kmesh-bench serve")
    }

    pub fn workdir(&self) -> &Path {
        &self.client.workdir
    }
}

impl Default for BenchTopology {
    fn default() -> Self {
        Self::new()
    }
}

/// Spawns `cmd` and waits for it to print "ready" on stdout.
pub fn spawn_until_ready(mut cmd: Command, what: &str) -> Proc {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
    let proc = Proc(child);
    assert_eq!(line.trim(), "ready", "{what} did not start");
    proc
}
