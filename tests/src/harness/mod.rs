//! Runs a real agent against a topology the test makes and removes: one
//! network namespace (loopback only, so no packet can leave the machine), one
//! cgroup v2 directory for the client, one bpffs directory for the pins.
//!
//! By what each part does: [`topology`] makes and removes the namespace and
//! cgroup, [`traffic`] runs backends and clients in them, [`agent`] runs the
//! agent on them, [`metrics`] reads its /metrics, [`bpf`] asks the kernel
//! what is attached.
mod agent;
mod bpf;
mod metrics;
mod topology;
mod traffic;

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command},
};

pub use agent::Agent;
pub use bpf::{AGENT_ATTACH_TYPES, attached_program_ids, attached_programs};
pub use metrics::Metrics;
pub use topology::Topology;
pub use traffic::{BackgroundClient, OpenClient};

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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

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
