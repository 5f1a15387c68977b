//! Runs a real agent against a topology the test makes and removes: one
//! network namespace (loopback only, so no packet can leave the machine), one
//! cgroup v2 directory for the client, one bpffs directory for the pins.
use std::{
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use clap::ValueEnum;
use kmesh_api::{
    client::AdminClient,
    v1::{Connection, MAX_PAGE, Snapshot},
};

use crate::{ClientReport, http_get, protocol::Ending};

fn ending_of(reset: bool) -> Ending {
    if reset { Ending::Reset } else { Ending::Close }
}

/// Whether this process may run privileged tests. Outside CI a test that
/// cannot run says why and is skipped; under `CI=true` it fails.
pub fn privileged(test: &str) -> bool {
    let why = if unsafe { libc::geteuid() } != 0 {
        Some("needs root (eBPF, cgroups, network namespaces)".to_string())
    } else if kmesh_agent::sysfs::detect_cgroup2_mount().is_err() {
        Some("no cgroup v2 mount".to_string())
    } else if Command::new("ip").arg("-V").output().is_err() {
        Some("`ip` (iproute2) is not installed; run scripts/setup.sh".to_string())
    } else {
        None
    };
    match why {
        None => true,
        Some(why) if crate::in_ci() => {
            panic!("{test}: cannot run under CI: {why}")
        }
        Some(why) => {
            eprintln!("skipping {test}: {why}");
            false
        }
    }
}

/// Path of a binary built in the same profile as the running test (which
/// lives in `deps/` below it) or binary (beside it).
pub fn target_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let here = exe.parent().expect("the executable's directory");
    let beside = here.join(name);
    let bin = if beside.exists() {
        beside
    } else {
        here.parent().expect("target dir").join(name)
    };
    assert!(
        bin.exists(),
        "{} not found; build it first (cargo build --release --bins)",
        bin.display()
    );
    bin
}

