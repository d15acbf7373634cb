//! What one member does for the cluster besides reading its partitions: its heartbeat
//! ([`super::members`]), the cluster view, and cluster-wide hot swaps ([`super::deploys`] says
//! which objects): one version of each plugin per batch across every member.
//!
//! **A swap.** `sluice deploy` (or `rollback`) to any member: it loads and validates the version
//! as a deploy outside a cluster would, uploads it and creates a proposal. Every member's agent
//! sees the proposal within a heartbeat period, loads and validates the version itself, and votes. The
//! proposer waits for a vote from every live member (fresh heartbeat): one refusal refuses it
//! for all, silence past the vote timeout too; all accepted, it decides `serve` from the first
//! batch boundary at least [`lead`] later. Each member installs the version at the start of
//! its first batch at or after that time (in [`Agent::before_batch`], before the scheduler
//! takes the batch's versions), so every partition of a batch, whichever member runs it, is
//! served by one version.
//!
//! **Why no member swaps late.** Before each batch at or after `created + lead` of a proposal
//! it accepted without seeing its decision, a member reads the decision (one GET). If there is
//! none yet, the proposer will write it after this moment, so it serves from at least `lead`
//! after this batch. This assumes the members' clocks agree within `lead` (NTP does).
//!
//! **Joining.** A member that starts serves what the cluster decided last for each plugin (not
//! its own file's version), and refuses to start if it cannot load it. It uploads the versions
//! it starts with, so a rollback can return to them.
//!
//! **Owns:** the heartbeat, the `plugins/` and `deploys/` objects, and installing versions the
//! cluster decided into the registry at a batch boundary. **Never touches:** the partitions'
//! logs, Kafka; it reads the plugin files it starts with, never writes them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::Membership;
use super::deploys::{self, Action, Decision, Proposal, Vote};
use super::members::{self, Heartbeat};
use super::store::{CheckpointStore, StoreError};
use crate::block::now_ms;
use crate::metrics::Metrics;
use crate::receiver::Receiver;
use crate::runtime::deploy::DeployError;
use crate::runtime::event::PluginEvent;
use crate::runtime::registry::{PluginRegistry, RegistryError};
use crate::runtime::{PluginRuntime, PluginVersion};

/// How long before its first batch a decided swap is written: at least 2 s, and 3 batches.
pub(crate) fn lead(batch_ms: u64) -> u64 {
    (3 * batch_ms).max(2_000)
}

/// How long a proposer waits for every live member's vote.
fn vote_timeout(session_timeout: Duration) -> Duration {
    (2 * session_timeout).clamp(Duration::from_secs(20), Duration::from_secs(60))
}

/// How often the agent looks at the stop signal; it writes its heartbeat and looks for
/// proposals and decisions once per heartbeat period.
const TICK: Duration = Duration::from_millis(50);

/// Deploy objects of proposals further back than this are deleted by the next proposer.
const KEPT_PROPOSALS: u64 = 16;

/// Why a cluster-wide deploy or rollback did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProposeError {
    /// The member asked refused it itself, as it would outside a cluster.
    #[error("rejected: {0}")]
    Local(DeployError),
    /// Another member refused it, or did not answer: no member swaps.
    #[error("refused by the cluster: {0}")]
    Refused(String),
    /// No earlier version with the hash prefix asked for.
    #[error(transparent)]
    NoEarlierVersion(RegistryError),
    /// A rollback without a hash, and this member served no version before the current one.
    #[error("plugin `{0}` has served no earlier version on this member: nothing to roll back to")]
    NoHistory(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a member cannot start as one.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The cluster serves a version this member cannot load.
    #[error("plugin `{plugin}`: the cluster serves version {hash}, which this member cannot serve: {reason}")]
    Unservable {
        /// The plugin.
        plugin: String,
        /// The version's short hash.
        hash: String,
        /// Why.
        reason: String,
    },
}

/// A deploy the cluster decided to serve.
#[derive(Debug)]
pub(crate) struct Decided {
    /// The version's short hash.
    pub(crate) hash: String,
    /// The batch from which every member serves it.
    pub(crate) from_ms: u64,
    /// The members that accepted it.
    pub(crate) members: Vec<String>,
}

/// What became of a proposal on this member.
enum Handled {
    /// Accepted here, decision not known yet; the version waits here.
    Accepted { created_ms: u64, proposal: Proposal, version: Box<PluginVersion> },
    /// Decided, refused here, or given up.
    Closed,
}

