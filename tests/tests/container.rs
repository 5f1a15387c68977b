//! The container image, built by scripts/image.sh with buildah, runs under
//! podman the way the DaemonSet runs it: uid 0 with only CAP_BPF,
//! CAP_NET_ADMIN and CAP_PERFMON, a read-only root, no privilege
//! escalation, the cgroup and bpffs mounts. It routes and observes
//! connections made by a process outside the container, serves /metrics
//! and /readyz, and refuses to start without any one capability, naming it.
//!
//! Two settings differ from a node, both forced by this machine:
//! - podman runs with runc and cgroupfs, and a containers.conf whose
//!   `default_ulimits = []` (root here lacks CAP_SYS_RESOURCE, so crun's
//!   rlimit calls fail); the file is the test's own (CONTAINERS_CONF).
//! - Debian's seccomp profile (containers-common 0.50) allows bpf() only
//!   with CAP_SYS_ADMIN. The test runs the same profile with bpf() allowed
//!   under CAP_BPF instead, as containerd 1.6.9, Docker 23 and CRI-O 1.31
//!   and later do. perf_event_open() is refused outright: the agent does
//!   not call it.
//!
//! `--network host` only lets the test reach the agent's endpoint; the
//! programs see the client through the cgroup either way.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use kmesh_tests::{
    harness::{Topology, echo_mesh, free_port, privileged},
    http_get,
};
use serde_json::Value;

const CAPS: [&str; 3] = ["BPF", "NET_ADMIN", "PERFMON"];
const VIP: &str = "198.18.0.10:80";
const BACKENDS: [&str; 2] = ["127.0.0.2:8080", "127.0.0.3:8080"];

/// Private image storage and podman configuration, removed when dropped.
struct Podman {
    dir: PathBuf,
}

