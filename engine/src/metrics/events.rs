//! What the dashboard and tools watch: the engine's events (the analogue of Spark's
//! `StreamingListener`), broadcast as they happen (`GET /api/events`, server-sent events, one
//! JSON object per event) and kept in bounded recent history for a page that opens late
//! (`GET /api/dashboard`).
//!
//! Event types (`"type"` field): `batch_queued`, `batch_started`, `batch_completed`, `plugin`
//! (deployed, swapped, rejected, rolled_back, auto_rolled_back), `receiver` (paused, resumed),
//! `results` (a `dashboard` sink's latest output), `audit` (a control action, `admin/audit.rs`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::runtime::event::{PluginAction, PluginRecord};

/// Completed batches kept for the batch table and the charts.
pub const KEEP_BATCHES: usize = 600;
/// Plugin events kept for the swap history.
pub const KEEP_PLUGIN_EVENTS: usize = 200;
/// Control actions kept for the audit table.
pub const KEEP_AUDIT: usize = 200;

/// One stage's figures in one batch, as `graph::run_batch` measures them.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StageFigures {
    /// The stage.
    pub name: String,
    /// Records it read.
    pub records_in: u64,
    /// Records it produced.
    pub records_out: u64,
    /// Plugin calls (one per partition, or one per batch).
    pub calls: u64,
    /// Time it took, µs.
    pub micros: u64,
}

/// A finished batch, as the batch table shows it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BatchInfo {
    /// Batch time, ms since the Unix epoch.
    pub time_ms: u64,
    /// Records in it.
    pub records: u64,
    /// Records per source.
    pub sources: BTreeMap<String, u64>,
    /// Batch time to start of processing, ms.
    pub scheduling_delay_ms: u64,
    /// Processing time, ms.
    pub processing_ms: u64,
    /// Records written by the sinks.
    pub outputs: u64,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Errors a policy absorbed: class → count.
    pub errors: BTreeMap<String, u64>,
    /// Run again after a restart.
    pub replayed: bool,
    /// Each stage's figures.
    pub stages: Vec<StageFigures>,
    /// `plugin@hash` of each serving version.
    pub versions: Vec<String>,
}

/// Something that happened to a plugin.
#[derive(Clone, Debug, Serialize)]
pub struct PluginEvent {
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// The plugin.
    pub plugin: String,
    /// `deployed`, `swapped`, `rejected`, `rolled_back`, `auto_rolled_back`.
    pub action: PluginAction,
    /// The version before (short hash), if any.
    pub from: Option<String>,
    /// The version after (short hash), if any.
    pub to: Option<String>,
    /// Details: the first batch served, or why it was rejected.
    pub detail: String,
}

/// A control action on the admin API, as the audit trail keeps it.
#[derive(Clone, Debug, Serialize)]
pub struct AuditEntry {
    /// When it was answered, ms since the Unix epoch.
    pub at_ms: u64,
    /// The client's address.
    pub from: Option<String>,
    /// `deploy`, `rollback`, `promote`, `abort-shadow`, `pause`, `resume`.
    pub action: String,
    /// The plugin or source named.
    pub target: String,
    /// The request's query (`shadow=true`, `to=<hash>`).
    pub query: Option<String>,
    /// The HTTP status it was answered with.
    pub status: u16,
    /// Whether it was carried out (a 2xx answer).
    pub accepted: bool,
    /// The version it installed or went back to (short or full hash), if any.
    pub hash: Option<String>,
    /// Why it was refused, or what was done.
    pub detail: Option<String>,
}

/// A `dashboard` sink's latest output.
#[derive(Clone, Debug, Serialize)]
pub struct Results {
    /// The sink.
    pub sink: String,
    /// `table` or `bar`.
    pub chart: String,
    /// The batch it comes from.
    pub batch_ms: u64,
    /// Column names.
    pub columns: Vec<String>,
    /// Rows of JSON values.
    pub rows: Vec<Vec<Value>>,
    /// Records in the batch (rows may be fewer: `limit`).
    pub total: u64,
}

/// One event.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The clock cut a batch; it waits for the scheduler.
    BatchQueued {
        /// Batch time.
        time_ms: u64,
        /// Records in it (directory files are counted when read).
        records: u64,
    },
    /// The scheduler started a batch.
    BatchStarted {
        /// Batch time.
        time_ms: u64,
        /// Records in it.
        records: u64,
        /// Batch time to now, ms.
        scheduling_delay_ms: u64,
    },
    /// A batch finished.
    BatchCompleted(BatchInfo),
    /// A plugin event.
    Plugin(PluginEvent),
    /// A receiver event.
    Receiver {
        /// The source.
        source: String,
        /// `paused`, `resumed`.
        action: String,
        /// Details.
        detail: String,
    },
    /// A dashboard sink's new output.
    Results(Results),
    /// A control action on the admin API.
    Audit(AuditEntry),
}

