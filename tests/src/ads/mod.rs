//! An in-test Envoy ADS server (aggregated discovery, state of the world),
//! standing in for istiod so end-to-end tests can drive a real agent over
//! xDS and assert what it asked for, acknowledged and rejected.
//!
//! The server follows the protocol: Cluster and Listener are wildcard types
//! (no names means all); ClusterLoadAssignment and RouteConfiguration carry
//! only the names the client subscribed to, and nothing while it subscribes
//! to none. An initial request or a change of names gets the current state;
//! an ACK or NACK of the latest nonce gets nothing; a request echoing any
//! other nonce (an older one, or one from an earlier stream) is recorded and
//! ignored. Every response has a fresh nonce and the type's current
//! version. A type never [`AdsServer::set`] is not answered at all, so a
//! test decides when the client sees (even empty) state.
//!
//! It runs on its own tokio runtime in a background thread, so synchronous
//! `#[test]` functions use it directly.
mod delta;
mod log;
mod service;
mod state;
#[cfg(test)]
mod tests;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context;
pub use delta::{DeltaLog, DeltaRequest, DeltaResponse};
use envoy_types::pb::{
    envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse,
        aggregated_discovery_service_server::AggregatedDiscoveryServiceServer,
    },
    google::protobuf::Any,
};
pub use log::{Log, RecordedError, RecordedNode, RecordedRequest, RecordedResponse};
use tokio::sync::oneshot;
use tonic::transport::{Identity, Server, ServerTlsConfig, server::TcpIncoming};

use self::{service::Ads, state::State};

pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT_TYPE: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// Istio ambient's workload discovery, served over delta xDS only.
pub const ADDRESS_TYPE: &str = "type.googleapis.com/istio.workload.Address";

/// How often [`AdsServer::wait_for`] looks at the log.
const POLL: Duration = Duration::from_millis(10);

/// Options beyond the address.
#[derive(Clone, Debug, Default)]
pub struct AdsOptions {
    /// Reject (Unauthenticated) any stream whose `authorization` metadata is
    /// not `Bearer <token>`, as istiod does with a wrong service-account token.
    pub require_token: Option<String>,
    /// Serve TLS with this PEM certificate chain and key, as istiod's
    /// port 15012 does.
    pub tls: Option<TlsIdentity>,
}

#[derive(Clone, Debug)]
pub struct TlsIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A CA, and a server certificate it signed for `server_name`, made fresh
/// for a test: (CA certificate PEM, server identity).
pub fn test_pki(server_name: &str) -> anyhow::Result<(String, TlsIdentity)> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec![server_name.to_string()])?.signed_by(&key, &ca)?;
    Ok((
        ca.pem(),
        TlsIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        },
    ))
}

/// A running (or stopped) ADS server; stopped when dropped.
pub struct AdsServer {
    addr: SocketAddr,
    options: AdsOptions,
    state: Arc<Mutex<State>>,
    delta: Arc<Mutex<delta::DeltaState>>,
    running: Option<Running>,
}

/// The background thread that owns the server's runtime.
struct Running {
    shutdown: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

/// `name` and `message` as a resource for [`AdsServer::set`].
pub fn resource<M: prost::Name>(name: impl Into<String>, message: &M) -> (String, Any) {
    (name.into(), any(message))
}

/// `message` packed into an `Any` with its own type URL.
pub fn any<M: prost::Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: prost::Message::encode_to_vec(message),
    }
}

impl AdsServer {
    /// Starts on a free port of 127.0.0.1.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Starts on `addr`, for instance the address of a server stopped
    /// earlier, with fresh state.
    pub fn start_on(addr: SocketAddr) -> anyhow::Result<Self> {
        Self::start_with(addr, AdsOptions::default())
    }

    pub fn start_with(addr: SocketAddr, options: AdsOptions) -> anyhow::Result<Self> {
        let mut server = Self {
            addr,
            options,
            state: Arc::default(),
            delta: Arc::default(),
            running: None,
        };
        server.spawn()?;
        Ok(server)
    }

    pub fn options(&self) -> &AdsOptions {
        &self.options
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address as a gRPC client wants it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops every stream mid-flight, as a crashed istiod would, and frees
    /// the port. State and log stay for [`AdsServer::restart`] and for the
    /// test's assertions.
    pub fn stop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        let _ = running.shutdown.send(());
        // The thread drops the runtime, and with it the listener and every
        // connection, before it ends.
        let _ = running.thread.join();
        lock(&self.state).close_all();
        lock(&self.delta).close_all();
    }