/// Runs a set-up command; panics with its stderr if it fails.
pub fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A child process killed and reaped when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The namespace, cgroup and bpffs directory of one test.
pub struct Topology {
    pub name: String,
    pub netns: String,
    pub cgroup: PathBuf,
    pub bpffs: PathBuf,
    pub workdir: PathBuf,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Topology {
    pub fn new(tag: &str) -> Self {
        let name = format!(
            "kmt-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let cgroot = kmesh_agent::sysfs::detect_cgroup2_mount().expect("cgroup2 mount");
        let topo = Self {
            netns: name.clone(),
            cgroup: cgroot.join("kmesh-tests").join(&name),
            bpffs: PathBuf::from("/sys/fs/bpf").join(&name),
            workdir: std::env::temp_dir().join(&name),
            name,
        };
        // From here on, Drop cleans up whatever was made.
        std::fs::create_dir_all(&topo.workdir).expect("workdir");
        run(Command::new("ip").args(["netns", "add", &topo.netns]));
        run(Command::new("ip").args(["-n", &topo.netns, "link", "set", "lo", "up"]));
        std::fs::create_dir_all(&topo.cgroup)
            .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", topo.cgroup.display()));
        topo
    }

    /// Starts backends on `addrs` inside the namespace (outside the cgroup).
    pub fn serve(&self, addrs: &[&str], reset: bool) -> Proc {
        self.serve_ending(addrs, ending_of(reset), false)
    }

    /// Starts backends inside the namespace and the cgroup, so the probe
    /// sees their side (inbound) too.
    pub fn serve_in_cgroup(&self, addrs: &[&str], reset: bool) -> Proc {
        self.serve_ending(addrs, ending_of(reset), true)
    }

    /// `kmesh-testbed` placed in the namespace, and in the cgroup when
    /// `in_cgroup` (clients always are: the agent routes the cgroup).
    fn testbed(&self, in_cgroup: bool) -> Command {
        let mut cmd = Command::new(target_bin("kmesh-testbed"));
        cmd.args(["--netns", &self.netns]);
        if in_cgroup {
            cmd.arg("--cgroup").arg(&self.cgroup);
        }
        cmd
    }

    /// Starts backends that end each connection as `ending` says, in the
    /// namespace, and in the cgroup when `in_cgroup`.
    pub fn serve_ending(&self, addrs: &[&str], ending: Ending, in_cgroup: bool) -> Proc {
        self.serve_with(addrs, ending, in_cgroup, &[])
    }

    /// As [`Topology::serve_ending`], with more `kmesh-testbed serve` flags.
    pub fn serve_with(
        &self,
        addrs: &[&str],
        ending: Ending,
        in_cgroup: bool,
        extra: &[&str],
    ) -> Proc {
        let mut cmd = self.testbed(in_cgroup);
        cmd.arg("serve").args(extra);
        for a in addrs {
            cmd.args(["--listen", a]);
        }
        let ending = ending.to_possible_value().expect("every ending has a name");
        cmd.args(["--ending", ending.get_name()]);
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning kmesh-testbed serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("reading from kmesh-testbed serve");
        assert_eq!(line.trim(), "ready", "backends did not start on {addrs:?}");
        Proc(child)
    }

    /// Runs a client in the namespace and the cgroup; returns its report.
    pub fn client(&self, target: &str, connections: u64, extra: &[&str]) -> ClientReport {
        self.client_in_background(target, connections, extra)
            .report()
    }

    /// Runs `kmesh-testbed <args>` in the namespace and the cgroup, as a
    /// client; returns its standard output, as JSON.
    pub fn testbed_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self
            .testbed(true)
            .args(args)
            .output()
            .expect("running kmesh-testbed");
        assert!(
            out.status.success(),
            "kmesh-testbed {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("kmesh-testbed prints JSON")
    }

    /// Starts a client as [`Topology::client`] does, without waiting for it.
    pub fn client_in_background(
        &self,
        target: &str,
        connections: u64,
        extra: &[&str],
    ) -> BackgroundClient {
        let child = self
            .testbed(true)
            .args([
                "client",
                "--target",
                target,
                "--connections",
                &connections.to_string(),
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kmesh-testbed client");
        BackgroundClient(Some(child))
    }

    /// Starts a client that makes connections to `target` (at most
    /// `bound`) until [`OpenClient::stop`]; the test follows its progress.
    pub fn client_until_stopped(&self, target: &str, bound: u64, extra: &[&str]) -> OpenClient {
        let mut child = self
            .testbed(true)
            .args(["client", "--target", target, "--until-stdin-closes"])
            .args(["--connections", &bound.to_string()])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("running kmesh-testbed client");
        let stdout = child.stdout.take().expect("stdout");
        let (lines, from_client) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        OpenClient {
            stdin: child.stdin.take(),
            child: Proc(child),
            lines: from_client,
            done: 0,
            report: None,
        }
    }

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

/// A client started by [`Topology::client_in_background`].
pub struct BackgroundClient(Option<Child>);

impl BackgroundClient {
    /// Whether the client is still making connections.
    pub fn is_running(&mut self) -> bool {
        self.0
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Waits for the client to finish and returns its report.
    pub fn report(mut self) -> ClientReport {
        let child = self.0.take().expect("a running client");
        let out = child
            .wait_with_output()
            .expect("waiting for kmesh-testbed client");
        assert!(
            out.status.success(),
            "client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("client report JSON")
    }
}

impl Drop for BackgroundClient {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A client started by [`Topology::client_until_stopped`].
pub struct OpenClient {
    child: Proc,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
    /// Connections finished so far (ok or failed).
    done: u64,
    report: Option<String>,
}

impl OpenClient {
    /// Connections the client has finished, as of its last line read.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Reads one line of the client's output; false once it has ended.
    fn read(&mut self) -> bool {
        // A hang guard only: at any rate a test uses, a connection takes
        // a fraction of this.
        match self.lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                match line.trim().parse() {
                    Ok(done) => self.done = done,
                    Err(_) => self.report = Some(line),
                }
                true
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => false,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!(
                    "the client finished no connection in 30 s (after {})",
                    self.done
                )
            }
        }
    }

    /// Waits until the client has finished `n` connections in all. With
    /// one worker, the connection after one a test saw finish starts
    /// after it: waiting for `done() + 2` proves a connection was made
    /// entirely after that moment.
    pub fn wait_for(&mut self, n: u64) {
        while self.done < n {
            assert!(
                self.read(),
                "the client ended after {} connections, before {n}",
                self.done
            );
        }
    }

    /// Tells the client to stop (closes its standard input) and returns
    /// its report.
    pub fn stop(mut self) -> ClientReport {
        drop(self.stdin.take());
        while self.read() {}
        let status = self
            .child
            .0
            .wait()
            .expect("waiting for kmesh-testbed client");
        assert!(status.success(), "client failed: {status}");
        let report = self.report.take().expect("the client printed no report");
        serde_json::from_str(&report).expect("client report JSON")
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Ok(procs) = std::fs::read_to_string(self.cgroup.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.parse::<i32>().ok()) {
                // SAFETY: signalling a pid we put in our own cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for _ in 0..50 {
            if std::fs::remove_dir(&self.cgroup).is_ok() || !self.cgroup.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The shared parent goes with the last test's cgroup. A removed child
        // is destroyed asynchronously, so the parent can read busy for a moment.
        if let Some(parent) = self.cgroup.parent() {
            for _ in 0..50 {
                let siblings = std::fs::read_dir(parent)
                    .map(|d| d.flatten().any(|e| e.path().is_dir()))
                    .unwrap_or(false);
                if siblings || std::fs::remove_dir(parent).is_ok() || !parent.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
        // Pinned maps, and the routing links of agents run with
        // --on-exit keep-routing: removing a link's pin detaches it.
        let _ = std::fs::remove_dir_all(&self.bpffs);
        let _ = std::fs::remove_dir_all(&self.workdir);
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
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

/// A scrape of /metrics.
pub struct Metrics(pub String);

impl Metrics {
    /// Sum of the samples of `name` whose labels include all of `labels`
    /// (0 when the family has none). Panics when the scrape has no such
    /// family at all, so a renamed or dropped metric cannot read as 0.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let families: Vec<&str> = self
            .0
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let declared = families.iter().any(|family| {
            name == *family
                || ["_total", "_bucket", "_count", "_sum", "_created"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(family))
        });
        assert!(
            declared,
            "no metric family for {name} in the scrape (renamed or dropped?); it has: {}",
            families.join(", ")
        );
        self.samples(name)
            .iter()
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|have| have == v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// Every sample of `name`, with its labels.
    pub fn samples(&self, name: &str) -> Vec<crate::prometheus::Sample> {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, label_text) = match series.split_once('{') {
                    Some((m, rest)) => (m, rest.strip_suffix('}').unwrap_or(rest)),
                    None => (series, ""),
                };
                (metric == name).then(|| crate::prometheus::Sample {
                    labels: parse_labels(label_text),
                    value: value.parse().unwrap_or(f64::NAN),
                })
            })
            .collect()
    }
}

/// `a="x",b="y"` of the exposition format; values may hold commas and
/// escaped quotes.
fn parse_labels(text: &str) -> std::collections::BTreeMap<String, String> {
    let mut labels = std::collections::BTreeMap::new();
    let mut rest = text;
    while let Some((name, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(name.trim_start_matches(',').to_string(), value);
        rest = &after[end..];
    }
    labels
}

/// Programs attached to `cgroup` for a cgroup attach type, by BPF_PROG_QUERY.
pub fn attached_programs(cgroup: &Path, attach_type: u32) -> u32 {
    attached_program_ids(cgroup, attach_type).len() as u32
}

/// Ids of the programs attached to `cgroup` for a cgroup attach type, in
/// the order they run.
pub fn attached_program_ids(cgroup: &Path, attach_type: u32) -> Vec<u32> {
    #[repr(C)]
    #[derive(Default)]
    struct QueryAttr {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        _pad: [[u32; 5]; 5],
    }
    const BPF_PROG_QUERY: libc::c_long = 16;
    const MAX_PROGRAMS: usize = 64;
    let dir = std::fs::File::open(cgroup).expect("opening the cgroup");
    let mut ids = [0u32; MAX_PROGRAMS];
    let mut attr = QueryAttr {
        target_fd: std::os::fd::AsRawFd::as_raw_fd(&dir) as u32,
        attach_type,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: MAX_PROGRAMS as u32,
        ..Default::default()
    };
    // SAFETY: attr is a zeroed bpf_attr prefix large enough for PROG_QUERY;
    // prog_ids points at MAX_PROGRAMS u32s that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_QUERY,
            &raw mut attr,
            size_of::<QueryAttr>() as u32,
        )
    };
    assert_eq!(rc, 0, "BPF_PROG_QUERY: {}", std::io::Error::last_os_error());
    ids[..attr.prog_cnt as usize].to_vec()
}

/// Kernel attach types of the programs the agent attaches to its cgroup
/// (enum bpf_attach_type): sock_ops, connect4/6, getpeername4/6.
pub const AGENT_ATTACH_TYPES: [(u32, &str); 5] = [
    (3, "sock_ops"),
    (10, "connect4"),
    (11, "connect6"),
    (29, "getpeername4"),
    (30, "getpeername6"),
];

/// A mesh file with one service `echo` at `vip`; weights are written as given.
pub fn echo_mesh(vip: &str, policy: &str, backends: &[(&str, u32)]) -> String {
    let mut y =
        format!("services:\n  - name: echo\n    vip: {vip}\n    policy: {policy}\n    backends:\n");
    for (addr, weight) in backends {
        y.push_str(&format!(
            "      - address: {addr}\n        weight: {weight}\n"
        ));
    }
    y
}

/// Runs one admin-API future to completion.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
        .block_on(f)
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    const SCRAPE: &str = "\
# TYPE kmesh_tcp_connections_closed counter
kmesh_tcp_connections_closed_total{destination_service=\"echo\",close_reason=\"fin\"} 3
kmesh_tcp_connections_closed_total{destination_service=\"echo\",close_reason=\"rst_sent\"} 1
# TYPE kmesh_tcp_connections_failed counter
# TYPE kmesh_tcp_rtt_seconds histogram
kmesh_tcp_rtt_seconds_count{destination_service=\"echo\"} 4
";

    #[test]
    fn values_sum_the_matching_samples_of_a_family() {
        let m = Metrics(SCRAPE.to_string());
        assert_eq!(m.value("kmesh_tcp_connections_closed_total", &[]), 4.0);
        let fin = [("close_reason", "fin")];
        assert_eq!(m.value("kmesh_tcp_connections_closed_total", &fin), 3.0);
        assert_eq!(m.value("kmesh_tcp_rtt_seconds_count", &[]), 4.0);
        // A family without samples reads 0.
        assert_eq!(m.value("kmesh_tcp_connections_failed_total", &[]), 0.0);
    }

    #[test]
    #[should_panic(expected = "no metric family for kmesh_tcp_connection_closed_total")]
    fn a_family_missing_from_the_scrape_is_an_error_not_a_zero() {
        Metrics(SCRAPE.to_string()).value("kmesh_tcp_connection_closed_total", &[]);
    }
}
