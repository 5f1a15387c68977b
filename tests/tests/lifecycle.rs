//! Config reloads and shutdown: bad input keeps the last good state, and
//! the agent leaves nothing behind when it exits.
use std::time::{Duration, Instant};

use kmesh_tests::harness::{
    AGENT_ATTACH_TYPES, Agent, Metrics, Topology, attached_programs, echo_mesh, privileged,
};

const VIP: &str = "198.18.0.30:80";

fn mesh(backends: &[&str]) -> String {
    let weighted: Vec<(&str, u32)> = backends.iter().map(|b| (*b, 1)).collect();
    echo_mesh(VIP, "round_robin", &weighted)
}

/// Replaces the file the way editors and ConfigMaps do: write aside, rename.
fn replace_config(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Waits until the agent counts a failed reload; asserts it counted exactly
/// one. Returns the scrape and the log, which holds the reason.
fn one_failed_reload(agent: &Agent) -> (Metrics, String) {
    let failed = |m: &Metrics| m.value("kmesh_config_reloads_total", &[("result", "failure")]);
    let m = agent.metrics_when(|m| failed(m) >= 1.0);
    let log = agent.log();
    assert_eq!(
        failed(&m),
        1.0,
        "the file was not seen as a failed reload:\n{log}"
    );
    (m, log)
}

#[test]
fn a_bad_config_is_rejected_and_the_previous_one_keeps_routing() {
    if !privileged("a_bad_config_is_rejected_and_the_previous_one_keeps_routing") {
        return;
    }
    let topo = Topology::new("reload");
    let all = ["127.0.0.2:8080", "127.0.0.3:8080", "127.0.0.4:8080"];
    let _servers = topo.serve(&all, false);
    let agent = topo.start_agent(&mesh(&all[..2]));

    replace_config(
        &agent.config_path,
        "services:\n  - name: echo\n    vip: 198.18.0.30:80\n    policy: weighted\n    backends:\n      - address: 127.0.0.4:8080\n        weight: 0\n",
    );
    let (_, log) = one_failed_reload(&agent);
    let path = agent.config_path.display().to_string();
    assert!(
        log.contains(&path) && log.contains("line 2") && log.contains("all weights are 0"),
        "the error must name the file, the line and the reason:\n{log}"
    );
    // Still the first config: round robin over the first two backends.
    let report = topo.client(VIP, 10, &[]);
    assert_eq!(report.backends.get(all[0]), Some(&5), "{report:?}");
    assert_eq!(report.backends.get(all[1]), Some(&5), "{report:?}");

    // A good file takes over.
    replace_config(&agent.config_path, &mesh(&all[2..]));
    let ok = |m: &Metrics| m.value("kmesh_config_reloads_total", &[("result", "success")]);
    let m = agent.metrics_when(|m| ok(m) >= 1.0);
    assert_eq!(ok(&m), 1.0, "{}", agent.log());
    let report = topo.client(VIP, 10, &[]);
    assert_eq!(report.backends.get(all[2]), Some(&10), "{report:?}");
}

/// A truncated write (here: the file cut to nothing in place, as `> file`
/// or a crashed writer leaves it) is a failed reload, not an empty mesh.
#[test]
fn a_truncated_config_is_rejected_and_the_vip_stays_routed() {
    if !privileged("a_truncated_config_is_rejected_and_the_vip_stays_routed") {
        return;
    }
    let topo = Topology::new("truncate");
    let _servers = topo.serve(&["127.0.0.2:8080"], false);
    let agent = topo.start_agent(&mesh(&["127.0.0.2:8080"]));
    assert_eq!(topo.client(VIP, 3, &[]).ok, 3);

    std::fs::File::create(&agent.config_path).expect("truncating the config");
    let (m, log) = one_failed_reload(&agent);
    assert_eq!(m.value("kmesh_services", &[]), 1.0, "{log}");
    let path = agent.config_path.display().to_string();
    assert!(
        log.contains(&format!("{path} is empty")) && log.contains("services: []"),
        "the error must name the file and say how to remove every service:\n{log}"
    );
    let report = topo.client(VIP, 3, &[]);
    assert_eq!(report.ok, 3, "{report:?}");
    assert_eq!(
        report.backends.get("127.0.0.2:8080"),
        Some(&3),
        "{report:?}"
    );
}

#[test]
fn a_removed_service_stops_being_routed() {
    if !privileged("a_removed_service_stops_being_routed") {
        return;
    }
    let topo = Topology::new("remove");
    let _servers = topo.serve(&["127.0.0.2:8080"], false);
    let agent = topo.start_agent(&mesh(&["127.0.0.2:8080"]));
    assert_eq!(topo.client(VIP, 3, &[]).ok, 3);
    replace_config(&agent.config_path, "services: []\n");
    let m = agent.metrics_when(|m| m.value("kmesh_services", &[]) == 0.0);
    assert_eq!(m.value("kmesh_services", &[]), 0.0);
    let report = topo.client(VIP, 3, &[]);
    assert_eq!(report.failures.get("unreachable"), Some(&3), "{report:?}");
}

#[test]
fn a_service_without_backends_is_warned_about_at_apply() {
    if !privileged("a_service_without_backends_is_warned_about_at_apply") {
        return;
    }
    let topo = Topology::new("nobackends");
    let _servers = topo.serve(&["127.0.0.2:8080"], false);
    let config = format!(
        "{}  - name: lonely\n    vip: 198.18.0.31:80\n    backends: []\n",
        mesh(&["127.0.0.2:8080"])
    );
    let agent = topo.start_agent(&config);
    let log = agent.log();
    assert!(
        log.contains(
            "service \"lonely\" (198.18.0.31:80) has no backends; connect() to it is refused (EPERM) until it has a backend"
        ),
        "{log}"
    );
    assert_eq!(topo.client(VIP, 3, &[]).ok, 3);
    // Refused at once, not sent to the VIP, and counted.
    let lonely = topo.client("198.18.0.31:80", 4, &[]);
    assert_eq!(lonely.failures.get("denied"), Some(&4), "{lonely:?}");
    let refused = |m: &kmesh_tests::harness::Metrics, reason| {
        m.value("kmesh_route_refused_connects_total", &[("reason", reason)])
    };
    let m = agent.metrics_when(|m| refused(m, "no_backends") >= 4.0);
    assert_eq!(refused(&m, "no_backends"), 4.0, "{}", m.0);
    assert_eq!(refused(&m, "backend_missing"), 0.0);
}

#[test]
fn exit_leaves_no_program_or_pin_behind() {
    if !privileged("exit_leaves_no_program_or_pin_behind") {
        return;
    }
    let topo = Topology::new("exit");
    let _servers = topo.serve(&["127.0.0.2:8080"], false);
    let mut agent = topo.start_agent(&mesh(&["127.0.0.2:8080"]));
    for (attach_type, name) in AGENT_ATTACH_TYPES {
        assert_eq!(
            attached_programs(&topo.cgroup, attach_type),
            1,
            "{name} attached while running"
        );
    }
    assert!(topo.bpffs.join("KM_SERVICES").exists());
    assert_eq!(topo.client(VIP, 3, &[]).ok, 3);

    let status = agent.stop();
    assert!(status.success(), "agent exit {status}:\n{}", agent.log());
    for (attach_type, name) in AGENT_ATTACH_TYPES {
        assert_eq!(
            attached_programs(&topo.cgroup, attach_type),
            0,
            "{name} still attached after exit"
        );
    }
    assert!(
        !topo.bpffs.exists(),
        "pinned maps left in {}",
        topo.bpffs.display()
    );
    // Routing is gone with the agent: the VIP is just an unroutable address.
    let report = topo.client(VIP, 2, &[]);
    assert_eq!(report.failures.get("unreachable"), Some(&2), "{report:?}");
}

#[test]
fn the_topology_is_removed_even_when_a_test_fails() {
    if !privileged("the_topology_is_removed_even_when_a_test_fails") {
        return;
    }
    let (cgroup, netns) = std::panic::catch_unwind(|| {
        let topo = Topology::new("unwind");
        let _agent = topo.start_agent(&mesh(&["127.0.0.2:8080"]));
        let _ = (topo.cgroup.clone(), topo.netns.clone());
        std::panic::panic_any((topo.cgroup.clone(), topo.netns.clone()));
    })
    .expect_err("the closure panics")
    .downcast::<(std::path::PathBuf, String)>()
    .map(|b| *b)
    .expect("the panic carries the names");
    let deadline = Instant::now() + Duration::from_secs(5);
    while cgroup.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!cgroup.exists(), "cgroup {} left behind", cgroup.display());
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains(&netns),
        "netns {netns} left behind"
    );
}

