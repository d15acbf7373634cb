//! A pipeline ready to run: the parsed file, its plugins loaded and validated, its graph
//! resolved. [`Pipeline::load`] is what `sluice check` runs; [`Pipeline::run`] what `sluice run`
//! runs after it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;

use crate::batch::scheduler::{Checkpointing, RunReport, Scheduler};
use crate::batch::{self, Batch, Clock, DirectoryInput};
use crate::checkpoint::{self, CheckpointError, SourcePosition, pending};
use crate::config::{ConfigError, ConfigErrors, PipelineFile};
use crate::graph::Graph;
use crate::graph::GraphState;
use crate::metrics::{Metrics, server};
use crate::receiver::Receiver;
use crate::receiver::rate::PidEstimator;
use crate::runtime::registry::PluginRegistry;
use crate::runtime::{PluginRuntime, PluginVersion, watch as plugin_watch};
use crate::sources::SourceConfig;

/// How to run a pipeline: process knobs, not pipeline content.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Worker threads for partitions (default: one per core).
    pub workers: usize,
    /// Watch plugin files and hot-swap new versions.
    pub watch_plugins: bool,
    /// Serve metrics and the admin API here (the next free port if taken); None: do not.
    pub admin_addr: Option<std::net::SocketAddr>,
    /// Bearer token the admin API requires (needed off loopback).
    pub admin_token: Option<String>,
    /// Set the checkpoint directory aside and start over instead of resuming.
    pub fresh: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            watch_plugins: true,
            admin_addr: None,
            admin_token: None,
            fresh: false,
        }
    }
}

/// A validated pipeline.
#[derive(Debug)]
pub struct Pipeline {
    /// The pipeline file.
    pub file: PipelineFile,
    /// Its resolved graph.
    pub graph: Graph,
    /// Its plugins and their serving versions.
    pub registry: Arc<PluginRegistry>,
    runtime: Option<PluginRuntime>,
}

impl Pipeline {
    /// Parses and validates `path`, loads every plugin and checks every stage against it.
    /// Returns every problem found, each naming the file and field.
    pub fn load(path: &Path, runtime: &PluginRuntime) -> Result<Self, ConfigErrors> {
        Self::load_with(path, runtime, false)
    }

    /// What `sluice check` runs: [`Pipeline::load`], and also whether every directory a run
    /// writes can be created and written ([`PipelineFile::check_directories`]). A run does not
    /// ask: a sink that cannot write fails its batch, which a restart replays.
    pub fn check(path: &Path, runtime: &PluginRuntime) -> Result<Self, ConfigErrors> {
        Self::load_with(path, runtime, true)
    }

    fn load_with(path: &Path, runtime: &PluginRuntime, directories: bool) -> Result<Self, ConfigErrors> {
        let file = PipelineFile::load(path)?;
        let mut errors = file.validate();
        if directories {
            errors.extend(file.check_directories());
        }
        let mut versions = Vec::new();
        for (name, plugin_path) in &file.config.plugins {
            let resolved = file.resolve(plugin_path);
            if !resolved.is_file() {
                continue; // reported by validate
            }
            match runtime.load(name, &resolved) {
                Ok(version) => versions.push(version),
                Err(err) => errors.push(ConfigError::new(format!("plugins.{name}"), err.to_string())),
            }
        }
        let mut pipeline = Self::assemble(file, versions, errors)?;
        pipeline.runtime = Some(runtime.clone());
        Ok(pipeline)
    }

    /// A pipeline from a parsed file and plugin versions made elsewhere (e.g. native twins for
    /// benchmarks). Plugin files named in the file are not read; hot swap is off.
    pub fn from_versions(file: PipelineFile, versions: Vec<PluginVersion>) -> Result<Self, ConfigErrors> {
        let errors = file.validate().into_iter().filter(|e| !e.location.starts_with("plugins.")).collect();
        Self::assemble(file, versions, errors)
    }

    fn assemble(
        file: PipelineFile,
        versions: Vec<PluginVersion>,
        mut errors: Vec<ConfigError>,
    ) -> Result<Self, ConfigErrors> {
        let graph = {
            let by_name: BTreeMap<String, (usize, &PluginVersion)> = versions
                .iter()
                .enumerate()
                .map(|(index, version)| (version.plugin.clone(), (index, version)))
                .collect();
            if errors.is_empty() {
                match Graph::build(&file, &by_name) {
                    Ok(graph) => Some(graph),
                    Err(more) => {
                        errors.extend(more);
                        None
                    }
                }
            } else {
                // Still check what can be checked, to report everything at once.
                if let Err(more) = Graph::build(&file, &by_name) {
                    errors.extend(more);
                }
                None
            }
        };
        let Some(graph) = graph.filter(|_| errors.is_empty()) else {
            return Err(ConfigErrors { file: file.path.clone(), errors });
        };
        let plugins = versions
            .into_iter()
            .map(|version| {
                let required = file
                    .config
                    .stages
                    .iter()
                    .filter(|s| s.plugin.as_deref() == Some(version.plugin.as_str()))
                    .flat_map(|s| s.function.iter().chain(&s.inverse).chain(&s.timestamp).cloned())
                    .collect();
                (version, required)
            })
            .collect();
        Ok(Self { file, graph, registry: Arc::new(PluginRegistry::new(plugins)), runtime: None })
    }