/// A version to install at the start of the first batch at or after `from_ms`.
struct Due {
    from_ms: u64,
    index: usize,
    seq: u64,
    proposal: Proposal,
    version: PluginVersion,
}

#[derive(Default)]
struct State {
    /// Per plugin index: the proposals handled here, by seq.
    handled: Vec<BTreeMap<u64, Handled>>,
    due: Vec<Due>,
    /// Per plugin index: the versions this member served, each from the batch time the cluster
    /// decided (the first from 0), the last [`TIMELINE`]: what a replayed entry runs with.
    timeline: Vec<Vec<(u64, Arc<PluginVersion>)>>,
    /// Per plugin index: the highest seq of a `serve` decision taken here (its objects are
    /// never deleted: a joiner adopts it).
    served: Vec<Option<u64>>,
    /// Per plugin index: the id of the version a cluster rollback installed last (trusted: not
    /// put on probation, so a rollback never flips back to the version it left).
    rolled_back_to: Vec<Option<u64>>,
}

/// Versions kept per plugin for replays of entries from before a swap.
const TIMELINE: usize = 8;

/// See the module docs.
pub struct Agent {
    store: CheckpointStore,
    member: String,
    session_timeout: Duration,
    batch_ms: u64,
    registry: Arc<PluginRegistry>,
    runtime: PluginRuntime,
    state: Mutex<State>,
    view: Mutex<members::View>,
    /// This member's admin API, once it serves one.
    admin: OnceLock<String>,
    /// The run ended: the threads stop.
    left: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("member", &self.member).finish_non_exhaustive()
    }
}

impl Agent {
    /// Joins: uploads the versions this member starts with, takes the cluster's decided ones
    /// (installed at the first batch), marks the decided proposals as seen.
    pub(crate) fn join(
        membership: &Membership,
        batch_ms: u64,
        registry: Arc<PluginRegistry>,
        runtime: PluginRuntime,
    ) -> Result<Arc<Self>, JoinError> {
        let plugins = registry.plugins().count();
        let timeline = (0..plugins).map(|index| vec![(0, registry.current(index))]).collect();
        let agent = Arc::new(Self {
            store: membership.store.clone(),
            member: membership.member.clone(),
            session_timeout: membership.session_timeout,
            batch_ms,
            registry,
            runtime,
            state: Mutex::new(State {
                handled: (0..plugins).map(|_| BTreeMap::new()).collect(),
                due: Vec::new(),
                timeline,
                served: vec![None; plugins],
                rolled_back_to: vec![None; plugins],
            }),
            view: Mutex::default(),
            admin: OnceLock::new(),
            left: std::sync::atomic::AtomicBool::new(false),
        });
        for index in 0..plugins {
            agent.upload_initial(index)?;
            agent.adopt(index)?;
        }
        Ok(agent)
    }

    /// Starts the heartbeat and the watch for proposals; both end (and the heartbeat is
    /// deleted) when `stop` turns true.
    /// The heartbeat runs on a thread of its own (a vote that loads a module never delays it),
    /// the watch on another; both end when `stop` turns true or [`Agent::leave`] is called.
    pub(crate) fn start(
        self: &Arc<Self>,
        receivers: Vec<Arc<Receiver>>,
        metrics: Arc<Metrics>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        // One PUT, and one LIST per plugin, per period: store requests cost money on S3.
        let every = members::heartbeat_every(self.session_timeout);
        let (agent, stopped) = (self.clone(), stop.clone());
        std::thread::Builder::new().name("sluice-heartbeat".into()).spawn(move || {
            agent.every(every, &stopped, || {
                if let Err(err) = members::beat(&agent.store, &agent.heartbeat(&receivers, &metrics)) {
                    tracing::warn!("cannot write this member's heartbeat: {err}");
                }
            });
        })?;
        let agent = self.clone();
        std::thread::Builder::new().name("sluice-cluster".into()).spawn(move || {
            agent.every(every, &stop, || {
                for index in 0..agent.registry.plugins().count() {
                    if let Err(err) = agent.poll(index) {
                        tracing::warn!("cannot read the cluster's deploys: {err}");
                    }
                }
            });
        })?;
        Ok(())
    }

