//! Plugin events: what happens to a plugin's versions, as one typed value emitted once.
//!
//! Every deploy, rejection, supersession, swap and rollback is a [`PluginEvent`] handed to
//! [`PluginRegistry::emit`](super::registry::PluginRegistry::emit), which
//!
//! 1. writes its log line ([`PluginEvent::log`]: the message and structured fields), always;
//! 2. forwards it to the [`PluginEventSink`] the topology installed, if any: the metrics count
//!    swaps and automatic rollbacks, and the dashboard's history and event stream get a
//!    [`PluginEvent::record`] (`type` `plugin`, `action`, `from`, `to`, `detail`).
//!
//! A supersession is logged only: no version changed, so it has no place in the swap history.
//! The sink is a trait so the runtime does not depend on `metrics/` (which reads the registry).

use std::path::PathBuf;

use serde::Serialize;

/// What happened to a plugin, as the `action` of its history record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginAction {
    /// A new version was validated and installed for the next batch.
    Deployed,
    /// A new version was refused; the serving one stays.
    Rejected,
    /// A new version was dropped for a newer one before it was installed.
    Superseded,
    /// A batch started with a new version.
    Swapped,
    /// The admin API rolled a plugin back.
    RolledBack,
    /// A swapped-in version that kept failing was rolled back.
    AutoRolledBack,
    /// A new version was validated and runs in the serving one's shadow.
    Shadowing,
    /// A shadow was dropped.
    ShadowAborted,
    /// A shadow was made to serve from the next batch.
    Promoted,
}

impl PluginAction {
    /// Its name in records and events.
    pub fn name(self) -> &'static str {
        match self {
            Self::Deployed => "deployed",
            Self::Rejected => "rejected",
            Self::Superseded => "superseded",
            Self::Swapped => "swapped",
            Self::RolledBack => "rolled_back",
            Self::AutoRolledBack => "auto_rolled_back",
            Self::Shadowing => "shadowing",
            Self::ShadowAborted => "shadow_aborted",
            Self::Promoted => "promoted",
        }
    }
}

impl std::fmt::Display for PluginAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which version a newer one superseded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Superseded {
    /// One still waiting on its lane, not loaded: where it came from.
    Waiting(PathBuf),
    /// One being validated when the newer one arrived: its short hash.
    Validating(String),
}

/// Something that happened to a plugin's versions. Hashes are short hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PluginEvent {
    /// A new version was validated and serves from the next batch.
    Deployed {
        /// The plugin.
        plugin: String,
        /// The version serving until then.
        from: String,
        /// The new version.
        to: String,
        /// Where it came from (a file, `<upload to NAME>`).
        origin: PathBuf,
        /// Time to load and validate it, ms.
        load_ms: u64,
    },
    /// A new version was refused.
    Rejected {
        /// The plugin.
        plugin: String,
        /// The version that keeps serving.
        serving: String,
        /// The refused version, if it loaded far enough to have a hash.
        candidate: Option<String>,
        /// The refusal's class (`incompatible`, a load class).
        class: &'static str,
        /// Why.
        reason: String,
    },
    /// A newer version arrived before this one was installed.
    Superseded {
        /// The plugin.
        plugin: String,
        /// The version dropped.
        version: Superseded,
    },
    /// A batch started with a new version.
    Swapped {
        /// The plugin.
        plugin: String,
        /// The version before.
        from: String,
        /// The version serving now.
        to: String,
        /// The first batch it serves.
        first_batch: u64,
    },
    /// The admin API rolled a plugin back; `to` serves from the next batch.
    RolledBack {
        /// The plugin.
        plugin: String,
        /// The version rolled back from.
        from: String,
        /// The version rolled back to.
        to: String,
        /// Whether the request chose `to` (`?to=<hash prefix>`) rather than the previous one.
        chosen: bool,
    },
    /// A swapped-in version failed `failed_batches` batches in a row and was rolled back.
    AutoRolledBack {
        /// The plugin.
        plugin: String,
        /// The failing version.
        from: String,
        /// The version serving again.
        to: String,
        /// Failed batches in a row.
        failed_batches: u32,
        /// The last of them.
        last_failed_batch: u64,
    },
    /// A new version was validated and runs in the serving one's shadow from the next batch.
    Shadowing {
        /// The plugin.
        plugin: String,
        /// The serving version.
        serving: String,
        /// The shadow.
        shadow: String,
        /// `promote_after` batches, if it promotes itself.
        promote_after: Option<u32>,
    },
    /// A shadow was dropped (`--abort-shadow`).
    ShadowAborted {
        /// The plugin.
        plugin: String,
        /// The shadow dropped.
        shadow: String,
    },
    /// A shadow serves from the next batch.
    Promoted {
        /// The plugin.
        plugin: String,
        /// The version serving until then.
        from: String,
        /// The shadow, serving now.
        to: String,
        /// Batches it ran in the shadow.
        batches: u64,
        /// Whether its `promote_after` rule did it (else `sluice promote`).
        automatic: bool,
    },
}

