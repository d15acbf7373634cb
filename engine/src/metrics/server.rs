//! The admin HTTP server on `--ui ADDR` (default 127.0.0.1:4040, the next free port if taken,
//! as Spark's UI does): metrics for Prometheus, status as JSON, and plugin deploy and rollback.
//!
//! | method | path | |
//! |---|---|---|
//! | GET | `/metrics` | Prometheus text format |
//! | GET | `/api/status` | pipeline, last batch, sources, plugins with their versions and history (JSON) |
//! | POST | `/api/plugins/{name}/deploy` | body: a `.wasm`; validated, then swapped in at the next batch |
//! | POST | `/api/plugins/{name}/rollback` | back to the version that served before the current one (`?to=<hash prefix>`: to that earlier version) |
//! | POST | `/api/sources/{name}/pause`, `/resume` | stop and restart reading a source |
//! | GET | `/api/events` | server-sent events: every batch, plugin, receiver and results event (JSON) |
//! | GET | `/api/dashboard` | the recent history the page starts from (JSON) |
//! | GET | `/` | the dashboard |
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
use crate::runtime::PluginVersion;
use crate::runtime::deploy::{DeployError, Deployed, Deployer};
use crate::runtime::event::PluginEvent;
use crate::runtime::registry::PluginRegistry;

/// Largest plugin an upload may carry: the largest plugin the runtime loads.
pub const MAX_UPLOAD: usize = crate::runtime::MAX_PLUGIN_BYTES;

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
    pub deployer: Option<Arc<Deployer>>,
    /// The receivers, for status.
    pub receivers: Vec<Arc<Receiver>>,
    /// Required bearer token, if any.
    pub token: Option<String>,
    /// `[pipeline] batch_interval`, ms (the page marks it on the processing-time chart).
    pub batch_interval_ms: u64,
    /// The stages that run.
    pub stages: Vec<StageRow>,
}

/// One stage as the page shows it.
#[derive(Debug, Clone)]
pub struct StageRow {
    /// Its name.
    pub name: String,
    /// Its op.
    pub op: &'static str,
    /// `plugin::function`, if it calls one.
    pub function: Option<String>,
    /// The stage it runs inside (a `flat_map` fused into the `reduce_by_key` reading it).
    pub fused_into: Option<String>,
}

impl StageRow {
    /// A row for every stage that runs, a fused stage before the one it runs inside.
    pub fn of(graph: &crate::graph::Graph, config: &crate::config::PipelineConfig) -> Vec<Self> {
        let row = |stage: &crate::graph::Stage, fused_into: Option<String>| {
            let file = config.stages.iter().find(|s| s.name == stage.name);
            let function = file.and_then(|s| Some(format!("{}::{}", s.plugin.as_ref()?, s.function.as_ref()?)));
            Self { name: stage.name.clone(), op: stage.op.name(), function, fused_into }
        };
        let mut rows = Vec::new();
        for stage in &graph.stages {
            if let crate::graph::Operator::ReduceByKey { fused: Some(pre), .. } = &stage.operator {
                rows.push(row(pre, Some(stage.name.clone())));
            }
            rows.push(row(stage, None));
        }
        rows
    }
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
        .route("/", get(page))
        .route("/assets/{file}", get(asset))
        .route("/api/dashboard", get(dashboard))
        .route("/api/events", get(events))
        .route("/api/sources/{name}/pause", post(pause_source))
        .route("/api/sources/{name}/resume", post(resume_source))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD))
        .with_state(admin);
    axum::serve(listener, app).await
}

/// Whether the request may proceed: no token is set, or it carries the right one (as
/// `Authorization: Bearer <token>`, or `?token=<token>` for the page and its event stream,
/// which a browser cannot give headers).
fn authorized(admin: &Admin, headers: &HeaderMap) -> bool {
    authorized_with(admin, headers, None)
}

fn authorized_with(admin: &Admin, headers: &HeaderMap, query_token: Option<&str>) -> bool {
    let Some(token) = admin.token.as_deref().filter(|t| !t.is_empty()) else { return true };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or(query_token);
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
    time.duration_since(std::time::UNIX_EPOCH).map(crate::config::millis).unwrap_or(0)
}