    /// Runs until every source has finished or `stop` turns true, then finishes the batches
    /// already received, flushes the sinks and returns. Blocks the calling thread.
    pub fn run(&self, options: &RunOptions, stop: watch::Receiver<bool>) -> std::io::Result<RunReport> {
        self.run_with_metrics(options, stop, Arc::new(Metrics::default()))
    }

    /// As [`Pipeline::run`], counting into `metrics`.
    pub fn run_with_metrics(
        &self,
        options: &RunOptions,
        stop: watch::Receiver<bool>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<RunReport> {
        let config = &self.file.config;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(options.workers.max(1))
            .thread_name(|i| format!("sluice-worker-{i}"))
            .build()
            .map_err(std::io::Error::other)?;
        let receivers: Vec<Arc<Receiver>> = config
            .sources
            .iter()
            .enumerate()
            .map(|(index, source)| Arc::new(Receiver::new(index, source.name())))
            .collect();
        let resumed = self.resume(options).map_err(std::io::Error::other)?;
        let _watcher = match (&self.runtime, options.watch_plugins) {
            (Some(runtime), true) => {
                Some(plugin_watch::watch(runtime.clone(), self.registry.clone()).map_err(std::io::Error::other)?)
            }
            _ => None,
        };
        let events = &metrics.events;
        let sinks: Vec<_> =
            self.graph.sinks.iter().map(|node| node.config.build(|p| self.file.resolve(p), events)).collect();
        let dead_letters: Vec<_> =
            self.graph.dead_letters.iter().map(|c| c.build(|p| self.file.resolve(p), events)).collect();
        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sluice-io")
            .enable_all()
            .build()?;
        let (batches_tx, batches_rx) = std::sync::mpsc::channel::<Batch>();
        let mut directories = Vec::new();
        let mut backpressure = BTreeMap::new();
        for (source, receiver) in config.sources.iter().zip(&receivers) {
            match source {
                SourceConfig::Socket(socket) => {
                    receiver.set_rate(socket.max_rate.map(|r| r as f64));
                    if config.pipeline.backpressure {
                        let estimator = PidEstimator::new(config.pipeline.batch_interval);
                        backpressure.insert(receiver.source, (estimator, socket.max_rate));
                    }
                    io.spawn(socket.build(receiver.clone()).run(stop.clone()));
                }
                SourceConfig::Directory(dir) => {
                    let taken = resumed.as_ref().map(|r| r.taken(receiver.source)).unwrap_or_default();
                    directories.push(DirectoryInput {
                        source: receiver.source,
                        path: self.file.resolve(&dir.path),
                        taken,
                    });
                }
            }
        }
        metrics.watch_receivers(&receivers);
        self.registry.report_to(metrics.events.clone());
        if let Some(addr) = options.admin_addr {
            let listener = server::bind(addr, options.admin_token.as_deref()).map_err(std::io::Error::other)?;
            let bound = listener.local_addr()?;
            let admin = Arc::new(server::Admin {
                pipeline: config.pipeline.name.clone(),
                metrics: metrics.clone(),
                registry: self.registry.clone(),
                runtime: self.runtime.clone(),
                receivers: receivers.clone(),
                token: options.admin_token.clone(),
                batch_interval_ms: crate::config::millis(config.pipeline.batch_interval),
                stages: self
                    .graph
                    .stages
                    .iter()
                    .flat_map(|stage| match &stage.operator {
                        crate::graph::Operator::ReduceByKey { fused: Some(pre), .. } => {
                            vec![(pre.as_ref(), Some(stage.name.clone())), (stage, None)]
                        }
                        _ => vec![(stage, None)],
                    })
                    .map(|(stage, fused_into)| {
                        let file = config.stages.iter().find(|s| s.name == stage.name);
                        let function =
                            file.and_then(|s| Some(format!("{}::{}", s.plugin.as_ref()?, s.function.as_ref()?)));
                        (stage.name.clone(), stage.op.name().to_string(), function, fused_into)
                    })
                    .collect(),
            });
            tracing::info!(address = %format!("http://{bound}"), "dashboard at /, metrics at /metrics, admin API at /api");
            let _guard = io.enter();
            io.spawn(async move {
                if let Err(err) = server::serve(listener, admin).await {
                    tracing::error!("admin server stopped: {err}");
                }
            });
        }
        // Batches a crash left unfinished run first, with their own times.
        let (after, state, checkpointing) = match resumed {
            Some(resumed) => {
                for batch in resumed.replay {
                    let _ = batches_tx.send(batch);
                }
                (resumed.after, resumed.state, Some(resumed.checkpointing))
            }
            None => (0, GraphState::default(), None),
        };
        let checkpoint_dir = checkpointing.as_ref().map(|c| c.dir.clone());
        let directory_paths = directories.iter().map(|d| (d.source, d.path.clone())).collect();
        let clock = Clock {
            receivers: receivers.clone(),
            block_interval: config.pipeline.block_interval,
            batch_interval: config.pipeline.batch_interval,
            checkpoint_dir: checkpoint_dir.clone(),
            wal: config.sources.iter().map(|s| matches!(s, SourceConfig::Socket(s) if s.wal)).collect(),
            directories,
            after,
            metrics: metrics.clone(),
            stop: stop.clone(),
            hold_bytes: config.pipeline.backpressure.then_some(batch::BACKPRESSURE_BATCH_BYTES),
        };
        std::thread::Builder::new().name("sluice-clock".into()).spawn(move || batch::generate(clock, batches_tx))?;
        tracing::info!(
            pipeline = %config.pipeline.name,
            sources = receivers.len(),
            stages = self.graph.stages.len(),
            sinks = sinks.len(),
            workers = pool.current_num_threads(),
            checkpoints = %checkpoint_dir.as_ref().map_or("off".to_string(), |d| d.display().to_string()),
            "pipeline running"
        );
        let scheduler = Scheduler {
            graph: &self.graph,
            registry: &self.registry,
            sinks,
            dead_letters,
            pool: &pool,
            metrics: &metrics,
            receivers: receivers.clone(),
            directories: directory_paths,
            checkpointing,
            backpressure,
            rollback_after: config.pipeline.rollback_after,
        };
        let report = scheduler.run(state, batches_rx);
        io.shutdown_background();
        Ok(report)
    }

    /// With `checkpoint_dir`: checkpointing, and the state, positions and unfinished batches to
    /// resume from (empty on a first start); `None` without checkpoints. A checkpoint this
    /// pipeline cannot use is an error, never a reset.
    fn resume(&self, options: &RunOptions) -> Result<Option<Resumed>, CheckpointError> {
        let config = &self.file.config;
        let Some(dir) = config.pipeline.checkpoint_dir.as_ref().map(|d| self.file.resolve(d)) else {
            return Ok(None);
        };
        if options.fresh
            && let Some(aside) = checkpoint::discard(&dir)?
        {
            tracing::warn!(checkpoint = %dir.display(), moved_to = %aside.display(), "starting fresh: the old checkpoint was set aside");
        }
        let batch_interval_ms = crate::config::millis(config.pipeline.batch_interval);
        let mut positions: Vec<SourcePosition> = config
            .sources
            .iter()
            .map(|s| SourcePosition { name: s.name().to_string(), files: Default::default() })
            .collect();
        let (after, state, last_good) = match checkpoint::load_latest(&dir)? {
            None => (0, GraphState::default(), Vec::new()),
            Some((path, checkpoint)) => {
                let incompatible = |reason: String| CheckpointError::Incompatible { path: path.clone(), reason };
                if checkpoint.pipeline != config.pipeline.name {
                    return Err(incompatible(format!(
                        "it belongs to pipeline `{}`, this is `{}`",
                        checkpoint.pipeline, config.pipeline.name
                    )));
                }
                if checkpoint.batch_interval_ms != batch_interval_ms {
                    return Err(incompatible(format!(
                        "it was written with batch_interval {} ms, the pipeline now has {batch_interval_ms} ms",
                        checkpoint.batch_interval_ms
                    )));
                }
                // Logged blocks and file lists name sources by position: the order must hold.
                for (index, saved) in checkpoint.sources.iter().enumerate() {
                    if positions.get(index).is_some_and(|p| p.name != saved.name)
                        && positions.iter().any(|p| p.name == saved.name)
                    {
                        return Err(incompatible(format!(
                            "source `{}` was source #{} and is #{} now; keep the order of [[sources]] (add new ones at the end)",
                            saved.name,
                            index + 1,
                            positions.iter().position(|p| p.name == saved.name).unwrap_or(0) + 1
                        )));
                    }
                }
                for saved in checkpoint.sources {
                    match positions.iter_mut().find(|p| p.name == saved.name) {
                        Some(position) => position.files = saved.files,
                        None if saved.files.is_empty() => {}
                        None => {
                            return Err(incompatible(format!(
                                "source `{}` has a position in it but is not in the pipeline",
                                saved.name
                            )));
                        }
                    }
                }
                let state = GraphState::import(&self.graph, checkpoint.stages.clone())
                    .map_err(|problems| incompatible(problems.join("; ")))?;
                tracing::info!(
                    checkpoint = %path.display(),
                    batch = checkpoint.batch_time,
                    stages = checkpoint.stages.len(),
                    "resuming after the checkpointed batch"
                );
                (checkpoint.batch_time, state, checkpoint.stages)
            }
        };
        // Logged blocks and file lists name sources by position, also before any checkpoint:
        // `sources.txt` holds the order they were logged with.
        let manifest = dir.join("sources.txt");
        let names: Vec<&str> = config.sources.iter().map(|s| s.name()).collect();
        if let Ok(text) = std::fs::read_to_string(&manifest) {
            for (index, logged) in text.lines().enumerate() {
                if names.get(index) != Some(&logged) && names.contains(&logged) {
                    return Err(CheckpointError::Incompatible {
                        path: manifest.clone(),
                        reason: format!(
                            "source `{logged}` was source #{} and is #{} now; keep the order of [[sources]] (add new ones at the end)",
                            index + 1,
                            names.iter().position(|n| *n == logged).unwrap_or(0) + 1
                        ),
                    });
                }
            }
        }
        std::fs::create_dir_all(&dir).map_err(|source| CheckpointError::Io { path: dir.clone(), source })?;
        let listed: String = names.iter().map(|n| format!("{n}\n")).collect();
        checkpoint::write_durably(&dir.join(".sources.txt.tmp"), &manifest, listed.as_bytes())
            .map_err(|source| CheckpointError::Io { path: manifest.clone(), source })?;
        let mut replay = Vec::new();
        let mut last = after;
        for pending in pending::load(&dir, after)? {
            let mut taken = BTreeMap::new();
            for (source, files) in pending.files {
                if source < positions.len() {
                    taken.insert(source, files);
                }
            }
            last = pending.time;
            replay.push(Batch {
                time_ms: pending.time,
                blocks: pending.blocks.into_iter().filter(|b| b.source < positions.len()).collect(),
                files: taken,
                replayed: true,
                ..Batch::default()
            });
        }
        if !replay.is_empty() {
            tracing::info!(batches = replay.len(), "replaying the batches the last run did not finish");
        }
        let checkpointing = Checkpointing {
            dir,
            pipeline: config.pipeline.name.clone(),
            batch_interval_ms,
            positions,
            last_good,
            every: config.pipeline.checkpoint_every,
            since: 0,
        };
        Ok(Some(Resumed { after: last, state, checkpointing, replay }))
    }
}

/// What a run resumes from.
struct Resumed {
    /// The last batch time of the earlier run (checkpointed or replayed).
    after: u64,
    state: GraphState,
    checkpointing: Checkpointing,
    replay: Vec<Batch>,
}

impl Resumed {
    /// Files a directory source must not take again: checkpointed or in a replayed batch.
    fn taken(&self, source: usize) -> std::collections::BTreeSet<String> {
        let mut taken = self.checkpointing.positions[source].files.clone();
        for batch in &self.replay {
            taken.extend(batch.files.get(&source).into_iter().flatten().cloned());
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swap_must_keep_every_function_the_pipeline_uses_timestamp_and_inverse_included() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipeline.toml");
        std::fs::write(
            &path,
            "[pipeline]\nname = \"t\"\n[plugins]\nclicks = \"unused.wasm\"\n\
             [[sources]]\nname = \"lines\"\ntype = \"socket\"\naddress = \"127.0.0.1:9\"\n\
             [[stages]]\nname = \"parsed\"\ninput = \"lines\"\nop = \"flat_map\"\nplugin = \"clicks\"\nfunction = \"parse\"\n\
             [[stages]]\nname = \"sessions\"\ninput = \"parsed\"\nop = \"event_window\"\nplugin = \"clicks\"\n\
             timestamp = \"click_time\"\ngap = \"30s\"\n\
             [[sinks]]\nname = \"out\"\ninput = \"sessions\"\ntype = \"print\"\n",
        )
        .unwrap();
        let file = PipelineFile::load(&path).unwrap();
        let all = [sessionize::__sluice_parse, sessionize::__sluice_click_time];
        let pipeline = Pipeline::from_versions(file, vec![PluginRuntime::native("clicks", &all)]).unwrap();
        let without_timestamp = PluginRuntime::native("clicks", &[sessionize::__sluice_parse]);
        let reason = pipeline.registry.validate(0, &without_timestamp).unwrap_err();
        assert!(reason.contains("function `click_time` is missing"), "{reason}");
        assert!(pipeline.registry.validate(0, &PluginRuntime::native("clicks", &all)).is_ok());
    }
}
