//! Hot swap from the file system: watch every plugin file, and when one changes, load and
//! validate the new content off the hot path, then install it for the next batch.
//!
//! The watcher watches each plugin's directory (so a file replaced by rename is seen too) and
//! waits for [`QUIET`] without events before reading, so a file being copied is read once, whole.
//! A file whose content hash equals the serving version's is ignored. A file that fails to load
//! or validate is rejected with a log line and the serving version stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use rustc_hash::FxHashSet;

use super::PluginRuntime;
use super::registry::PluginRegistry;

/// How long a plugin file must stay unchanged before it is read.
pub const QUIET: Duration = Duration::from_millis(150);

/// Keeps the watch alive; dropping it stops watching.
pub struct PluginWatcher {
    _watcher: notify::RecommendedWatcher,
}

impl std::fmt::Debug for PluginWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginWatcher").finish_non_exhaustive()
    }
}

/// Starts watching every plugin file of `registry`.
pub fn watch(runtime: PluginRuntime, registry: Arc<PluginRegistry>) -> notify::Result<PluginWatcher> {
    let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let mut watcher = notify::recommended_watcher(tx)?;
    let mut files: Vec<(usize, PathBuf)> = Vec::new();
    let mut dirs = FxHashSet::default();
    for (index, _, path) in registry.plugins() {
        let path = absolute(path);
        if let Some(dir) = path.parent()
            && dirs.insert(dir.to_path_buf())
        {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
        files.push((index, path));
    }
    std::thread::Builder::new()
        .name("sluice-plugin-watch".into())
        .spawn(move || {
            while let Ok(event) = rx.recv() {
                let mut changed = FxHashSet::default();
                collect(&files, event, &mut changed);
                // Wait for the writer to finish: read only after a quiet period.
                loop {
                    match rx.recv_timeout(QUIET) {
                        Ok(event) => collect(&files, event, &mut changed),
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                for index in changed {
                    reload(&runtime, &registry, index);
                }
            }
        })
        .map_err(|err| notify::Error::generic(&err.to_string()))?;
    Ok(PluginWatcher { _watcher: watcher })
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn collect(files: &[(usize, PathBuf)], event: notify::Result<notify::Event>, changed: &mut FxHashSet<usize>) {
    let Ok(event) = event else { return };
    if event.kind.is_access() {
        return;
    }
    for path in &event.paths {
        for (index, file) in files {
            if path == file {
                changed.insert(*index);
            }
        }
    }
}

/// Loads the file of plugin `index` and installs it if it is new and valid.
pub fn reload(runtime: &PluginRuntime, registry: &PluginRegistry, index: usize) {
    let current = registry.current(index);
    let name = current.plugin.clone();
    let path = current.path.clone();
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(plugin = %name, path = %path.display(), serving = %current.short_hash(), "plugin file removed; the serving version stays");
            return;
        }
        Err(err) => {
            tracing::warn!(plugin = %name, path = %path.display(), %err, "cannot read the plugin file; the serving version stays");
            return;
        }
    };
    // The outcome is logged by `deploy`.
    let _ = deploy(runtime, registry, index, &path, &bytes);
}

/// What a deploy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deployed {
    /// The new version serves from the next batch; its short hash.
    Installed(String),
    /// The content equals the serving version's: nothing to do.
    Unchanged(String),
}

/// Loads `bytes` as a new version of plugin `index` (`origin` names it in messages), validates
/// it against what the pipeline uses, and installs it for the next batch. A rejection is logged
/// and returned; the serving version stays. Shared by the file watcher and the admin API.
pub fn deploy(
    runtime: &PluginRuntime,
    registry: &PluginRegistry,
    index: usize,
    origin: &Path,
    bytes: &[u8],
) -> Result<Deployed, String> {
    let current = registry.current(index);
    let name = current.plugin.clone();
    let started = std::time::Instant::now();
    let candidate = match runtime.load_bytes(&name, origin, bytes) {
        Ok(candidate) => candidate,
        Err(err) => {
            tracing::error!(plugin = %name, serving = %current.short_hash(), "rejected new plugin version: {err}");
            registry.note(&name, "rejected", Some(current.short_hash()), None, err.to_string());
            return Err(err.to_string());
        }
    };
    if candidate.hash == current.hash {
        return Ok(Deployed::Unchanged(candidate.short_hash().to_string()));
    }
    if let Err(reason) = registry.validate(index, &candidate) {
        tracing::error!(
            plugin = %name,
            new = %candidate.short_hash(),
            serving = %current.short_hash(),
            "rejected new plugin version: {reason}"
        );
        registry.note(&name, "rejected", Some(current.short_hash()), Some(candidate.short_hash()), reason.clone());
        return Err(reason);
    }
    let hash = candidate.short_hash().to_string();
    registry.install(index, candidate);
    registry.note(
        &name,
        "deployed",
        Some(current.short_hash()),
        Some(&hash),
        format!("validated from {}; serves from the next batch", origin.display()),
    );
    tracing::info!(
        plugin = %name,
        new = %hash,
        serving = %current.short_hash(),
        load_ms = crate::config::millis(started.elapsed()),
        "new plugin version validated; it serves from the next batch"
    );
    Ok(Deployed::Installed(hash))
}
