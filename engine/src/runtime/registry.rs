//! Which version of each plugin serves the next batch.
//!
//! Invariant: a batch takes a [`Snapshot`] when it starts and runs every partition with the
//! versions in it, so one batch is served by one version of each plugin. `PluginRegistry::install`
//! only changes what the *next* snapshot holds: that is the batch-boundary swap.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::PluginVersion;
use super::event::{PluginEvent, PluginEventSink};
use super::shadow::{PromoteRule, Shadow, ShadowBatch};

/// Why a version cannot replace the serving one, or a rollback cannot happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RegistryError {
    /// Functions the pipeline calls do not fit in the new version (every one listed).
    #[error("{}", join(.0))]
    Incompatible(Vec<Mismatch>),
    /// `rollback_to` found no earlier version with that hash prefix.
    #[error(
        "no earlier version of `{plugin}` has a hash starting with `{hash}` (earlier versions: {})",
        if known.is_empty() { "none".to_string() } else { known.join(", ") }
    )]
    NoEarlierVersion {
        /// The plugin.
        plugin: String,
        /// The prefix asked for.
        hash: String,
        /// Short hashes of the earlier versions kept.
        known: Vec<String>,
    },
}

/// One function the pipeline calls that a new version does not keep.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Mismatch {
    /// It is gone.
    #[error("function `{function}` is missing (the new version exports: {exports})")]
    Missing {
        /// The function.
        function: String,
        /// What the new version exports.
        exports: String,
    },
    /// Its kind changed.
    #[error("function `{function}` changed from {old} to {new}")]
    Kind {
        /// The function.
        function: String,
        /// Its kind before.
        old: String,
        /// Its kind now.
        new: String,
    },
    /// Its input or output type changed.
    #[error("function `{function}` changed its type from {old} to {new}; a running pipeline keeps its record types")]
    Type {
        /// The function.
        function: String,
        /// `input -> output` before.
        old: String,
        /// `input -> output` now.
        new: String,
    },
    /// Its parameters' type changed (the stages' `params` were checked against the old one).
    #[error(
        "function `{function}` changed its parameters from {old} to {new}; the stages' params were checked against the old type"
    )]
    Params {
        /// The function.
        function: String,
        /// The parameters' type before (`none`: it took none).
        old: String,
        /// Now.
        new: String,
    },
}

fn join(mismatches: &[Mismatch]) -> String {
    mismatches.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// How many earlier versions of a plugin are kept for rollbacks.
pub(crate) const MAX_HISTORY: usize = 8;

/// The versions that serve one batch, indexed like the registry's plugins.
pub type Snapshot = Arc<[Arc<PluginVersion>]>;

struct Slot {
    name: String,
    path: PathBuf,
    /// Functions the pipeline calls; a new version must keep each with the same shape.
    required: Vec<String>,
    current: Mutex<Arc<PluginVersion>>,
    /// Versions that served before the current one, oldest first: what a rollback returns to.
    previous: Mutex<Vec<Arc<PluginVersion>>>,
    /// A version running in the current one's shadow (`sluice deploy --shadow`).
    shadow: Mutex<Option<Shadow>>,
    /// The batches each version served, in the order they began serving (the last
    /// [`MAX_HISTORY`] + 1 versions).
    served: Mutex<Vec<Served>>,
}

/// The batches one version served: its lineage, as `sluice status` lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Served {
    /// Its short hash.
    pub(crate) hash: String,
    /// The first and last batch times it served, ms.
    pub(crate) first_batch: u64,
    pub(crate) last_batch: u64,
    /// How many batches.
    pub(crate) batches: u64,
}

/// The plugins of a pipeline and their current versions.
pub struct PluginRegistry {
    slots: Vec<Slot>,
    /// Where plugin events go besides the log (metrics, the dashboard), once running.
    sink: std::sync::OnceLock<Arc<dyn PluginEventSink>>,
}

impl std::fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.slots.iter().map(|s| &s.name)).finish()
    }
}

impl PluginRegistry {
    /// A registry of initial versions, each with the functions the pipeline requires of it.
    pub(crate) fn new(plugins: Vec<(PluginVersion, Vec<String>)>) -> Self {
        let slots = plugins
            .into_iter()
            .map(|(version, required)| Slot {
                name: version.plugin.clone(),
                path: version.path.clone(),
                required,
                current: Mutex::new(Arc::new(version)),
                previous: Mutex::new(Vec::new()),
                shadow: Mutex::new(None),
                served: Mutex::new(Vec::new()),
            })
            .collect();
        Self { slots, sink: std::sync::OnceLock::new() }
    }

