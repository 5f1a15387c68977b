//! Traffic in a topology: `kmesh-testbed` backends in its namespace (and
//! its cgroup when the probe should see them), and clients in both, run to
//! the end, in the background, or until the test stops them.
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use clap::ValueEnum;

use super::{Proc, Topology, target_bin};
use crate::{ClientReport, protocol::Ending};

fn ending_of(reset: bool) -> Ending {
    if reset { Ending::Reset } else { Ending::Close }
}

impl Topology {
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
