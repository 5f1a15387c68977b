//! The sidecar model: a userspace L4 proxy in each pod, with traffic
//! captured by NAT redirects as Istio's init container sets them up. The
//! client's connection to the VIP is redirected to its pod's proxy, which
//! dials the backend pod; there the connection is redirected to the
//! server pod's proxy, which dials the application. Two proxies, three
//! TCP connections, where kmesh-rs has one.
use std::{net::SocketAddr, path::Path, process::Command, time::Duration};

use anyhow::Context;

use super::topology::{BenchTopology, ECHO_PORT, SERVER_IP, SINK_PORT, VIP};
use crate::{harness::Proc, join_netns};

/// Ports the proxies listen on, as Istio's (15001 outbound, 15006 inbound);
/// one per application port, since HAProxy has no original-destination
/// lookup in TCP mode.
const OUTBOUND_PORTS: [(u16, u16); 2] = [(ECHO_PORT, 15001), (SINK_PORT, 15002)];
const INBOUND_PORTS: [(u16, u16); 2] = [(ECHO_PORT, 15006), (SINK_PORT, 15007)];
const NFT_TABLE: &str = "kmesh_bench_sidecar";

/// Which traffic a pod's rules send to its proxy.
#[derive(Clone, Copy)]
enum Capture {
    /// The client's connections to the VIP (output hook).
    Outbound,
    /// Connections arriving for the application (prerouting hook).
    Inbound,
}

/// Both proxies and their redirects; dropping it stops the proxies and
/// removes the rules.
pub struct Sidecars {
    client_proxy: Option<Proc>,
    server_proxy: Option<Proc>,
    rules_in: Vec<String>,
}

impl Sidecars {
    pub fn start(topo: &BenchTopology) -> anyhow::Result<Self> {
        let haproxy = which::which("haproxy")
            .context("haproxy is not installed; run scripts/setup.sh (Debian's haproxy package)")?;
        let mut sidecars = Self {
            client_proxy: None,
            server_proxy: None,
            rules_in: Vec::new(),
        };
        // Client pod: connections to the VIP go to the local proxy, which
        // sends them on to the backend pod.
        sidecars.client_proxy =
            Some(sidecars.pod(&haproxy, topo, &topo.client.netns, Capture::Outbound)?);
        // Server pod: connections arriving for the application go to the
        // local proxy first; its own connection to the application is local
        // (output hook), so it is not redirected again.
        sidecars.server_proxy =
            Some(sidecars.pod(&haproxy, topo, &topo.server_netns, Capture::Inbound)?);
        let target = SocketAddr::new(VIP.parse().unwrap(), ECHO_PORT);
        if let Err(e) = wait_for_path(&topo.client.netns, target) {
            for (side, proxy) in [
                ("client", &mut sidecars.client_proxy),
                ("server", &mut sidecars.server_proxy),
            ] {
                if let Some(Ok(Some(status))) = proxy.as_mut().map(|p| p.0.try_wait()) {
                    anyhow::bail!(
                        "the {side} pod's haproxy exited ({status}); its messages are above"
                    );
                }
            }
            return Err(e);
        }
        Ok(sidecars)
    }

    /// One pod's capture rules and proxy; each proxy listener sends to the
    /// application's port on the server pod.
    fn pod(
        &mut self,
        haproxy: &Path,
        topo: &BenchTopology,
        netns: &str,
        capture: Capture,
    ) -> anyhow::Result<Proc> {
        let (ports, hook, matching) = match capture {
            Capture::Outbound => (OUTBOUND_PORTS, "output", format!("ip daddr {VIP} ")),
            Capture::Inbound => (INBOUND_PORTS, "prerouting", String::new()),
        };
        let rules: Vec<String> = ports
            .iter()
            .map(|(app, proxy)| format!("{matching}tcp dport {app} redirect to :{proxy}"))
            .collect();
        self.install_rules(netns, hook, &rules, topo.workdir())?;
        self.rules_in.push(netns.to_string());
        let server_ip = SERVER_IP.parse().expect("a literal address");
        let cfg = proxy_config(
            ports
                .iter()
                .map(|(app, proxy)| (*proxy, SocketAddr::new(server_ip, *app))),
        );
        let side = match capture {
            Capture::Outbound => "client",
            Capture::Inbound => "server",
        };
        start_proxy(haproxy, netns, &cfg, topo.workdir(), side)
    }

