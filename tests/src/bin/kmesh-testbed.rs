//! kmesh-testbed: the backends, clients and live view that the end-to-end
//! tests and the demo run. Every command can first move itself into a
//! network namespace and a cgroup, so the kernel sees its sockets there.
use std::{
    io::Write,
    net::{SocketAddr, TcpListener},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::{Parser, Subcommand};
use kmesh_tests::{
    ClientReport, Place, protocol,
    protocol::Ending,
    sessions::{self, AfterVanish, CloseOrder, Exchange},
};

#[derive(Parser)]
#[command(about = "Backends and clients for kmesh-rs tests and demos")]
struct Cli {
    #[command(flatten)]
    place: Place,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the testbed protocol on each address until killed; prints "ready" once listening.
    Serve {
        #[arg(long = "listen", required = true)]
        listen: Vec<SocketAddr>,
        /// How each connection ends once the request is read.
        #[arg(long, value_enum, default_value_t = Ending::Close)]
        ending: Ending,
        #[command(flatten)]
        options: ListenOptions,
    },
    /// Make connections to a target and print a JSON report of what happened.
    Client(ClientArgs),
    /// Make connections one after another, each closed in `--order`;
    /// print, as JSON, each one's figures and its TCP_INFO before the close.
    Sessions {
        #[command(flatten)]
        exchange: Exchange,
        #[arg(long, default_value_t = 10)]
        connections: u64,
        #[arg(long, value_enum)]
        order: CloseOrder,
    },
    /// One connection whose peer vanishes after the reply (its segments are
    /// dropped with nftables in this namespace); print its figures as JSON.
    Vanish {
        #[command(flatten)]
        exchange: Exchange,
        /// server-first: the server has closed before it vanishes.
        #[arg(long, value_enum, default_value_t = CloseOrder::ClientFirst)]
        order: CloseOrder,
        #[arg(long, value_enum)]
        then: AfterVanish,
        /// Bytes written after the peer vanished.
        #[arg(long, default_value_t = 0)]
        extra_bytes: u32,
    },
    /// Bind a UDP socket on `--listen`, then connect() a second one to
    /// `--target` and send one datagram; print, as JSON, what connect() said
    /// and how many datagrams the listener got.
    Udp {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Connect one socket to `--first` and then, whatever became of that,
    /// the same socket to `--then`; print what each connect() and the
    /// final getpeername() said, as JSON.
    Reconnect {
        #[arg(long)]
        first: SocketAddr,
        #[arg(long)]
        then: SocketAddr,
    },
    /// Wait until the agent answers /readyz (exit 1 after the timeout).
    Ready {
        #[arg(long, default_value = "127.0.0.1:9464")]
        agent: SocketAddr,
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
}

/// How the backends' handshakes go, so tests see each way a connection
/// can begin.
#[derive(clap::Args, Clone, Copy)]
struct ListenOptions {
    /// Bytes each connection writes as soon as it is accepted, before it
    /// reads the request: the server sends first.
    #[arg(long, default_value_t = 0)]
    greeting_bytes: usize,
    /// TCP_DEFER_ACCEPT: the handshake's bare last ACK is ignored and the
    /// client's first data segment completes it.
    #[arg(long)]
    defer_accept: bool,
    /// TCP_FASTOPEN: accept data carried by the SYN.
    #[arg(long)]
    fastopen: bool,
}

#[derive(clap::Args)]
struct ClientArgs {
    #[arg(long)]
    target: SocketAddr,
    #[arg(long, default_value_t = 100)]
    connections: u64,
    #[arg(long, default_value_t = 1)]
    concurrency: u64,
    #[arg(long, default_value_t = 100)]
    request_bytes: u32,
    #[arg(long, default_value_t = 200)]
    reply_bytes: u32,
    /// New connections per second across all workers; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Keep each connection open this long after the reply.
    #[arg(long, default_value_t = 0)]
    hold_ms: u64,
    /// Stop once standard input closes (or after `--connections`, a
    /// bound); print the number of connections done so far, one line
    /// after each, before the report.
    #[arg(long)]
    until_stdin_closes: bool,
    /// Connect from this address (a workload's IP in the namespace).
    #[arg(long)]
    source: Option<std::net::IpAddr>,
    /// Send each request on the SYN (TCP Fast Open).
    #[arg(long)]
    fastopen: bool,
    /// Hold the handshake's last ACK back until the request carries it.
    #[arg(long)]
    ack_with_data: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.place.enter()?;
    match cli.command {
        Command::Serve {
            listen,
            ending,
            options,
        } => serve(&listen, ending, options),
        Command::Sessions {
            exchange,
            connections,
            order,
        } => {
            let sessions = (0..connections)
                .map(|_| sessions::session(&exchange, order))
                .collect::<anyhow::Result<Vec<_>>>()?;
            println!("{}", serde_json::to_string(&sessions)?);
            Ok(())
        }
        Command::Vanish {
            exchange,
            order,
            then,
            extra_bytes,
        } => {
            let session = sessions::vanish(&exchange, order, then, extra_bytes)?;
            println!("{}", serde_json::to_string(&session)?);
            Ok(())
        }
        Command::Client(args) => {
            println!("{}", serde_json::to_string(&client(&args))?);
            Ok(())
        }
        Command::Udp { target, listen } => {
            println!("{}", serde_json::to_string(&udp(target, listen)?)?);
            Ok(())
        }
        Command::Reconnect { first, then } => {
            println!("{}", serde_json::to_string(&reconnect(first, then)?)?);
            Ok(())
        }
        Command::Ready {
            agent,
            timeout_secs,
        } => {
            let deadline = Instant::now() + Duration::from_secs(timeout_secs);
            while kmesh_tests::http_get(agent, "/readyz").is_err() {
                if Instant::now() > deadline {
                    anyhow::bail!("the agent at {agent} was not ready within {timeout_secs} s");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        }
    }
}

/// What [`reconnect`] saw: `ok` or the error of each step.
#[derive(serde::Serialize)]
struct Reconnected {
    first: String,
    then: String,
    peer: String,
}

#[derive(serde::Serialize)]
struct UdpOutcome {
    connect: String,
    datagrams_at_backend: u32,
}

fn udp(target: SocketAddr, listen: SocketAddr) -> anyhow::Result<UdpOutcome> {
    use std::net::UdpSocket;
    let listener = UdpSocket::bind(listen).with_context(|| format!("binding UDP {listen}"))?;
    listener.set_read_timeout(Some(Duration::from_millis(500)))?;
    let any: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let sender = UdpSocket::bind(any)?;
    let connect = match sender.connect(target).and_then(|()| sender.send(b"ping")) {
        Ok(_) => "ok".to_string(),
        Err(e) => protocol::classify(&e).to_string(),
    };
    let mut datagrams_at_backend = 0;
    let mut buf = [0u8; 16];
    while listener.recv(&mut buf).is_ok() {
        datagrams_at_backend += 1;
    }
    Ok(UdpOutcome {
        connect,
        datagrams_at_backend,
    })
}

fn reconnect(first: SocketAddr, then: SocketAddr) -> anyhow::Result<Reconnected> {
    use socket2::{Domain, Socket, Type};
    let outcome = |r: std::io::Result<()>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => protocol::classify(&e).to_string(),
    };
    let socket = Socket::new(Domain::for_address(first), Type::STREAM, None)
        .context("making a TCP socket")?;
    let timeout = Duration::from_secs(5);
    let first = outcome(socket.connect_timeout(&first.into(), timeout));
    let then = outcome(socket.connect_timeout(&then.into(), timeout));
    let peer = match socket.peer_addr().map(|a| a.as_socket()) {
        Ok(Some(addr)) => addr.to_string(),
        Ok(None) => "not an IP address".to_string(),
        Err(e) => format!("getpeername failed: {e}"),
    };
    Ok(Reconnected { first, then, peer })
}

fn serve(addrs: &[SocketAddr], ending: Ending, options: ListenOptions) -> anyhow::Result<()> {
    let mut threads = Vec::new();
    for &addr in addrs {
        let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
        if options.defer_accept {
            protocol::set_tcp_option(&listener, libc::TCP_DEFER_ACCEPT, 5)
                .context("setting TCP_DEFER_ACCEPT")?;
        }
        if options.fastopen {
            protocol::set_tcp_option(&listener, libc::TCP_FASTOPEN, 128)
                .context("setting TCP_FASTOPEN")?;
        }
        threads.push(std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let greeting = vec![b'g'; options.greeting_bytes];
                    if stream.write_all(&greeting).is_ok() {
                        let _ = protocol::serve_one(stream, &addr.to_string(), ending);
                    }
                });
            }
        }));
    }
    println!("ready");
    std::io::stdout().flush()?;
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn client(args: &ClientArgs) -> ClientReport {
    let report = Arc::new(Mutex::new(ClientReport::default()));
    let next = Arc::new(Mutex::new(0u64));
    let ClientArgs {
        target,
        connections,
        concurrency,
        request_bytes,
        reply_bytes,
        rate,
        hold_ms,
        until_stdin_closes,
        source,
        fastopen,
        ack_with_data,
    } = *args;
    let handshake = protocol::Handshake {
        fastopen,
        ack_with_data,
        source,
    };
    let hold = Duration::from_millis(hold_ms);
    let stop = Arc::new(AtomicBool::new(false));
    if until_stdin_closes {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            stop.store(true, Ordering::Relaxed);
        });
    }
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (report, next, stop) = (report.clone(), next.clone(), stop.clone());
            std::thread::spawn(move || {
                loop {
                    let n = {
                        let mut next = next.lock().unwrap();
                        if *next >= connections || stop.load(Ordering::Relaxed) {
                            return;
                        }
                        *next += 1;
                        *next - 1
                    };
                    if rate > 0.0 {
                        let due = start + Duration::from_secs_f64(n as f64 / rate);
                        std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    }
                    let outcome =
                        protocol::call_with(target, request_bytes, reply_bytes, hold, handshake);
                    let mut report = report.lock().unwrap();
                    report.add(outcome);
                    if until_stdin_closes {
                        let done = report.ok + report.failures.values().sum::<u64>();
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "{done}").and_then(|()| out.flush());
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    Arc::try_unwrap(report).unwrap().into_inner().unwrap()
}
