//! The admin API (`kmesh_api::v1`): JSON over HTTP/1.1 on a Unix socket.
//! Two locks keep it local to the node's administrators: the socket file is
//! mode 0600 (owner: the agent's user, root), and every connection's peer
//! credentials are checked, so even a socket reached through a looser
//! directory or a passed file descriptor answers only root and the agent's
//! own user.
mod feed;
pub mod model;
pub mod snapshot;
mod socket;

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

use self::model::SharedModel;
pub use self::socket::{AdminError, AdminSocket, bind};
use crate::{
    agent_stats::ControlStats,
    aggregator::{Direction, SharedAggregator},
    process,
};

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
    aggregator: SharedAggregator,
    control: ControlStats,
    model: SharedModel,
}

impl From<Direction> for v1::Direction {
    fn from(d: Direction) -> Self {
        match d {
            Direction::Outbound => Self::Outbound,
            Direction::Inbound => Self::Inbound,
        }
    }
}

async fn model(State(state): State<AdminState>) -> Json<v1::Model> {
    let model = state.model.lock();
    Json(model.to_v1())
}

async fn snapshot(State(state): State<AdminState>) -> Json<v1::Snapshot> {
    let process = process::read_self().ok();
    let control = *state.control.lock();
    // The sketches come along: quantiles over a service's backends are
    // merged from them once the lock is released.
    let view = state
        .aggregator
        .lock()
        .view_with_sketches(&snapshot::QUANTILE_FAMILIES);
    Json(snapshot::build(&view, control, process))
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
    let copy = feed::copy(state.aggregator.lock().recent(), q.after, limit);
    Json(feed::page(copy))
}

/// Serves until `stop` turns true, then removes the socket file.
pub async fn serve(
    socket: AdminSocket,
    aggregator: SharedAggregator,
    control: ControlStats,
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
            control,
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
    // Removes the socket and lock files.
    drop(file);
    result
}
