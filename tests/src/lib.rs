//! Shared pieces of the end-to-end tests and `kmesh-testbed`: the traffic
//! protocol, the topology (network namespaces, cgroups) and the harness that
//! runs a real agent on the real kernel.
pub mod harness;
pub mod protocol;
pub mod render;
pub mod rotel;
mod report;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd,
    path::Path,
    time::Duration,
};

use anyhow::Context;
pub use report::ClientReport;

/// Moves this whole process into the cgroup v2 directory `cgroup`.
pub fn join_cgroup(cgroup: &Path) -> anyhow::Result<()> {
    std::fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string())
        .with_context(|| format!("joining cgroup {}", cgroup.display()))
}

/// Moves the calling thread (and threads it starts later) into the named
/// network namespace. Call it before starting threads.
pub fn join_netns(name: &str) -> anyhow::Result<()> {
    let path = Path::new("/run/netns").join(name);
    let ns = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: a valid namespace fd.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("entering netns {name}"));
    }
    Ok(())
}

/// A plain HTTP/1.0 GET against the agent's endpoint; returns the body of a 200.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        anyhow::bail!("GET {path}: {status}");
    }
    Ok(body.to_string())
}
