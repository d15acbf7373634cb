//! The audit trail of control actions: every request to a route that changes the engine
//! (deploy, rollback, promote, abort-shadow, pause, resume), answered or refused (a wrong token
//! too), recorded once: a log line (target `sluice::audit`), an event on the event stream and
//! in the dashboard's history (`Event::Audit`), and, with a checkpoint directory, a line of
//! `<checkpoint_dir>/audit.jsonl` (appended, synced). One route layer records them all, so no
//! handler can forget; the request runs on a task of its own, so a client that hangs up
//! mid-deploy cannot make an action happen unrecorded. Of the query only the known options are
//! kept (`shadow`, `promote_after`, `max_diff`, `to`): a token given as `?token=` never is.
//!
//! **Owns:** what an entry holds and where it goes. **Never touches:** the actions themselves
//! (the handlers), the token check (`mod.rs`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::HttpBody;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::Admin;
use crate::metrics::events::AuditEntry;

/// The largest answer an entry reads its hash or error from (the handlers' answers are small
/// JSON objects; a larger one is passed on unread).
const READ_ANSWER: u64 = 64 << 10;

/// The log target of every line about the trail.
const TARGET: &str = "sluice::audit";

/// The query options a control route takes: the only part of a query an entry keeps.
const OPTIONS: [&str; 4] = ["shadow", "promote_after", "max_diff", "to"];

/// `<checkpoint_dir>/audit.jsonl`, appended under a lock.
#[derive(Debug)]
pub struct AuditFile {
    path: PathBuf,
    lock: Mutex<()>,
}

impl AuditFile {
    /// The audit file of checkpoint directory `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self { path: dir.join("audit.jsonl"), lock: Mutex::new(()) }
    }

    fn append(&self, entry: &AuditEntry) -> std::io::Result<()> {
        let _held = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let mut line = serde_json::to_string(entry).map_err(std::io::Error::other)?;
        line.push('\n');
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        file.write_all(line.as_bytes())?;
        file.sync_data()
    }
}

/// Route layer of the control routes: runs the request, then records it.
pub(super) async fn audit(State(admin): State<Arc<Admin>>, request: Request, next: Next) -> Response {
    // On a task of its own: a dropped connection drops this future, not the action's.
    let task = tokio::spawn(async move {
        let from = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.to_string());
        let path = request.uri().path().to_string();
        let query = request.uri().query().and_then(kept_options);
        let response = next.run(request).await;
        let (action, target) = action_of(&path);
        let status = response.status();
        let mut entry = AuditEntry {
            at_ms: crate::block::now_ms(),
            from,
            action,
            target,
            query,
            status: status.as_u16(),
            accepted: status.is_success(),
            hash: None,
            detail: None,
        };
        let (parts, body) = response.into_parts();
        let body = match body.size_hint().upper().is_some_and(|size| size <= READ_ANSWER) {
            false => body,
            true => match axum::body::to_bytes(body, READ_ANSWER as usize).await {
                Ok(bytes) => {
                    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    let text = |key: &str| answer.get(key).and_then(Value::as_str).map(str::to_string);
                    entry.hash = text("hash").or_else(|| text("to"));
                    entry.detail = text("error").or_else(|| text("status"));
                    axum::body::Body::from(bytes)
                }
                Err(err) => {
                    entry.detail = Some(format!("the answer could not be read: {err}"));
                    axum::body::Body::empty()
                }
            },
        };
        record(admin, entry).await;
        Response::from_parts(parts, body)
    });
    task.await.unwrap_or_else(|err| {
        tracing::error!(target: TARGET, "a control request failed: {err}");
        axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
    })
}

/// The options of `query` a control route takes (`OPTIONS`), if any; nothing else.
fn kept_options(query: &str) -> Option<String> {
    let kept: Vec<&str> =
        query.split('&').filter(|pair| OPTIONS.contains(&pair.split_once('=').map_or(*pair, |(key, _)| key))).collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// `/api/plugins/<name>/<action>` or `/api/sources/<name>/<action>`: the action and the name.
fn action_of(path: &str) -> (String, String) {
    let mut parts = path.trim_start_matches('/').split('/').skip(2);
    let target = parts.next().unwrap_or_default();
    let action = parts.next().unwrap_or_default();
    let target = percent_decoded(target);
    (action.to_string(), target)
}

/// `%2F` and the like as the router read them (the name a request asked for, for the trail).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[at], bytes.get(at + 1).copied().and_then(hex), bytes.get(at + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                at += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The one place an entry goes out: log, event stream and history, file (written off the
/// async workers).
async fn record(admin: Arc<Admin>, entry: AuditEntry) {
    let outcome = if entry.accepted { "accepted" } else { "refused" };
    tracing::info!(
        target: TARGET,
        action = %entry.action, target = %entry.target, from = entry.from.as_deref().unwrap_or("-"),
        status = entry.status, hash = entry.hash.as_deref().unwrap_or("-"),
        "control action {outcome}{}", entry.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
    );
    let entry = Arc::new(entry);
    if admin.audit_file.is_some() {
        let (admin, entry) = (admin.clone(), entry.clone());
        let written = tokio::task::spawn_blocking(move || {
            let file = admin.audit_file.as_ref().expect("checked above");
            file.append(&entry).map_err(|err| format!("{}: {err}", file.path.display()))
        })
        .await
        .map_err(|err| err.to_string())
        .and_then(|written| written);
        if let Err(err) = written {
            tracing::error!(target: TARGET, "cannot append to the audit file {err}");
        }
    }
    admin.metrics.events.audit(Arc::unwrap_or_clone(entry));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_path_names_its_action_and_target_as_asked() {
        assert_eq!(action_of("/api/plugins/wordcount/deploy"), ("deploy".into(), "wordcount".into()));
        assert_eq!(action_of("/api/sources/lines/pause"), ("pause".into(), "lines".into()));
        assert_eq!(action_of("/api/plugins/..%2F..%2Fcache/deploy"), ("deploy".into(), "../../cache".into()));
        assert_eq!(percent_decoded("a%2"), "a%2");
    }

    #[test]
    fn an_entry_keeps_the_options_of_a_query_and_never_a_token() {
        assert_eq!(
            kept_options("shadow=true&token=s3cret&promote_after=3").as_deref(),
            Some("shadow=true&promote_after=3")
        );
        assert_eq!(kept_options("token=s3cret"), None);
        assert_eq!(kept_options("to=abc12&max_diff=0.1&x").as_deref(), Some("to=abc12&max_diff=0.1"));
    }
}
