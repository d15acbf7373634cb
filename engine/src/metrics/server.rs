//! The admin HTTP server on `--ui ADDR` (default 127.0.0.1:4040, the next free port if taken,
//! as Spark's UI does): metrics for Prometheus, status as JSON, and plugin deploy and rollback.
//!
//! | method | path | |
//! |---|---|---|
//! | GET | `/metrics` | Prometheus text format |
//! | GET | `/api/status` | pipeline, last batch, sources, plugins with their versions and history (JSON) |
//! | POST | `/api/plugins/{name}/deploy` | body: a `.wasm`; validated, then swapped in at the next batch |
//! | POST | `/api/plugins/{name}/rollback` | back to the version that served before the current one |
//!
//! Bound to loopback it needs no token. Bound elsewhere it refuses to start without one
//! (`--admin-token` or `SLUICE_ADMIN_TOKEN`); with a token set, every request must carry
//! `Authorization: Bearer <token>` or gets 401.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::Metrics;
use crate::receiver::Receiver;
use crate::runtime::PluginRuntime;
use crate::runtime::registry::PluginRegistry;
use crate::runtime::watch::{Deployed, deploy};

/// Largest plugin an upload may carry.
pub const MAX_UPLOAD: usize = 64 << 20;

/// What the handlers share.
#[derive(Debug)]
pub struct Admin {
    /// The pipeline's name.
    pub pipeline: String,
    /// The engine's counters.
    pub metrics: Arc<Metrics>,
    /// The plugins.
    pub registry: Arc<PluginRegistry>,
    /// Loads uploaded versions (None: deploys are refused, e.g. native benchmark pipelines).
    pub runtime: Option<PluginRuntime>,
    /// The receivers, for status.
    pub receivers: Vec<Arc<Receiver>>,
    /// Required bearer token, if any.
    pub token: Option<String>,
}

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Off loopback without a token.
    #[error(
        "the admin API at {0} is not on loopback: give --admin-token (or SLUICE_ADMIN_TOKEN) so requests can be authenticated"
    )]
    NeedsToken(SocketAddr),
    /// No port could be bound.
    #[error("cannot listen on {addr} (nor the next 15 ports): {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Binds `addr`, or the next free port after it (up to 15 more), checking the token rule.
pub fn bind(addr: SocketAddr, token: Option<&str>) -> Result<std::net::TcpListener, ServeError> {
    if !addr.ip().is_loopback() && token.is_none_or(str::is_empty) {
        return Err(ServeError::NeedsToken(addr));
    }
    let mut last = None;
    for offset in 0..16u16 {
        let mut candidate = addr;
        candidate.set_port(addr.port().saturating_add(offset));
        match std::net::TcpListener::bind(candidate) {
            Ok(listener) => {
                listener.set_nonblocking(true).map_err(|source| ServeError::Bind { addr, source })?;
                return Ok(listener);
            }
            Err(err) if addr.port() != 0 => last = Some(err),
            Err(source) => return Err(ServeError::Bind { addr, source }),
        }
    }
    Err(ServeError::Bind { addr, source: last.expect("tried at least once") })
}

/// Serves until the process exits.
pub async fn serve(listener: std::net::TcpListener, admin: Arc<Admin>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/status", get(status))
        .route("/api/plugins/{name}/deploy", post(deploy_plugin))
        .route("/api/plugins/{name}/rollback", post(rollback_plugin))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD))
        .with_state(admin);
    axum::serve(listener, app).await
}

/// Whether the request may proceed: no token is set, or it carries the right one.
fn authorized(admin: &Admin, headers: &HeaderMap) -> bool {
    let Some(token) = admin.token.as_deref().filter(|t| !t.is_empty()) else { return true };
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    // Compare in constant time: the token is a secret.
    given.is_some_and(|g| {
        g.len() == token.len() && g.bytes().zip(token.bytes()).fold(0, |acc, (a, b)| acc | (a ^ b)) == 0
    })
}

