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
const CONNECT4: u32 = 10;

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
    let first_connect4 = attached_program_ids(&topo.cgroup, CONNECT4);
    assert_eq!(first_connect4.len(), 1, "{}", first.log());
    for program in ROUTING_PROGRAMS {
        assert!(
            topo.bpffs.join("links").join(program).exists(),
            "{program} link not pinned while running"
        );
    }

    // SIGTERM, as a rolling update sends: routing stays, the probe goes.
    let status = first.stop();
    assert!(status.success(), "exit {status}:\n{}", first.log());
    assert!(
        first.log().contains("routing stays attached"),
        "{}",
        first.log()
    );
    assert_only_routing_attached(&topo.cgroup, "after the first agent's SIGTERM");
    assert_eq!(
        attached_program_ids(&topo.cgroup, CONNECT4),
        first_connect4,
        "the first agent's own connect4 keeps routing"
    );
    assert_routed_to(&topo, FIRST, 5, "between the agents");

    // The next agent (a new mesh, to tell them apart) takes over: its
    // programs replace the first one's, it observes, and the old links go.
    let mut second = topo.start_agent_with(&mesh(SECOND), &KEEP);
    let second_connect4 = attached_program_ids(&topo.cgroup, CONNECT4);
    assert_eq!(second_connect4.len(), 1, "{}", second.log());
    assert_ne!(second_connect4, first_connect4, "{}", second.log());
    assert_eq!(attached_programs(&topo.cgroup, SOCK_OPS), 1);
    assert!(
        second.log().contains("took over routing"),
        "{}",
        second.log()
    );
    assert_routed_to(&topo, SECOND, 5, "second agent running");
    let m = second.metrics_when(|m| {
        m.value(
            "kmesh_tcp_connections_closed_total",
            &[("destination_service", "echo")],
        ) >= 5.0
    });
    assert_eq!(
        m.value(
            "kmesh_tcp_connections_opened_total",
            &[("destination_service", "echo")]
        ),
        5.0,
        "the second agent observes only its own connections:\n{}",
        m.0
    );

    // A crash (SIGKILL: no shutdown code runs) leaves routing too.
    kill(&mut second);
    assert_only_routing_attached(&topo.cgroup, "after SIGKILL");
    assert_eq!(
        attached_program_ids(&topo.cgroup, CONNECT4),
        second_connect4
    );
    assert_routed_to(&topo, SECOND, 5, "after the second agent was killed");

    // An agent that detaches on exit takes over as well, and its exit
    // leaves nothing: the way to uninstall (docs/deploy.md).
    let mut last = topo.start_agent(&mesh(FIRST));
    assert_routed_to(&topo, FIRST, 3, "detaching agent running");
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