    /// Runs `work` every `period` until `stop` turns true or the agent leaves.
    fn every(&self, period: Duration, stop: &tokio::sync::watch::Receiver<bool>, mut work: impl FnMut()) {
        let mut last: Option<Instant> = None;
        while !*stop.borrow() && !self.left.load(std::sync::atomic::Ordering::Relaxed) {
            if last.is_none_or(|at| at.elapsed() >= period) {
                last = Some(Instant::now());
                work();
            }
            std::thread::sleep(TICK);
        }
    }

    /// Leaves the cluster's view: the threads stop and the heartbeat is deleted (the run ended).
    pub(crate) fn leave(&self) {
        self.left.store(true, std::sync::atomic::Ordering::Relaxed);
        std::thread::sleep(TICK * 2); // a heartbeat being written lands before the delete
        if let Err(err) = members::leave(&self.store, &self.member) {
            tracing::warn!("cannot remove this member's heartbeat: {err}");
        }
    }

    /// Notes where this member's admin API listens (shown in the cluster view).
    pub(crate) fn serving_admin_at(&self, address: String) {
        let _ = self.admin.set(address);
    }

    fn heartbeat(&self, receivers: &[Arc<Receiver>], metrics: &Metrics) -> Heartbeat {
        let last = metrics.last_batch();
        Heartbeat {
            member: self.member.clone(),
            admin: self.admin.get().cloned(),
            updated_ms: now_ms(),
            partitions: receivers.iter().flat_map(|r| r.partitions()).collect(),
            serving: self.registry.snapshot().iter().map(|v| (v.plugin.clone(), v.short_hash().to_string())).collect(),
            last_batch_ms: (metrics.batches() > 0).then_some(last.time_ms),
        }
    }

    /// The live members, for the cluster view (read at most once a second).
    pub(crate) fn members(&self) -> Result<Vec<Heartbeat>, StoreError> {
        let mut view = self.view.lock().expect("view lock");
        view.members(&self.store, self.session_timeout, Duration::from_secs(1))
    }

    fn name(&self, index: usize) -> String {
        self.registry.current(index).plugin.clone()
    }

    /// Puts the version plugin `index` starts with in the store, so a rollback can return to it.
    fn upload_initial(&self, index: usize) -> Result<(), StoreError> {
        let current = self.registry.current(index);
        let Ok(bytes) = std::fs::read(&current.path) else { return Ok(()) }; // not a file (native)
        if crate::runtime::content_hash(&bytes) == current.hash {
            self.store.create(&deploys::wasm_key(&current.plugin, &current.hash), bytes)?;
        }
        Ok(())
    }

    /// Takes the versions the cluster decided for plugin `index`: the one serving now (the last
    /// by serve time among those already serving) and any due later, and marks every decided
    /// proposal as seen (undecided ones are voted on by the watch).
    fn adopt(&self, index: usize) -> Result<(), JoinError> {
        let plugin = self.name(index);
        let listed = deploys::parse_listing(&self.store.names(&deploys::folder(&plugin))?);
        let mut serves = Vec::new();
        for (&seq, listed) in &listed {
            if !listed.decision {
                continue;
            }
            if let Some(Decision::Serve { from_ms }) = self.decision(&plugin, seq)?
                && let Some(proposal) = self.proposal(&plugin, seq)?
            {
                serves.push((from_ms, seq, proposal));
            }
            self.state.lock().expect("agent lock").handled[index].insert(seq, Handled::Closed);
        }
        serves.sort_by_key(|(from_ms, seq, _)| (*from_ms, *seq));
        let now = now_ms();
        let current = serves.iter().rposition(|(from_ms, _, _)| *from_ms <= now);
        for (from_ms, seq, proposal) in serves.into_iter().skip(current.unwrap_or(0)) {
            let unservable = |reason: String| JoinError::Unservable {
                plugin: plugin.clone(),
                hash: proposal.hash[..proposal.hash.len().min(12)].to_string(),
                reason,
            };
            let version = self.load(index, &proposal).map_err(|err| unservable(err.to_string()))?;
            tracing::info!(plugin = %plugin, hash = %version.short_hash(), from_batch = from_ms, "serving the cluster's version of the plugin");
            let mut state = self.state.lock().expect("agent lock");
            state.served[index] = state.served[index].max(Some(seq));
            state.due.push(Due { from_ms, index, seq, proposal, version });
        }
        Ok(())
    }

    fn proposal(&self, plugin: &str, seq: u64) -> Result<Option<Proposal>, StoreError> {
        self.read_json(&deploys::proposal_key(plugin, seq))
    }

