//! The local admin endpoint (`[admin] listen`, loopback by default).
//!
//! It serves read-only views of the running service: `/healthz`, `/status` (JSON: the source
//! position and lag, each stage's state, position, restarts and last error, the forwarder's
//! circuit breaker, the WAL's statistics), and the WAL inspection answers
//! `sdl wal` needs while the service holds the WAL's lock (`/wal/stats`, `/wal/list`,
//! `/wal/show/{seq}`, `/wal/verify`, `/wal/dump`), produced by the same functions as the offline
//! command. It never changes state.
//!
//! Guarantees:
//! - Row contents (`/wal/show`, `/wal/dump`: row images and statement text) are served only with
//!   `Authorization: Bearer <token>`, the token being the content of `admin.token` in the WAL
//!   directory (created 0600 at the first start from 32 OS-random bytes, kept across restarts,
//!   compared in constant time); without it the answer is 401 naming that file. The other routes
//!   hold no row data and stay open (health checks and Prometheus need no secret).
//! - A client must send its request headers within `admin.header_read_timeout` of connecting (or
//!   of its previous answer) or it is disconnected; at most `admin.max_connections` connections are
//!   served at once (more wait in the listen backlog), so slow or idle clients cannot exhaust the
//!   process.
//! - A dump or list covers at most [`MAX_RECORDS_PER_REQUEST`] records (400 naming the limit
//!   beyond it) and a dump is streamed record by record: memory holds a few records, never the
//!   range.
//! - A listen address that is not loopback is warned about at start.

use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use sdl_wal::Wal;
use serde::Deserialize;
use tokio::sync::{watch, Semaphore};
use tracing::{debug, warn};

use crate::config::AdminConfig;
use crate::event::SourceTransaction;
use crate::wal_view::{self, token_path, MAX_RECORDS_PER_REQUEST, TOKEN_FILE};

#[derive(Debug, thiserror::Error)]
#[error("cannot prepare the admin token file {path}: {source}. sdl keeps it in wal.dir, which must be writable by sdl's user")]
pub struct TokenError {
    path: PathBuf,
    source: std::io::Error,
}

/// The admin token: read from `admin.token` in `wal_dir`, or created there (0600, written to a
/// temporary file and renamed, so a reader never sees half a token). A file other users can read
/// is set to 0600 with a warning in the returned list.
pub fn ensure_token(wal_dir: &FsPath) -> Result<(String, Vec<String>), TokenError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = token_path(wal_dir);
    let error = |source| TokenError {
        path: path.clone(),
        source,
    };
    let mut warnings = Vec::new();
    match std::fs::read_to_string(&path) {
        Ok(text) if is_token(text.trim()) => {
            let mode = std::fs::metadata(&path)
                .map_err(error)?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(error)?;
                warnings.push(format!(
                    "the admin token file {} was readable by other users (mode {:o}): set to 0600. Other users may have read it: delete the file and restart sdl to make a new token",
                    path.display(),
                    mode & 0o777
                ));
            }
            return Ok((text.trim().to_string(), warnings));
        }
        Ok(_) => warnings.push(format!(
            "the admin token file {} did not hold a token: replaced with a new one",
            path.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(error(e)),
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| error(std::io::Error::other(e.to_string())))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let temporary = wal_dir.join(format!("{TOKEN_FILE}.new"));
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(error)?;
    file.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(error)?;
    std::fs::rename(&temporary, &path).map_err(error)?;
    Ok((token, warnings))
}

/// 64 hex digits (what [`ensure_token`] writes).
fn is_token(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

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
    pub ingest: watch::Receiver<crate::telemetry::IngestStatus>,
    pub forward: watch::Receiver<crate::telemetry::ForwardStatus>,
    pub breaker: watch::Receiver<crate::telemetry::BreakerStatus>,
    /// This instance's role in a hot standby pair (`[lease]`).
    pub lease: watch::Receiver<crate::telemetry::LeaseStatus>,
    pub health: crate::service::health::HealthSources,
}

#[derive(Clone)]
struct AppState {
    wal: Wals,
    status: StatusSources,
    token: Arc<str>,
    token_path: Arc<PathBuf>,
    source_name: Arc<str>,
}

