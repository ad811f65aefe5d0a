//! The local admin endpoint (`[admin] listen`, loopback by default).
//!
//! It serves read-only views of the running service: `/healthz`, `/status` (JSON: the source
//! position and lag, each stage's state, position, restarts and last error, the forwarder's
//! circuit breaker, the WAL's statistics), and the WAL inspection answers
//! `sdl wal` needs while the service holds the WAL's lock (`/wal/stats`, `/wal/list`,
//! `/wal/show/{seq}`, `/wal/verify`, `/wal/dump`), produced by the same functions as the offline
//! command. It never changes state.

use std::net::SocketAddr;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use sdl_wal::Wal;
use serde::Deserialize;
use tokio::sync::watch;

use crate::event::SourceTransaction;
use crate::walcli;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on admin.listen = {addr}: {source}. Choose a free port, or set admin.listen = \"\" to turn the admin endpoint off")]
pub struct AdminBindError {
    addr: String,
    source: std::io::Error,
}

type Wals = Wal<SourceTransaction>;

/// Where `/status` reads the stages' published states.
#[derive(Clone)]
pub struct StatusSources {
    pub ingest: watch::Receiver<crate::status::IngestStatus>,
    pub forward: watch::Receiver<crate::status::ForwardStatus>,
    pub breaker: watch::Receiver<crate::breaker::BreakerStatus>,
    pub health: crate::health::HealthSources,
}

#[derive(Clone)]
struct AppState {
    wal: Wals,
    status: StatusSources,
}

/// Binds the endpoint (so a taken port fails start-up) and returns the task serving it.
pub async fn start(
    addr: &str,
    wal: Wals,
    status: StatusSources,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), AdminBindError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AdminBindError {
            addr: addr.to_string(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| AdminBindError {
        addr: addr.to_string(),
        source,
    })?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/status", get(status_report))
        .route("/metrics", get(metrics_text))
        .route("/readyz", get(readyz))
        .route("/wal/stats", get(wal_stats))
        .route("/wal/list", get(wal_list))
        .route("/wal/show/{seq}", get(wal_show))
        .route("/wal/verify", get(wal_verify))
        .route("/wal/dump", get(wal_dump))
        .with_state(AppState { wal, status });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                crate::shutdown::stopped(&mut shutdown).await;
            })
            .await;
    });
    Ok((local, task))
}

/// Runs a blocking WAL read off the async threads and renders its result as JSON.
async fn answer<T: serde::Serialize + Send + 'static>(
    wal: Wals,
    read: impl FnOnce(&Wals) -> anyhow::Result<T> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(move || read(&wal)).await {
        Ok(Ok(value)) => Json(value).into_response(),
        Ok(Err(e)) => (StatusCode::NOT_FOUND, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn status_report(State(AppState { wal, status }): State<AppState>) -> Response {
    let ingest = status.ingest.borrow().clone();
    let forward = status.forward.borrow().clone();
    let breaker = status.breaker.borrow().clone();
    let health = status.health.now();
    answer(wal, move |w| {
        Ok(crate::status::StatusReport::new(
            ingest,
            forward,
            &breaker,
            &health,
            w.stats()?,
        ))
    })
    .await
}

async fn metrics_text(State(AppState { wal, status }): State<AppState>) -> Response {
    let ingest = status.ingest.borrow().state.clone();
    let breaker = status.breaker.borrow().clone();
    let stuck = status.health.stuck.borrow().clone();
    let stats = tokio::task::spawn_blocking(move || wal.stats().ok())
        .await
        .ok()
        .flatten();
    let text = crate::metrics::metrics().render(stats.as_ref(), &ingest, &breaker, &stuck);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Ready: see `crate::health::not_ready_reasons` (start-up done, the ingester following, MongoDB
/// answering, no failed forwarder attempt, no stuck stage). Otherwise 503 with every reason, so a
/// load balancer or an alert can tell "catching up" from "broken".
async fn readyz(State(AppState { status, .. }): State<AppState>) -> Response {
    let ingest = status.ingest.borrow().state.clone();
    let breaker_status = status.breaker.borrow().clone();
    let breaker = crate::status::BreakerReport::from(&breaker_status);
    let health = status.health.now();
    let reasons =
        crate::health::not_ready_reasons(&ingest, &breaker_status, &health.sink, &health.stuck);
    let ready = reasons.is_empty();
    let body = Json(serde_json::json!({
        "ready": ready,
        "reasons": reasons,
        "ingest": ingest,
        "breaker": breaker,
        "sink": health.sink,
    }));
    if ready {
        (StatusCode::OK, body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn wal_stats(State(AppState { wal, .. }): State<AppState>) -> Response {
    answer(wal, walcli::stats).await
}

#[derive(Deserialize)]
struct ListQuery {
    from: Option<u64>,
    limit: Option<u64>,
}

async fn wal_list(
    State(AppState { wal, .. }): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Response {
    answer(wal, move |w| walcli::list(w, q.from, q.limit.unwrap_or(50))).await
}

async fn wal_show(State(AppState { wal, .. }): State<AppState>, Path(seq): Path<u64>) -> Response {
    answer(wal, move |w| walcli::show(w, seq)).await
}

async fn wal_verify(State(AppState { wal, .. }): State<AppState>) -> Response {
    answer(wal, walcli::verify).await
}

#[derive(Deserialize)]
struct DumpQuery {
    from: u64,
    to: u64,
}

async fn wal_dump(
    State(AppState { wal, .. }): State<AppState>,
    Query(q): Query<DumpQuery>,
) -> Response {
    answer(wal, move |w| walcli::dump(w, q.from, q.to)).await
}