    fn install_rules(
        &self,
        netns: &str,
        hook: &str,
        rules: &[String],
        workdir: &Path,
    ) -> anyhow::Result<()> {
        // -100 is the destination-NAT priority in both hooks.
        let text = format!(
            "table ip {NFT_TABLE} {{\n  chain capture {{\n    type nat hook {hook} priority -100; policy accept;\n{}\n  }}\n}}\n",
            rules
                .iter()
                .map(|r| format!("    {r}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let path = workdir.join(format!("{netns}.nft"));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        let out = Command::new("ip")
            .args(["netns", "exec", netns, "nft", "-f"])
            .arg(&path)
            .output()
            .context("running nft; run scripts/setup.sh (Debian's nftables package)")?;
        anyhow::ensure!(
            out.status.success(),
            "nft -f {} in {netns}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }
}

impl Sidecars {
    /// The two proxies' process ids.
    pub fn pids(&self) -> Vec<u32> {
        [&self.client_proxy, &self.server_proxy]
            .into_iter()
            .flatten()
            .map(|p| p.0.id())
            .collect()
    }
}

impl Drop for Sidecars {
    fn drop(&mut self) {
        self.client_proxy.take();
        self.server_proxy.take();
        for netns in &self.rules_in {
            let _ = Command::new("ip")
                .args([
                    "netns", "exec", netns, "nft", "delete", "table", "ip", NFT_TABLE,
                ])
                .output();
        }
    }
}

/// HAProxy in TCP mode with its defaults (as many threads as CPUs), one
/// listener per application port. `maxconn` keeps HAProxy's descriptor
/// needs (2 per connection) under the 20000 this machine's root may have.
fn proxy_config(routes: impl Iterator<Item = (u16, SocketAddr)>) -> String {
    let mut cfg = String::from(
        "global\n  maxconn 8000\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n",
    );
    for (listen, upstream) in routes {
        cfg.push_str(&format!(
            "\nlisten port_{listen}\n  bind :{listen}\n  server app {upstream}\n"
        ));
    }
    cfg
}

fn start_proxy(
    haproxy: &Path,
    netns: &str,
    cfg: &str,
    workdir: &Path,
    side: &str,
) -> anyhow::Result<Proc> {
    let path = workdir.join(format!("haproxy-{side}.cfg"));
    std::fs::write(&path, cfg).with_context(|| format!("writing {}", path.display()))?;
    let check = Command::new(haproxy)
        .arg("-c")
        .arg("-f")
        .arg(&path)
        .output()?;
    anyhow::ensure!(
        check.status.success(),
        "haproxy rejects {}: {}",
        path.display(),
        String::from_utf8_lossy(&check.stdout).trim()
    );
    // `ip netns exec` execs HAProxy itself, so killing the child kills it.
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns])
        .arg(haproxy)
        .args(["-db", "-f"])
        .arg(&path);
    let child = cmd
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting haproxy in {netns}"))?;
    Ok(Proc(child))
}

/// Waits until a 1-byte echo through `target` from inside `netns` comes
/// back: both proxies and both redirects are in place.
fn wait_for_path(netns: &str, target: SocketAddr) -> anyhow::Result<()> {
    let netns = netns.to_string();
    std::thread::spawn(move || -> anyhow::Result<()> {
        join_netns(&netns)?;
        let mut last = String::new();
        for _ in 0..100 {
            match echo_once(target) {
                Ok(()) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("no echo through the sidecars at {target} within 5 s: {last}")
    })
    .join()
    .expect("sidecar readiness thread panicked")
}

fn echo_once(target: SocketAddr) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&target, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    s.write_all(&[7])?;
    let mut b = [0u8];
    s.read_exact(&mut b)
}
