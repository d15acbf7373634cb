//! Hot swap from the file system: watch every plugin file, and when one changes, hand its new
//! content to that plugin's deploy lane (`runtime/deploy.rs`), which loads, validates and
//! installs it for the next batch.
//!
//! The watcher watches each plugin's directory (so a file replaced by rename is seen too) and
//! waits for [`QUIET`] without events before reading, so a file being copied is read once, whole.
//! It never loads a plugin itself: a hostile file holds its own lane, not the watcher.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use rustc_hash::FxHashSet;

use super::deploy::Deployer;
use super::registry::PluginRegistry;

/// How long a plugin file must stay unchanged before it is read.
pub(crate) const QUIET: Duration = Duration::from_millis(150);

/// Keeps the watch alive; dropping it stops watching.
pub(crate) struct PluginWatcher {
    _watcher: notify::RecommendedWatcher,
}

impl std::fmt::Debug for PluginWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginWatcher").finish_non_exhaustive()
    }
}

/// Starts watching every plugin file of `registry`, deploying new content through `deployer`.
pub(crate) fn watch(registry: Arc<PluginRegistry>, deployer: Arc<Deployer>) -> notify::Result<PluginWatcher> {
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
                    if let Some((_, path)) = files.iter().find(|(i, _)| *i == index) {
                        reload(&registry, &deployer, index, path);
                    }
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

/// Reads the file of plugin `index` (its path in the pipeline file, whatever the serving
/// version came from: an upload has no file) and hands it to the plugin's deploy lane.
fn reload(registry: &PluginRegistry, deployer: &Deployer, index: usize, path: &Path) {
    let current = registry.current(index);
    match std::fs::read(path) {
        Ok(bytes) => deployer.submit_detached(index, path.to_path_buf(), bytes),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(plugin = %current.plugin, path = %path.display(), serving = %current.short_hash(), "plugin file removed; the serving version stays");
        }
        Err(err) => {
            tracing::warn!(plugin = %current.plugin, path = %path.display(), %err, "cannot read the plugin file; the serving version stays");
        }
    }
}
