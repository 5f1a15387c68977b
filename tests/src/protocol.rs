//! The testbed's request/reply protocol, so both ends know every byte that
//! crossed the wire. The client sends an 8-byte header (request length,
//! reply length; little-endian u32s) and the request; the server answers
//! with its own address on one line, padded to the reply length, and closes.
use std::{
    io::{ErrorKind, Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    time::Duration,
};

/// What one client connection saw.
#[derive(Debug, Clone)]
pub enum Outcome {
    Ok {
        backend: String,
        /// What getpeername() returned, or why it failed: a failure is
        /// its own entry, never the address dialled.
        peer: String,
        sent: u64,
        received: u64,
    },
    Failed {
        kind: &'static str,
        sent: u64,
        received: u64,
    },
}

const IO_TIMEOUT: Duration = Duration::from_secs(5);

pub fn classify(e: &std::io::Error) -> &'static str {
    match e.kind() {
        ErrorKind::ConnectionRefused => "refused",
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => "reset",
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "timeout",
        ErrorKind::NetworkUnreachable | ErrorKind::HostUnreachable => "unreachable",
        // EPERM: a cgroup program (orchestration) refused the connect().
        ErrorKind::PermissionDenied => "denied",
        _ => "other",
    }
}

pub fn call(target: SocketAddr, request_bytes: u32, reply_bytes: u32, hold: Duration) -> Outcome {
    call_with(
        target,
        request_bytes,
        reply_bytes,
        hold,
        Handshake::default(),
    )
}

/// How a client begins its connections.
#[derive(Clone, Copy, Debug, Default)]
pub struct Handshake {
    /// The request rides on the SYN (TCP Fast Open, when the namespace's
    /// `net.ipv4.tcp_fastopen` lets the client send data without a cookie,
    /// or it has one).
    pub fastopen: bool,
    /// The handshake's last ACK waits for the request and rides on it
    /// (TCP_DEFER_ACCEPT on the connecting socket).
    pub ack_with_data: bool,
    /// Connect from this address (a workload's IP in the namespace).
    pub source: Option<IpAddr>,
}

/// As [`call`], beginning the connection as `handshake` says.
pub fn call_with(
    target: SocketAddr,
    request_bytes: u32,
    reply_bytes: u32,
    hold: Duration,
    handshake: Handshake,
) -> Outcome {
    let connected = if handshake.fastopen || handshake.ack_with_data || handshake.source.is_some() {
        connect_with(target, handshake)
    } else {
        TcpStream::connect_timeout(&target, IO_TIMEOUT)
    };
    let mut stream = match connected {
        Ok(s) => s,
        Err(e) => {
            return Outcome::Failed {
                kind: classify(&e),
                sent: 0,
                received: 0,
            };
        }
    };
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let peer = match stream.peer_addr() {
        Ok(addr) => addr.to_string(),
        Err(e) => format!("getpeername failed: {e}"),
    };
    let message = request(request_bytes, reply_bytes);
    if let Err(e) = stream.write_all(&message) {
        return Outcome::Failed {
            kind: classify(&e),
            sent: 0,
            received: 0,
        };
    }
    let sent = message.len() as u64;
    let mut reply = Vec::new();
    match stream.read_to_end(&mut reply) {
        Ok(_) => {
            if !hold.is_zero() {
                std::thread::sleep(hold);
            }
            let backend = reply
                .split(|b| *b == b'\n')
                .next()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .unwrap_or_default();
            Outcome::Ok {
                backend,
                peer,
                sent,
                received: reply.len() as u64,
            }
        }
        Err(e) => Outcome::Failed {
            kind: classify(&e),
            sent,
            received: reply.len() as u64,
        },
    }
}

/// A socket set up before connect(): with Fast Open, connect() returns at
/// once and the SYN carries the first write (TCP_FASTOPEN_CONNECT); with a
/// deferred ACK, the kernel holds the handshake's last ACK back for the
/// first write to carry.
fn connect_with(target: SocketAddr, handshake: Handshake) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
    if handshake.fastopen {
        set_tcp_option(&socket, libc::TCP_FASTOPEN_CONNECT, 1)?;
    }
    if handshake.ack_with_data {
        set_tcp_option(&socket, libc::TCP_DEFER_ACCEPT, 1)?;
    }
    if let Some(source) = handshake.source {
        socket.bind(&SocketAddr::new(source, 0).into())?;
    }
    socket.connect_timeout(&target.into(), IO_TIMEOUT)?;
    Ok(socket.into())
}

/// setsockopt(IPPROTO_TCP, `option`, `value`).
pub fn set_tcp_option(
    socket: &impl std::os::fd::AsRawFd,
    option: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: a valid socket fd and an int option of the right size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            option,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The request for `request_bytes` of payload and a reply of `reply_bytes`.
pub fn request(request_bytes: u32, reply_bytes: u32) -> Vec<u8> {
    let mut message = Vec::with_capacity(request_len(request_bytes) as usize);
    message.extend_from_slice(&request_bytes.to_le_bytes());
    message.extend_from_slice(&reply_bytes.to_le_bytes());
    message.resize(request_len(request_bytes) as usize, b'q');
    message
}

/// Bytes on the wire for a request of `request_bytes`: the header and them.
pub fn request_len(request_bytes: u32) -> u64 {
    8 + u64::from(request_bytes)
}

/// How the server ends a connection once it has read the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Ending {
    /// Reply, then close at once.
    Close,
    /// Abort with a reset instead of replying.
    Reset,
    /// Reply, wait for the client's EOF, then close 200 ms later: the
    /// client closes first, as HTTP/1.1 clients do.
    AwaitEof,
    /// Reply, wait for the client's EOF, then write 1000 bytes more at once
    /// (they carry the ACK of the client's FIN), which a client that has
    /// closed answers with a reset.
    WriteAfterEof,
    /// As `write-after-eof`, 100 ms after the EOF: the ACK of the client's
    /// FIN has gone ahead on its own.
    WriteLateAfterEof,
}

/// Serves one connection, ending it as `ending` says.
pub fn serve_one(mut stream: TcpStream, id: &str, ending: Ending) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut header = [0u8; 8];
    stream.read_exact(&mut header)?;
    let request = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
    let reply = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    std::io::copy(
        &mut (&mut stream).take(u64::from(request)),
        &mut std::io::sink(),
    )?;
    if ending == Ending::Reset {
        // SO_LINGER with a zero timeout turns close() into a reset.
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid socket fd and a linger struct of the right size.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&stream),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                size_of::<libc::linger>() as libc::socklen_t,
            );
        }
        return Ok(());
    }
    let mut body = format!("{id}\n").into_bytes();
    if body.len() < reply as usize {
        body.resize(reply as usize, b'.');
    }
    stream.write_all(&body)?;
    if matches!(ending, Ending::Close) {
        return Ok(());
    }
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    std::io::copy(&mut stream, &mut std::io::sink())?;
    match ending {
        Ending::WriteAfterEof => stream.write_all(&[b'!'; 1000]),
        Ending::WriteLateAfterEof => {
            std::thread::sleep(Duration::from_millis(100));
            stream.write_all(&[b'!'; 1000])
        }
        _ => {
            std::thread::sleep(Duration::from_millis(200));
            Ok(())
        }
    }
}
