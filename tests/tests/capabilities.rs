//! The agent needs exactly CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (the set
//! the DaemonSet grants): with those alone it routes and observes, and
//! without any one of them it refuses to start and names the capability.
//! `setpriv` restricts the capabilities as a container runtime would.
use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use kmesh_tests::harness::{
    AGENT_ATTACH_TYPES, Topology, attached_programs, echo_mesh, privileged,
};

const CAPS: [(&str, u32); 3] = [("bpf", 39), ("net_admin", 12), ("perfmon", 38)];
const VIP: &str = "198.18.0.10:80";
const BACKEND: &str = "127.0.0.2:8080";

/// `setpriv` keeping only `caps`: root's capabilities are bounded, and none
/// are inherited.
fn setpriv(caps: &[&str]) -> Vec<String> {
    let keep: String = caps.iter().map(|c| format!(",+{c}")).collect();
    vec![
        "setpriv".into(),
        format!("--bounding-set=-all{keep}"),
        "--inh-caps=-all".into(),
        "--".into(),
    ]
}

fn effective_caps(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .expect("CapEff");
    u64::from_str_radix(hex.trim(), 16).expect("hex")
}

#[test]
fn the_agent_routes_and_observes_with_exactly_its_three_capabilities() {
    if !privileged("the_agent_routes_and_observes_with_exactly_its_three_capabilities") {
        return;
    }
    let topo = Topology::new("caps");
    let _backend = topo.serve(&[BACKEND], false);
    let wrapper = setpriv(&CAPS.map(|(c, _)| c));
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let agent = topo.start_agent_wrapped(&echo_mesh(VIP, "random", &[(BACKEND, 1)]), &wrapper);
    let expected = CAPS.iter().fold(0u64, |m, (_, bit)| m | 1 << bit);
    assert_eq!(
        effective_caps(agent.pid().expect("running")),
        expected,
        "the agent runs with exactly CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON"
    );
    let report = topo.client(VIP, 20, &[]);
    assert_eq!(report.ok, 20, "failures: {:?}", report.failures);
    assert_eq!(report.backends.get(BACKEND), Some(&20));
    let metrics =
        agent.metrics_when(|m| m.value("kmesh_tcp_connections_opened_total", &[]) >= 20.0);
    assert!(
        metrics.value("kmesh_tcp_connections_opened_total", &[]) >= 20.0,
        "the probe observed the connections:\n{}",
        agent.log()
    );
}

#[test]
fn without_any_one_capability_the_agent_refuses_and_names_it() {
    if !privileged("without_any_one_capability_the_agent_refuses_and_names_it") {
        return;
    }
    let topo = Topology::new("nocap");
    let mesh = echo_mesh(VIP, "random", &[(BACKEND, 1)]);
    for (missing, _) in CAPS {
        let others: Vec<&str> = CAPS
            .iter()
            .map(|(c, _)| *c)
            .filter(|c| *c != missing)
            .collect();
        let wrapper = setpriv(&others);
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let mut child = topo
            .agent_command(&mesh, &wrapper)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the agent");
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "the agent without CAP_{} kept running",
                    missing.to_uppercase()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
            .expect("stderr");
        let name = format!("CAP_{}", missing.to_uppercase());
        assert!(
            !status.success(),
            "the agent without {name} exited {status}"
        );
        assert!(
            stderr.contains(&format!("the agent lacks {name}, needed for")),
            "the error names {name} and why:\n{stderr}"
        );
        for (attach_type, program) in AGENT_ATTACH_TYPES {
            assert_eq!(
                attached_programs(&topo.cgroup, attach_type),
                0,
                "{program} attached by an agent that refused to start"
            );
        }
        assert!(
            !topo.bpffs.exists(),
            "pins left by an agent that refused to start"
        );
    }
}