/// The recent history and the broadcast of events.
#[derive(Debug)]
pub struct Events {
    tx: broadcast::Sender<Event>,
    state: Mutex<History>,
}

/// What a late page needs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct History {
    /// Batches queued, not started: time → records.
    pub waiting: BTreeMap<u64, u64>,
    /// The batch running: (time, records, started at ms).
    pub running: Option<(u64, u64, u64)>,
    /// Finished batches, oldest first.
    pub completed: VecDeque<BatchInfo>,
    /// Plugin events, oldest first.
    pub plugins: VecDeque<PluginEvent>,
    /// Latest output of each dashboard sink.
    pub results: BTreeMap<String, Results>,
    /// Control actions, oldest first.
    pub audit: VecDeque<AuditEntry>,
    /// Per stage, over the run: records in, records out, calls, µs.
    pub stage_totals: BTreeMap<String, StageFigures>,
    /// Failed calls per stage and class.
    pub stage_errors: BTreeMap<String, BTreeMap<String, u64>>,
    /// Failed calls per plugin version (`plugin@hash`) and class.
    pub version_errors: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Default for Events {
    fn default() -> Self {
        Self { tx: broadcast::channel(1024).0, state: Mutex::new(History::default()) }
    }
}

impl Events {
    /// A receiver of every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// A copy of the recent history.
    pub fn history(&self) -> History {
        self.state.lock().expect("events lock").clone()
    }

    fn send(&self, event: Event) {
        // No subscriber is fine.
        let _ = self.tx.send(event);
    }

    /// A control action was answered (`admin/audit.rs` records it, the one caller).
    pub fn audit(&self, entry: AuditEntry) {
        {
            let mut state = self.state.lock().expect("events lock");
            state.audit.push_back(entry.clone());
            if state.audit.len() > KEEP_AUDIT {
                state.audit.pop_front();
            }
        }
        self.send(Event::Audit(entry));
    }

    /// The clock queued a batch.
    pub fn queued(&self, time_ms: u64, records: u64) {
        self.state.lock().expect("events lock").waiting.insert(time_ms, records);
        self.send(Event::BatchQueued { time_ms, records });
    }

    /// The scheduler started a batch.
    pub fn started(&self, time_ms: u64, records: u64, scheduling_delay_ms: u64) {
        {
            let mut state = self.state.lock().expect("events lock");
            state.waiting.remove(&time_ms);
            state.running = Some((time_ms, records, crate::block::now_ms()));
        }
        self.send(Event::BatchStarted { time_ms, records, scheduling_delay_ms });
    }

    /// A batch finished.
    pub fn completed(&self, info: BatchInfo) {
        {
            let mut state = self.state.lock().expect("events lock");
            state.running = None;
            for stage in &info.stages {
                let total = state.stage_totals.entry(stage.name.clone()).or_default();
                total.name.clone_from(&stage.name);
                total.records_in += stage.records_in;
                total.records_out += stage.records_out;
                total.calls += stage.calls;
                total.micros += stage.micros;
            }
            state.completed.push_back(info.clone());
            while state.completed.len() > KEEP_BATCHES {
                state.completed.pop_front();
            }
        }
        self.send(Event::BatchCompleted(info));
    }

    /// A plugin call failed in `stage` on `plugin@version` with `class`.
    pub fn call_failed(&self, stage: &str, plugin: &str, version: &str, class: &str) {
        let mut state = self.state.lock().expect("events lock");
        *state.stage_errors.entry(stage.to_string()).or_default().entry(class.to_string()).or_default() += 1;
        *state
            .version_errors
            .entry(format!("{plugin}@{version}"))
            .or_default()
            .entry(class.to_string())
            .or_default() += 1;
    }

    /// Something happened to a plugin (see `runtime/event.rs`, which emits it).
    pub fn plugin(&self, record: PluginRecord<'_>) {
        let event = PluginEvent {
            at_ms: crate::block::now_ms(),
            plugin: record.plugin.to_string(),
            action: record.action,
            from: record.from.map(str::to_string),
            to: record.to.map(str::to_string),
            detail: record.detail,
        };
        {
            let mut state = self.state.lock().expect("events lock");
            state.plugins.push_back(event.clone());
            while state.plugins.len() > KEEP_PLUGIN_EVENTS {
                state.plugins.pop_front();
            }
        }
        self.send(Event::Plugin(event));
    }

    /// Something happened to a receiver.
    pub fn receiver(&self, source: &str, action: &str, detail: String) {
        self.send(Event::Receiver { source: source.to_string(), action: action.to_string(), detail });
    }

    /// A dashboard sink has new output.
    pub fn results(&self, results: Results) {
        self.state.lock().expect("events lock").results.insert(results.sink.clone(), results.clone());
        self.send(Event::Results(results));
    }
}