impl Podman {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("kmesh-podman-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("storage dir");
        std::fs::write(
            dir.join("containers.conf"),
            "[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .expect("containers.conf");
        Self { dir }
    }

    fn storage(&self) -> String {
        format!(
            "--root {} --runroot {} --storage-driver vfs",
            self.dir.join("root").display(),
            self.dir.join("run").display()
        )
    }

    fn podman(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .args(self.storage().split(' '))
            .args(args);
        cmd
    }

    /// Debian's default profile, with bpf() allowed under CAP_BPF rather
    /// than only CAP_SYS_ADMIN, and perf_event_open() refused whatever the
    /// capabilities: the agent must not need it.
    fn seccomp_profile(&self) -> PathBuf {
        let text = std::fs::read_to_string("/usr/share/containers/seccomp.json")
            .expect("podman's default seccomp profile (containers-common)");
        let mut profile: Value = serde_json::from_str(&text).expect("seccomp JSON");
        let syscalls = profile["syscalls"].as_array_mut().expect("syscalls");
        for rule in syscalls.iter_mut() {
            if let Some(names) = rule["names"].as_array_mut() {
                names.retain(|n| n != "bpf" && n != "perf_event_open");
            }
        }
        syscalls.push(serde_json::json!({
            "names": ["bpf"], "action": "SCMP_ACT_ALLOW", "args": [],
            "includes": {"caps": ["CAP_BPF"]}, "excludes": {}
        }));
        syscalls.push(serde_json::json!({
            "names": ["perf_event_open"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "args": []
        }));
        let path = self.dir.join("seccomp.json");
        std::fs::write(&path, profile.to_string()).expect("writing the profile");
        path
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "--all", "--force"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `podman run` arguments of the DaemonSet's container, with `caps`.
fn run_args(topo: &Topology, mesh_dir: &Path, seccomp: &Path, caps: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        "--network",
        "host",
        "--user",
        "0:0",
        "--read-only",
        "--cap-drop",
        "all",
        "--security-opt",
        "no-new-privileges",
        "--tmpfs",
        "/run",
    ]
    .map(String::from)
    .to_vec();
    for cap in caps {
        args.extend(["--cap-add".into(), cap.to_string()]);
    }
    args.extend([
        "--security-opt".into(),
        format!("seccomp={}", seccomp.display()),
        "-v".into(),
        format!("{}:/host/sys/fs/cgroup:ro", topo.cgroup.display()),
        "-v".into(),
        "/sys/fs/bpf:/sys/fs/bpf".into(),
        "-v".into(),
        format!("{}:/etc/kmesh-rs:ro", mesh_dir.display()),
        "-e".into(),
        "KMESH_CONFIG=/etc/kmesh-rs".into(),
        // As deploy/base/settings.yaml: routing outlives the pod.
        "-e".into(),
        "KMESH_ON_EXIT=keep-routing".into(),
    ]);
    args
}

fn agent_args(topo: &Topology, port: u16) -> Vec<String> {
    vec![
        "run".into(),
        "--cgroup=/host/sys/fs/cgroup".into(),
        format!("--bpffs-dir={}", topo.bpffs.display()),
        format!("--metrics-addr=127.0.0.1:{port}"),
    ]
}

#[test]
fn the_image_runs_under_podman_with_the_daemonsets_privileges() {
    if !privileged("the_image_runs_under_podman_with_the_daemonsets_privileges") {
        return;
    }
    let podman = Podman::new();
    let image = "localhost/kmesh-rs:test";
    // The script's own `cargo build` must see what scripts/test.sh's saw,
    // not the variables cargo sets for a test, or it rebuilds the agent.
    let mut build = Command::new("bash");
    build.env_clear();
    for (k, v) in std::env::vars_os().filter(|(k, _)| {
        [
            "PATH",
            "HOME",
            "CARGO_HOME",
            "RUSTUP_HOME",
            "RUSTUP_TOOLCHAIN",
            "USER",
        ]
        .iter()
        .any(|keep| k == keep)
    }) {
        build.env(k, v);
    }
    let build = build
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/image.sh"))
        .env("KMESH_IMAGE", image)
        .env("KMESH_CONTAINER_STORAGE", podman.storage())
        .env("CONTAINERS_CONF", podman.dir.join("containers.conf"))
        .output()
        .expect("running scripts/image.sh");
    assert!(
        build.status.success(),
        "scripts/image.sh failed:\n{}",
        text(&build)
    );
    let printed = String::from_utf8_lossy(&build.stdout);
    assert!(
        printed.trim_end().starts_with(image),
        "image.sh prints the image and its size: {printed}"
    );

    let inspect = podman
        .podman(&["image", "inspect", image])
        .output()
        .expect("inspect");
    assert!(inspect.status.success(), "{}", text(&inspect));
    let info: Value = serde_json::from_slice(&inspect.stdout).expect("inspect JSON");
    let labels = &info[0]["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        labels["org.opencontainers.image.revision"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
    let annotations = &info[0]["Annotations"];
    assert_eq!(
        annotations["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(info[0]["Config"]["Entrypoint"][0], "/usr/bin/kmesh-agent");
    let shell = podman
        .podman(&[
            "run",
            "--rm",
            "--entrypoint",
            "/bin/sh",
            image,
            "-c",
            "true",
        ])
        .output()
        .expect("podman run");
    // 127 is podman's "the contained command cannot be found"; any other
    // failure (a podman error is 125) says nothing about a shell.
    assert_eq!(
        shell.status.code(),
        Some(127),
        "the image must have no shell: {}",
        text(&shell)
    );

    let topo = Topology::new("podman");
    let _backends = topo.serve(&BACKENDS, false);
    let mesh_dir = topo.workdir.join("mesh");
    std::fs::create_dir_all(&mesh_dir).expect("mesh dir");
    let weights = BACKENDS.map(|b| (b, 1));
    std::fs::write(
        mesh_dir.join("mesh.yaml"),
        echo_mesh(VIP, "round_robin", &weights),
    )
    .expect("mesh");
    let seccomp = podman.seccomp_profile();
    let port = free_port();
    let name = format!("kmesh-agent-{}", std::process::id());

    let mut args = run_args(&topo, &mesh_dir, &seccomp, &CAPS);
    args.splice(
        1..1,
        ["--detach".to_string(), "--name".into(), name.clone()],
    );
    args.push(image.into());
    args.extend(agent_args(&topo, port));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // What the run looked like, printed at the end (`-- --nocapture`).
    let mut transcript = format!("$ podman {}\n", args.join(" "));
    let started = podman.podman(&args).output().expect("podman run");
    assert!(started.status.success(), "podman run: {}", text(&started));
    let logs = || text(&podman.podman(&["logs", &name]).output().expect("logs"));

    let endpoint = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(endpoint, "/readyz").is_err() {
        assert!(
            Instant::now() < deadline,
            "the agent in the container was not ready:\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    transcript += &format!(
        "GET /readyz: {}\n",
        http_get(endpoint, "/readyz").unwrap_or_else(|e| e.to_string())
    );
    let report = topo.client(VIP, 40, &[]);
    assert_eq!(report.ok, 40, "failures: {:?}\n{}", report.failures, logs());
    transcript += &format!(
        "40 connections to {VIP} from outside the container: {:?}\n",
        report.backends
    );
    for b in BACKENDS {
        assert_eq!(report.backends.get(b), Some(&20), "{:?}", report.backends);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = http_get(endpoint, "/metrics").expect("GET /metrics");
        let opened: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("kmesh_tcp_connections_opened_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if opened >= 40.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the probe saw {opened} of 40 connections:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        logs().contains("reset_observer=true"),
        "the reset observer runs in the container, without tracefs or perf_event_open:\n{}",
        logs()
    );
    let top = podman
        .podman(&["exec", &name, "kmesh-top", "--once"])
        .output()
        .expect("podman exec");
    assert!(
        top.status.success() && text(&top).contains("echo"),
        "kmesh-top in the container:\n{}",
        text(&top)
    );

    let stopped = podman
        .podman(&["stop", "--time", "15", &name])
        .output()
        .expect("podman stop");
    assert!(stopped.status.success(), "{}", text(&stopped));
    let exit = podman
        .podman(&["inspect", "--format", "{{.State.ExitCode}}", &name])
        .output()
        .expect("inspect");
    assert_eq!(
        String::from_utf8_lossy(&exit.stdout).trim(),
        "0",
        "SIGTERM ends the agent cleanly:\n{}",
        logs()
    );
    transcript += &format!("podman logs (exit status 0 after podman stop):\n{}", logs());
    // The pins went to the host's bpffs through the mount: routing goes
    // on without the container, until `kmesh-agent cleanup` (run from the
    // image, as docs/deploy.md's uninstall does) removes it.
    let report = topo.client(VIP, 10, &[]);
    assert_eq!(report.ok, 10, "routing after the pod ended: {report:?}");
    let mut args = run_args(&topo, &mesh_dir, &seccomp, &CAPS);
    args.insert(1, "--rm".into());
    args.push(image.into());
    args.extend([
        "cleanup".into(),
        format!("--bpffs-dir={}", topo.bpffs.display()),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cleanup = podman.podman(&args).output().expect("podman run cleanup");
    assert!(cleanup.status.success(), "cleanup: {}", text(&cleanup));
    assert_eq!(
        String::from_utf8_lossy(&cleanup.stdout)
            .matches("detached program")
            .count(),
        4,
        "{}",
        text(&cleanup)
    );
    assert!(!topo.bpffs.exists(), "cleanup leaves no pin");
    let report = topo.client(VIP, 2, &[]);
    assert_eq!(report.failures.get("unreachable"), Some(&2), "{report:?}");
    transcript += &format!(
        "after the container stopped: 10 of 10 routed; kmesh-agent cleanup:\n{}",
        text(&cleanup)
    );

    for missing in CAPS {
        let caps: Vec<&str> = CAPS.into_iter().filter(|c| *c != missing).collect();
        let mut args = run_args(&topo, &mesh_dir, &seccomp, &caps);
        args.insert(1, "--rm".into());
        args.push(image.into());
        args.extend(agent_args(&topo, port));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = podman.podman(&args).output().expect("podman run");
        assert!(!out.status.success(), "the agent ran without CAP_{missing}");
        assert!(
            text(&out).contains(&format!("the agent lacks CAP_{missing}, needed for")),
            "the error names CAP_{missing}:\n{}",
            text(&out)
        );
        transcript += &format!("without CAP_{missing}:\n{}", text(&out));
    }
    println!("{transcript}");
}