/// Where plugin events go besides the log: counters, history, event stream.
pub trait PluginEventSink: Send + Sync + std::fmt::Debug {
    /// Takes one event (already logged).
    fn plugin_event(&self, event: &PluginEvent);
}

/// A plugin event as the swap history and the event stream show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginRecord<'a> {
    /// The plugin.
    pub plugin: &'a str,
    /// What happened.
    pub action: PluginAction,
    /// The version before, if any.
    pub from: Option<&'a str>,
    /// The version after, if any.
    pub to: Option<&'a str>,
    /// Details: the first batch served, or why it was rejected.
    pub detail: String,
}

impl PluginEvent {
    /// What happened.
    pub fn action(&self) -> PluginAction {
        match self {
            Self::Deployed { .. } => PluginAction::Deployed,
            Self::Rejected { .. } => PluginAction::Rejected,
            Self::Superseded { .. } => PluginAction::Superseded,
            Self::Swapped { .. } => PluginAction::Swapped,
            Self::RolledBack { .. } => PluginAction::RolledBack,
            Self::AutoRolledBack { .. } => PluginAction::AutoRolledBack,
            Self::Shadowing { .. } => PluginAction::Shadowing,
            Self::ShadowAborted { .. } => PluginAction::ShadowAborted,
            Self::Promoted { .. } => PluginAction::Promoted,
        }
    }

    /// The plugin it happened to.
    pub fn plugin(&self) -> &str {
        match self {
            Self::Deployed { plugin, .. }
            | Self::Rejected { plugin, .. }
            | Self::Superseded { plugin, .. }
            | Self::Swapped { plugin, .. }
            | Self::RolledBack { plugin, .. }
            | Self::AutoRolledBack { plugin, .. }
            | Self::Shadowing { plugin, .. }
            | Self::ShadowAborted { plugin, .. }
            | Self::Promoted { plugin, .. } => plugin,
        }
    }