/// A ConfigMap volume as the kubelet writes it: each file is a link into
/// `..data`, itself a link to a timestamped directory that an update
/// replaces by swapping the link.
struct ConfigMapVolume {
    root: std::path::PathBuf,
    version: u32,
}

impl ConfigMapVolume {
    fn new(root: std::path::PathBuf, mesh: &str) -> Self {
        std::fs::create_dir_all(&root).unwrap();
        let mut volume = Self { root, version: 0 };
        volume.update(mesh);
        std::os::unix::fs::symlink("..data/mesh.yaml", volume.root.join("mesh.yaml")).unwrap();
        volume
    }

    fn update(&mut self, mesh: &str) {
        let old = format!("..v{}", self.version);
        self.version += 1;
        let new = format!("..v{}", self.version);
        std::fs::create_dir(self.root.join(&new)).unwrap();
        std::fs::write(self.root.join(&new).join("mesh.yaml"), mesh).unwrap();
        std::os::unix::fs::symlink(&new, self.root.join("..data_tmp")).unwrap();
        std::fs::rename(self.root.join("..data_tmp"), self.root.join("..data")).unwrap();
        let _ = std::fs::remove_dir_all(self.root.join(old));
    }
}

#[test]
fn a_configmap_volume_update_is_applied() {
    if !privileged("a_configmap_volume_update_is_applied") {
        return;
    }
    let topo = Topology::new("configmap");
    let all = ["127.0.0.2:8080", "127.0.0.3:8080"];
    let _servers = topo.serve(&all, false);
    // As the DaemonSet runs it: --config is the volume's directory.
    let mut volume = ConfigMapVolume::new(topo.workdir.join("mesh"), &mesh(&all[..1]));
    let agent = topo.start_agent_on(&volume.root);
    assert_eq!(topo.client(VIP, 4, &[]).backends.get(all[0]), Some(&4));

    volume.update(&mesh(&all[1..]));
    let ok = |m: &Metrics| m.value("kmesh_config_reloads_total", &[("result", "success")]);
    let m = agent.metrics_when(|m| ok(m) >= 1.0);
    assert_eq!(
        ok(&m),
        1.0,
        "the ConfigMap update was not applied:\n{}",
        agent.log()
    );
    let report = topo.client(VIP, 4, &[]);
    assert_eq!(report.backends.get(all[1]), Some(&4), "{report:?}");
}

#[test]
fn sighup_reloads_the_config_file() {
    if !privileged("sighup_reloads_the_config_file") {
        return;
    }
    let topo = Topology::new("sighup");
    let _servers = topo.serve(&["127.0.0.2:8080"], false);
    let agent = topo.start_agent(&mesh(&["127.0.0.2:8080"]));
    let ok = |m: &Metrics| m.value("kmesh_config_reloads_total", &[("result", "success")]);
    assert_eq!(ok(&agent.metrics()), 0.0, "the start is not a reload");
    // The file is untouched, so no watcher event can be what reloads it.
    let pid = agent.pid().expect("the agent runs") as i32;
    // SAFETY: signalling the agent this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let m = agent.metrics_when(|m| ok(m) >= 1.0);
    assert_eq!(ok(&m), 1.0, "SIGHUP did not reload:\n{}", agent.log());
    assert_eq!(topo.client(VIP, 3, &[]).ok, 3, "routing after the reload");
}
