//! Deploy lanes: every plugin has its own thread that loads and validates its new versions, so
//! a hostile module holds only its own plugin's lane, for at most its `validate_timeout` (plus
//! compilation), and never the admin server, the file watcher or another plugin.
//!
//! - A lane holds at most one waiting version. A newer one (a file written again, another
//!   deploy) *supersedes* it: the waiting one is answered [`DeployError::Superseded`] without
//!   being loaded, and a version being validated when a newer one arrives is not installed.
//! - A version that loads (`runtime/load.rs`) and keeps every function the pipeline calls
//!   with the same kind and types (`PluginRegistry::validate`) is installed for the next
//!   batch. A refusal is emitted as a [`PluginEvent`]; the serving version stays.
//! - The file watcher (`runtime/watch.rs`) and the admin API's deploy submit here; the admin API
//!   waits for its own answer only.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};

use super::event::{PluginEvent, Superseded};
use super::registry::{PluginRegistry, RegistryError};
use super::shadow::PromoteRule;
use super::{LoadError, PluginRuntime};

/// What a deploy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Deployed {
    /// The new version serves from the next batch; its short hash.
    Installed(String),
    /// The content equals the serving version's: nothing to do.
    Unchanged(String),
    /// The new version runs in the serving one's shadow from the next batch; its short hash.
    Shadowing(String),
}

/// Why a new version was not installed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeployError {
    /// The file or upload is not a plugin this engine can load.
    #[error("{0}")]
    Load(#[from] LoadError),
    /// It loads, but does not fit what the pipeline calls.
    #[error("plugin `{plugin}`: incompatible: {reason}")]
    Incompatible {
        /// The plugin.
        plugin: String,
        /// Every function that no longer fits.
        reason: RegistryError,
    },
    /// A newer version of the same plugin arrived before this one was installed.
    #[error("plugin `{plugin}`: superseded: a newer version arrived while this one waited or was validated")]
    Superseded {
        /// The plugin.
        plugin: String,
    },
    /// The pipeline is stopping.
    #[error("the pipeline is stopping")]
    Stopped,
    /// A cluster's version could not be fetched from the checkpoint store.
    #[error("plugin `{plugin}`: cannot fetch the version: {what}")]
    Unavailable {
        /// The plugin.
        plugin: String,
        /// What failed.
        what: String,
    },
}

impl DeployError {
    /// The class of the refusal, as logged and noted.
    pub(crate) fn class(&self) -> &'static str {
        match self {
            Self::Load(err) => err.class().name(),
            Self::Incompatible { .. } => "incompatible",
            Self::Superseded { .. } => "superseded",
            Self::Stopped => "stopped",
            Self::Unavailable { .. } => "unavailable",
        }
    }
}

/// The answer to one submitted version.
pub(crate) type Outcome = Result<Deployed, DeployError>;

#[derive(Debug)]
struct Job {
    origin: PathBuf,
    bytes: Vec<u8>,
    reply: Option<mpsc::Sender<Outcome>>,
    /// `Some`: run it in the shadow (with this promotion rule, if any) instead of serving it.
    shadow: Option<Option<PromoteRule>>,
}

#[derive(Debug, Default)]
struct LaneState {
    waiting: Option<Job>,
    closed: bool,
}

#[derive(Debug)]
struct Lane {
    plugin: String,
    state: Mutex<LaneState>,
    wake: Condvar,
}

/// One lane per plugin of a registry. Dropping it stops the lanes after their current load.
#[derive(Debug)]
pub(crate) struct Deployer {
    lanes: Vec<Arc<Lane>>,
    /// Where supersessions are emitted.
    registry: Arc<PluginRegistry>,
}

impl Deployer {
    /// Starts a lane for every plugin of `registry`.
    pub(crate) fn start(runtime: PluginRuntime, registry: Arc<PluginRegistry>) -> std::io::Result<Self> {
        let mut lanes = Vec::new();
        for (index, name, _) in registry.plugins() {
            let lane = Arc::new(Lane { plugin: name.to_string(), state: Mutex::default(), wake: Condvar::new() });
            let (runtime, registry, work) = (runtime.clone(), registry.clone(), lane.clone());
            std::thread::Builder::new()
                .name(format!("sluice-deploy-{name}"))
                .spawn(move || run_lane(&runtime, &registry, index, &work))?;
            lanes.push(lane);
        }
        Ok(Self { lanes, registry })
    }

    /// Queues `bytes` as the next version of plugin `index` (`origin` names it in messages),
    /// superseding any version still waiting. The answer arrives on the returned channel.
    pub(crate) fn submit(&self, index: usize, origin: PathBuf, bytes: Vec<u8>) -> mpsc::Receiver<Outcome> {
        let (tx, rx) = mpsc::channel();
        self.enqueue(index, Job { origin, bytes, reply: Some(tx), shadow: None });
        rx
    }