    /// Its history record, or None for an event the history does not keep (a supersession).
    pub fn record(&self) -> Option<PluginRecord<'_>> {
        let (from, to, detail) = match self {
            Self::Deployed { from, to, origin, .. } => (
                Some(from.as_str()),
                Some(to.as_str()),
                format!("validated from {}; serves from the next batch", origin.display()),
            ),
            Self::Rejected { serving, candidate, reason, .. } => {
                (Some(serving.as_str()), candidate.as_deref(), reason.clone())
            }
            Self::Superseded { .. } => return None,
            Self::Swapped { from, to, first_batch, .. } => {
                (Some(from.as_str()), Some(to.as_str()), format!("first batch {first_batch}"))
            }
            Self::RolledBack { from, to, .. } => (
                Some(from.as_str()),
                Some(to.as_str()),
                "requested through the admin API; serves from the next batch".to_string(),
            ),
            Self::AutoRolledBack { from, to, failed_batches, last_failed_batch, .. } => (
                Some(from.as_str()),
                Some(to.as_str()),
                format!("failed {failed_batches} batches in a row, the last {last_failed_batch}"),
            ),
            Self::Shadowing { serving, shadow, promote_after, .. } => (
                Some(serving.as_str()),
                Some(shadow.as_str()),
                match promote_after {
                    Some(n) => format!("runs in the shadow from the next batch; promoted after {n} clean batches"),
                    None => "runs in the shadow from the next batch".to_string(),
                },
            ),
            Self::ShadowAborted { shadow, .. } => (None, Some(shadow.as_str()), "shadow dropped".to_string()),
            Self::Promoted { from, to, batches, automatic, .. } => (
                Some(from.as_str()),
                Some(to.as_str()),
                format!(
                    "{} after {batches} batches in the shadow; serves from the next batch",
                    if *automatic { "promoted by its rule" } else { "promoted" }
                ),
            ),
        };
        Some(PluginRecord { plugin: self.plugin(), action: self.action(), from, to, detail })
    }

    /// Writes its log line.
    pub fn log(&self) {
        match self {
            Self::Deployed { plugin, from, to, load_ms, .. } => tracing::info!(
                plugin = %plugin,
                new = %to,
                serving = %from,
                load_ms,
                "new plugin version validated; it serves from the next batch"
            ),
            Self::Rejected { plugin, serving, class, reason, .. } => {
                tracing::error!(plugin = %plugin, serving = %serving, class, "rejected new plugin version: {reason}");
            }
            Self::Superseded { plugin, version: Superseded::Waiting(origin) } => tracing::info!(
                plugin = %plugin,
                origin = %origin.display(),
                "a waiting plugin version was superseded by a newer one"
            ),
            Self::Superseded { plugin, version: Superseded::Validating(hash) } => tracing::info!(
                plugin = %plugin,
                new = %hash,
                "a newer version arrived while this one was validated; it is not installed"
            ),
            Self::Swapped { plugin, from, to, first_batch } => tracing::info!(
                plugin = %plugin,
                from = %from,
                to = %to,
                first_batch,
                "plugin swapped"
            ),
            Self::RolledBack { plugin, from, to, chosen: true } => tracing::info!(
                plugin = %plugin,
                from = %from,
                to = %to,
                "rollback requested; that version serves from the next batch"
            ),
            Self::RolledBack { plugin, from, to, chosen: false } => tracing::info!(
                plugin = %plugin,
                from = %from,
                to = %to,
                "rollback requested; the previous version serves from the next batch"
            ),
            Self::AutoRolledBack { plugin, from, to, failed_batches, last_failed_batch } => tracing::warn!(
                plugin = %plugin,
                from = %from,
                to = %to,
                failed_batches,
                last_failed_batch,
                "plugin rolled back automatically: the new version failed {failed_batches} batches in a row; deploy a fixed version to go forward (a watched file that held the failing version still does)"
            ),
            Self::Shadowing { plugin, serving, shadow, promote_after } => tracing::info!(
                plugin = %plugin,
                serving = %serving,
                shadow = %shadow,
                promote_after = ?promote_after,
                "new plugin version validated; it runs in the serving one's shadow from the next batch, its output discarded"
            ),
            Self::ShadowAborted { plugin, shadow } => {
                tracing::info!(plugin = %plugin, shadow = %shadow, "shadow dropped")
            }
            Self::Promoted { plugin, from, to, batches, automatic } => tracing::info!(
                plugin = %plugin,
                from = %from,
                to = %to,
                batches,
                automatic,
                "shadow promoted; it serves from the next batch"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_the_history_details_and_skip_supersessions() {
        let swap = PluginEvent::Swapped { plugin: "p".into(), from: "aa".into(), to: "bb".into(), first_batch: 7 };
        let record = swap.record().unwrap();
        assert_eq!((record.action, record.from, record.to), (PluginAction::Swapped, Some("aa"), Some("bb")));
        assert_eq!(record.detail, "first batch 7");
        let waiting = PluginEvent::Superseded { plugin: "p".into(), version: Superseded::Waiting("f.wasm".into()) };
        assert_eq!(waiting.record(), None);
        assert_eq!(PluginAction::AutoRolledBack.name(), "auto_rolled_back");
        assert_eq!(serde_json::to_value(PluginAction::RolledBack).unwrap(), "rolled_back");
    }
}
