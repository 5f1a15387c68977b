//! A DaemonSet's rolling update: with `--on-exit keep-routing` the routing
//! programs stay attached after the agent ends (SIGTERM or SIGKILL), the
//! next agent takes over, and `kmesh-agent cleanup` removes what is left.
use std::{
    path::Path,
    process::{Command, Output},
};

use kmesh_tests::harness::{
    AGENT_ATTACH_TYPES, Agent, Topology, attached_program_ids, attached_programs, echo_mesh,
    privileged, target_bin,
};

const VIP: &str = "198.18.0.40:80";
const FIRST: &str = "127.0.0.2:8080";
const SECOND: &str = "127.0.0.3:8080";
const KEEP: [&str; 2] = ["--on-exit", "keep-routing"];
/// enum bpf_attach_type values.
const SOCK_OPS: u32 = 3;

const ROUTING_PROGRAMS: [&str; 4] = [
    "route_connect4",
    "route_connect6",
    "vip_getpeername4",
    "vip_getpeername6",
];

fn mesh(backend: &str) -> String {
    echo_mesh(VIP, "round_robin", &[(backend, 1)])
}

/// Every connection reached `backend` and the client saw the VIP as its peer.
fn assert_routed_to(topo: &Topology, backend: &str, connections: u64, when: &str) {
    let report = topo.client(VIP, connections, &[]);
    assert_eq!(report.ok, connections, "{when}: {report:?}");
    assert_eq!(
        report.backends.get(backend),
        Some(&connections),
        "{when}: {report:?}"
    );
    assert_eq!(
        report.peer_names.get(VIP),
        Some(&connections),
        "{when}: getpeername must still say the VIP: {report:?}"
    );
}

/// Routing attached (one link per routing hook) and the probe not.
fn assert_only_routing_attached(cgroup: &Path, when: &str) {
    for (attach_type, name) in AGENT_ATTACH_TYPES {
        let expected = if attach_type == SOCK_OPS { 0 } else { 1 };
        assert_eq!(
            attached_programs(cgroup, attach_type),
            expected,
            "{when}: {name}"
        );
    }
}

/// The program ids on each routing hook (connect4/6, getpeername4/6).
fn routing_ids(cgroup: &Path) -> Vec<Vec<u32>> {
    AGENT_ATTACH_TYPES
        .iter()
        .filter(|(t, _)| *t != SOCK_OPS)
        .map(|(t, _)| attached_program_ids(cgroup, *t))
        .collect()
}

/// The agent observed exactly `connections` to echo, all closed: those
/// made while it ran, none from before it started.
fn assert_observed_exactly(agent: &Agent, connections: u64, who: &str) {
    let labels = [("destination_service", "echo")];
    let m = agent.metrics_when(|m| {
        m.value("kmesh_tcp_connections_closed_total", &labels) >= connections as f64
    });
    let counted = |name| m.value(name, &labels);
    assert_eq!(
        (
            counted("kmesh_tcp_connections_opened_total"),
            counted("kmesh_tcp_connections_closed_total")
        ),
        (connections as f64, connections as f64),
        "{who} observes its own connections, not those before it:\n{}",
        m.0
    );
}

fn kill(agent: &mut Agent) {
    let pid = agent.pid().expect("agent running") as i32;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let status = agent.stop();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
}