    /// Serves again on the same address with the same resources; stream
    /// numbers and nonces go on from where they were.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.running.is_none(), "the ADS server is running");
        self.spawn()
    }

    /// Replaces the resources of `type_url` (named, in the order given) and
    /// pushes them to every stream subscribed to the type, state of the
    /// world and delta alike: a client speaking either protocol gets them.
    pub fn set(&self, type_url: &str, version: &str, resources: Vec<(String, Any)>) {
        lock(&self.delta).set(type_url, version, resources.clone());
        lock(&self.state).set(type_url, version, resources);
    }

    /// Sends a hand-made response to every stream, whatever they subscribed
    /// to: unknown types, undecodable resources, huge ones. An empty nonce
    /// is replaced by a fresh one per stream.
    pub fn push_raw(&self, response: DiscoveryResponse) {
        lock(&self.state).push_raw(response);
    }

    /// Delta xDS only: replaces the resources of `type_url` and pushes what
    /// changed and what is gone to every delta stream subscribed to it. A
    /// resource keeps its version while unchanged.
    pub fn set_delta(&self, type_url: &str, version: &str, resources: Vec<(String, Any)>) {
        lock(&self.delta).set(type_url, version, resources);
    }

    /// Sends a hand-made delta response to every delta stream; an empty
    /// nonce is replaced by a fresh one per stream.
    pub fn push_delta_raw(&self, response: DeltaDiscoveryResponse) {
        lock(&self.delta).push_raw(response);
    }

    pub fn delta_log(&self) -> DeltaLog {
        lock(&self.delta).log.clone()
    }

    /// Polls the delta log until `check` returns something.
    pub fn wait_for_delta<T>(
        &self,
        mut check: impl FnMut(&DeltaLog) -> Option<T>,
        timeout: Duration,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.delta_log();
            if let Some(found) = check(&log) {
                return Ok(found);
            }
            if Instant::now() >= deadline {
                anyhow::bail!("not seen within {timeout:?}; {}", log.summary());
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits for the ACK of the latest delta response; returns its nonce.
    pub fn wait_for_delta_ack(&self, timeout: Duration) -> anyhow::Result<String> {
        self.wait_for_delta(
            |log| {
                let last = log.responses.last()?;
                log.ack_of(&last.nonce).map(|r| r.response_nonce.clone())
            },
            timeout,
        )
        .context("waiting for the ACK of the latest delta response")
    }

    /// Every request received, stale ones included, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).log.requests.clone()
    }

    /// Every response sent, in order.
    pub fn responses(&self) -> Vec<RecordedResponse> {
        lock(&self.state).log.responses.clone()
    }

    pub fn log(&self) -> Log {
        lock(&self.state).log.clone()
    }

    /// Streams accepted since the server was created (across restarts).
    pub fn streams(&self) -> usize {
        lock(&self.state).log.streams
    }

    /// Streams open now.
    pub fn connected(&self) -> usize {
        lock(&self.state).open_streams()
    }

    /// Streams refused for a missing or wrong token.
    pub fn rejected(&self) -> usize {
        lock(&self.state).rejected()
    }

    /// Polls the log until `check` returns something, at most `timeout`.
    /// The error lists what was recorded, so a failing test says why.
    pub fn wait_for<T>(
        &self,
        mut check: impl FnMut(&Log) -> Option<T>,
        timeout: Duration,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if let Some(found) = check(&log) {
                return Ok(found);
            }
            if Instant::now() >= deadline {
                let server_error = lock(&self.state).server_error.clone();
                let why = server_error.map(|e| format!("the gRPC server failed: {e}\n"));
                anyhow::bail!(
                    "not seen within {timeout:?}; {}{}",
                    why.unwrap_or_default(),
                    log.summary()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits for an ACK of `version` of `type_url` (see [`Log::ack`]).
    pub fn wait_for_ack(
        &self,
        type_url: &str,
        version: &str,
        timeout: Duration,
    ) -> anyhow::Result<RecordedRequest> {
        self.wait_for(|log| log.ack(type_url, version).cloned(), timeout)
            .with_context(|| format!("waiting for an ACK of {type_url} version {version:?}"))
    }

    /// Waits for a NACK of `type_url`; returns the latest one's message.
    pub fn wait_for_nack(&self, type_url: &str, timeout: Duration) -> anyhow::Result<String> {
        self.wait_for(
            |log| {
                let nack = log.nack(type_url)?;
                nack.error.as_ref().map(|e| e.message.clone())
            },
            timeout,
        )
        .with_context(|| format!("waiting for a NACK of {type_url}"))
    }

    /// Binds `self.addr` (taking the port it got if it was 0) and serves
    /// on a new runtime in a new thread.
    fn spawn(&mut self) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the ADS server's runtime")?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(self.addr))
            .with_context(|| format!("binding the ADS server to {}", self.addr))?;
        self.addr = listener.local_addr()?;
        let ads = Ads {
            state: Arc::clone(&self.state),
            delta: Arc::clone(&self.delta),
            require_token: self.options.require_token.clone(),
        };
        let state = Arc::clone(&self.state);
        let tls = self.options.tls.clone();
        let (shutdown, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("ads-server".into())
            .spawn(move || {
                runtime.spawn(async move {
                    let mut builder = Server::builder();
                    if let Some(tls) = tls {
                        let identity = Identity::from_pem(tls.cert_pem, tls.key_pem);
                        match builder.tls_config(ServerTlsConfig::new().identity(identity)) {
                            Ok(b) => builder = b,
                            Err(e) => {
                                lock(&state).server_error = Some(e.to_string());
                                return;
                            }
                        }
                    }
                    let served = builder
                        .add_service(AggregatedDiscoveryServiceServer::new(ads))
                        .serve_with_incoming(
                            // As istiod (Go) does: no Nagle delay on pushes.
                            TcpIncoming::from(listener).with_nodelay(Some(true)),
                        )
                        .await;
                    if let Err(e) = served {
                        lock(&state).server_error = Some(e.to_string());
                    }
                });
                let _ = runtime.block_on(stopped);
                // Dropping the runtime now drops every connection task, not
                // gracefully: clients see their streams break.
            })
            .context("starting the ADS server's thread")?;
        self.running = Some(Running { shutdown, thread });
        Ok(())
    }
}

impl Drop for AdsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A test that panicked while holding the lock leaves the state usable.
fn lock<T>(state: &Mutex<T>) -> MutexGuard<'_, T> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}
