//! A real `kmesh-agent` attached to a topology's cgroup, pinning in its
//! bpffs directory: started, waited for until ready, read through
//! /metrics and the admin API, and stopped.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus},
    time::{Duration, Instant},
};

use kmesh_api::{
    client::AdminClient,
    v1::{Connection, MAX_PAGE, Snapshot},
};

use super::{Metrics, Topology, block_on, free_port, target_bin};
use crate::http_get;

impl Topology {
    pub fn start_agent(&self, config: &str) -> Agent {
        Agent::start(self, Some(config), &[], &[])
    }

    /// Starts the agent on a mesh config the test laid out itself (a
    /// directory, say).
    pub fn start_agent_on(&self, config: &Path) -> Agent {
        let path = config.display().to_string();
        Agent::start(self, None, &["--config", &path], &[])
    }

    /// Starts the agent with extra `kmesh-agent run` flags.
    pub fn start_agent_with(&self, config: &str, flags: &[&str]) -> Agent {
        Agent::start(self, Some(config), flags, &[])
    }

    /// Starts the agent through `wrapper` (a command that ends by running
    /// its arguments, like `setpriv ... --`).
    pub fn start_agent_wrapped(&self, config: &str, wrapper: &[&str]) -> Agent {
        Agent::start(self, Some(config), &[], wrapper)
    }

    /// The `kmesh-agent run` command line the harness would start for
    /// `config`, for a test that runs it itself; writes the config.
    pub fn agent_command(&self, config: &str, wrapper: &[&str]) -> Command {
        Agent::command(self, Some(config), &[], wrapper, free_port())
    }

    /// Starts the agent on an xDS control plane instead of a file; returns
    /// once it is ready, that is once its first sync is applied.
    pub fn start_agent_xds(&self, server: SocketAddr, flags: &[&str]) -> Agent {
        let address = server.to_string();
        let mut all = vec!["--xds-address", &address];
        all.extend_from_slice(flags);
        Agent::start(self, None, &all, &[])
    }
}

/// A running kmesh-agent; stopped (SIGTERM) when dropped.
pub struct Agent {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// The admin API's Unix socket.
    pub admin_socket: PathBuf,
    pub config_path: PathBuf,
    log_path: PathBuf,
}

impl Agent {
    fn command(
        topo: &Topology,
        config: Option<&str>,
        flags: &[&str],
        wrapper: &[&str],
        port: u16,
    ) -> Command {
        let config_path = topo.workdir.join("mesh.yaml");
        if let Some(config) = config {
            std::fs::write(&config_path, config).expect("writing config");
        }
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(target_bin("kmesh-agent"));
                cmd
            }
            None => Command::new(target_bin("kmesh-agent")),
        };
        // The test decides what the agent does, not the environment: the
        // agent reads its settings from KMESH_* and OTEL_* variables.
        for (name, _) in
            std::env::vars().filter(|(n, _)| n.starts_with("OTEL_") || n.starts_with("KMESH_"))
        {
            cmd.env_remove(name);
        }
        cmd.arg("run");
        if config.is_some() {
            cmd.arg("--config").arg(&config_path);
        }
        cmd.arg("--cgroup")
            .arg(&topo.cgroup)
            .arg("--bpffs-dir")
            .arg(&topo.bpffs)
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--admin-socket")
            .arg(topo.workdir.join("admin.sock"))
            .args(flags)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        cmd
    }

    fn start(topo: &Topology, config: Option<&str>, flags: &[&str], wrapper: &[&str]) -> Self {
        let config_path = topo.workdir.join("mesh.yaml");
        let log_path = topo.workdir.join("agent.log");
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let admin_socket = topo.workdir.join("admin.sock");
        let child = Self::command(topo, config, flags, wrapper, port)
            .stderr(std::fs::File::create(&log_path).expect("log file"))
            .spawn()
            .expect("spawning kmesh-agent");
        let mut agent = Self {
            child: Some(child),
            addr,
            admin_socket,
            config_path,
            log_path,
        };
        agent.wait_ready();
        agent
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "kmesh-agent exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            if http_get(self.addr, "/readyz").is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("kmesh-agent not ready after 30 s:\n{}", self.log());
    }

    /// The agent's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn metrics(&self) -> Metrics {
        Metrics(http_get(self.addr, "/metrics").expect("GET /metrics"))
    }

    /// The admin API's snapshot.
    pub fn snapshot(&self) -> Snapshot {
        let client = AdminClient::new(&self.admin_socket);
        block_on(client.snapshot()).expect("GET /v1/snapshot on the admin socket")
    }

    /// Every closed connection the agent still keeps, oldest first.
    pub fn connections(&self) -> Vec<Connection> {
        let client = AdminClient::new(&self.admin_socket);
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = block_on(client.connections(after, MAX_PAGE))
                .expect("GET /v1/connections on the admin socket");
            let done = page.records.len() < MAX_PAGE;
            all.extend(page.records);
            after = page.next_after;
            if done {
                return all;
            }
        }
    }

    /// Polls the admin API until it holds a closed connection from each of
    /// `sources` (client `address:port`s) in `direction`, at most 10 s;
    /// returns what it holds of them either way, by source.
    pub fn connections_from(
        &self,
        sources: &[&str],
        direction: kmesh_api::v1::Direction,
    ) -> std::collections::HashMap<String, Connection> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found: std::collections::HashMap<String, Connection> = self
                .connections()
                .into_iter()
                .filter(|c| c.direction == direction && sources.contains(&c.source.as_str()))
                .map(|c| (c.source.clone(), c))
                .collect();
            if found.len() == sources.len() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls /metrics until `ready` holds (the ring buffer is read
    /// asynchronously), at most 10 s; returns the last scrape either way so
    /// the test's own assertions report what was there.
    pub fn metrics_when(&self, ready: impl Fn(&Metrics) -> bool) -> Metrics {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = self.metrics();
            if ready(&m) || Instant::now() > deadline {
                return m;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then wait for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("agent running");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "kmesh-agent did not exit within 15 s of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    /// Never panics: a drop that panics while a failing test unwinds aborts
    /// the process, and the topology's clean-up with it.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("kmesh-agent did not exit within 15 s of SIGTERM; killed");
        let _ = child.kill();
        let _ = child.wait();
    }
}
