//! The namespace (loopback only), the cgroup v2 directory and the bpffs
//! directory of one test, made together and removed together, also when
//! the test fails.
use std::{
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use super::run;

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