async fn status(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    if !authorized(&admin, &headers) {
        return unauthorized();
    }
    let last = admin.metrics.last_batch();
    axum::Json(json!({
        "pipeline": admin.pipeline,
        "batches": admin.metrics.batches(),
        "last_batch": {
            "time_ms": last.time_ms, "records": last.records, "scheduling_delay_ms": last.scheduling_delay_ms,
            "processing_ms": last.processing_ms, "failed": last.failed,
        },
        "sources": sources(&admin),
        "plugins": plugins(&admin),
    }))
    .into_response()
}

/// Each source's receiver, for `/api/status` and `/api/dashboard`.
fn sources(admin: &Admin) -> Vec<Value> {
    admin
        .receivers
        .iter()
        .map(|r| {
            json!({
                "name": r.name, "received": r.received(), "invalid_lines": r.invalid(), "finished": r.is_finished(),
                "paused": r.is_paused(), "rate_limit": r.rate(), "last_error": r.last_error(),
            })
        })
        .collect()
}

/// Each plugin's serving version, its functions and the earlier versions kept, for
/// `/api/status` and `/api/dashboard`.
fn plugins(admin: &Admin) -> Vec<Value> {
    let registry = &admin.registry;
    registry
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
        .collect()
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
    let Some(deployer) = admin.deployer.as_ref() else {
        return error(StatusCode::CONFLICT, "this pipeline's plugins cannot be replaced");
    };
    let origin = PathBuf::from(format!("<upload to {name}>"));
    // The plugin's own deploy lane loads it; this request waits for its answer only.
    let answer = deployer.submit(index, origin, body.to_vec());
    let outcome = tokio::task::spawn_blocking(move || answer.recv().unwrap_or(Err(DeployError::Stopped))).await;
    match outcome {
        Ok(Ok(Deployed::Installed(hash))) => {
            axum::Json(json!({ "plugin": name, "hash": hash, "status": "installed; serves from the next batch" }))
                .into_response()
        }
        Ok(Ok(Deployed::Unchanged(hash))) => {
            axum::Json(json!({ "plugin": name, "hash": hash, "status": "unchanged: this version already serves" }))
                .into_response()
        }
        Ok(Err(DeployError::Superseded { .. })) => error(
            StatusCode::CONFLICT,
            "superseded: a newer version of this plugin arrived before this one was installed",
        ),
        Ok(Err(reason)) => error(StatusCode::UNPROCESSABLE_ENTITY, &format!("rejected: {reason}")),
        Err(join) => error(StatusCode::INTERNAL_SERVER_ERROR, &join.to_string()),
    }
}

/// `?to=<hash prefix>` on a rollback.
#[derive(Debug, serde::Deserialize)]
struct RollbackQuery {
    to: Option<String>,
}

async fn rollback_plugin(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<RollbackQuery>,
) -> Response {
    if !authorized(&admin, &headers) {
        return unauthorized();
    }
    let Some(index) = admin.registry.index(&name) else {
        return error(StatusCode::NOT_FOUND, &format!("no plugin `{name}` in this pipeline"));
    };
    if let Some(hash) = query.to {
        return match admin.registry.rollback_to(index, &hash) {
            Ok((from, to)) => {
                rolled_back(&admin, &name, &from, &to, true);
                axum::Json(json!({ "plugin": name, "from": from.short_hash(), "to": to.short_hash() })).into_response()
            }
            Err(reason) => error(StatusCode::CONFLICT, &reason),
        };
    }
    match admin.registry.rollback(index) {
        Some((from, to)) => {
            rolled_back(&admin, &name, &from, &to, false);
            axum::Json(json!({ "plugin": name, "from": from.short_hash(), "to": to.short_hash() })).into_response()
        }
        None => error(StatusCode::CONFLICT, &format!("plugin `{name}` has no earlier version to roll back to")),
    }
}

/// Emits a requested rollback (`chosen`: to the version `?to=` named).
fn rolled_back(admin: &Admin, name: &str, from: &PluginVersion, to: &PluginVersion, chosen: bool) {
    admin.registry.emit(PluginEvent::RolledBack {
        plugin: name.to_string(),
        from: from.short_hash().to_string(),
        to: to.short_hash().to_string(),
        chosen,
    });
}

async fn pause_source(State(admin): State<Arc<Admin>>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    set_paused(&admin, &name, &headers, true)
}

