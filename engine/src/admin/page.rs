//! The dashboard: the page and its assets (compiled into the binary: no CDN, works offline),
//! the data it starts from and the event stream it follows. The assets are open; the rest
//! takes the token as a header or `?token=` (`admin/mod.rs`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::api::{plugins, sources};
use super::{Admin, error};

/// `?token=` on the page, its assets and its event stream; `?history=false` on
/// `/api/dashboard` leaves the history out (the page's periodic refresh of sources and plugins).
#[derive(Debug, serde::Deserialize)]
pub(super) struct TokenQuery {
    pub(super) token: Option<String>,
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

/// The page. The query is read (and a malformed one refused with 400) as before the token check
/// moved to the route layer; its `token` was checked there.
pub(super) async fn page(axum::extract::Query(_): axum::extract::Query<TokenQuery>) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

pub(super) async fn asset(Path(file): Path<String>) -> Response {
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
pub(super) async fn dashboard(
    State(admin): State<Arc<Admin>>,
    axum::extract::Query(query): axum::extract::Query<TokenQuery>,
) -> Response {
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
        "now_ms": crate::block::now_ms(),
        "sources": sources(&admin),
        "stages": stages,
        "plugins": plugins(&admin),
        "cluster": super::api::cluster(&admin).await,
        "history": if with_history { serde_json::to_value(&history).unwrap_or(Value::Null) } else { Value::Null },
    }))
    .into_response()
}

/// Every event from now on, as server-sent events (`data: <json>`), with a keep-alive comment
/// every 15 s. A client that falls more than 1024 events behind gets a `lagged` event and
/// should reload `/api/dashboard`.
pub(super) async fn events(
    State(admin): State<Arc<Admin>>,
    axum::extract::Query(_): axum::extract::Query<TokenQuery>,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
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