/// Binds the endpoint (so a taken port fails start-up), prepares the token, and returns the task
/// serving it.
/// `source_name` (`source.name`) is part of every change `_id` that `/wal/show` and `/wal/dump`
/// print.
pub async fn start(
    addr: &str,
    settings: &AdminConfig,
    source_name: &str,
    wal: Wals,
    status: StatusSources,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), anyhow::Error> {
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
    if !local.ip().is_loopback() {
        warn!(target: "sdl::admin",
            listen = %local,
            "admin.listen = {addr} is not a loopback address: every host that can reach {local} can read sdl's status, metrics and WAL statistics and try the admin token; keep it on 127.0.0.1 (or [::1]), or restrict access with a firewall"
        );
    }
    let wal_dir = wal.dir().to_path_buf();
    let (token, warnings) = tokio::task::spawn_blocking(move || ensure_token(&wal_dir)).await??;
    for warning in warnings {
        warn!(target: "sdl::admin", "{warning}");
    }
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
        .with_state(AppState {
            token_path: Arc::new(token_path(wal.dir())),
            wal,
            status,
            token: token.into(),
            source_name: source_name.into(),
        });
    let limits = Limits {
        header_read_timeout: settings.header_read_timeout,
        max_connections: settings.max_connections,
    };
    let task = tokio::spawn(async move {
        tokio::select! {
            _ = serve(listener, app, limits) => {}
            _ = crate::shutdown::stopped(&mut shutdown) => {}
        }
    });
    Ok((local, task))
}

#[derive(Clone, Copy)]
struct Limits {
    header_read_timeout: Duration,
    max_connections: usize,
}

/// The accept loop: a connection is accepted only while fewer than `max_connections` are served
/// (the others wait in the kernel's listen backlog), and each is served by hyper with a header
/// read timeout.
async fn serve(listener: tokio::net::TcpListener, app: Router, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: transient; a short pause instead of
                // spinning on the same error.
                warn!(target: "sdl::admin", error = %e, "admin endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let connection = http.serve_connection(
            hyper_util::rt::TokioIo::new(stream),
            hyper_util::service::TowerToHyperService::new(app.clone()),
        );
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(target: "sdl::admin", error = %e, "admin endpoint: connection closed");
            }
            drop(slot);
        });
    }
}

/// Routes that return row contents need the token: the 401 answer when it is missing or wrong
/// (saying where the token is), or None when it was presented.
fn refusal(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    use subtle::ConstantTimeEq;
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        // The scheme is case-insensitive (RFC 7235).
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match presented {
        Some(token) if bool::from(token.as_bytes().ct_eq(state.token.as_bytes())) => None,
        presented => Some((
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            format!(
                "{}: this route returns row contents and needs the header `Authorization: Bearer <token>`, the token being the content of {} (readable only by sdl's user). `sdl wal ... --config <the service's config>` sends it itself.\n",
                if presented.is_some() { "wrong admin token" } else { "admin token required" },
                state.token_path.display()
            ),
        )
            .into_response()),
    }
}