    fn decision(&self, plugin: &str, seq: u64) -> Result<Option<Decision>, StoreError> {
        self.read_json(&deploys::decision_key(plugin, seq))
    }

    /// A JSON object of the store; one that does not decode is logged and taken as missing.
    fn read_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let Some(body) = self.store.get(key)? else { return Ok(None) };
        match serde_json::from_slice(&body) {
            Ok(found) => Ok(Some(found)),
            Err(err) => {
                tracing::error!(object = %key, "checkpoint store object does not decode (not written by a member?): {err}");
                Ok(None)
            }
        }
    }

    /// Loads and validates a proposal's version as a deploy would.
    fn load(&self, index: usize, proposal: &Proposal) -> Result<PluginVersion, DeployError> {
        self.load_stored(index, &proposal.hash, proposal.action)
    }

    /// Loads and validates version `hash` of plugin `index` from the store.
    fn load_stored(&self, index: usize, hash: &str, action: Action) -> Result<PluginVersion, DeployError> {
        let plugin = self.name(index);
        let key = deploys::wasm_key(&plugin, hash);
        let origin = PathBuf::from(format!("<cluster {} of {plugin}>", action.name()));
        let bytes = match self.store.get(&key) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                return Err(DeployError::Unavailable { plugin, what: format!("{key} is not in the checkpoint store") });
            }
            Err(err) => return Err(DeployError::Unavailable { plugin, what: err.to_string() }),
        };
        self.validate(index, origin, &bytes)
    }

    fn validate(&self, index: usize, origin: PathBuf, bytes: &[u8]) -> Result<PluginVersion, DeployError> {
        let plugin = self.name(index);
        let candidate = self.runtime.load_bytes(&plugin, &origin, bytes)?;
        self.registry.validate(index, &candidate).map_err(|reason| DeployError::Incompatible { plugin, reason })?;
        Ok(candidate)
    }

    /// One look at plugin `index`'s proposals: vote on new ones, apply new decisions.
    fn poll(&self, index: usize) -> Result<(), StoreError> {
        let plugin = self.name(index);
        let listed = deploys::parse_listing(&self.store.names(&deploys::folder(&plugin))?);
        let give_up = 2 * crate::fields::millis(vote_timeout(self.session_timeout));
        for (seq, listed) in listed {
            let known = {
                let mut state = self.state.lock().expect("agent lock");
                match state.handled[index].get(&seq) {
                    Some(Handled::Closed) => continue,
                    // Its proposer never decided (it died): drop the version waiting here.
                    Some(Handled::Accepted { created_ms, .. })
                        if !listed.decision && now_ms() > created_ms + give_up =>
                    {
                        tracing::warn!(plugin = %plugin, proposal = seq, "a cluster deploy was never decided: given up");
                        state.handled[index].insert(seq, Handled::Closed);
                        continue;
                    }
                    Some(Handled::Accepted { .. }) => true,
                    None => false,
                }
            };
            if listed.decision {
                self.apply_decision(index, seq)?;
            } else if !known && listed.proposal {
                self.vote(index, seq)?;
            }
        }
        Ok(())
    }

    /// Loads and validates proposal `seq`'s version and writes this member's vote.
    fn vote(&self, index: usize, seq: u64) -> Result<(), StoreError> {
        let plugin = self.name(index);
        let Some(proposal) = self.proposal(&plugin, seq)? else { return Ok(()) };
        let abandoned = proposal.created_ms + 2 * crate::fields::millis(vote_timeout(self.session_timeout));
        if now_ms() > abandoned {
            self.state.lock().expect("agent lock").handled[index].insert(seq, Handled::Closed);
            return Ok(());
        }
        let proposal_action = proposal.action.name();
        let vote = match self.load(index, &proposal) {
            // The store failed, not the version: the next poll tries again.
            Err(DeployError::Unavailable { what, .. }) => {
                tracing::warn!(plugin = %plugin, proposal = seq, "cannot fetch a proposed version yet: {what}");
                return Ok(());
            }
            Ok(version) => {
                // Noted before the vote is written: the decision cannot come before the vote.
                let created_ms = proposal.created_ms;
                let accepted = Handled::Accepted { created_ms, proposal, version: Box::new(version) };
                self.state.lock().expect("agent lock").handled[index].insert(seq, accepted);
                Vote { member: self.member.clone(), accepted: true, reason: None }
            }
            Err(err) => {
                self.rejected(index, &proposal, &err);
                self.state.lock().expect("agent lock").handled[index].insert(seq, Handled::Closed);
                Vote { member: self.member.clone(), accepted: false, reason: Some(err.to_string()) }
            }
        };
        tracing::info!(plugin = %plugin, proposal = seq, accepted = vote.accepted, reason = vote.reason.as_deref(), "voted on a cluster {}", proposal_action);
        let body = serde_json::to_vec(&vote).expect("a vote encodes");
        let written = self.store.create(&deploys::vote_key(&plugin, seq, &self.member), body);
        if written.is_err() {
            self.state.lock().expect("agent lock").handled[index].remove(&seq); // voted again next poll
        }
        written.map(drop)
    }

    fn rejected(&self, index: usize, proposal: &Proposal, err: &DeployError) {
        self.registry.emit(PluginEvent::Rejected {
            plugin: self.name(index),
            serving: self.registry.current(index).short_hash().to_string(),
            candidate: Some(proposal.hash[..proposal.hash.len().min(12)].to_string()),
            class: err.class(),
            reason: err.to_string(),
        });
    }

    /// Reads proposal `seq`'s decision and acts on it: a version to serve becomes due (loaded
    /// now if this member never voted, having joined since).
    fn apply_decision(&self, index: usize, seq: u64) -> Result<(), StoreError> {
        let plugin = self.name(index);
        let Some(decision) = self.decision(&plugin, seq)? else { return Ok(()) };
        let Decision::Serve { from_ms } = decision else {
            self.state.lock().expect("agent lock").handled[index].insert(seq, Handled::Closed);
            return Ok(());
        };
        let unseen = !self.state.lock().expect("agent lock").handled[index].contains_key(&seq);
        // Never voted (it joined since, or its heartbeat was late): load it now.
        let loaded = match unseen {
            false => None,
            true => {
                let Some(proposal) = self.proposal(&plugin, seq)? else { return Ok(()) };
                match self.load(index, &proposal) {
                    Ok(version) => Some((proposal, version)),
                    Err(DeployError::Unavailable { what, .. }) => {
                        tracing::warn!(plugin = %plugin, proposal = seq, "cannot fetch the cluster's version yet: {what}");
                        return Ok(()); // the next poll tries again
                    }
                    Err(err) => {
                        tracing::error!(plugin = %plugin, proposal = seq,
                            "the cluster serves a version this member cannot load, so it keeps serving its own: {err}");
                        self.rejected(index, &proposal, &err);
                        self.state.lock().expect("agent lock").handled[index].insert(seq, Handled::Closed);
                        return Ok(());
                    }
                }
            }
        };
        // One critical section: `before_batch` sees the proposal accepted or the version due.
        let mut state = self.state.lock().expect("agent lock");
        let (proposal, version) = match (state.handled[index].insert(seq, Handled::Closed), loaded) {
            (Some(Handled::Accepted { proposal, version, .. }), _) => (proposal, *version),
            (None, Some(loaded)) => loaded,
            (Some(Handled::Closed), _) => {
                tracing::error!(plugin = %plugin, proposal = seq, from_batch = from_ms,
                    "the cluster serves a version this member refused: it keeps serving its own");
                return Ok(());
            }
            (None, None) => return Ok(()), // handled by a concurrent call
        };
        state.served[index] = state.served[index].max(Some(seq));
        state.due.push(Due { from_ms, index, seq, proposal, version });
        Ok(())
    }

    /// At a batch boundary, before the batch at `time_ms` takes its versions: reads the
    /// decisions that may already apply, installs the versions due.
    pub(crate) fn before_batch(&self, time_ms: u64) {
        let lead = lead(self.batch_ms);
        let waiting: Vec<(usize, u64)> = {
            let state = self.state.lock().expect("agent lock");
            let accepted = state.handled.iter().enumerate().flat_map(|(index, handled)| {
                handled.iter().filter_map(move |(seq, h)| match h {
                    Handled::Accepted { created_ms, .. } if time_ms >= created_ms + lead => Some((index, *seq)),
                    _ => None,
                })
            });
            accepted.collect()
        };
        for (index, seq) in waiting {
            self.apply_decision_before(index, seq, time_ms);
        }
        let mut state = self.state.lock().expect("agent lock");
        state.due.sort_by_key(|d| (d.from_ms, d.seq));
        while state.due.first().is_some_and(|d| d.from_ms <= time_ms) {
            let due = state.due.remove(0);
            let (index, from_ms, action) = (due.index, due.from_ms, due.proposal.action);
            if self.install(due) {
                if action == Action::Rollback {
                    state.rolled_back_to[index] = Some(self.registry.current(index).id);
                }
                let timeline = &mut state.timeline[index];
                timeline.push((from_ms, self.registry.current(index)));
                if timeline.len() > TIMELINE {
                    timeline.remove(0);
                }
            }
        }
    }

    /// Reads proposal `seq`'s decision before the batch at `time_ms` runs, asking again (with
    /// back-off up to 5 s) while the store fails: the batch must not run without knowing whether
    /// the cluster swaps at it. (A store that is down holds the batch logs back too.)
    fn apply_decision_before(&self, index: usize, seq: u64, time_ms: u64) {
        let mut backoff = Duration::from_millis(100);
        while let Err(err) = self.apply_decision(index, seq) {
            tracing::warn!(plugin = %self.name(index), proposal = seq, batch = time_ms,
                "cannot read a cluster deploy's decision, which may apply to this batch: {err}; asking again in {}",
                humantime::format_duration(backoff));
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Whether version `id` of plugin `index` is what a cluster rollback returned to.
    pub(crate) fn rolled_back_to(&self, index: usize, id: u64) -> bool {
        self.state.lock().expect("agent lock").rolled_back_to[index] == Some(id)
    }

    /// The versions that served batch time `time_ms` across the cluster, if they are not the
    /// ones serving now (a replayed entry from before a swap); None otherwise.
    pub(crate) fn serving_at(&self, time_ms: u64) -> Option<crate::runtime::registry::Snapshot> {
        let state = self.state.lock().expect("agent lock");
        let then: Vec<Arc<PluginVersion>> =
            state.timeline.iter().map(|timeline| served_at(timeline, time_ms).clone()).collect();
        let now = self.registry.snapshot();
        let differs = then.iter().zip(now.iter()).any(|(a, b)| a.id != b.id);
        differs.then(|| then.into())
    }

    /// Installs a due version; false if it serves already.
    fn install(&self, due: Due) -> bool {
        let current = self.registry.current(due.index);
        if current.hash == due.version.hash {
            return false;
        }
        let plugin = current.plugin.clone();
        let to = due.version.short_hash().to_string();
        self.registry.install(due.index, due.version);
        self.registry.emit(PluginEvent::Deployed {
            plugin: plugin.clone(),
            from: current.short_hash().to_string(),
            to,
            origin: PathBuf::from(format!(
                "<cluster {} {} of {plugin} by {}, from batch {}>",
                due.proposal.action.name(),
                due.seq,
                due.proposal.proposer,
                due.from_ms
            )),
            load_ms: 0,
        });
        true
    }

    /// A cluster-wide deploy of `bytes` as plugin `index`'s next version; blocks until the
    /// cluster decided (within the vote timeout).
    pub(crate) fn deploy(&self, index: usize, bytes: &[u8]) -> Result<Option<Decided>, ProposeError> {
        let origin = PathBuf::from(format!("<upload to {}>", self.name(index)));
        let version = self.validate(index, origin, bytes).map_err(ProposeError::Local)?;
        if version.hash == self.registry.current(index).hash {
            return Ok(None); // this version serves already
        }
        self.store.create(&deploys::wasm_key(&version.plugin, &version.hash), bytes.to_vec())?;
        self.propose(index, version, Action::Deploy).map(Some)
    }

    /// A cluster-wide rollback of plugin `index` to the version before the current one, or to
    /// the earlier one whose hash starts with `to`.
    pub(crate) fn rollback(&self, index: usize, to: Option<&str>) -> Result<Decided, ProposeError> {
        let history = self.registry.history(index);
        let target = match to {
            Some(prefix) => history.iter().rev().find(|v| !prefix.is_empty() && v.hash.starts_with(prefix)),
            None => history.last(),
        };
        let Some(target) = target else {
            let plugin = self.name(index);
            return Err(match to {
                None => ProposeError::NoHistory(plugin),
                Some(prefix) => ProposeError::NoEarlierVersion(RegistryError::NoEarlierVersion {
                    plugin,
                    hash: prefix.to_string(),
                    known: history.iter().map(|v| v.short_hash().to_string()).collect(),
                }),
            });
        };
        let version = self.load_stored(index, &target.hash, Action::Rollback).map_err(ProposeError::Local)?;
        self.propose(index, version, Action::Rollback)
    }

    /// Proposes `version` (validated here), waits for the votes, writes the decision.
    fn propose(&self, index: usize, version: PluginVersion, action: Action) -> Result<Decided, ProposeError> {
        let plugin = self.name(index);
        let hash = version.short_hash().to_string();
        let created_ms = now_ms();
        let proposal = Proposal { hash: version.hash.clone(), action, proposer: self.member.clone(), created_ms };
        let body = serde_json::to_vec(&proposal).expect("a proposal encodes");
        let mut seq =
            deploys::parse_listing(&self.store.names(&deploys::folder(&plugin))?).keys().max().map_or(0, |s| s + 1);
        while !self.store.create(&deploys::proposal_key(&plugin, seq), body.clone())? {
            seq += 1; // another member proposed at the same moment
        }
        tracing::info!(plugin = %plugin, proposal = seq, hash = %hash, "proposed a cluster {}", action.name());
        self.state.lock().expect("agent lock").handled[index]
            .insert(seq, Handled::Accepted { created_ms, proposal, version: Box::new(version) });
        // From here on every way out writes a decision: members never wait on this proposal.
        let own =
            serde_json::to_vec(&Vote { member: self.member.clone(), accepted: true, reason: None }).expect("encodes");
        let counted = self
            .store
            .create(&deploys::vote_key(&plugin, seq, &self.member), own)
            .and_then(|_| self.await_votes(&plugin, seq, created_ms));
        let (outcome, voters) = match counted {
            Ok(counted) => counted,
            Err(err) => (Err(format!("the proposer could not count the votes: {err}")), Vec::new()),
        };
        let decision = match &outcome {
            Ok(()) => Decision::Serve { from_ms: deploys::serve_from(now_ms(), lead(self.batch_ms), self.batch_ms) },
            Err(reason) => Decision::Refused { reason: reason.clone() },
        };
        self.write_decision(&plugin, seq, &decision)?;
        if let Err(err) = self.apply_decision(index, seq) {
            tracing::warn!(plugin = %plugin, proposal = seq, "decided; this member applies it at its next look: {err}");
        }
        self.forget_before(index, &plugin, seq);
        match decision {
            Decision::Serve { from_ms } => {
                tracing::info!(plugin = %plugin, proposal = seq, from_batch = from_ms, members = voters.len(), "the cluster serves {hash} from batch {from_ms}");
                Ok(Decided { hash, from_ms, members: voters })
            }
            Decision::Refused { reason } => {
                tracing::warn!(plugin = %plugin, proposal = seq, "the cluster refused the {}: {reason}", action.name());
                Err(ProposeError::Refused(reason))
            }
        }
    }

    /// Writes proposal `seq`'s decision, saying so if that took long enough to matter.
    fn write_decision(&self, plugin: &str, seq: u64, decision: &Decision) -> Result<(), StoreError> {
        let started = Instant::now();
        let body = serde_json::to_vec(decision).expect("a decision encodes");
        if !self.store.create(&deploys::decision_key(plugin, seq), body)? {
            tracing::error!(plugin = %plugin, proposal = seq, "another member decided this proposal first");
        }
        let took = started.elapsed();
        if took > Duration::from_millis(lead(self.batch_ms) / 2) {
            tracing::error!(plugin = %plugin, proposal = seq, took_ms = took.as_millis() as u64,
                "writing the decision took more than half the swap's lead: a member may have run a batch past the swap time with the old version");
        }
        Ok(())
    }

    /// Waits until [`deploys::decide`] can decide proposal `seq`; returns the outcome and the
    /// members that accepted.
    /// (A store that fails is asked again until the vote timeout, counted from the proposal;
    /// past it the outcome is refused, never `serve`: members give up waiting then.)
    fn await_votes(
        &self,
        plugin: &str,
        seq: u64,
        created_ms: u64,
    ) -> Result<(Result<(), String>, Vec<String>), StoreError> {
        let timeout = vote_timeout(self.session_timeout);
        let waited = humantime::format_duration(timeout).to_string();
        let deadline = created_ms + crate::fields::millis(timeout);
        let mut votes: BTreeMap<String, Vote> = BTreeMap::new();
        let mut live: Vec<String> = Vec::new();
        loop {
            if let Err(err) = self.count_votes(plugin, seq, &mut votes, &mut live) {
                tracing::warn!(plugin = %plugin, proposal = seq, "cannot read the votes: {err}; asking again");
            }
            let cast: Vec<Vote> = votes.values().cloned().collect();
            let out_of_time = now_ms() >= deadline;
            if let Some(outcome) = deploys::decide(&live, &cast, out_of_time, &waited) {
                let outcome = match outcome {
                    Ok(()) if out_of_time => Err(format!("not decided within {waited}")),
                    other => other,
                };
                let accepted = cast.into_iter().filter(|v| v.accepted).map(|v| v.member).collect();
                return Ok((outcome, accepted));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Reads the votes not read yet, and who is live now.
    fn count_votes(
        &self,
        plugin: &str,
        seq: u64,
        votes: &mut BTreeMap<String, Vote>,
        live: &mut Vec<String>,
    ) -> Result<(), StoreError> {
        let listed = deploys::parse_listing(&self.store.names(&deploys::folder(plugin))?);
        for name in listed.get(&seq).map(|l| l.votes.clone()).unwrap_or_default() {
            if !votes.contains_key(&name)
                && let Some(vote) = self.read_json::<Vote>(&format!("{}/{name}", deploys::folder(plugin)))?
            {
                votes.insert(name, vote);
            }
        }
        *live = members::live(&self.store, self.session_timeout, now_ms())?.into_iter().map(|m| m.member).collect();
        Ok(())
    }

    /// Deletes the objects of plugin's proposals [`KEPT_PROPOSALS`] or more before `seq`, but
    /// never those of the last `serve` decision known here (what a joiner adopts).
    fn forget_before(&self, index: usize, plugin: &str, seq: u64) {
        let served = self.state.lock().expect("agent lock").served[index];
        let Ok(names) = self.store.names(&deploys::folder(plugin)) else { return };
        for name in names {
            let old = name
                .split_once('.')
                .and_then(|(s, _)| s.parse::<u64>().ok())
                .is_some_and(|s| s + KEPT_PROPOSALS <= seq && served != Some(s));
            if old {
                let _ = self.store.delete(&format!("{}/{name}", deploys::folder(plugin)));
            }
        }
    }

    /// An automatic rollback in a cluster: proposed like a requested one, on a thread of its
    /// own (the scheduler does not wait); the outcome is logged.
    pub(crate) fn roll_back_detached(self: &Arc<Self>, index: usize) {
        let pending = self.state.lock().expect("agent lock").handled[index].values().any(
            |handled| matches!(handled, Handled::Accepted { proposal, .. } if proposal.action == Action::Rollback),
        );
        if pending {
            tracing::info!(plugin = %self.name(index), "a cluster rollback is being decided already: not proposing another");
            return;
        }
        let agent = self.clone();
        let spawned = std::thread::Builder::new().name("sluice-cluster-rollback".into()).spawn(move || {
            if let Err(err) = agent.rollback(index, None) {
                tracing::error!(plugin = %agent.name(index), "automatic cluster rollback failed: {err}");
            }
        });
        if let Err(err) = spawned {
            tracing::error!("cannot start the automatic cluster rollback: {err}");
        }
    }
}

/// Of a plugin's versions with the batch times they serve from (oldest first, never empty),
/// the one that served batch time `time_ms` (the oldest kept, for a time before all of them).
fn served_at<T>(timeline: &[(u64, T)], time_ms: u64) -> &T {
    let at = timeline.iter().rposition(|(from, _)| *from <= time_ms).unwrap_or(0);
    &timeline[at].1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replayed_batch_time_finds_the_version_that_served_it() {
        let timeline = [(0, "v1"), (12_300, "v2"), (17_400, "v1 again")];
        assert_eq!(*served_at(&timeline, 5_000), "v1");
        assert_eq!(*served_at(&timeline, 12_000), "v1", "the batch before the swap");
        assert_eq!(*served_at(&timeline, 12_300), "v2", "the swap's first batch");
        assert_eq!(*served_at(&timeline, 17_399), "v2");
        assert_eq!(*served_at(&timeline, 90_000), "v1 again");
        let trimmed = [(12_300, "v2"), (17_400, "v3")];
        assert_eq!(*served_at(&trimmed, 100), "v2", "older than kept: the oldest kept");
    }
}
