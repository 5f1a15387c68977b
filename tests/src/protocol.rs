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

/// Where a client connects to, and from which address if it chooses one.
#[derive(Clone, Copy, Debug)]
pub struct Dial {
    pub target: SocketAddr,
    pub source: Option<IpAddr>,
}

impl Dial {
    pub fn connect(self) -> std::io::Result<TcpStream> {
        let Some(source) = self.source else {
            return TcpStream::connect_timeout(&self.target, IO_TIMEOUT);
        };
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(self.target),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.bind(&SocketAddr::new(source, 0).into())?;
        socket.connect_timeout(&self.target.into(), IO_TIMEOUT)?;
        Ok(socket.into())
    }
}

pub fn call(dial: Dial, request_bytes: u32, reply_bytes: u32, hold: Duration) -> Outcome {
    let mut stream = match dial.connect() {
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