async fn resume_source(State(admin): State<Arc<Admin>>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    set_paused(&admin, &name, &headers, false)
}

/// Pauses or resumes a source's receiver: a paused socket reads nothing (TCP holds the sender
/// back), a paused directory takes no new files; batches go on.
fn set_paused(admin: &Admin, name: &str, headers: &HeaderMap, paused: bool) -> Response {
    if !authorized(admin, headers) {
        return unauthorized();
    }
    let Some(receiver) = admin.receivers.iter().find(|r| r.name == name) else {
        let known: Vec<&str> = admin.receivers.iter().map(|r| r.name.as_str()).collect();
        return error(StatusCode::NOT_FOUND, &format!("no source `{name}` (sources: {})", known.join(", ")));
    };
    let changed = receiver.set_paused(paused);
    let action = if paused { "paused" } else { "resumed" };
    if changed {
        tracing::info!(source = %name, "source {action} through the admin API");
        admin.metrics.events.receiver(name, action, "through the admin API".into());
    }
    axum::Json(json!({ "source": name, "paused": paused, "changed": changed })).into_response()
}

/// `?token=` on the page, its assets and its event stream; `?history=false` on
/// `/api/dashboard` leaves the history out (the page's periodic refresh of sources and plugins).
#[derive(Debug, serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
    history: Option<bool>,
}

/// The dashboard and the chart library, compiled into the binary: no CDN, works offline.
const PAGE: &str = include_str!("../../assets/dashboard.html");
const ASSETS: &[(&str, &str, &str)] = &[
    ("dashboard.js", "text/javascript; charset=utf-8", include_str!("../../assets/dashboard.js")),
    ("dashboard.css", "text/css; charset=utf-8", include_str!("../../assets/dashboard.css")),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/vendor/uplot/uPlot.iife.min.js"),
    ),
    ("uPlot.min.css", "text/css; charset=utf-8", include_str!("../../assets/vendor/uplot/uPlot.min.css")),
];

async fn page(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<TokenQuery>,
) -> Response {
    if !authorized_with(&admin, &headers, query.token.as_deref()) {
        return unauthorized();
    }
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    // Static code, the same for everyone: no token needed.
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, kind, body)) => {
            ([(header::CONTENT_TYPE, *kind), (header::CACHE_CONTROL, "max-age=300")], *body).into_response()
        }
        None => error(StatusCode::NOT_FOUND, &format!("no asset `{file}`")),
    }
}

/// What the page starts from: the pipeline, its sources, stages and plugins, and the recent
/// history of events.
async fn dashboard(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<TokenQuery>,
) -> Response {
    if !authorized_with(&admin, &headers, query.token.as_deref()) {
        return unauthorized();
    }
    let with_history = query.history.unwrap_or(true);
    let history = if with_history { admin.metrics.events.history() } else { Default::default() };
    let stages: Vec<Value> = admin
        .stages
        .iter()
        .map(|row| {
            json!({
                "name": row.name, "op": row.op, "function": row.function, "fused_into": row.fused_into,
                "totals": history.stage_totals.get(&row.name),
                "errors": history.stage_errors.get(&row.name),
            })
        })
        .collect();
    axum::Json(json!({
        "pipeline": admin.pipeline,
        "batch_interval_ms": admin.batch_interval_ms,
        "now_ms": crate::batch::now_ms(),
        "sources": sources(&admin),
        "stages": stages,
        "plugins": plugins(&admin),
        "history": if with_history { serde_json::to_value(&history).unwrap_or(Value::Null) } else { Value::Null },
    }))
    .into_response()
}

/// Every event from now on, as server-sent events (`data: <json>`), with a keep-alive comment
/// every 15 s. A client that falls more than 1024 events behind gets a `lagged` event and
/// should reload `/api/dashboard`.
async fn events(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<TokenQuery>,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    if !authorized_with(&admin, &headers, query.token.as_deref()) {
        return unauthorized();
    }
    let rx = admin.metrics.events.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let event = match rx.recv().await {
            Ok(event) => Event::default().json_data(&event).unwrap_or_else(|_| Event::default().comment("unencodable")),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                Event::default().data(json!({ "type": "lagged", "missed": n }).to_string())
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(event), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15))).into_response()
}