#[test]
fn routing_outlives_the_agent_until_the_next_one_takes_over() {
    if !privileged("routing_outlives_the_agent_until_the_next_one_takes_over") {
        return;
    }
    let topo = Topology::new("handover");
    let _servers = topo.serve(&[FIRST, SECOND], false);

    let mut first = topo.start_agent_with(&mesh(FIRST), &KEEP);
    assert_routed_to(&topo, FIRST, 3, "first agent running");
    let first_ids = routing_ids(&topo.cgroup);
    assert!(
        first_ids.iter().all(|ids| ids.len() == 1),
        "one program per routing hook: {first_ids:?}\n{}",
        first.log()
    );
    for program in ROUTING_PROGRAMS {
        assert!(
            topo.bpffs.join("links").join(program).exists(),
            "{program} link not pinned while running"
        );
    }

    // Connections all through the rolling update, until it is done: the
    // first agent gets SIGTERM, the second one starts and takes over.
    let mut during = topo.client_until_stopped(VIP, 100_000, &["--rate", "200"]);
    // At least one connection entirely under each stage (one worker: the
    // one after a connection seen to finish starts after it).
    during.wait_for(2);
    let status = first.stop();
    assert!(status.success(), "exit {status}:\n{}", first.log());
    assert!(
        first.log().contains("routing stays attached"),
        "{}",
        first.log()
    );
    // Routing stays, the probe goes.
    assert_only_routing_attached(&topo.cgroup, "after the first agent's SIGTERM");
    assert_eq!(
        routing_ids(&topo.cgroup),
        first_ids,
        "the first agent's own programs keep routing"
    );
    during.wait_for(during.done() + 2);

    // The next agent (another mesh) takes over: its programs replace the
    // first one's on every hook, it observes, and the old links go.
    let mut second = topo.start_agent_with(&mesh(SECOND), &KEEP);
    let second_ids = routing_ids(&topo.cgroup);
    for (hook, (old, new)) in first_ids.iter().zip(&second_ids).enumerate() {
        assert_eq!(
            new.len(),
            1,
            "hook {hook}: {second_ids:?}\n{}",
            second.log()
        );
        assert_ne!(new, old, "hook {hook} still runs the first agent's program");
    }
    assert_eq!(attached_programs(&topo.cgroup, SOCK_OPS), 1);
    assert!(
        second.log().contains("took over routing"),
        "{}",
        second.log()
    );
    during.wait_for(during.done() + 2);
    let during = during.stop();
    assert_eq!(
        (during.peer_names.get(VIP), during.failures.len()),
        (Some(&during.ok), 0),
        "every connection made across the update is routed and sees the VIP: {during:?}"
    );
    assert!(
        during.backends.contains_key(FIRST) && during.backends.contains_key(SECOND),
        "the connections span the takeover: {during:?}"
    );
    assert_routed_to(&topo, SECOND, 5, "second agent running");

    // A crash (SIGKILL: no shutdown code runs) leaves routing too.
    kill(&mut second);
    assert_only_routing_attached(&topo.cgroup, "after SIGKILL");
    assert_eq!(routing_ids(&topo.cgroup), second_ids);
    assert_routed_to(&topo, SECOND, 5, "after the second agent was killed");

    // An agent that detaches on exit takes over as well, and its exit
    // leaves nothing: the way to uninstall (docs/deploy.md).
    let mut last = topo.start_agent(&mesh(FIRST));
    assert_routed_to(&topo, FIRST, 3, "detaching agent running");
    // No traffic was in flight across this takeover, so what it observed
    // is known exactly: its own 3, none of those made before it.
    assert_observed_exactly(&last, 3, "the agent after the crash");
    assert!(
        !topo.bpffs.join("links").exists(),
        "a detaching agent pins no links"
    );
    let status = last.stop();
    assert!(status.success(), "exit {status}:\n{}", last.log());
    for (attach_type, name) in AGENT_ATTACH_TYPES {
        assert_eq!(
            attached_programs(&topo.cgroup, attach_type),
            0,
            "{name} still attached:\n{}",
            last.log()
        );
    }
    assert!(
        !topo.bpffs.exists(),
        "pins left in {}",
        topo.bpffs.display()
    );
    let report = topo.client(VIP, 2, &[]);
    assert_eq!(report.failures.get("unreachable"), Some(&2), "{report:?}");
}

fn run_cleanup(bpffs: &Path) -> Output {
    Command::new(target_bin("kmesh-agent"))
        .args(["cleanup", "--bpffs-dir"])
        .arg(bpffs)
        .output()
        .expect("running kmesh-agent cleanup")
}

fn cleanup(bpffs: &Path) -> String {
    let out = run_cleanup(bpffs);
    assert!(
        out.status.success(),
        "cleanup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn cleanup_removes_the_routing_an_agent_left() {
    if !privileged("cleanup_removes_the_routing_an_agent_left") {
        return;
    }
    let topo = Topology::new("cleanup");
    let _servers = topo.serve(&[FIRST], false);
    let mut agent = topo.start_agent_with(&mesh(FIRST), &KEEP);
    let status = agent.stop();
    assert!(status.success(), "exit {status}:\n{}", agent.log());
    assert_routed_to(&topo, FIRST, 2, "after the agent's exit");
    let routing_ids: Vec<u32> = AGENT_ATTACH_TYPES
        .iter()
        .flat_map(|(t, _)| attached_program_ids(&topo.cgroup, *t))
        .collect();
    assert_eq!(routing_ids.len(), 4, "{}", agent.log());

    let out = cleanup(&topo.bpffs);
    for id in &routing_ids {
        assert!(
            out.contains(&format!("detached program {id} ")),
            "program {id} not reported:\n{out}"
        );
    }
    assert!(out.contains("KM_SERVICES"), "{out}");
    for (attach_type, name) in AGENT_ATTACH_TYPES {
        assert_eq!(attached_programs(&topo.cgroup, attach_type), 0, "{name}");
    }
    assert!(!topo.bpffs.exists(), "{} left", topo.bpffs.display());
    let report = topo.client(VIP, 2, &[]);
    assert_eq!(report.failures.get("unreachable"), Some(&2), "{report:?}");

    // Idempotent: a second run finds nothing.
    assert!(cleanup(&topo.bpffs).contains("nothing left"));
}

#[test]
fn cleanup_names_what_it_does_not_own() {
    if !privileged("cleanup_names_what_it_does_not_own") {
        return;
    }
    let topo = Topology::new("cleanup-foreign");
    std::fs::create_dir_all(&topo.bpffs).unwrap();
    std::fs::create_dir(topo.bpffs.join("someone-else")).unwrap();
    let out = run_cleanup(&topo.bpffs);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("someone-else") && stderr.contains(&topo.bpffs.display().to_string()),
        "the error names the directory and what is in it: {stderr}"
    );
    assert!(
        topo.bpffs.join("someone-else").exists(),
        "not ours to remove"
    );
}