/// 400 for a request over [`MAX_RECORDS_PER_REQUEST`] records.
fn too_many(what: &str, records: u64) -> Response {
    (
        StatusCode::BAD_REQUEST,
        format!(
            "{what} covers {records} records, more than the {MAX_RECORDS_PER_REQUEST} records one request may cover: ask in pieces of at most {MAX_RECORDS_PER_REQUEST} (`sdl wal dump` does this itself)\n"
        ),
    )
        .into_response()
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

async fn status_report(State(AppState { wal, status, .. }): State<AppState>) -> Response {
    let ingest = status.ingest.borrow().clone();
    let forward = status.forward.borrow().clone();
    let breaker = status.breaker.borrow().clone();
    let lease = status.lease.borrow().clone();
    let health = status.health.now();
    answer(wal, move |w| {
        Ok(crate::telemetry::status::StatusReport::new(
            ingest,
            forward,
            &breaker,
            &health,
            lease,
            w.stats()?,
        ))
    })
    .await
}

async fn metrics_text(State(AppState { wal, status, .. }): State<AppState>) -> Response {
    let ingest = status.ingest.borrow().state.clone();
    let breaker = status.breaker.borrow().clone();
    let stuck = status.health.stuck.borrow().clone();
    let stats = tokio::task::spawn_blocking(move || wal.stats().ok())
        .await
        .ok()
        .flatten();
    let text = crate::telemetry::metrics().render(stats.as_ref(), &ingest, &breaker, &stuck);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Ready: see `crate::service::health::not_ready_reasons` (start-up done, the ingester following, MongoDB
/// answering, no failed forwarder attempt, no stuck stage). Otherwise 503 with every reason, so a
/// load balancer or an alert can tell "catching up" from "broken".
async fn readyz(State(AppState { status, .. }): State<AppState>) -> Response {
    let ingest = status.ingest.borrow().state.clone();
    let breaker_status = status.breaker.borrow().clone();
    let breaker = crate::telemetry::status::BreakerReport::from(&breaker_status);
    let health = status.health.now();
    let lease = status.lease.borrow().clone();
    let mut reasons = crate::service::health::not_ready_reasons(
        &ingest,
        &breaker_status,
        &health.sink,
        &health.stuck,
    );
    if let Some(reason) = crate::service::health::lease_not_ready_reason(&lease) {
        reasons.insert(0, reason);
    }
    let ready = reasons.is_empty();
    let body = Json(serde_json::json!({
        "ready": ready,
        "role": lease.role,
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
    answer(wal, wal_view::stats).await
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
    let limit = q.limit.unwrap_or(50);
    if limit > MAX_RECORDS_PER_REQUEST {
        return too_many(&format!("limit={limit}"), limit);
    }
    answer(wal, move |w| wal_view::list(w, q.from, limit)).await
}

async fn wal_show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(seq): Path<u64>,
) -> Response {
    if let Some(refused) = refusal(&state, &headers) {
        return refused;
    }
    let source_name = state.source_name.clone();
    answer(state.wal, move |w| wal_view::show(w, seq, &source_name)).await
}

async fn wal_verify(State(AppState { wal, .. }): State<AppState>) -> Response {
    answer(wal, wal_view::verify).await
}

#[derive(Deserialize)]
struct DumpQuery {
    from: u64,
    to: u64,
}

/// JSON lines, produced one record at a time by a blocking reader and sent through a small
/// channel: a slow client slows the reader instead of filling memory.
async fn wal_dump(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<DumpQuery>,
) -> Response {
    if let Some(refused) = refusal(&state, &headers) {
        return refused;
    }
    let records = q.to.saturating_sub(q.from).saturating_add(1);
    if q.to >= q.from && records > MAX_RECORDS_PER_REQUEST {
        return too_many(&format!("from={}&to={}", q.from, q.to), records);
    }
    let (lines, body) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(8);
    let (wal, source_name) = (state.wal, state.source_name);
    tokio::task::spawn_blocking(move || {
        let sent = wal_view::dump(&wal, q.from, q.to, &source_name, |line| {
            lines
                .blocking_send(Ok(line + "\n"))
                .map_err(|_| anyhow::anyhow!("the client went away"))
        });
        if let Err(e) = sent {
            // Cut the body short: the client sees an incomplete answer, not a clean end.
            let _ = lines.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let stream = futures_util::stream::unfold(body, |mut body| async move {
        body.recv().await.map(|line| (line, body))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal_view::read_token;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &FsPath) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_token_is_created_private_kept_and_made_private_again() {
        let dir = tempfile::tempdir().unwrap();
        let (token, warnings) = ensure_token(dir.path()).unwrap();
        assert!(
            is_token(&token) && warnings.is_empty(),
            "{token} {warnings:?}"
        );
        let path = token_path(dir.path());
        assert_eq!(mode(&path), 0o600);
        assert_eq!(read_token(dir.path()).unwrap(), token);

        // Kept at the next start.
        assert_eq!(ensure_token(dir.path()).unwrap(), (token.clone(), vec![]));

        // Readable by others: set back to 0600, with a warning; the token stays.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (again, warnings) = ensure_token(dir.path()).unwrap();
        assert_eq!(again, token);
        assert_eq!(mode(&path), 0o600);
        assert!(
            warnings[0].contains("was readable by other users (mode 644)"),
            "{warnings:?}"
        );

        // Garbage: replaced by a new token, with a warning.
        std::fs::write(&path, "not a token").unwrap();
        let (new, warnings) = ensure_token(dir.path()).unwrap();
        assert!(is_token(&new) && new != token);
        assert!(warnings[0].contains("did not hold a token"), "{warnings:?}");
    }
}
