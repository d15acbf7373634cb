//! The API's handlers: Prometheus metrics, status, plugin deploy and rollback, pausing and
//! resuming sources. The bearer token is checked before any of them runs (`admin/mod.rs`).

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Admin, error};
use crate::runtime::PluginVersion;
use crate::runtime::deploy::{DeployError, Deployed};
use crate::runtime::event::PluginEvent;
use crate::runtime::shadow::PromoteRule;

pub(super) async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    let mut text = admin.metrics.prometheus(&admin.registry);
    if let Some(cluster) = &admin.cluster {
        text = with_label(&text, "member", &cluster.member);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Liveness (Kubernetes' `livenessProbe`): the process serves requests.
pub(super) async fn healthz() -> Response {
    "ok\n".into_response()
}

/// Readiness (`readinessProbe`): 200 once the first batch has run, 503 until then.
pub(super) async fn readyz(State(admin): State<Arc<Admin>>) -> Response {
    if admin.metrics.batches() > 0 {
        "ready\n".into_response()
    } else {
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "starting: no batch has run yet\n").into_response()
    }
}

/// Prometheus text with `name="value"` added to every sample's labels.
fn with_label(text: &str, name: &str, value: &str) -> String {
    let value = value.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            out.push_str(line);
        } else if let Some(brace) = line.find('{').filter(|b| line.find(' ').is_none_or(|space| *b < space)) {
            out.push_str(&line[..=brace]);
            out.push_str(&format!("{name}=\"{value}\","));
            out.push_str(&line[brace + 1..]);
        } else if let Some((metric, rest)) = line.split_once(' ') {
            out.push_str(&format!("{metric}{{{name}=\"{value}\"}} {rest}"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

fn millis(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH).map(crate::fields::millis).unwrap_or(0)
}

pub(super) async fn status(State(admin): State<Arc<Admin>>) -> Response {
    let last = admin.metrics.last_batch();
    let cluster = cluster(&admin).await;
    axum::Json(json!({
        "pipeline": admin.pipeline,
        "batches": admin.metrics.batches(),
        "last_batch": {
            "time_ms": last.time_ms, "records": last.records, "scheduling_delay_ms": last.scheduling_delay_ms,
            "processing_ms": last.processing_ms, "failed": last.failed,
        },
        "sources": sources(&admin),
        "plugins": plugins(&admin),
        "cluster": cluster,
    }))
    .into_response()
}

/// This member and, from their heartbeats in the store, every live member: partitions with
/// offset and lag, the versions each serves.
pub(super) async fn cluster(admin: &Arc<Admin>) -> Value {
    let Some(row) = &admin.cluster else { return Value::Null };
    let mut shown = json!(row);
    if let Some(agent) = admin.agent.clone() {
        let members = tokio::task::spawn_blocking(move || agent.members()).await;
        shown["members"] = match members {
            Ok(Ok(members)) => json!(members),
            Ok(Err(err)) => {
                shown["members_error"] = json!(err.to_string());
                json!([])
            }
            Err(join) => {
                shown["members_error"] = json!(join.to_string());
                json!([])
            }
        };
    }
    shown
}

/// Each source's receiver, for `/api/status` and `/api/dashboard`.
pub(super) fn sources(admin: &Admin) -> Vec<Value> {
    admin
        .receivers
        .iter()
        .map(|r| {
            json!({
                "name": r.name, "received": r.received(), "invalid_lines": r.invalid(), "finished": r.is_finished(),
                "paused": r.is_paused(), "rate_limit": r.rate(), "last_error": r.last_error(),
                "partitions": r.partitions(), "shards": r.shards(), "answers": r.answers(),
            })
        })
        .collect()
}

/// Each plugin's serving version, its functions, the earlier versions kept, its shadow and the
/// metrics it records from inside, for
/// `/api/status` and `/api/dashboard`.
pub(super) fn plugins(admin: &Admin) -> Vec<Value> {
    let registry = &admin.registry;
    let plugin_metrics = crate::runtime::plugin_metrics::snapshot();
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
                "shadow": registry.shadow(index).map(|shadow| shadow.status()),
                "served": registry.served(index),
                "metrics": plugin_metrics.iter().filter(|((plugin, ..), _)| plugin == name).map(|((_, version, stage, metric), f)| json!({
                    "version": version, "stage": stage, "name": metric, "kind": f.kind.name(), "value": f.value, "count": f.count,
                })).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// `?shadow=true&promote_after=N&max_diff=F` on a deploy.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct DeployQuery {
    #[serde(default)]
    shadow: bool,
    promote_after: Option<u32>,
    max_diff: Option<f64>,
}

pub(super) async fn deploy_plugin(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
    axum::extract::Query(query): axum::extract::Query<DeployQuery>,
    body: Bytes,
) -> Response {
    let Some(index) = admin.registry.index(&name) else {
        return error(StatusCode::NOT_FOUND, &format!("no plugin `{name}` in this pipeline"));
    };
    let rule = match (query.shadow, query.promote_after, query.max_diff) {
        (false, None, None) => None,
        (false, _, _) => return error(StatusCode::BAD_REQUEST, "promote_after and max_diff go with shadow=true"),
        (true, Some(0), _) => return error(StatusCode::BAD_REQUEST, "promote_after: expected at least 1 batch"),
        (true, _, Some(diff)) if !(0.0..=1.0).contains(&diff) => {
            return error(StatusCode::BAD_REQUEST, "max_diff: expected a share from 0 to 1");
        }
        (true, Some(batches), diff) => Some(Some(PromoteRule { batches, max_diff: diff.unwrap_or(0.0) })),
        (true, None, Some(_)) => return error(StatusCode::BAD_REQUEST, "max_diff goes with promote_after"),
        (true, None, None) => Some(None),
    };
    if let Some(agent) = admin.agent.clone() {
        if rule.is_some() {
            return error(StatusCode::CONFLICT, "shadow deploys are not supported in a cluster yet");
        }
        return cluster_deploy(agent, name, index, body).await;
    }
    let Some(deployer) = admin.deployer.as_ref() else {
        return error(StatusCode::CONFLICT, "this pipeline's plugins cannot be replaced");
    };
    let origin = PathBuf::from(format!("<upload to {name}>"));
    // The plugin's own deploy lane loads it; this request waits for its answer only.
    let answer = match rule {
        Some(rule) => deployer.submit_shadow(index, origin, body.to_vec(), rule),
        None => deployer.submit(index, origin, body.to_vec()),
    };
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
        Ok(Ok(Deployed::Shadowing(hash))) => axum::Json(json!({
            "plugin": name, "hash": hash,
            "status": "validated; runs in the serving version's shadow from the next batch, its output discarded",
        }))
        .into_response(),
        Ok(Err(DeployError::Superseded { .. })) => error(
            StatusCode::CONFLICT,
            "superseded: a newer version of this plugin arrived before this one was installed",
        ),
        Ok(Err(reason)) => error(StatusCode::UNPROCESSABLE_ENTITY, &format!("rejected: {reason}")),
        Err(join) => error(StatusCode::INTERNAL_SERVER_ERROR, &join.to_string()),
    }
}

/// `sluice promote`: the shadow serves from the next batch.
pub(super) async fn promote_plugin(State(admin): State<Arc<Admin>>, Path(name): Path<String>) -> Response {
    let Some(index) = admin.registry.index(&name) else {
        return error(StatusCode::NOT_FOUND, &format!("no plugin `{name}` in this pipeline"));
    };
    match admin.registry.promote(index, false) {
        Some((from, to)) => axum::Json(json!({
            "plugin": name, "from": from.short_hash(), "to": to.short_hash(), "status": "promoted; serves from the next batch",
        }))
        .into_response(),
        None => {
            error(StatusCode::CONFLICT, &format!("plugin `{name}` has no shadow to promote (sluice deploy --shadow)"))
        }
    }
}

/// `sluice deploy --abort-shadow`: the shadow is dropped.
pub(super) async fn abort_shadow(State(admin): State<Arc<Admin>>, Path(name): Path<String>) -> Response {
    let Some(index) = admin.registry.index(&name) else {
        return error(StatusCode::NOT_FOUND, &format!("no plugin `{name}` in this pipeline"));
    };
    match admin.registry.abort_shadow(index) {
        Some(shadow) => {
            let hash = shadow.short_hash().to_string();
            admin.registry.emit(PluginEvent::ShadowAborted { plugin: name.clone(), shadow: hash.clone() });
            axum::Json(json!({ "plugin": name, "hash": hash, "status": "shadow dropped" })).into_response()
        }
        None => error(StatusCode::CONFLICT, &format!("plugin `{name}` has no shadow")),
    }
}

/// A deploy to every member: answered once the cluster decided.
async fn cluster_deploy(agent: Arc<crate::cluster::Agent>, name: String, index: usize, body: Bytes) -> Response {
    let mut current_hash = crate::runtime::content_hash(&body);
    current_hash.truncate(12);
    let outcome = tokio::task::spawn_blocking(move || agent.deploy(index, &body)).await;
    match outcome {
        Ok(Ok(Some(decided))) => decided_answer(&name, &decided),
        Ok(Ok(None)) => axum::Json(json!({
            "plugin": name, "hash": current_hash,
            "status": "unchanged: this version already serves across the cluster",
        }))
        .into_response(),
        Ok(Err(refused)) => propose_error(&refused),
        Err(join) => error(StatusCode::INTERNAL_SERVER_ERROR, &join.to_string()),
    }
}

fn decided_answer(name: &str, decided: &crate::cluster::agent::Decided) -> Response {
    axum::Json(json!({
        "plugin": name, "hash": decided.hash, "from_batch_ms": decided.from_ms, "members": decided.members,
        "status": format!("accepted by {} member(s); every member serves it from batch {}", decided.members.len(), decided.from_ms),
    }))
    .into_response()
}

fn propose_error(refused: &crate::cluster::agent::ProposeError) -> Response {
    use crate::cluster::agent::ProposeError;
    let status = match refused {
        ProposeError::Local(DeployError::Unavailable { .. } | DeployError::Stopped) => StatusCode::SERVICE_UNAVAILABLE,
        ProposeError::Local(_) | ProposeError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
        ProposeError::NoEarlierVersion(_) | ProposeError::NoHistory(_) => StatusCode::CONFLICT,
        ProposeError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, &refused.to_string())
}

/// `?to=<hash prefix>` on a rollback.
#[derive(Debug, serde::Deserialize)]
pub(super) struct RollbackQuery {
    to: Option<String>,
}

pub(super) async fn rollback_plugin(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
    axum::extract::Query(query): axum::extract::Query<RollbackQuery>,
) -> Response {
    let Some(index) = admin.registry.index(&name) else {
        return error(StatusCode::NOT_FOUND, &format!("no plugin `{name}` in this pipeline"));
    };
    if let Some(agent) = admin.agent.clone() {
        let outcome = tokio::task::spawn_blocking(move || agent.rollback(index, query.to.as_deref())).await;
        return match outcome {
            Ok(Ok(decided)) => decided_answer(&name, &decided),
            Ok(Err(refused)) => propose_error(&refused),
            Err(join) => error(StatusCode::INTERNAL_SERVER_ERROR, &join.to_string()),
        };
    }
    if let Some(hash) = query.to {
        return match admin.registry.rollback_to(index, &hash) {
            Ok((from, to)) => {
                rolled_back(&admin, &name, &from, &to, true);
                axum::Json(json!({ "plugin": name, "from": from.short_hash(), "to": to.short_hash() })).into_response()
            }
            Err(reason) => error(StatusCode::CONFLICT, &reason.to_string()),
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

pub(super) async fn pause_source(State(admin): State<Arc<Admin>>, Path(name): Path<String>) -> Response {
    set_paused(&admin, &name, true)
}

pub(super) async fn resume_source(State(admin): State<Arc<Admin>>, Path(name): Path<String>) -> Response {
    set_paused(&admin, &name, false)
}

/// Pauses or resumes a source's receiver: a paused socket reads nothing (TCP holds the sender
/// back), a paused directory takes no new files; batches go on.
fn set_paused(admin: &Admin, name: &str, paused: bool) -> Response {
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

#[cfg(test)]
mod tests {
    use super::with_label;

    #[test]
    fn every_sample_gets_the_member_label_and_comments_stay() {
        let text = "# HELP a A.\n# TYPE a counter\na 3\nb{x=\"1\"} 2\nc{le=\"+Inf\"} 1\n";
        assert_eq!(
            with_label(text, "member", "pod\"a"),
            "# HELP a A.\n# TYPE a counter\na{member=\"pod\\\"a\"} 3\nb{member=\"pod\\\"a\",x=\"1\"} 2\nc{member=\"pod\\\"a\",le=\"+Inf\"} 1\n"
        );
    }
}