    /// Sends plugin events to `sink` from now on (the first sink installed stays).
    pub(crate) fn report_to(&self, sink: Arc<dyn PluginEventSink>) {
        let _ = self.sink.set(sink);
    }

    /// Reports a plugin event, the one place that does: logs it, then hands it to the sink
    /// (counters, history, event stream), if one is installed.
    pub(crate) fn emit(&self, event: PluginEvent) {
        event.log();
        if let Some(sink) = self.sink.get() {
            sink.plugin_event(&event);
        }
    }

    /// Index of the plugin called `name`.
    pub(crate) fn index(&self, name: &str) -> Option<usize> {
        self.slots.iter().position(|slot| slot.name == name)
    }

    /// Names and files of every plugin, by index.
    pub(crate) fn plugins(&self) -> impl Iterator<Item = (usize, &str, &Path)> {
        self.slots.iter().enumerate().map(|(index, slot)| (index, slot.name.as_str(), slot.path.as_path()))
    }

    /// The version serving plugin `index` now.
    pub(crate) fn current(&self, index: usize) -> Arc<PluginVersion> {
        self.slots[index].current.lock().expect("registry lock").clone()
    }

    /// The versions the next batch runs with.
    pub fn snapshot(&self) -> Snapshot {
        self.slots.iter().map(|slot| slot.current.lock().expect("registry lock").clone()).collect()
    }

