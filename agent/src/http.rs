//! The agent's HTTP endpoint: Prometheus `/metrics`, `/healthz`, `/readyz`.
//! Bind it to loopback unless a scraper elsewhere needs it; the admin API
//! (snapshot, connection feed) is on a Unix socket of its own (admin.rs).
use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, sync::watch};

use crate::readiness::Readiness;

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    readiness: Readiness,
}

pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    readiness: Readiness,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let state = AppState {
        registry: Arc::new(registry),
        readiness,
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("encoding metrics failed: {e}\n"),
        ),
    }
}

/// 200 once ready; otherwise 503, naming what it still waits for.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let waiting = state.readiness.waiting_for();
    if waiting.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: waiting for {}\n", waiting.join(", ")),
        )
    }
}
