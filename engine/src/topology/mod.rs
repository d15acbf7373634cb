//! The running topology of one pipeline: builds every component from a loaded [`Pipeline`] —
//! worker pool, I/O runtime, receivers and sources, sinks, plugin deploy lanes and file watcher,
//! the admin server, checkpoint resume — then runs the clock on its own thread and the scheduler
//! on the caller's, and tears everything down when the scheduler returns.
//!
//! It owns wiring and life-cycle only: what a source, sink, stage or checkpoint does is in its
//! own folder. Nothing here looks at a source's or sink's kind.

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_sdk::TypeDesc;
use tokio::sync::watch;

use crate::admin;
use crate::batch::keyed::KeyedStates;
use crate::batch::scheduler::{Checkpointing, RunReport, Scheduler};
use crate::batch::{self, Batch, Clock};
use crate::batch_log::BatchLog;
use crate::checkpoint::CheckpointError;
use crate::checkpoint::resume::{self, Expected, Resumed};
use crate::graph::{DeadLetter, GraphState};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::receiver::Receiver;
use crate::receiver::rate::PidEstimator;
use crate::runtime::deploy::Deployer;
use crate::runtime::watch as plugin_watch;
use crate::sinks::{Sink, SinkConfig, SinkContext};
use crate::sources::{self, SourceConfig, SourceContext, Sources};

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
    /// The admin API's certificate and key, to serve HTTPS (None: plain HTTP).
    pub admin_tls: Option<admin::TlsFiles>,
    /// Largest body a deploy may upload, bytes (larger: 413).
    pub max_upload: usize,
    /// Set the checkpoint directory aside and start over instead of resuming.
    pub fresh: bool,
    /// In a cluster, this process's member name (`--member`), over `cluster.member`.
    pub member: Option<String>,
}

