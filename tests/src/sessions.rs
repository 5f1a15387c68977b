//! Connections whose every figure the client knows: per connection, what it
//! wrote and read, and the kernel's `TCP_INFO` for the socket before it
//! closed (and, where the socket outlives the end, after), so the probe's
//! record of the same socket can be checked against both.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::protocol;

/// The `TCP_INFO` figures the probe reports too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpInfo {
    /// `TCP_ESTABLISHED` = 1, ..., as include/net/tcp_states.h numbers them.
    pub state: u8,
    pub rtt_us: u32,
    pub min_rtt_us: u32,
    /// Counts the SYN (and a FIN once acknowledged), as the kernel does.
    pub bytes_acked: u64,
    /// Counts the peer's FIN once it arrived.
    pub bytes_received: u64,
    pub total_retrans: u32,
}

/// One connection, as its client saw it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Session {
    /// The client's own `address:port`: the probe's `source`.
    pub local: String,
    /// Payload written and read by the application.
    pub written: u64,
    pub read: u64,
    /// `TCP_INFO` once the exchange was over, just before the close began
    /// (or before the peer vanished).
    pub before_close: TcpInfo,
    /// `TCP_INFO` after the connection ended, where the socket was still the
    /// client's to ask (it had not closed it).
    pub after_end: Option<TcpInfo>,
    /// `ok`, or how the last step failed (`timeout`, `reset`, ...).
    pub outcome: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CloseOrder {
    /// The client reads the whole reply and closes; the server (run with
    /// `--ending await-eof`) closes later: the HTTP/1.1 pattern.
    ClientFirst,
    /// The server closes after its reply; the client reads to EOF, then
    /// closes.
    ServerFirst,
}

/// What the client does once the peer has vanished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AfterVanish {
    /// Write more and wait in read() until the kernel gives up.
    Read,
    /// close() at once: the kernel retransmits the FIN until it gives up.
    Close,
}

/// Socket options a session sets before it connects.
#[derive(Clone, Copy, Debug, Default, clap::Args)]
pub struct SessionOptions {
    /// `TCP_USER_TIMEOUT`: give up on unacknowledged data after this long.
    #[arg(long, default_value_t = 0)]
    pub user_timeout_ms: u32,
    /// `TCP_LINGER2`: how long an orphaned socket waits in FIN_WAIT2. Above
    /// 60 s the kernel keeps the full socket there instead of a time-wait
    /// stub, so late segments reach it.
    #[arg(long, default_value_t = 0)]
    pub fin_wait2_secs: u32,
}

pub fn tcp_info(stream: &TcpStream) -> std::io::Result<TcpInfo> {
    // SAFETY: a zeroed tcp_info is a valid value; the kernel fills at most
    // `len` bytes of it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: a valid socket fd, and a buffer of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(TcpInfo {
        state: info.tcpi_state,
        rtt_us: info.tcpi_rtt,
        min_rtt_us: info.tcpi_min_rtt,
        bytes_acked: info.tcpi_bytes_acked,
        bytes_received: info.tcpi_bytes_received,
        total_retrans: info.tcpi_total_retrans,
    })
}

/// One testbed request and reply: where, how big, and the socket options.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct Exchange {
    #[arg(long)]
    pub target: SocketAddr,
    #[arg(long, default_value_t = 100)]
    pub request_bytes: u32,
    #[arg(long, default_value_t = 200)]
    pub reply_bytes: u32,
    #[command(flatten)]
    pub options: SessionOptions,
}

/// Connects, applies the options, sends the request and reads the reply as
/// `order` has it; returns the open socket and the session so far, with
/// `TCP_INFO` taken now.
fn exchange(x: &Exchange, order: CloseOrder) -> anyhow::Result<(TcpStream, Session)> {
    let mut stream = TcpStream::connect_timeout(&x.target, Duration::from_secs(5))
        .with_context(|| format!("connecting to {}", x.target))?;
    if x.options.user_timeout_ms > 0 {
        protocol::set_tcp_option(
            &stream,
            libc::TCP_USER_TIMEOUT,
            x.options.user_timeout_ms as libc::c_int,
        )
        .context("setting TCP_USER_TIMEOUT")?;
    }
    if x.options.fin_wait2_secs > 0 {
        protocol::set_tcp_option(
            &stream,
            libc::TCP_LINGER2,
            x.options.fin_wait2_secs as libc::c_int,
        )
        .context("setting TCP_LINGER2")?;
    }
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    stream
        .write_all(&protocol::request(x.request_bytes, x.reply_bytes))
        .context("sending the request")?;
    let read = match order {
        CloseOrder::ClientFirst => {
            let mut reply = vec![0; x.reply_bytes as usize];
            stream.read_exact(&mut reply).context("reading the reply")?;
            u64::from(x.reply_bytes)
        }
        CloseOrder::ServerFirst => {
            let mut reply = Vec::new();
            stream.read_to_end(&mut reply).context("reading to EOF")?;
            reply.len() as u64
        }
    };
    let session = Session {
        local: stream.local_addr()?.to_string(),
        written: protocol::request_len(x.request_bytes),
        read,
        before_close: tcp_info(&stream)?,
        after_end: None,
        outcome: "ok".to_string(),
    };
    Ok((stream, session))
}

/// One request and reply, closed in `order`.
pub fn session(x: &Exchange, order: CloseOrder) -> anyhow::Result<Session> {
    let (stream, session) = exchange(x, order)?;
    drop(stream);
    Ok(session)
}

/// One request and reply; then the peer vanishes (every segment to this
/// socket is dropped) and the client does `then`, with `extra_bytes` more
/// written first.
pub fn vanish(
    x: &Exchange,
    order: CloseOrder,
    then: AfterVanish,
    extra_bytes: u32,
) -> anyhow::Result<Session> {
    let (mut stream, mut session) = exchange(x, order)?;
    drop_segments_to(stream.local_addr()?.port())?;
    if extra_bytes > 0 {
        stream
            .write_all(&vec![b'x'; extra_bytes as usize])
            .context("writing after the peer vanished")?;
        session.written += u64::from(extra_bytes);
    }
    (session.outcome, session.after_end) = match then {
        AfterVanish::Read => {
            let outcome = match stream.read(&mut [0; 64]) {
                Ok(n) => format!("read {n} bytes"),
                Err(e) => protocol::classify(&e).to_string(),
            };
            (outcome, Some(tcp_info(&stream)?))
        }
        AfterVanish::Close => ("closed".to_string(), None),
    };
    Ok(session)
}

/// Drops every TCP segment to `port` in this network namespace: the peer
/// has vanished, as far as this socket can tell.
fn drop_segments_to(port: u16) -> anyhow::Result<()> {
    let rules = format!(
        "add table inet kmesh_testbed_vanish\n\
         add chain inet kmesh_testbed_vanish input {{ type filter hook input priority 0; policy accept; }}\n\
         add rule inet kmesh_testbed_vanish input tcp dport {port} drop\n"
    );
    let mut nft = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .context("running nft (install nftables: scripts/setup.sh does)")?;
    nft.stdin
        .take()
        .expect("piped stdin")
        .write_all(rules.as_bytes())?;
    let status = nft.wait()?;
    anyhow::ensure!(status.success(), "nft refused the drop rule ({status})");
    Ok(())
}
