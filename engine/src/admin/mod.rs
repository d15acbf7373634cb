//! The admin HTTP server on `--ui ADDR` (default 127.0.0.1:4040, the next free port if taken,
//! as Spark's UI does): metrics for Prometheus, status as JSON, plugin deploy and rollback, and
//! the dashboard.
//!
//! | method | path | |
//! |---|---|---|
//! | GET | `/metrics` | Prometheus text format |
//! | GET | `/api/status` | pipeline, last batch, sources, plugins with their versions and history (JSON) |
//! | POST | `/api/plugins/{name}/deploy` | body: a `.wasm`; validated, then swapped in at the next batch (in a cluster: validated by every member, swapped by all at one batch) |
//! | POST | `/api/plugins/{name}/rollback` | back to the version that served before the current one (`?to=<hash prefix>`: to that earlier version; in a cluster, on every member at one batch) |
//! | POST | `/api/sources/{name}/pause`, `/resume` | stop and restart reading a source |
//! | GET | `/api/events` | server-sent events: every batch, plugin, receiver and results event (JSON) |
//! | GET | `/api/dashboard` | the recent history the page starts from (JSON) |
//! | GET | `/` | the dashboard |
//! | GET | `/assets/{file}` | the page's scripts and styles (open: static code, no token) |
//!
//! Bound to loopback it needs no token. Bound elsewhere it refuses to start without one
//! (`--admin-token`, `--admin-token-file`, or their variables `SLUICE_ADMIN_TOKEN[_FILE]`);
//! with a token set, every request but an asset's
//! must carry `Authorization: Bearer <token>` or gets 401. The page, `/api/dashboard` and
//! `/api/events` also take `?token=<token>`, since a browser cannot give them headers. The check
//! is one route layer per group (`require_token`, `require_token_or_query`), not a line in
//! each handler. A body larger than `--max-upload-mib` (default: the largest plugin the
//! runtime loads) is answered 413, nothing past the limit read. A request not answered in
//! time is answered 408: a control action (deploy, rollback, …) within [`CONTROL_TIMEOUT`], any
//! other but the event stream within [`READ_TIMEOUT`]. With `--tls-cert` and `--tls-key` it
//! serves HTTPS only.
//!
//! Files: this one routes, binds and authenticates; `listen.rs` takes connections (TLS,
//! connection deadlines); `api.rs` holds the JSON and Prometheus handlers, `audit.rs` the
//! trail of control actions, `page.rs` the dashboard page, its assets, data and event stream.

mod api;
mod audit;
mod listen;
mod page;

pub use audit::AuditFile;
pub use listen::{TlsError, TlsFiles};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tower_http::timeout::TimeoutLayer;

use crate::metrics::Metrics;
use crate::receiver::Receiver;
use crate::runtime::deploy::Deployer;
use crate::runtime::registry::PluginRegistry;

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
    /// The certificate it serves HTTPS with (None: plain HTTP).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Largest body a request may carry (a deploy's plugin), bytes; larger is answered 413.
    pub max_upload: usize,
    /// Where control actions are kept (with a checkpoint directory), besides log and events.
    pub audit_file: Option<AuditFile>,
    /// `[pipeline] batch_interval`, ms (the page marks it on the processing-time chart).
    pub batch_interval_ms: u64,
    /// The stages that run.
    pub stages: Vec<StageRow>,
    /// As a cluster's member: which one, in which group.
    pub cluster: Option<ClusterRow>,
    /// As a cluster's member: the agent that deploys and rolls back cluster-wide, and knows
    /// the other members.
    pub agent: Option<Arc<crate::cluster::Agent>>,
}