    /// As [`Deployer::submit`], to run in the serving version's shadow (`sluice deploy --shadow`).
    pub(crate) fn submit_shadow(
        &self,
        index: usize,
        origin: PathBuf,
        bytes: Vec<u8>,
        rule: Option<PromoteRule>,
    ) -> mpsc::Receiver<Outcome> {
        let (tx, rx) = mpsc::channel();
        self.enqueue(index, Job { origin, bytes, reply: Some(tx), shadow: Some(rule) });
        rx
    }

    /// As [`Deployer::submit`], for a caller that does not wait (the outcome is logged).
    pub(crate) fn submit_detached(&self, index: usize, origin: PathBuf, bytes: Vec<u8>) {
        self.enqueue(index, Job { origin, bytes, reply: None, shadow: None });
    }

    fn enqueue(&self, index: usize, job: Job) {
        let lane = &self.lanes[index];
        let mut state = lane.state.lock().expect("deploy lane lock");
        if let Some(old) = state.waiting.replace(job) {
            let version = Superseded::Waiting(old.origin.clone());
            self.registry.emit(PluginEvent::Superseded { plugin: lane.plugin.clone(), version });
            answer(old.reply, Err(DeployError::Superseded { plugin: lane.plugin.clone() }));
        }
        lane.wake.notify_one();
    }
}

impl Drop for Deployer {
    fn drop(&mut self) {
        for lane in &self.lanes {
            let mut state = lane.state.lock().expect("deploy lane lock");
            state.closed = true;
            if let Some(job) = state.waiting.take() {
                answer(job.reply, Err(DeployError::Stopped));
            }
            lane.wake.notify_one();
        }
    }
}

fn answer(reply: Option<mpsc::Sender<Outcome>>, outcome: Outcome) {
    if let Some(reply) = reply {
        let _ = reply.send(outcome); // the caller may have given up waiting
    }
}

fn run_lane(runtime: &PluginRuntime, registry: &PluginRegistry, index: usize, lane: &Lane) {
    loop {
        let job = {
            let mut state = lane.state.lock().expect("deploy lane lock");
            loop {
                if state.closed {
                    return;
                }
                if let Some(job) = state.waiting.take() {
                    break job;
                }
                state = lane.wake.wait(state).expect("deploy lane lock");
            }
        };
        let outcome = deploy(runtime, registry, index, lane, &job);
        answer(job.reply, outcome);
    }
}

/// Loads and validates one version, then installs it unless a newer one is waiting.
fn deploy(runtime: &PluginRuntime, registry: &PluginRegistry, index: usize, lane: &Lane, job: &Job) -> Outcome {
    let current = registry.current(index);
    let name = current.plugin.clone();
    let started = std::time::Instant::now();
    let refused = |err: DeployError, new: Option<&str>| {
        registry.emit(PluginEvent::Rejected {
            plugin: name.clone(),
            serving: current.short_hash().to_string(),
            candidate: new.map(str::to_string),
            class: err.class(),
            reason: err.to_string(),
        });
        Err(err)
    };
    let candidate = match runtime.load_bytes(&name, &job.origin, &job.bytes) {
        Ok(candidate) => candidate,
        Err(err) => return refused(err.into(), None),
    };
    if candidate.hash == current.hash {
        return Ok(Deployed::Unchanged(candidate.short_hash().to_string()));
    }
    if let Err(reason) = registry.validate(index, &candidate) {
        return refused(DeployError::Incompatible { plugin: name.clone(), reason }, Some(candidate.short_hash()));
    }
    let hash = candidate.short_hash().to_string();
    {
        // Installed under the lane's lock: a newer version either arrived before (and this one
        // is superseded) or arrives after (and replaces this one in turn).
        let state = lane.state.lock().expect("deploy lane lock");
        if state.waiting.is_some() {
            registry.emit(PluginEvent::Superseded { plugin: name.clone(), version: Superseded::Validating(hash) });
            return Err(DeployError::Superseded { plugin: name });
        }
        if let Some(rule) = job.shadow {
            registry.set_shadow(index, candidate, rule);
            drop(state);
            registry.emit(PluginEvent::Shadowing {
                plugin: name,
                serving: current.short_hash().to_string(),
                shadow: hash.clone(),
                promote_after: rule.map(|r| r.batches),
            });
            return Ok(Deployed::Shadowing(hash));
        }
        registry.install(index, candidate);
    }
    registry.emit(PluginEvent::Deployed {
        plugin: name,
        from: current.short_hash().to_string(),
        to: hash.clone(),
        origin: job.origin.clone(),
        load_ms: crate::fields::millis(started.elapsed()),
    });
    Ok(Deployed::Installed(hash))
}
