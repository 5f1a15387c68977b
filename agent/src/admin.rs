//! The admin API (`kmesh_api::v1`): JSON over HTTP/1.1 on a Unix socket.
//! Two locks keep it local to the node's administrators: the socket file is
//! mode 0600 (owner: the agent's user, root), and every connection's peer
//! credentials are checked, so even a socket reached through a looser
//! directory or a passed file descriptor answers only root and the agent's
//! own user.
use std::{
    os::{
        fd::AsRawFd,
        unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::{ConnectInfo, Query, Request, State, connect_info},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    serve::IncomingStream,
};
use kmesh_api::v1;
use serde::Deserialize;
use tokio::{net::UnixListener, sync::watch};
use tracing::warn;

use crate::{introspect::SharedModel, metrics::Aggregator, process};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "another process is serving the admin API at {0}; stop it, or give this agent another --admin-socket"
    )]
    InUse(PathBuf),
    #[error("{path} exists and is not a socket; remove it or choose another --admin-socket")]
    NotASocket { path: PathBuf },
    #[error(
        "{dir} is not private to the agent's user (owned by another user, or writable by others), so the admin socket in it could be replaced; use a directory only root can write, like the default /run/kmesh-rs"
    )]
    SharedDirectory { dir: PathBuf },
    #[error("admin socket {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// The bound socket and its file.
pub struct AdminSocket {
    listener: UnixListener,
    file: SocketFile,
}

/// What proves the file at the socket's path is still this agent's.
struct SocketFile {
    path: PathBuf,
    /// (device, inode) of the socket file as bound.
    id: (u64, u64),
    /// Held for the agent's life: a second agent on the same path fails to
    /// take it instead of racing this one for the socket file.
    _lock: std::fs::File,
}

/// Binds the socket, owner-only, replacing a stale one a crashed agent left.
pub fn bind(path: &Path) -> Result<AdminSocket, AdminError> {
    let io = |error| AdminError::Io {
        path: path.to_path_buf(),
        error,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        std::fs::create_dir_all(&dir).map_err(io)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    let meta = std::fs::metadata(&dir).map_err(io)?;
    // SAFETY: geteuid has no preconditions.
    if meta.uid() != unsafe { libc::geteuid() } || meta.mode() & 0o022 != 0 {
        return Err(AdminError::SharedDirectory { dir });
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path.with_extension("lock"))
        .map_err(io)?;
    // SAFETY: a valid open file descriptor.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(AdminError::InUse(path.to_path_buf()));
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(AdminError::NotASocket {
                path: path.to_path_buf(),
            });
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(AdminError::InUse(path.to_path_buf())),
            // Nobody listens: a crashed agent's socket.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(io)?;
            }
            Err(e) => return Err(io(e)),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    // The directory is private (checked above), so the path cannot have
    // been swapped for a link since the bind.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    let meta = std::fs::symlink_metadata(path).map_err(io)?;
    Ok(AdminSocket {
        listener,
        file: SocketFile {
            path: path.to_path_buf(),
            id: (meta.dev(), meta.ino()),
            _lock: lock,
        },
    })
}

impl SocketFile {
    /// Removes the socket file if it is still the one this agent bound.
    fn remove(&self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && (m.dev(), m.ino()) == self.id);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The peer's user id, read from the socket (SO_PEERCRED).
#[derive(Clone, Copy, Debug)]
struct PeerUid(Option<u32>);

impl connect_info::Connected<IncomingStream<'_, UnixListener>> for PeerUid {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        PeerUid(stream.io().peer_cred().ok().map(|c| c.uid()))
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(v1::ErrorBody {
            error: message.into(),
        }),
    )
        .into_response()
}

async fn only_root_or_self(
    ConnectInfo(PeerUid(uid)): ConnectInfo<PeerUid>,
    request: Request,
    next: Next,
) -> Response {
    // SAFETY: geteuid has no preconditions.
    let own = unsafe { libc::geteuid() };
    match uid {
        Some(uid) if uid == 0 || uid == own => next.run(request).await,
        Some(uid) => {
            warn!(
                uid,
                "admin API request refused: not root or the agent's user"
            );
            error(
                StatusCode::FORBIDDEN,
                format!("uid {uid} may not use the admin API; run as root"),
            )
        }
        None => error(
            StatusCode::FORBIDDEN,
            "the peer's credentials could not be read",
        ),
    }
}

#[derive(Clone)]
struct AdminState {
    aggregator: Arc<Mutex<Aggregator>>,
    model: SharedModel,
}

async fn model(State(state): State<AdminState>) -> Json<v1::Model> {
    let model = state.model.lock().unwrap_or_else(|p| p.into_inner());
    Json(model.to_v1())
}

async fn snapshot(State(state): State<AdminState>) -> Json<v1::Snapshot> {
    // Read /proc before taking the lock the probe reader needs.
    let process = process::read_self().ok();
    let agg = state.aggregator.lock().unwrap_or_else(|p| p.into_inner());
    Json(agg.snapshot(process))
}

#[derive(Deserialize)]
struct ConnectionsQuery {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

async fn connections(
    State(state): State<AdminState>,
    Query(q): Query<ConnectionsQuery>,
) -> Json<v1::ConnectionsPage> {
    let limit = q.limit.unwrap_or(v1::MAX_PAGE).clamp(1, v1::MAX_PAGE);
    let agg = state.aggregator.lock().unwrap_or_else(|p| p.into_inner());
    Json(agg.recent_connections(q.after, limit))
}

/// Serves until `stop` turns true, then removes the socket file.
pub async fn serve(
    socket: AdminSocket,
    aggregator: Arc<Mutex<Aggregator>>,
    model_state: SharedModel,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let AdminSocket { listener, file } = socket;
    let app = Router::new()
        .route(v1::SNAPSHOT_PATH, get(snapshot))
        .route(v1::CONNECTIONS_PATH, get(connections))
        .route(v1::MODEL_PATH, get(model))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                format!(
                    "no such endpoint; API {} has {}, {} and {}",
                    v1::VERSION,
                    v1::SNAPSHOT_PATH,
                    v1::CONNECTIONS_PATH,
                    v1::MODEL_PATH
                ),
            )
        })
        .layer(middleware::from_fn(only_root_or_self))
        .with_state(AdminState {
            aggregator,
            model: model_state,
        });
    let result = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<PeerUid>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stop.wait_for(|s| *s).await;
    })
    .await;
    file.remove();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_is_owner_only_and_a_live_one_is_not_taken_over() {
        let dir = std::env::temp_dir().join(format!("kmesh-admin-test-{}", std::process::id()));
        let path = dir.join("sub").join("admin.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let socket = bind(&path).unwrap();
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().unwrap()), 0o700);
            assert!(
                matches!(bind(&path), Err(AdminError::InUse(_))),
                "the lock is held"
            );
            // A crashed agent: its lock is gone, its socket file is not.
            let AdminSocket { listener, file } = socket;
            drop(listener);
            drop(file);
            let again = bind(&path).expect("a stale socket is replaced");
            // A file that is no longer ours is left alone at shutdown.
            let AdminSocket { listener, file } = again;
            drop(listener);
            std::fs::remove_file(&path).unwrap();
            std::fs::write(&path, b"someone else's").unwrap();
            file.remove();
            assert!(path.exists());
        });
        std::fs::write(dir.join("plain"), b"x").unwrap();
        assert!(matches!(
            bind(&dir.join("plain")),
            Err(AdminError::NotASocket { .. })
        ));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            bind(&dir.join("x.sock")),
            Err(AdminError::SharedDirectory { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
