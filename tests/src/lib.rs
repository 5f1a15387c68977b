//! Shared pieces of the end-to-end tests and `kmesh-testbed`: the traffic
//! protocol, the topology (network namespaces, cgroups) and the harness that
//! runs a real agent on the real kernel, and an ADS server standing in for
//! istiod.
pub mod ads;
pub mod ambient_data;
pub mod bench;
pub mod harness;
pub mod manifests;
pub mod nodes;
pub mod oracle;
pub mod prometheus;
pub mod protocol;
mod report;
pub mod rotel;
pub mod sessions;
pub mod workloads;
pub mod xds_data;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd,
    path::Path,
    time::Duration,
};

use anyhow::Context;
pub use report::ClientReport;

/// Whether the tests run under CI, where a test that cannot run fails
/// instead of skipping: `CI` set to anything but empty, `0`, `false` or
/// `no` (CI systems set `true` or `1`).
pub fn in_ci() -> bool {
    means_ci(std::env::var("CI").ok().as_deref())
}

fn means_ci(value: Option<&str>) -> bool {
    value.is_some_and(|v| {
        !["", "0", "false", "no"].contains(&v.trim().to_ascii_lowercase().as_str())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn ci_is_any_value_but_an_off_one() {
        for on in ["true", "1", "yes", "TRUE"] {
            assert!(super::means_ci(Some(on)), "{on}");
        }
        for off in [None, Some(""), Some("0"), Some("false"), Some("no")] {
            assert!(!super::means_ci(off), "{off:?}");
        }
    }
}

/// Where a testbed or bench process places itself before it makes any
/// socket: the flags the harness passes to the processes it starts.
#[derive(clap::Args)]
pub struct Place {
    /// Network namespace (a name under /run/netns) to run in.
    #[arg(long, global = true)]
    pub netns: Option<String>,
    /// cgroup v2 directory to move this process into before any socket is made.
    #[arg(long, global = true)]
    pub cgroup: Option<std::path::PathBuf>,
}

impl Place {
    /// The cgroup first (a socket's cgroup is fixed when the socket is
    /// made), then the network namespace. Call it before starting threads.
    pub fn enter(&self) -> anyhow::Result<()> {
        if let Some(cg) = &self.cgroup {
            join_cgroup(cg)?;
        }
        if let Some(ns) = &self.netns {
            join_netns(ns)?;
        }
        Ok(())
    }
}

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
    let (status, body) = http_request(addr, "GET", path, None)?;
    if status != 200 {
        anyhow::bail!("GET {path}: HTTP {status}");
    }
    Ok(body)
}

/// A plain HTTP/1.0 request with an optional form body
/// (`application/x-www-form-urlencoded`, see [`form_encode`]); returns the
/// status code and the body whatever the status, so a caller can read the
/// error a server explains in its body.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    form: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    if let Some(body) = form {
        request.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        request.push_str("\r\n");
    }
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .with_context(|| format!("{method} {path} on {addr}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("malformed HTTP status line in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// `application/x-www-form-urlencoded` (also a URL query string) of `pairs`.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// RFC 3986 unreserved characters stay; everything else is escaped.
const FORM: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, FORM).to_string()
}