/// Runs an agent on the topology's cgroup and bpffs directory that must
/// fail to start (own admin socket `socket`, any free port); its output.
fn refused_start(topo: &Topology, config: &Path, socket: &str) -> Output {
    let out = Command::new(target_bin("kmesh-agent"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .arg("--cgroup")
        .arg(&topo.cgroup)
        .arg("--bpffs-dir")
        .arg(&topo.bpffs)
        .arg("--metrics-addr=127.0.0.1:0")
        .arg("--admin-socket")
        .arg(topo.workdir.join(socket))
        .env("NO_COLOR", "1")
        .output()
        .expect("running kmesh-agent");
    assert!(
        !out.status.success(),
        "the agent started: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn a_running_agents_pins_are_its_own() {
    if !privileged("a_running_agents_pins_are_its_own") {
        return;
    }
    let topo = Topology::new("pinlock");
    let _servers = topo.serve(&[FIRST], false);
    let agent = topo.start_agent_with(&mesh(FIRST), &KEEP);
    let ids = routing_ids(&topo.cgroup);

    // A second agent on the same bpffs directory (its own socket and port,
    // so only the pins are shared) would take the routing from under the
    // first; it is refused, as is cleanup.
    let second = refused_start(&topo, &agent.config_path, "second.sock");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another kmesh-agent")
            && stderr.contains(&topo.bpffs.display().to_string()),
        "the refusal names the directory: {stderr}"
    );
    let cleanup = run_cleanup(&topo.bpffs);
    assert!(!cleanup.status.success());
    assert!(
        String::from_utf8_lossy(&cleanup.stderr).contains("another kmesh-agent"),
        "{}",
        String::from_utf8_lossy(&cleanup.stderr)
    );

    assert_eq!(routing_ids(&topo.cgroup), ids, "{}", agent.log());
    assert_routed_to(&topo, FIRST, 3, "after both were refused");
}

/// bpf(2) commands (enum bpf_cmd).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_OBJ_PIN: libc::c_long = 6;

/// Pins a new hash map at `path` (replacing the pin there).
fn pin_hash_map(path: &Path, key_size: u32, value_size: u32, max_entries: u32) {
    let mut attr = [1u32, key_size, value_size, max_entries, 0, 0];
    // SAFETY: BPF_MAP_CREATE with a zeroed tail.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, attr.as_mut_ptr(), 24) };
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    std::fs::remove_file(path).unwrap();
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut attr = [0u64; 3];
    attr[0] = c.as_ptr() as u64;
    attr[1] = fd as u64;
    // SAFETY: BPF_OBJ_PIN of the fd just created.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_PIN, attr.as_mut_ptr(), 24) };
    assert_eq!(rc, 0, "BPF_OBJ_PIN: {}", std::io::Error::last_os_error());
    // SAFETY: the pin holds the map now.
    unsafe { libc::close(fd as i32) };
}

#[test]
fn a_pin_of_another_layout_is_refused_and_routing_goes_on() {
    if !privileged("a_pin_of_another_layout_is_refused_and_routing_goes_on") {
        return;
    }
    let topo = Topology::new("layout");
    let _servers = topo.serve(&[FIRST, SECOND], false);
    let mut first = topo.start_agent_with(&mesh(FIRST), &KEEP);
    assert!(first.stop().success(), "{}", first.log());

    // As a build with another capacity would have left it: same key and
    // value, 16 entries.
    let services = topo.bpffs.join("KM_SERVICES");
    let pinned = aya::maps::MapInfo::from_pin(&services).expect("the pinned KM_SERVICES");
    pin_hash_map(&services, pinned.key_size(), pinned.value_size(), 16);
    let refused = refused_start(&topo, &first.config_path, "admin.sock");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&services.display().to_string())
            && stderr.contains("incompatible")
            && stderr.contains("16"),
        "the refusal names the pin and what differs: {stderr}"
    );
    // The first agent's programs route on with the map they were loaded with.
    assert_routed_to(&topo, FIRST, 3, "after the refusal");

    // What the message says to do: remove the map pins, start again.
    for name in ["KM_SERVICES", "KM_BACKENDS", "KM_SOCK_ROUTES"] {
        std::fs::remove_file(topo.bpffs.join(name)).unwrap();
    }
    assert_routed_to(&topo, FIRST, 3, "with the map pins removed");
    let second = topo.start_agent_with(&mesh(SECOND), &KEEP);
    assert!(
        second.log().contains("took over routing"),
        "{}",
        second.log()
    );
    assert_routed_to(&topo, SECOND, 3, "after the takeover");
}