/// A pipeline that cannot start (once running, a batch that stops it is the `RunReport`'s `fatal`).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The worker pool could not be made.
    #[error(transparent)]
    Pool(#[from] rayon::ThreadPoolBuildError),
    /// The checkpoint cannot be resumed from (or its directory used).
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Plugin files cannot be watched.
    #[error(transparent)]
    Watch(#[from] notify::Error),
    /// The admin server cannot serve where asked.
    #[error(transparent)]
    Admin(#[from] admin::ServeError),
    /// The admin server's certificate files cannot serve HTTPS.
    #[error(transparent)]
    AdminTls(#[from] admin::TlsError),
    /// A source cannot start.
    #[error(transparent)]
    Source(#[from] sources::StartError),
    /// This process cannot join its cluster (the store fails, or the cluster serves a plugin
    /// version it cannot load).
    #[error(transparent)]
    Cluster(#[from] crate::cluster::JoinError),
    /// A cluster's shuffle cannot write to its repartition topic.
    #[error("the cluster's shuffle: {0}")]
    Shuffle(String),
    /// A runtime, a thread or a socket could not be made.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            watch_plugins: true,
            admin_addr: None,
            admin_token: None,
            admin_tls: None,
            max_upload: crate::runtime::MAX_PLUGIN_BYTES,
            fresh: false,
            member: None,
        }
    }
}

impl Pipeline {
    /// Runs until every source has finished or `stop` turns true, then finishes the batches
    /// already received, flushes the sinks and returns. Blocks the calling thread.
    pub fn run(&self, options: &RunOptions, stop: watch::Receiver<bool>) -> Result<RunReport, RunError> {
        run(self, options, stop, Arc::new(Metrics::default()))
    }
}

/// Runs `pipeline` as [`Pipeline::run`] does, counting into `metrics`.
fn run(
    pipeline: &Pipeline,
    options: &RunOptions,
    stop: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) -> Result<RunReport, RunError> {
    let config = &pipeline.file.config;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.workers.max(1))
        .thread_name(|i| format!("sluice-worker-{i}"))
        .build()?;
    let checkpoint_dir = config.pipeline.checkpoint_dir.as_ref().map(|d| pipeline.file.resolve(d));
    let resumed = match &checkpoint_dir {
        Some(dir) => {
            let names: Vec<&str> = config.sources.iter().map(SourceConfig::name).collect();
            let expected = Expected {
                pipeline: &config.pipeline.name,
                batch_interval_ms: crate::fields::millis(config.pipeline.batch_interval),
                sources: &names,
            };
            resume::resume(dir, &expected, options.fresh)?
        }
        None => Resumed::default(),
    };
    let state = GraphState::import(&pipeline.graph, resumed.stages.clone())
        .map_err(|problems| incompatible_state(&resumed, problems))?;
    let deployer = match &pipeline.runtime {
        Some(runtime) => Some(Arc::new(Deployer::start(runtime.clone(), pipeline.registry.clone())?)),
        None => None,
    };
    let (membership, agent) = join_cluster(pipeline, options)?;
    let _watcher = match (&deployer, options.watch_plugins && agent.is_none()) {
        (Some(deployer), true) => Some(plugin_watch::watch(pipeline.registry.clone(), deployer.clone())?),
        _ => None,
    };
    if agent.is_some() && options.watch_plugins {
        tracing::info!("a cluster member does not watch its plugin files: `sluice deploy` to any member swaps on all");
    }
    let events = &metrics.events;
    let pipeline_name = config.pipeline.name.as_str();
    let in_cluster = config.cluster.is_some();
    // A sink that cannot open yet (a directory in the way, a database still starting) is not
    // fatal here: its writes retry, and what still fails then stops the run.
    let open = |config: &SinkConfig, ty: &TypeDesc| {
        let context = SinkContext { pipeline: pipeline_name, ty, events, in_cluster };
        let mut sink = config.build(|p| pipeline.file.resolve(p), &context);
        if let Err(err) = sink.open() {
            tracing::warn!(sink = %config.name(), "cannot open the sink yet: {err}; its writes will retry");
        }
        sink
    };
    let graph = &pipeline.graph;
    let sinks: Vec<Box<dyn Sink>> =
        graph.sinks.iter().map(|node| open(&node.config, &graph.streams[node.input].ty)).collect();
    let letter = DeadLetter::type_desc();
    let dead_letters: Vec<Box<dyn Sink>> = graph.dead_letters.iter().map(|config| open(config, &letter)).collect();
    let io =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name("sluice-io").enable_all().build()?;
    let receivers: Vec<Arc<Receiver>> =
        config.sources.iter().enumerate().map(|(index, s)| Arc::new(Receiver::new(index, s.name()))).collect();
    let sources = start_sources(
        pipeline,
        &resumed,
        &receivers,
        &io,
        &stop,
        &metrics,
        Kept { checkpoint_dir: checkpoint_dir.as_ref(), cluster: membership.as_ref() },
    )?;
    let mut backpressure = BTreeMap::new();
    if config.pipeline.backpressure {
        for (index, source) in config.sources.iter().enumerate() {
            if source.adapts_rate() {
                backpressure.insert(index, (PidEstimator::new(config.pipeline.batch_interval), source.max_rate()));
            }
        }
    }
    metrics.watch_receivers(&receivers);
    pipeline.registry.report_to(metrics.clone());
    if let Some(addr) = options.admin_addr {
        let swaps = Swaps { deployer: deployer.clone(), agent: agent.clone() };
        serve_admin(pipeline, options, addr, &metrics, swaps, &receivers, &io)?;
    }
    if let Some(agent) = &agent {
        agent.start(receivers.clone(), metrics.clone(), stop.clone())?;
    }
    let (batches_tx, batches_rx) = std::sync::mpsc::channel::<Batch>();
    // Batches a crash left unfinished run first, with their own times; their input is
    // replayed by their sources when they run.
    for pending in resumed.pending {
        let _ = batches_tx.send(Batch { time_ms: pending.time, logged: Some(pending.inputs), ..Batch::default() });
    }
    let clock = Clock {
        sources: sources.clone(),
        receivers: receivers.clone(),
        block_interval: config.pipeline.block_interval,
        batch_interval: config.pipeline.batch_interval,
        checkpointed: checkpoint_dir.is_some(),
        after: resumed.after,
        backlog: metrics.backlog.clone(),
        events: metrics.events.clone(),
        stop: stop.clone(),
        hold_bytes: config.pipeline.backpressure.then_some(batch::BACKPRESSURE_BATCH_BYTES),
    };
    std::thread::Builder::new().name("sluice-clock".into()).spawn(move || batch::generate(clock, batches_tx))?;
    tracing::info!(
        pipeline = %config.pipeline.name,
        sources = receivers.len(),
        stages = pipeline.graph.stages.len(),
        sinks = sinks.len(),
        workers = pool.current_num_threads(),
        checkpoints = %checkpoint_dir.as_ref().map_or("off".to_string(), |d| d.display().to_string()),
        "pipeline running"
    );
    let checkpointing = checkpoint_dir.map(|dir| Checkpointing {
        dir,
        pipeline: config.pipeline.name.clone(),
        batch_interval_ms: crate::fields::millis(config.pipeline.batch_interval),
        last_good: resumed.stages,
        every: config.pipeline.checkpoint_every,
        since: 0,
    });
    let scheduler = Scheduler {
        graph: &pipeline.graph,
        registry: &pipeline.registry,
        sinks,
        dead_letters,
        pool: &pool,
        metrics: &metrics,
        sources,
        receivers,
        backlog: metrics.backlog.clone(),
        checkpointing,
        backpressure,
        rollback_after: config.pipeline.rollback_after,
        cluster: agent.clone(),
        shuffle: shuffle_writer(pipeline)?,
        keyed: match (&membership, &pipeline.graph.shuffle) {
            (Some(membership), Some(_)) => Some(KeyedStates::new(
                membership.store.clone(),
                config.pipeline.name.clone(),
                crate::fields::millis(config.pipeline.batch_interval),
            )),
            _ => None,
        },
    };
    let report = scheduler.run(state, batches_rx);
    if let Some(agent) = agent {
        agent.leave();
    }
    io.shutdown_background();
    Ok(report)
}

/// A cluster's member opens the checkpoint store its source keeps partitions' logs in, and
/// (with plugins) joins the cluster's swaps, so its own plugin files are not watched.
fn join_cluster(
    pipeline: &Pipeline,
    options: &RunOptions,
) -> Result<(Option<crate::cluster::Membership>, Option<Arc<crate::cluster::Agent>>), RunError> {
    let config = &pipeline.file.config;
    let Some(cluster) = &config.cluster else { return Ok((None, None)) };
    let mut membership = crate::cluster::Membership::open(cluster, &config.pipeline.name, options.member.as_deref())
        .map_err(|err| RunError::Cluster(err.into()))?;
    membership.shuffle_topic = pipeline.graph.shuffle.as_ref().map(|shuffle| shuffle.topic.clone());
    let agent = match &pipeline.runtime {
        Some(runtime) => Some(crate::cluster::Agent::join(
            &membership,
            crate::fields::millis(config.pipeline.batch_interval),
            pipeline.registry.clone(),
            runtime.clone(),
        )?),
        None => None,
    };
    Ok((Some(membership), agent))
}

/// A cluster with a keyed stage: the writer of its repartition topic.
fn shuffle_writer(pipeline: &Pipeline) -> Result<Option<crate::sinks::shuffle::ShuffleWriter>, RunError> {
    let Some(shuffle) = &pipeline.graph.shuffle else { return Ok(None) };
    let source = &pipeline.file.config.sources[0];
    match source.shuffle_writer(&shuffle.topic, shuffle.key.clone()) {
        Some(writer) => writer.map(Some).map_err(|err| RunError::Shuffle(err.to_string())),
        None => Err(RunError::Shuffle(format!("source `{}` is no Kafka source", source.name()))),
    }
}

fn incompatible_state(resumed: &Resumed, problems: Vec<String>) -> CheckpointError {
    let path = resumed.checkpoint.as_ref().map(|(p, _)| p.clone()).unwrap_or_default();
    CheckpointError::Incompatible { path, reason: problems.join("; ") }
}

/// Where a run keeps its progress: the checkpoint directory, or a cluster's store.
#[derive(Clone, Copy)]
struct Kept<'a> {
    checkpoint_dir: Option<&'a std::path::PathBuf>,
    cluster: Option<&'a crate::cluster::Membership>,
}

/// Who replaces plugins: the deploy lanes, and in a cluster the agent that swaps cluster-wide.
struct Swaps {
    deployer: Option<Arc<Deployer>>,
    agent: Option<Arc<crate::cluster::Agent>>,
}

/// Builds every source, resumes it from the checkpoint and the logged batches, and starts it.
fn start_sources(
    pipeline: &Pipeline,
    resumed: &Resumed,
    receivers: &[Arc<Receiver>],
    io: &tokio::runtime::Runtime,
    stop: &watch::Receiver<bool>,
    metrics: &Metrics,
    kept: Kept<'_>,
) -> Result<Arc<Sources>, sources::StartError> {
    let config = &pipeline.file.config;
    let Kept { checkpoint_dir, cluster } = kept;
    let mut built = Vec::new();
    for (index, source_config) in config.sources.iter().enumerate() {
        let mut source = source_config.build(|p| pipeline.file.resolve(p));
        let logged: Vec<_> = resumed.pending.iter().filter_map(|b| Some((b.time, b.inputs.get(&index)?))).collect();
        source.resume(resumed.positions.get(index).cloned().flatten(), &logged);
        let _guard = io.enter();
        source.start(SourceContext {
            receiver: receivers[index].clone(),
            stop: stop.clone(),
            io: io.handle().clone(),
            log: checkpoint_dir.map(|dir| BatchLog::new(dir.clone())),
            backlog: metrics.backlog.clone(),
            pipeline: config.pipeline.name.clone(),
            batch_ms: crate::fields::millis(config.pipeline.batch_interval),
            cluster: cluster.cloned(),
        })?;
        built.push(source);
    }
    let names = config.sources.iter().map(|s| s.name().to_string()).collect();
    Ok(Arc::new(Sources::new(names, built)))
}

/// Serves metrics, the dashboard and the admin API at `addr` on the I/O runtime.
fn serve_admin(
    pipeline: &Pipeline,
    options: &RunOptions,
    addr: std::net::SocketAddr,
    metrics: &Arc<Metrics>,
    swaps: Swaps,
    receivers: &[Arc<Receiver>],
    io: &tokio::runtime::Runtime,
) -> Result<(), RunError> {
    let Swaps { deployer, agent } = swaps;
    let config = &pipeline.file.config;
    let tls = options.admin_tls.as_ref().map(admin::TlsFiles::load).transpose()?;
    let listener = admin::bind(addr, options.admin_token.as_deref())?;
    let bound = listener.local_addr()?;
    let url = format!("{}://{bound}", if tls.is_some() { "https" } else { "http" });
    if tls.is_none() && !bound.ip().is_loopback() {
        tracing::warn!(
            "the admin API at {url} is plain HTTP off loopback: its token crosses the network in clear; give --tls-cert and --tls-key to serve HTTPS"
        );
    }
    let admin = Arc::new(admin::Admin {
        pipeline: config.pipeline.name.clone(),
        metrics: metrics.clone(),
        registry: pipeline.registry.clone(),
        deployer,
        receivers: receivers.to_vec(),
        token: options.admin_token.clone(),
        tls,
        max_upload: options.max_upload,
        audit_file: config
            .pipeline
            .checkpoint_dir
            .as_deref()
            .map(|dir| admin::AuditFile::in_dir(&pipeline.file.resolve(dir))),
        batch_interval_ms: crate::fields::millis(config.pipeline.batch_interval),
        stages: admin::StageRow::of(&pipeline.graph, config),
        cluster: config.cluster.as_ref().map(|c| admin::ClusterRow {
            group_id: c.group_id.clone(),
            member: options.member.clone().unwrap_or_else(|| c.member()),
            checkpoint_store: c.checkpoint_store.clone(),
        }),
        agent: agent.clone(),
    });
    if let Some(agent) = &agent {
        agent.serving_admin_at(url.clone());
    }
    tracing::info!(address = %url, "dashboard at /, metrics at /metrics, admin API at /api");
    let _guard = io.enter();
    io.spawn(async move {
        if let Err(err) = admin::serve(listener, admin).await {
            tracing::error!("admin server stopped: {err}");
        }
    });
    Ok(())
}