fn unauthorized() -> Response {
    error(StatusCode::UNAUTHORIZED, "missing or wrong `Authorization: Bearer <token>`")
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

async fn metrics(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if !authorized(&admin, &headers) {
        return unauthorized();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], admin.metrics.prometheus(&admin.registry)).into_response()
}

fn millis(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

async fn status(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if !authorized(&admin, &headers) {
        return unauthorized();
    }
    let registry = &admin.registry;
    let plugins: Vec<Value> = registry
        .plugins()
        .map(|(index, name, path)| {
            let current = registry.current(index);
            let history: Vec<Value> = registry
                .history(index)
                .iter()
                .map(|v| json!({ "hash": v.short_hash(), "loaded_at_ms": millis(v.loaded_at) }))
                .collect();
            json!({
                "name": name,
                "path": path.display().to_string(),
                "hash": current.short_hash(),
                "sha256": current.hash,
                "loaded_at_ms": millis(current.loaded_at),
                "functions": current.functions.values().map(|f| json!({
                    "name": f.name, "kind": f.kind.name(), "input": f.input.rust_name(), "output": f.output.rust_name(),
                })).collect::<Vec<_>>(),
                "previous": history,
            })
        })
        .collect();
    let sources: Vec<Value> = admin
        .receivers
        .iter()
        .map(|r| {
            json!({
                "name": r.name, "received": r.received(), "invalid_lines": r.invalid(),
                "finished": r.is_finished(), "last_error": r.last_error(),
            })
        })
        .collect();
    let last = admin.metrics.last_batch();
    axum::Json(json!({
        "pipeline": admin.pipeline,
        "batches": admin.metrics.batches(),
        "last_batch": {
            "time_ms": last.time_ms, "records": last.records, "scheduling_delay_ms": last.scheduling_delay_ms,
            "processing_ms": last.processing_ms, "failed": last.failed,
        },
        "sources": sources,
        "plugins": plugins,
    }))
    .into_response()
}

async fn deploy_plugin(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&admin, &headers) {
        return unauthorized();
    }
    let Some(index) = admin.registry.index(&name) else {
        return error(StatusCode::NOT_FOUND, &format!("no plugin `{name}` in this pipeline"));
    };
    let Some(runtime) = admin.runtime.clone() else {
        return error(StatusCode::CONFLICT, "this pipeline's plugins cannot be replaced");
    };
    let registry = admin.registry.clone();
    let origin = PathBuf::from(format!("<upload to {name}>"));
    // Compiling takes tens of ms: off the async threads.
    let outcome = tokio::task::spawn_blocking(move || deploy(&runtime, &registry, index, &origin, &body)).await;
    match outcome {
        Ok(Ok(Deployed::Installed(hash))) => {
            axum::Json(json!({ "plugin": name, "hash": hash, "status": "installed; serves from the next batch" }))
                .into_response()
        }
        Ok(Ok(Deployed::Unchanged(hash))) => {
            axum::Json(json!({ "plugin": name, "hash": hash, "status": "unchanged: this version already serves" }))
                .into_response()
        }
        Ok(Err(reason)) => error(StatusCode::UNPROCESSABLE_ENTITY, &format!("rejected: {reason}")),
        Err(join) => error(StatusCode::INTERNAL_SERVER_ERROR, &join.to_string()),
    }
}

async fn rollback_plugin(State(admin): State<Arc<Admin>>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    if !authorized(&admin, &headers) {
        return unauthorized();
    }
    let Some(index) = admin.registry.index(&name) else {
        return error(StatusCode::NOT_FOUND, &format!("no plugin `{name}` in this pipeline"));
    };
    match admin.registry.rollback(index) {
        Some((from, to)) => {
            tracing::info!(plugin = %name, from = %from.short_hash(), to = %to.short_hash(), "rollback requested; the previous version serves from the next batch");
            axum::Json(json!({ "plugin": name, "from": from.short_hash(), "to": to.short_hash() })).into_response()
        }
        None => error(StatusCode::CONFLICT, &format!("plugin `{name}` has no earlier version to roll back to")),
    }
}
