//! A client of the admin API over its Unix socket. One HTTP/1.1 request per
//! connection: the socket is local and requests come a second apart.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode, body::Bytes};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::v1::{
    CONNECTIONS_PATH, ConnectionsPage, DEFAULT_SOCKET, ErrorBody, MODEL_PATH, Model, SNAPSHOT_PATH,
    Snapshot,
};

/// Time one request may take.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no kmesh-agent admin socket at {0}: is the agent running (with --admin-socket at this path)?"
    )]
    NotFound(PathBuf),
    #[error("permission denied on {0}: the admin socket is for root only; run as root (sudo)")]
    PermissionDenied(PathBuf),
    #[error(
        "{path} is not a socket (it is {kind}); give the agent's admin socket with --admin-socket (default {DEFAULT_SOCKET})"
    )]
    NotASocket { path: PathBuf, kind: &'static str },
    #[error("the agent at {0} is not accepting connections: is it running?")]
    Refused(PathBuf),
    #[error("talking to the agent at {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("the agent at {path} answered {status}: {message}")]
    Status {
        path: PathBuf,
        status: StatusCode,
        message: String,
    },
    #[error(
        "the agent at {path} sent what this client cannot read ({reason}); are kmesh-top and kmesh-agent the same version?"
    )]
    Decode { path: PathBuf, reason: String },
}

#[derive(Clone, Debug)]
pub struct AdminClient {
    socket: PathBuf,
}

impl AdminClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub async fn snapshot(&self) -> Result<Snapshot, ClientError> {
        self.get(SNAPSHOT_PATH).await
    }

    pub async fn model(&self) -> Result<Model, ClientError> {
        self.get(MODEL_PATH).await
    }

    /// Closed connections with a sequence number above `after`.
    pub async fn connections(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<ConnectionsPage, ClientError> {
        self.get(&format!("{CONNECTIONS_PATH}?after={after}&limit={limit}"))
            .await
    }

    async fn get<T: DeserializeOwned>(&self, path_and_query: &str) -> Result<T, ClientError> {
        let path = self.socket.clone();
        let io = |e: &dyn std::fmt::Display| ClientError::Io {
            path: path.clone(),
            reason: e.to_string(),
        };
        let request = async {
            let stream = UnixStream::connect(&self.socket).await.map_err(|e| {
                // Connecting to a file or a directory is refused like
                // connecting to a socket nobody listens on.
                if let Some(kind) = non_socket_kind(&path) {
                    return ClientError::NotASocket {
                        path: path.clone(),
                        kind,
                    };
                }
                match e.kind() {
                    std::io::ErrorKind::NotFound => ClientError::NotFound(path.clone()),
                    std::io::ErrorKind::PermissionDenied => {
                        ClientError::PermissionDenied(path.clone())
                    }
                    std::io::ErrorKind::ConnectionRefused => ClientError::Refused(path.clone()),
                    _ => io(&e),
                }
            })?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| io(&e))?;
            tokio::spawn(connection);
            let request = Request::get(path_and_query)
                .header("host", "kmesh-agent")
                .body(Empty::<Bytes>::new())
                .map_err(|e| io(&e))?;
            let response = sender.send_request(request).await.map_err(|e| io(&e))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| io(&e))?
                .to_bytes();
            Ok::<_, ClientError>((status, body))
        };
        let (status, body) = tokio::time::timeout(TIMEOUT, request)
            .await
            .map_err(|_| io(&format!("no answer within {TIMEOUT:?}")))??;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            return Err(ClientError::Status {
                path,
                status,
                message,
            });
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode {
            path,
            reason: e.to_string(),
        })
    }
}

/// What `path` is, when it is there and not a socket.
fn non_socket_kind(path: &Path) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let kind = std::fs::metadata(path).ok()?.file_type();
    if kind.is_socket() {
        return None;
    }
    Some(if kind.is_dir() {
        "a directory"
    } else if kind.is_file() {
        "a regular file"
    } else if kind.is_fifo() {
        "a named pipe"
    } else if kind.is_char_device() {
        "a character device"
    } else {
        // The one kind left: metadata follows symbolic links.
        "a block device"
    })
}