    /// Checks that `candidate` can replace plugin `index`: every function the pipeline calls
    /// exists with the same kind and the same input and output types.
    pub(crate) fn validate(&self, index: usize, candidate: &PluginVersion) -> Result<(), RegistryError> {
        let slot = &self.slots[index];
        let current = self.current(index);
        let mut problems = Vec::new();
        for name in &slot.required {
            let Some(old) = current.functions.get(name) else {
                continue;
            };
            match candidate.functions.get(name) {
                None => problems.push(Mismatch::Missing { function: name.clone(), exports: candidate.function_list() }),
                Some(new) if new.kind != old.kind => problems.push(Mismatch::Kind {
                    function: name.clone(),
                    old: old.kind.to_string(),
                    new: new.kind.to_string(),
                }),
                Some(new) if new.input != old.input || new.output != old.output => problems.push(Mismatch::Type {
                    function: name.clone(),
                    old: format!("{} -> {}", old.input, old.output),
                    new: format!("{} -> {}", new.input, new.output),
                }),
                Some(_) => {
                    let (old, new) = (current.params.get(name), candidate.params.get(name));
                    if old != new {
                        let show = |p: Option<&sluice_sdk::TypeDesc>| p.map_or("none".to_string(), |p| p.to_string());
                        problems.push(Mismatch::Params { function: name.clone(), old: show(old), new: show(new) });
                    }
                }
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(RegistryError::Incompatible(problems)) }
    }

    /// Makes `version` serve plugin `index` from the next batch on. Returns the version it
    /// replaces, which is kept for [`PluginRegistry::rollback`].
    pub(crate) fn install(&self, index: usize, version: PluginVersion) -> Arc<PluginVersion> {
        self.install_arc(index, Arc::new(version))
    }

    /// [`PluginRegistry::install`] of a version already shared (a promoted shadow).
    fn install_arc(&self, index: usize, version: Arc<PluginVersion>) -> Arc<PluginVersion> {
        let slot = &self.slots[index];
        let mut current = slot.current.lock().expect("registry lock");
        let old = std::mem::replace(&mut *current, version);
        let mut previous = slot.previous.lock().expect("registry lock");
        previous.push(old.clone());
        // Keep a bounded history: each version holds a compiled module.
        if previous.len() > MAX_HISTORY {
            previous.remove(0);
        }
        old
    }

    /// Makes the version that served before the current one serve again from the next batch.
    /// Returns (the version rolled back from, the version now serving), or None without history.
    pub(crate) fn rollback(&self, index: usize) -> Option<(Arc<PluginVersion>, Arc<PluginVersion>)> {
        let slot = &self.slots[index];
        let mut current = slot.current.lock().expect("registry lock");
        let back = slot.previous.lock().expect("registry lock").pop()?;
        let from = std::mem::replace(&mut *current, back.clone());
        Some((from, back))
    }

    /// Makes the earlier version whose content hash starts with `hash` serve again from the
    /// next batch; the current one joins the history (so it can be chosen again). Returns
    /// (from, to), or why not.
    pub(crate) fn rollback_to(
        &self,
        index: usize,
        hash: &str,
    ) -> Result<(Arc<PluginVersion>, Arc<PluginVersion>), RegistryError> {
        let slot = &self.slots[index];
        let mut current = slot.current.lock().expect("registry lock");
        let mut previous = slot.previous.lock().expect("registry lock");
        let Some(position) = previous.iter().rposition(|v| !hash.is_empty() && v.hash.starts_with(hash)) else {
            return Err(RegistryError::NoEarlierVersion {
                plugin: slot.name.clone(),
                hash: hash.to_string(),
                known: previous.iter().map(|v| v.short_hash().to_string()).collect(),
            });
        };
        let back = previous.remove(position);
        let from = std::mem::replace(&mut *current, back.clone());
        previous.push(from.clone());
        Ok((from, back))
    }

    /// The versions that served plugin `index` before the current one, oldest first.
    pub(crate) fn history(&self, index: usize) -> Vec<Arc<PluginVersion>> {
        self.slots[index].previous.lock().expect("registry lock").clone()
    }

    /// Notes that version `hash` of plugin `index` served batch `time`.
    pub(crate) fn note_served(&self, index: usize, hash: &str, time: u64) {
        let mut served = self.slots[index].served.lock().expect("registry lock");
        match served.last_mut() {
            Some(last) if last.hash == hash => {
                last.last_batch = time;
                last.batches += 1;
            }
            _ => {
                served.push(Served { hash: hash.to_string(), first_batch: time, last_batch: time, batches: 1 });
                if served.len() > MAX_HISTORY + 1 {
                    served.remove(0);
                }
            }
        }
    }

    /// The batches each recent version of plugin `index` served, oldest first.
    pub(crate) fn served(&self, index: usize) -> Vec<Served> {
        self.slots[index].served.lock().expect("registry lock").clone()
    }

    /// Runs `version` (validated) in the shadow of plugin `index`'s serving one from the next
    /// batch, replacing any shadow it had.
    pub(crate) fn set_shadow(&self, index: usize, version: PluginVersion, rule: Option<PromoteRule>) {
        let against = self.current(index).short_hash().to_string();
        *self.slots[index].shadow.lock().expect("registry lock") = Some(Shadow::new(Arc::new(version), rule, against));
    }

    /// Plugin `index`'s shadow, as it stands.
    pub(crate) fn shadow(&self, index: usize) -> Option<Shadow> {
        self.slots[index].shadow.lock().expect("registry lock").clone()
    }

    /// Every plugin's shadow version (None: no shadow), for one batch.
    pub(crate) fn shadow_versions(&self) -> Vec<Option<Arc<PluginVersion>>> {
        self.slots
            .iter()
            .map(|slot| slot.shadow.lock().expect("registry lock").as_ref().map(|s| s.version.clone()))
            .collect()
    }

    /// Records one batch of plugin `index`'s shadow, if it is still version `id`; whether its
    /// rule says promote now.
    pub(crate) fn record_shadow(&self, index: usize, id: u64, batch: ShadowBatch) -> bool {
        let mut shadow = self.slots[index].shadow.lock().expect("registry lock");
        match shadow.as_mut() {
            Some(shadow) if shadow.version.id == id => shadow.record(batch),
            _ => false,
        }
    }

    /// Drops plugin `index`'s shadow; the version it was.
    pub(crate) fn abort_shadow(&self, index: usize) -> Option<Arc<PluginVersion>> {
        self.slots[index].shadow.lock().expect("registry lock").take().map(|s| s.version)
    }

    /// Makes plugin `index`'s shadow serve from the next batch (the serving one is kept for a
    /// rollback) and reports it (`automatic`: its rule did it); (the version it replaces, the
    /// shadow), or None without a shadow.
    pub(crate) fn promote(&self, index: usize, automatic: bool) -> Option<(Arc<PluginVersion>, Arc<PluginVersion>)> {
        let shadow = self.slots[index].shadow.lock().expect("registry lock").take()?;
        let old = self.install_arc(index, shadow.version.clone());
        self.emit(PluginEvent::Promoted {
            plugin: self.slots[index].name.clone(),
            from: old.short_hash().to_string(),
            to: shadow.version.short_hash().to_string(),
            batches: shadow.batches,
            automatic,
        });
        Some((old, shadow.version))
    }
}