/// A cluster member as `/api/status` shows it; `/metrics` then labels every sample with
/// `member`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterRow {
    /// `cluster.group_id`.
    pub group_id: String,
    /// This member's name.
    pub member: String,
    /// `cluster.checkpoint_store`.
    pub checkpoint_store: String,
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
            let function = file.and_then(|s| Some(format!("{}::{}", s.plugin()?, s.function()?)));
            Self { name: stage.name.clone(), op: stage.operator.name(), function, fused_into }
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
        "the admin API at {0} is not on loopback: give --admin-token or --admin-token-file (or SLUICE_ADMIN_TOKEN[_FILE]) so requests can be authenticated"
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

/// How long a control action may take, its upload included: longer than a cluster member
/// waits for every other member to validate a deploy (at most a minute).
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long any other request may take, the event stream's aside.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The routes: the API behind the bearer token, the page's routes behind the token or
/// `?token=`, the assets open.
pub(crate) fn router(admin: Arc<Admin>) -> Router {
    let timeout = |limit| TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limit);
    let api = Router::new()
        .route("/metrics", get(api::metrics))
        .route("/api/status", get(api::status))
        .route_layer(middleware::from_fn_with_state(admin.clone(), require_token))
        .route_layer(timeout(READ_TIMEOUT));
    // What changes the engine: behind the token, and every request audited (refused and timed
    // out ones too).
    let control = Router::new()
        .route("/api/plugins/{name}/deploy", post(api::deploy_plugin))
        .route("/api/plugins/{name}/rollback", post(api::rollback_plugin))
        .route("/api/plugins/{name}/promote", post(api::promote_plugin))
        .route("/api/plugins/{name}/abort-shadow", post(api::abort_shadow))
        .route("/api/sources/{name}/pause", post(api::pause_source))
        .route("/api/sources/{name}/resume", post(api::resume_source))
        .route_layer(middleware::from_fn_with_state(admin.clone(), require_token))
        .route_layer(timeout(CONTROL_TIMEOUT))
        .route_layer(middleware::from_fn_with_state(admin.clone(), audit::audit));
    let browser = Router::new()
        .route("/", get(page::page))
        .route("/api/dashboard", get(page::dashboard))
        .route_layer(middleware::from_fn_with_state(admin.clone(), require_token_or_query))
        .route_layer(timeout(READ_TIMEOUT));
    // Open as long as the page is: no deadline.
    let events = Router::new()
        .route("/api/events", get(page::events))
        .route_layer(middleware::from_fn_with_state(admin.clone(), require_token_or_query));
    let open = Router::new()
        .route("/assets/{file}", get(page::asset))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route_layer(timeout(READ_TIMEOUT));
    let limit = DefaultBodyLimit::max(admin.max_upload);
    api.merge(control).merge(browser).merge(events).merge(open).layer(limit).with_state(admin)
}

/// Serves until the process exits (HTTPS if the admin has a certificate).
pub async fn serve(listener: std::net::TcpListener, admin: Arc<Admin>) -> std::io::Result<()> {
    let tls = admin.tls.clone();
    listen::serve(listener, router(admin), tls).await
}

/// Route layer: no token is set, or the request carries `Authorization: Bearer <token>`.
async fn require_token(State(admin): State<Arc<Admin>>, request: Request, next: Next) -> Response {
    if !authorized(&admin, request.headers(), None) {
        return unauthorized();
    }
    next.run(request).await
}

/// Route layer for what a browser opens: as [`require_token`], or `?token=<token>`.
async fn require_token_or_query(State(admin): State<Arc<Admin>>, request: Request, next: Next) -> Response {
    // A query the handler cannot read is its own 400, as it was before this check moved here.
    let Ok(Query(query)) = Query::<page::TokenQuery>::try_from_uri(request.uri()) else {
        return next.run(request).await;
    };
    if !authorized(&admin, request.headers(), query.token.as_deref()) {
        return unauthorized();
    }
    next.run(request).await
}

/// Whether the request may proceed: no token is set, or it carries the right one (as
/// `Authorization: Bearer <token>`, or `query_token` where the route takes `?token=`).
fn authorized(admin: &Admin, headers: &HeaderMap, query_token: Option<&str>) -> bool {
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
