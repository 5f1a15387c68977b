//! The admin API on its Unix socket: the same figures as /metrics, a feed
//! of closed connections that follows a cursor, and no answer for anyone
//! but root.
use std::{os::unix::fs::PermissionsExt, path::Path, process::Command};

use kmesh_api::{
    client::{AdminClient, ClientError},
    v1,
};
use kmesh_tests::harness::{Topology, block_on, echo_mesh, privileged};

const VIP: &str = "198.18.0.10:80";
const BACKEND: &str = "127.0.0.2:8080";

#[test]
fn the_snapshot_and_the_feed_show_the_traffic() {
    if !privileged("the_snapshot_and_the_feed_show_the_traffic") {
        return;
    }
    let topo = Topology::new("admin-feed");
    let _backend = topo.serve(&[BACKEND], false);
    let agent = topo.start_agent(&echo_mesh(VIP, "round_robin", &[(BACKEND, 1)]));
    let client = AdminClient::new(&agent.admin_socket);
    let n = 7u64;
    let report = topo.client(VIP, n, &[]);
    assert_eq!(report.ok, n);
    // What each connection carried, as the client counted it.
    let (sent, received) = (report.bytes_sent / n, report.bytes_received / n);
    agent.metrics_when(|m| m.value("kmesh_tcp_connections_closed_total", &[]) >= n as f64);

    let snap = agent.snapshot();
    assert_eq!(snap.version, v1::VERSION);
    let echo = &snap.services[0];
    assert_eq!((echo.name.as_str(), echo.vip.as_str()), ("echo", VIP));
    assert_eq!((echo.outbound.opened, echo.outbound.closed), (n, n));
    assert_eq!(echo.backends[0].address, BACKEND);
    assert!(snap.agent.events_closed >= n && snap.agent.resident_bytes > 0);

    let page = block_on(client.connections(0, 5)).expect("connections");
    assert_eq!(page.records.len(), 5, "the limit holds");
    let rest = block_on(client.connections(page.next_after, 100)).expect("connections");
    assert_eq!(
        rest.records.len() as u64,
        n - 5,
        "the cursor picks up where it was"
    );
    assert_eq!(rest.missed, 0);
    for r in page.records.iter().chain(&rest.records) {
        assert_eq!(r.direction, v1::Direction::Outbound);
        assert_eq!((r.service.as_str(), r.backend.as_str()), ("echo", BACKEND));
        assert_eq!(r.vip.as_deref(), Some(VIP));
        assert_eq!(r.close_reason, "fin");
        assert!(r.source.starts_with("127.0.0.1:"), "{r:?}");
        assert_eq!((r.bytes_sent, r.bytes_received), (sent, received), "{r:?}");
    }
    let seqs: Vec<u64> = rest.records.iter().map(|r| r.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {seqs:?}"
    );
}

/// Runs a raw HTTP request against the socket as user `nobody`; returns what
/// it printed (the status line, or the error).
fn get_as_nobody(socket: &Path) -> String {
    let script = "import socket, sys\n\
        s = socket.socket(socket.AF_UNIX)\n\
        try:\n    s.connect(sys.argv[1])\nexcept OSError as e:\n    print(type(e).__name__); sys.exit(0)\n\
        s.sendall(b'GET /v1/snapshot HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n')\n\
        print(s.makefile('rb').readline().decode().strip())\n";
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["/usr/bin/python3", "-c", script])
        .arg(socket)
        .output()
        .expect("running setpriv (util-linux) and /usr/bin/python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn only_root_may_use_the_admin_api() {
    if !privileged("only_root_may_use_the_admin_api") {
        return;
    }
    let topo = Topology::new("admin-perm");
    let agent = topo.start_agent(&echo_mesh(VIP, "round_robin", &[(BACKEND, 1)]));
    // The workdir must be passable for the socket's own mode to decide.
    std::fs::set_permissions(&topo.workdir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mode = std::fs::metadata(&agent.admin_socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "owner-only socket");
    assert_eq!(get_as_nobody(&agent.admin_socket), "PermissionError");

    // Even with the file opened up, the peer's credentials are checked.
    std::fs::set_permissions(&agent.admin_socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let status = get_as_nobody(&agent.admin_socket);
    assert!(status.contains(" 403 "), "{status}");
    assert!(
        agent.log().contains("admin API request refused"),
        "{}",
        agent.log()
    );

    // Root still gets an answer; a wrong path gets a message, not a trace.
    assert_eq!(agent.snapshot().version, v1::VERSION);
    let missing = AdminClient::new(topo.workdir.join("nope.sock"));
    let err = block_on(missing.snapshot()).unwrap_err();
    assert!(matches!(err, ClientError::NotFound(_)), "{err}");
    assert!(err.to_string().contains("is the agent running"), "{err}");
}

/// Removes what the test made, also when it fails.
struct Made(Vec<std::path::PathBuf>);

impl Drop for Made {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

#[test]
fn a_failed_start_leaves_no_admin_socket_or_lock_behind() {
    if !privileged("a_failed_start_leaves_no_admin_socket_or_lock_behind") {
        return;
    }
    let name = format!("kmt-failed-start-{}", std::process::id());
    let dir = std::env::temp_dir().join(&name);
    let bpffs = Path::new("/sys/fs/bpf").join(&name);
    let _made = Made(vec![dir.clone(), bpffs.clone()]);
    std::fs::create_dir_all(&dir).unwrap();
    let mesh = dir.join("mesh.yaml");
    std::fs::write(&mesh, echo_mesh(VIP, "round_robin", &[(BACKEND, 1)])).unwrap();
    let socket = dir.join("admin.sock");
    let port = kmesh_tests::harness::free_port();
    // Everything binds, then the data plane refuses the cgroup: a plain
    // directory is not a cgroup v2 one.
    let out = Command::new(kmesh_tests::harness::target_bin("kmesh-agent"))
        .arg("run")
        .arg("--config")
        .arg(&mesh)
        .arg("--cgroup")
        .arg(&dir)
        .arg("--bpffs-dir")
        .arg(&bpffs)
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--admin-socket")
        .arg(&socket)
        .env("NO_COLOR", "1")
        .output()
        .expect("running kmesh-agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("cgroup"), "{stderr}");
    assert!(!socket.exists(), "admin.sock left behind:\n{stderr}");
    assert!(
        !socket.with_extension("lock").exists(),
        "admin.lock left behind:\n{stderr}"
    );
}
