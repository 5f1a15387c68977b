//! kmesh-top in a real terminal (tmux) on a real agent with real traffic:
//! the screen shows the services, figures and connections the traffic
//! made, keys drive it, and the terminal is given back as it was.
use std::{
    collections::HashMap,
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use kmesh_api::v1;
use kmesh_tests::harness::{Agent, Proc, Topology, privileged, target_bin};

const VIP: &str = "198.18.0.10:80";
const BACKENDS: [&str; 2] = ["127.0.0.2:8080", "127.0.0.3:8080"];

fn tmux(args: &[&str]) -> Output {
    Command::new("tmux")
        .args(args)
        .output()
        .expect("running tmux (scripts/setup.sh installs it)")
}

/// A tmux session of its own (its own server socket), killed when dropped.
struct Session {
    socket: String,
    name: String,
}

impl Session {
    fn start(tag: &str, width: u16, height: u16, command: &str) -> Self {
        let s = Self {
            socket: format!("kmt-{tag}-{}", std::process::id()),
            name: tag.to_string(),
        };
        let out = tmux(&[
            "-L",
            &s.socket,
            "new-session",
            "-d",
            "-s",
            &s.name,
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            command,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        s
    }

    /// The screen as text; with `escapes`, with its colours and attributes.
    fn screen(&self, escapes: bool) -> String {
        let mut args = vec!["-L", &self.socket, "capture-pane", "-p", "-t", &self.name];
        if escapes {
            args.push("-e");
        }
        String::from_utf8_lossy(&tmux(&args).stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["-L", &self.socket, "send-keys", "-t", &self.name];
        args.extend_from_slice(keys);
        tmux(&args);
    }

    fn alive(&self) -> bool {
        tmux(&["-L", &self.socket, "has-session", "-t", &self.name])
            .status
            .success()
    }

    /// A tmux format expanded for the pane, e.g. `#{pane_pid}`.
    fn pane(&self, format: &str) -> String {
        let out = tmux(&[
            "-L",
            &self.socket,
            "display-message",
            "-p",
            "-t",
            &self.name,
            format,
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The pane's process: kmesh-top itself when the command `exec`s it.
    fn pane_pid(&self) -> u32 {
        let pid = self.pane("#{pane_pid}");
        pid.parse()
            .unwrap_or_else(|_| panic!("no pane pid from tmux: {pid:?}"))
    }

    /// kmesh-top's dashboard on an agent, once it shows.
    fn dashboard(tag: &str, command: &str) -> Self {
        let session = Self::start(tag, 100, 30, command);
        session.wait_for("the dashboard", |s| s.contains("SERVICES"));
        session
    }

    /// Waits up to 15 s for the screen to satisfy `ready`; returns it.
    fn wait_for(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let screen = self.screen(false);
            if ready(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "kmesh-top never showed {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = tmux(&["-L", &self.socket, "kill-server"]);
    }
}

/// The row starting with `first` read against the header line starting
/// with `header`: column title -> value.
fn row(screen: &str, header: &str, first: &str) -> HashMap<String, String> {
    let lines: Vec<&str> = screen.lines().collect();
    let first_word = |l: &str| {
        l.split_whitespace()
            .next()
            .map(|w| w.trim_end_matches(['▲', '▼']).to_string())
    };
    let titles: Vec<&str> = lines
        .iter()
        .find(|l| first_word(l).as_deref() == Some(header))
        .unwrap_or_else(|| panic!("no {header} header:\n{screen}"))
        .split_whitespace()
        .collect();
    let values: Vec<&str> = lines
        .iter()
        .find(|l| first_word(l).as_deref() == Some(first))
        .unwrap_or_else(|| panic!("no {first} row:\n{screen}"))
        .split_whitespace()
        .collect();
    titles
        .iter()
        .map(|t| t.trim_end_matches(['▲', '▼']).to_string())
        .zip(values.iter().map(|v| v.to_string()))
        .collect()
}

/// Words of a line with the columns (in characters) each spans.
fn spans(line: &str) -> Vec<(String, std::ops::Range<usize>)> {
    let mut words = Vec::new();
    let mut start = None;
    for (i, c) in line.chars().chain([' ']).enumerate() {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                let word: String = line.chars().skip(s).take(i - s).collect();
                words.push((word.trim_end_matches(['▲', '▼']).to_string(), s..i));
                start = None;
            }
            _ => {}
        }
    }
    words
}

/// The cell under the title `column` in the first row holding the word
/// `key`, below the first header line holding the title `title`, if the
/// screen shows them. By position, so a cell of two words ("3 (75.0%)")
/// does not shift the others.
fn cell(screen: &str, title: &str, key: &str, column: &str) -> Option<String> {
    let mut lines = screen.lines().map(spans);
    let titles = lines.find(|l| l.iter().any(|(w, _)| w == title))?;
    let values = lines.find(|l| l.iter().any(|(w, _)| w == key))?;
    let (_, at) = titles.iter().find(|(w, _)| w == column)?;
    values
        .into_iter()
        .find(|(_, span)| span.start < at.end && at.start < span.end)
        .map(|(w, _)| w)
}

/// Whether an SGR escape in `text` sets a colour (not just bold/reverse).
fn has_colour(text: &str) -> bool {
    text.split("\x1b[").skip(1).any(|rest| {
        let Some(end) = rest.find('m') else {
            return false;
        };
        rest[..end].split(';').any(|p| {
            matches!(
                p.parse::<u32>(),
                Ok(30..=38 | 40..=48 | 90..=97 | 100..=107)
            )
        })
    })
}

fn kmesh_top(socket: &Path, args: &[&str]) -> Output {
    Command::new(target_bin("kmesh-top"))
        .arg("--admin-socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("running kmesh-top")
}

#[test]
fn kmesh_top_shows_the_mesh_the_traffic_made() {
    if !privileged("kmesh_top_shows_the_mesh_the_traffic_made") {
        return;
    }
    let topo = Topology::new("top");
    let _backends = topo.serve_in_cgroup(&BACKENDS, false);
    let mesh =
        kmesh_tests::harness::echo_mesh(VIP, "weighted", &[(BACKENDS[0], 3), (BACKENDS[1], 1)]);
    let agent = topo.start_agent(&mesh);
    // Steady traffic for the whole test. (What rate kmesh-top shows is
    // checked exactly against scripted snapshots, below.)
    let _traffic = Proc(
        Command::new(target_bin("kmesh-testbed"))
            .args(["--netns", &topo.netns, "--cgroup"])
            .arg(&topo.cgroup)
            .args(["client", "--target", VIP, "--connections", "2000"])
            .args(["--rate", "40", "--concurrency", "2"])
            .stdout(Stdio::null())
            .spawn()
            .expect("starting the client"),
    );

    let stty = topo.workdir.join("stty-after");
    let command = format!(
        "NO_COLOR=1 {} --admin-socket {} --interval 500ms; stty -a > {}; sleep 30",
        target_bin("kmesh-top").display(),
        agent.admin_socket.display(),
        stty.display()
    );
    // Wide enough for every column of the services table.
    let top = Session::start("top", 140, 30, &command);
    let screen = top.wait_for("echo with a connection rate", |s| {
        s.contains(VIP)
            && s.lines().any(|l| l.starts_with("echo "))
            && row(s, "SERVICE", "echo")
                .get("NEW/s")
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|r| r > 0.0)
    });
    let echo = row(&screen, "SERVICE", "echo");
    assert_eq!(echo["VIP:PORT"], VIP, "{screen}");
    assert_eq!(echo["POLICY"], "weighted", "{screen}");
    assert!(
        echo["P99"].ends_with("µs") || echo["P99"].ends_with("ms"),
        "{screen}"
    );
    assert!(screen.contains("drops 0"), "the health line: {screen}");
    assert!(!has_colour(&top.screen(true)), "NO_COLOR is respected");

    top.keys(&["Enter"]);
    let screen = top.wait_for("echo's backends", |s| s.contains("BACKENDS of echo"));
    let first = row(&screen, "BACKEND", BACKENDS[0]);
    assert_eq!(first["WEIGHT"], "3", "{screen}");
    assert!(
        screen.contains("3 (75.0%)") && screen.contains("1 (25.0%)"),
        "{screen}"
    );
    assert!(
        screen.contains("new connections/s"),
        "the sparklines: {screen}"
    );

    top.keys(&["Escape"]);
    top.keys(&["c"]);
    let arrow = format!("→ {VIP} → ");
    let screen = top.wait_for("the connection feed", |s| s.contains(&arrow));
    assert!(screen.contains("fin"), "{screen}");

    top.keys(&["/"]);
    top.keys(&["-l", BACKENDS[1]]);
    top.keys(&["Enter"]);
    let screen = top.wait_for("the feed filtered to one backend", |s| {
        s.contains(&format!("{arrow}{}", BACKENDS[1]))
            && !s.contains(&format!("{arrow}{}", BACKENDS[0]))
    });
    assert!(screen.contains(BACKENDS[1]), "{screen}");

    top.keys(&["q"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stty.exists() {
        assert!(Instant::now() < deadline, "kmesh-top did not quit on q");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_cooked(&std::fs::read_to_string(&stty).unwrap());
    assert!(top.alive(), "the shell after kmesh-top carried on");
}

fn assert_cooked(modes: &str) {
    assert!(
        modes.contains(" icanon") && modes.contains(" echo ") && !modes.contains("-icanon"),
        "the terminal is back in cooked mode:\n{modes}"
    );
}

/// Whether `pid` is a process that has not ended (a zombie has: nobody
/// may be reaping an orphan here).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, state) = stat.rsplit_once(") ")?;
            Some(!state.starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Waits up to 10 s for `done`. Liveness, not speed: kmesh-top ends in
/// well under a second.
fn within_10s(done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// A kmesh-top the test signals; SIGKILLed on drop if it is still there,
/// since one that lost its terminal would otherwise outlive the test.
struct TopProcess(u32);

impl TopProcess {
    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on a pid this test saw start.
        unsafe { libc::kill(self.0 as i32, signal) };
    }
}

impl Drop for TopProcess {
    fn drop(&mut self) {
        if running(self.0) {
            self.signal(libc::SIGKILL);
        }
    }
}

/// An agent routing one service and no traffic: enough for the dashboard.
/// Bind both: the agent must stop before its topology goes.
fn idle_agent(tag: &str) -> (Topology, Agent) {
    let topo = Topology::new(tag);
    let mesh = kmesh_tests::harness::echo_mesh(VIP, "round_robin", &[(BACKENDS[0], 1)]);
    let agent = topo.start_agent(&mesh);
    (topo, agent)
}

fn dashboard_command(socket: &Path) -> String {
    format!(
        "{} --admin-socket {}",
        target_bin("kmesh-top").display(),
        socket.display()
    )
}

#[test]
fn kmesh_top_ends_when_its_terminal_goes_away() {
    if !privileged("kmesh_top_ends_when_its_terminal_goes_away") {
        return;
    }
    let (_topo, agent) = idle_agent("top-gone");
    let top = dashboard_command(&agent.admin_socket);
    // As the session leader it gets the kernel's SIGHUP; with SIGHUP
    // ignored (nohup, or a shell that does not pass the hangup on) only
    // its input can tell it that the terminal is gone.
    for (tag, command) in [
        ("gone-leader", format!("exec {top}")),
        ("gone-nohup", format!("trap '' HUP; exec {top}")),
    ] {
        let session = Session::dashboard(tag, &command);
        let top = TopProcess(session.pane_pid());
        drop(session); // kills the tmux server, and with it the terminal
        assert!(
            within_10s(|| !running(top.0)),
            "{tag}: kmesh-top still runs 10 s after its terminal went away: {}",
            std::fs::read_to_string(format!("/proc/{}/stat", top.0)).unwrap_or_default()
        );
    }
}

#[test]
fn kmesh_top_restores_the_terminal_on_sigterm_and_sigint_and_ends_on_sighup() {
    if !privileged("kmesh_top_restores_the_terminal_on_sigterm_and_sigint_and_ends_on_sighup") {
        return;
    }
    let (topo, agent) = idle_agent("top-signals");
    let top = dashboard_command(&agent.admin_socket);
    for (tag, signal) in [("sigterm", libc::SIGTERM), ("sigint", libc::SIGINT)] {
        let after = topo.workdir.join(format!("after-{tag}"));
        // Written whole, by rename, once kmesh-top has ended.
        let command = format!(
            "{top}; {{ echo status $?; stty -a; }} > {after}.part; mv {after}.part {after}; sleep 60",
            after = after.display()
        );
        let session = Session::dashboard(tag, &command);
        assert_eq!(session.pane("#{alternate_on}"), "1", "{tag}: the dashboard");
        let shell = session.pane_pid();
        let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
            .expect("the shell's children");
        let top = TopProcess(children.trim().parse().expect("kmesh-top's pid"));
        top.signal(signal);
        assert!(
            within_10s(|| after.exists()),
            "{tag}: kmesh-top did not end; the screen:\n{}",
            session.screen(false)
        );
        let after = std::fs::read_to_string(&after).unwrap();
        assert!(after.starts_with("status 0\n"), "{tag}: {after}");
        assert_cooked(&after);
        assert_eq!(
            session.pane("#{alternate_on}"),
            "0",
            "{tag}: back on the normal screen"
        );
    }

    let session = Session::dashboard("sighup", &format!("exec {top}"));
    let top = TopProcess(session.pane_pid());
    top.signal(libc::SIGHUP);
    assert!(within_10s(|| !running(top.0)), "kmesh-top ignored SIGHUP");
}

#[test]
fn kmesh_top_prints_for_scripts_and_explains_a_missing_agent() {
    if !privileged("kmesh_top_prints_for_scripts_and_explains_a_missing_agent") {
        return;
    }
    let topo = Topology::new("top-once");
    let _backends = topo.serve(&BACKENDS, false);
    let mesh =
        kmesh_tests::harness::echo_mesh(VIP, "round_robin", &[(BACKENDS[0], 1), (BACKENDS[1], 1)]);
    let agent = topo.start_agent(&mesh);
    assert_eq!(topo.client(VIP, 10, &[]).ok, 10);
    agent.metrics_when(|m| m.value("kmesh_tcp_connections_closed_total", &[]) >= 10.0);

    let out = kmesh_top(&agent.admin_socket, &["--once", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snap: v1::Snapshot = serde_json::from_slice(&out.stdout).expect("a v1 snapshot");
    assert_eq!(snap.services[0].outbound.opened, 10);

    let out = kmesh_top(&agent.admin_socket, &["--once", "--interval", "200ms"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("echo") && text.contains(VIP),
        "{text}"
    );

    let out = kmesh_top(&topo.workdir.join("absent.sock"), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("is the agent running"), "{err}");
    assert!(
        !err.contains("panicked") && err.lines().count() == 1,
        "one clear line: {err}"
    );
}

/// Serves the admin API on a Unix socket as an agent would, but from a
/// script: the `k`-th snapshot (from 0) comes from `snapshot(k)`; the
/// connection feed is empty. Stops when dropped.
struct ScriptedAgent {
    socket: std::path::PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl ScriptedAgent {
    fn start(socket: &Path, snapshot: fn(u64) -> v1::Snapshot) -> Self {
        use std::{
            io::{BufRead, BufReader, Write},
            sync::atomic::Ordering,
        };
        let _ = std::fs::remove_file(socket);
        let listener = std::os::unix::net::UnixListener::bind(socket).expect("binding the socket");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            let mut served = 0;
            for stream in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                let mut request = String::new();
                let mut reader = BufReader::new(&stream);
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                let mut header = String::new();
                while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                    header.clear();
                }
                let path = request.split_whitespace().nth(1).unwrap_or("");
                let body = if path == v1::SNAPSHOT_PATH {
                    served += 1;
                    serde_json::to_string(&snapshot(served - 1)).unwrap()
                } else if path.starts_with(v1::CONNECTIONS_PATH) {
                    r#"{"next_after":0,"missed":0,"records":[]}"#.to_string()
                } else {
                    r#"{"error":"not found"}"#.to_string()
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self {
            socket: socket.to_path_buf(),
            stop,
        }
    }
}

impl Drop for ScriptedAgent {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = std::os::unix::net::UnixStream::connect(&self.socket);
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Figures with `opened` connections, all closed.
fn opened(opened: u64) -> v1::Figures {
    v1::Figures {
        opened,
        closed: opened,
        ..v1::Figures::default()
    }
}

/// Snapshot `k` of an agent whose uptime advances 0.25 s from one to the
/// next (its wall clock 1 s, whatever time really passes), while echo's
/// first backend opens 2 connections and its second 1: 8/s, 4/s and
/// 12/s for the service. Any other time base (wall clock, kmesh-top's
/// own interval) or counter (a total instead of a difference) shows
/// another figure.
fn scripted_snapshot(k: u64) -> v1::Snapshot {
    let backend = |address: &str, weight, per_step| v1::Backend {
        address: address.to_string(),
        weight,
        workload: None,
        outbound: opened(1000 + per_step * k),
        inbound: v1::Figures::default(),
    };
    v1::Snapshot {
        version: v1::VERSION.to_string(),
        taken_at_unix_ms: 1_700_000_000_000 + 1000 * k,
        uptime_seconds: 100.0 + 0.25 * k as f64,
        latency_bounds_us: Vec::new(),
        agent: v1::AgentHealth::default(),
        services: vec![v1::Service {
            name: "echo".to_string(),
            vip: VIP.to_string(),
            policy: "weighted".to_string(),
            outbound: opened(2000 + 3 * k),
            backends: vec![backend(BACKENDS[0], 3, 2), backend(BACKENDS[1], 1, 1)],
        }],
        other: Vec::new(),
        calls: Vec::new(),
    }
}

#[test]
fn kmesh_top_shows_the_rate_of_the_counters_over_the_agents_uptime() {
    let dir = std::env::temp_dir().join(format!("kmt-top-rate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("admin.sock");
    let _agent = ScriptedAgent::start(&socket, scripted_snapshot);

    // Once, for scripts: two snapshots --interval apart.
    let out = kmesh_top(&socket, &["--once", "--interval", "200ms"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rates = |screen: &str| {
        [
            cell(screen, "VIP:PORT", VIP, "NEW/s"),
            cell(screen, "WEIGHT", BACKENDS[0], "NEW/s"),
            cell(screen, "WEIGHT", BACKENDS[1], "NEW/s"),
        ]
    };
    let expected = ["12", "8", "4"].map(|r| Some(r.to_string()));
    assert_eq!(rates(&text), expected, "service, backends:\n{text}");

    // The dashboard: every interval it shows is the same.
    let command = format!(
        "NO_COLOR=1 exec {} --admin-socket {} --interval 300ms",
        target_bin("kmesh-top").display(),
        socket.display()
    );
    let top = Session::start("top-rate", 140, 30, &command);
    let shown = |s: &str, title, key| {
        cell(s, title, key, "NEW/s").is_some_and(|r| r.parse::<f64>().is_ok())
    };
    let screen = top.wait_for("echo with a connection rate", |s| shown(s, "VIP:PORT", VIP));
    assert_eq!(
        cell(&screen, "VIP:PORT", VIP, "NEW/s").as_deref(),
        Some("12"),
        "{screen}"
    );
    top.keys(&["Enter"]);
    let screen = top.wait_for("echo's backends with rates", |s| {
        s.contains("BACKENDS of echo") && shown(s, "WEIGHT", BACKENDS[1])
    });
    assert_eq!(rates(&screen)[1..], expected[1..], "{screen}");
    drop(top);
    let _ = std::fs::remove_dir_all(&dir);
}
