//! Metrics: what the engine counts per batch, receiver and plugin, rendered in the Prometheus
//! text format by [`Metrics::prometheus`] (`GET /metrics` on the admin address, see [`crate::admin`]).
//!
//! Names follow Prometheus conventions: `sluice_` prefix, `_total` for counters, units in the
//! name (`_seconds`). Everything is updated once per batch or per event, never per record.

pub mod events;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::receiver::Receiver;
use crate::runtime::event::{PluginEvent, PluginEventSink};
use crate::runtime::registry::PluginRegistry;

/// Metric names, in one place.
pub mod names {
    /// Batches processed (failed ones included).
    pub const BATCHES: &str = "sluice_batches_total";
    /// Batches that failed on a plugin error.
    pub const BATCHES_FAILED: &str = "sluice_batches_failed_total";
    /// Records received, per source.
    pub const RECORDS_RECEIVED: &str = "sluice_records_received_total";
    /// Lines dropped as not UTF-8, per source.
    pub const INVALID_LINES: &str = "sluice_invalid_lines_total";
    /// Records in batches processed.
    pub const RECORDS_PROCESSED: &str = "sluice_records_processed_total";
    /// Records late for their event-time windows.
    pub const LATE_RECORDS: &str = "sluice_late_records_total";
    /// Plugin versions that started serving (swaps and rollbacks).
    pub const SWAPS: &str = "sluice_plugin_swaps_total";
    /// Failed plugin calls, per plugin and class.
    pub const PLUGIN_ERRORS: &str = "sluice_plugin_errors_total";
    /// Time of the last batch, seconds since the Unix epoch.
    pub const LAST_BATCH_TIME: &str = "sluice_last_batch_time_seconds";
    /// Records of the last batch.
    pub const LAST_BATCH_RECORDS: &str = "sluice_last_batch_records";
    /// Scheduling delay of the last batch.
    pub const LAST_SCHEDULING_DELAY: &str = "sluice_last_batch_scheduling_delay_seconds";
    /// Processing time of the last batch.
    pub const LAST_PROCESSING: &str = "sluice_last_batch_processing_seconds";
    /// Total processing time of all batches.
    pub const PROCESSING: &str = "sluice_batch_processing_seconds_total";
    /// The serving version of each plugin (value 1).
    pub const PLUGIN_INFO: &str = "sluice_plugin_version_info";
    /// Metrics plugins record, per plugin, version, stage and name (`_sum`, `_count`: histograms).
    pub const PLUGIN_METRIC: &str = "sluice_plugin_metric";
    /// Records a stage's `on_error` policy took out of the batch, per stage and action.
    pub const RECORDS_DIVERTED: &str = "sluice_records_diverted_total";
    /// Versions rolled back automatically after failing batches.
    pub const AUTO_ROLLBACKS: &str = "sluice_plugin_auto_rollbacks_total";
    /// Checkpoints written.
    pub const CHECKPOINTS: &str = "sluice_checkpoints_total";
    /// Time to write the last checkpoint.
    pub const LAST_CHECKPOINT: &str = "sluice_last_checkpoint_seconds";
    /// Batches received and not started yet.
    pub const WAITING_BATCHES: &str = "sluice_waiting_batches";
    /// The rate a receiver may read at (backpressure or max_rate), per source; absent: unlimited.
    pub const RECEIVE_RATE_LIMIT: &str = "sluice_receiver_rate_limit_records_per_second";
    /// The next offset a partitioned source (Kafka) reads, per source, topic and partition.
    pub const PARTITION_OFFSET: &str = "sluice_source_partition_offset";
    /// Records written to a partition and not yet read, per source, topic and partition.
    pub const PARTITION_LAG: &str = "sluice_source_partition_lag_records";
    /// How far a shard's last read was behind its newest record (Kinesis), per source and shard.
    pub const SHARD_MILLIS_BEHIND: &str = "sluice_source_shard_millis_behind";
    /// Calls to a shard retried after throttling or errors, per source and shard.
    pub const SHARD_RETRIES: &str = "sluice_source_shard_retries_total";
    /// Calls a source that answers its senders (Flume) answered, per source and answer
    /// (`ok`, `try_later`, `error`).
    pub const SOURCE_ANSWERS: &str = "sluice_source_answers_total";
    /// Records such a source received and has not answered yet (waiting for the write-ahead log).
    pub const SOURCE_PENDING: &str = "sluice_source_pending_records";
    /// Connections open to such a source.
    pub const SOURCE_CONNECTIONS: &str = "sluice_source_connections";
    /// Connections such a source closed for a protocol error (garbage, another protocol, a frame
    /// too big).
    pub const SOURCE_BAD_CONNECTIONS: &str = "sluice_source_bad_connections_total";
}

/// The figures of one finished batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchFigures {
    /// Batch time, ms since the Unix epoch.
    pub time_ms: u64,
    /// Records in the batch.
    pub records: u64,
    /// Batch time to start of processing, ms.
    pub scheduling_delay_ms: u64,
    /// Processing time, ms.
    pub processing_ms: u64,
    /// Whether a plugin error failed it.
    pub failed: bool,
}

/// The engine's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    batches: AtomicU64,
    failed: AtomicU64,
    records: AtomicU64,
    late: AtomicU64,
    swaps: AtomicU64,
    processing_ms: AtomicU64,
    auto_rollbacks: AtomicU64,
    checkpoints: AtomicU64,
    last_checkpoint_us: AtomicU64,
    /// Batches received and not started (the clock's and scheduler's backlog).
    pub backlog: crate::block::Backlog,
    diverted: LabelledCounts,
    /// Events and recent history for the dashboard and tools.
    pub events: Arc<events::Events>,
    last: Mutex<BatchFigures>,
    plugin_errors: LabelledCounts,
    receivers: Mutex<Vec<Arc<Receiver>>>,
}

impl Metrics {
    /// Counts the receivers' records and invalid lines too.
    pub fn watch_receivers(&self, receivers: &[Arc<Receiver>]) {
        *self.receivers.lock().expect("metrics lock") = receivers.to_vec();
    }

    /// A batch finished.
    pub fn batch(&self, figures: BatchFigures) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.failed.fetch_add(u64::from(figures.failed), Ordering::Relaxed);
        self.records.fetch_add(figures.records, Ordering::Relaxed);
        self.processing_ms.fetch_add(figures.processing_ms, Ordering::Relaxed);
        *self.last.lock().expect("metrics lock") = figures;
    }

    /// Records were late for their event-time windows.
    pub fn late(&self, records: u64) {
        self.late.fetch_add(records, Ordering::Relaxed);
    }

    /// A plugin call failed.
    pub fn plugin_error(&self, plugin: &str, class: &'static str) {
        self.plugin_errors.add(plugin, class, 1);
    }

    /// A stage's policy took `records` out of the batch (`skip` or `dead_letter`).
    pub fn diverted(&self, stage: &str, action: &'static str, records: u64) {
        self.diverted.add(stage, action, records);
    }

    /// A checkpoint was written in `took`.
    pub fn checkpoint(&self, took: std::time::Duration) {
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.last_checkpoint_us.store(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Batches processed so far.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// The last batch's figures.
    pub fn last_batch(&self) -> BatchFigures {
        *self.last.lock().expect("metrics lock")
    }

    /// Everything in the Prometheus text exposition format.
    pub fn prometheus(&self, registry: &PluginRegistry) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let plain = |v: u64| vec![(String::new(), v as f64)];
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        metric(names::BATCHES, "counter", "Batches processed, failed ones included.", &plain(load(&self.batches)));
        metric(names::BATCHES_FAILED, "counter", "Batches failed by a plugin error.", &plain(load(&self.failed)));
        metric(names::RECORDS_PROCESSED, "counter", "Records in processed batches.", &plain(load(&self.records)));
        let receivers = self.receivers.lock().expect("metrics lock").clone();
        let per_source = |f: fn(&Receiver) -> u64| -> Vec<(String, f64)> {
            receivers.iter().map(|r| (format!("{{source=\"{}\"}}", escape(&r.name)), f(r) as f64)).collect()
        };
        metric(names::RECORDS_RECEIVED, "counter", "Records received, per source.", &per_source(Receiver::received));
        metric(
            names::INVALID_LINES,
            "counter",
            "Lines dropped as not UTF-8, per source.",
            &per_source(Receiver::invalid),
        );
        metric(names::LATE_RECORDS, "counter", "Records late for their event-time windows.", &plain(load(&self.late)));
        metric(names::SWAPS, "counter", "Plugin versions that started serving.", &plain(load(&self.swaps)));
        let errors = self.plugin_errors.samples("plugin", "class");
        metric(names::PLUGIN_ERRORS, "counter", "Failed plugin calls, per plugin and error class.", &errors);
        let last = self.last_batch();
        let seconds = |ms: u64| vec![(String::new(), ms as f64 / 1000.0)];
        metric(names::LAST_BATCH_TIME, "gauge", "Time of the last batch.", &seconds(last.time_ms));
        metric(names::LAST_BATCH_RECORDS, "gauge", "Records of the last batch.", &plain(last.records));
        metric(
            names::LAST_SCHEDULING_DELAY,
            "gauge",
            "Scheduling delay of the last batch.",
            &seconds(last.scheduling_delay_ms),
        );
        metric(names::LAST_PROCESSING, "gauge", "Processing time of the last batch.", &seconds(last.processing_ms));
        metric(names::PROCESSING, "counter", "Processing time of all batches.", &seconds(load(&self.processing_ms)));
        let versions: Vec<(String, f64)> = registry
            .plugins()
            .map(|(index, name, _)| {
                let version = registry.current(index);
                (format!("{{plugin=\"{}\",version=\"{}\"}}", escape(name), version.short_hash()), 1.0)
            })
            .collect();
        metric(names::PLUGIN_INFO, "gauge", "The serving version of each plugin.", &versions);
        // Versions that serve, are kept for a rollback or are a shadow keep their series.
        crate::runtime::plugin_metrics::retain(|plugin, version| {
            registry.index(plugin).is_none_or(|index| {
                let hash = |v: &crate::runtime::PluginVersion| v.short_hash() == version;
                hash(&registry.current(index))
                    || registry.history(index).iter().any(|v| hash(v))
                    || registry.shadow(index).is_some_and(|s| hash(&s.version))
            })
        });
        let (mut values, mut sums, mut counts) = (Vec::new(), Vec::new(), Vec::new());
        for ((plugin, version, stage, name), figures) in crate::runtime::plugin_metrics::snapshot() {
            let labels = format!(
                "{{plugin=\"{}\",version=\"{version}\",stage=\"{}\",name=\"{name}\",kind=\"{}\"}}",
                escape(&plugin),
                escape(stage.as_deref().unwrap_or("")),
                figures.kind.name()
            );
            match figures.kind {
                crate::runtime::plugin_metrics::Kind::Histogram => {
                    sums.push((labels.clone(), figures.value));
                    counts.push((labels, figures.count as f64));
                }
                _ => values.push((labels, figures.value)),
            }
        }
        let help = "Counters and gauges plugins record (sluice_sdk::metrics), per plugin, version, stage and name.";
        metric(names::PLUGIN_METRIC, "untyped", help, &values);
        let help = "The sum of a plugin histogram's observations.";
        metric(&format!("{}_sum", names::PLUGIN_METRIC), "untyped", help, &sums);
        let help = "The number of a plugin histogram's observations.";
        metric(&format!("{}_count", names::PLUGIN_METRIC), "untyped", help, &counts);
        let diverted = self.diverted.samples("stage", "action");
        metric(names::RECORDS_DIVERTED, "counter", "Records an on_error policy took out of a batch.", &diverted);
        metric(
            names::AUTO_ROLLBACKS,
            "counter",
            "Plugin versions rolled back after failing batches.",
            &plain(load(&self.auto_rollbacks)),
        );
        metric(names::CHECKPOINTS, "counter", "Checkpoints written.", &plain(load(&self.checkpoints)));
        metric(
            names::LAST_CHECKPOINT,
            "gauge",
            "Time to write the last checkpoint.",
            &[(String::new(), load(&self.last_checkpoint_us) as f64 / 1e6)],
        );
        metric(
            names::WAITING_BATCHES,
            "gauge",
            "Batches received and not started.",
            &plain(self.backlog.waiting() as u64),
        );
        let rates: Vec<(String, f64)> =
            receivers.iter().filter_map(|r| Some((format!("{{source=\"{}\"}}", escape(&r.name)), r.rate()?))).collect();
        metric(names::RECEIVE_RATE_LIMIT, "gauge", "The rate a receiver may read at.", &rates);
        let partitions = |f: fn(&crate::receiver::PartitionStatus) -> Option<i64>| -> Vec<(String, f64)> {
            receivers
                .iter()
                .flat_map(|r| r.partitions().into_iter().map(move |p| (r.name.clone(), p)))
                .filter_map(|(source, p)| {
                    let labels = format!(
                        "{{source=\"{}\",topic=\"{}\",partition=\"{}\"}}",
                        escape(&source),
                        escape(&p.topic),
                        p.partition
                    );
                    Some((labels, f(&p)? as f64))
                })
                .collect()
        };
        metric(
            names::PARTITION_OFFSET,
            "gauge",
            "The next offset a source reads, per partition.",
            &partitions(|p| p.offset),
        );
        metric(
            names::PARTITION_LAG,
            "gauge",
            "Records written and not yet read, per partition.",
            &partitions(|p| p.lag),
        );
        let shards = |f: fn(&crate::receiver::ShardStatus) -> Option<f64>| -> Vec<(String, f64)> {
            receivers
                .iter()
                .flat_map(|r| r.shards().into_iter().map(move |s| (r.name.clone(), s)))
                .filter_map(|(source, s)| {
                    let labels = format!("{{source=\"{}\",shard=\"{}\"}}", escape(&source), escape(&s.shard));
                    Some((labels, f(&s)?))
                })
                .collect()
        };
        metric(
            names::SHARD_MILLIS_BEHIND,
            "gauge",
            "How far a shard's last read was behind its newest record, ms.",
            &shards(|s| s.millis_behind.map(|ms| ms as f64)),
        );
        metric(
            names::SHARD_RETRIES,
            "counter",
            "Calls to a shard retried after throttling or errors.",
            &shards(|s| Some(s.retries as f64)),
        );
        let answering: Vec<(String, crate::receiver::Answers)> =
            receivers.iter().filter_map(|r| Some((escape(&r.name), r.answers()?))).collect();
        let answers: Vec<(String, f64)> = answering
            .iter()
            .flat_map(|(source, a)| {
                [("ok", a.ok), ("try_later", a.try_later), ("error", a.error)]
                    .map(|(answer, n)| (format!("{{source=\"{source}\",answer=\"{answer}\"}}"), n as f64))
            })
            .collect();
        metric(names::SOURCE_ANSWERS, "counter", "Calls a source answered, per source and answer.", &answers);
        let per_answering = |f: fn(&crate::receiver::Answers) -> u64| -> Vec<(String, f64)> {
            answering.iter().map(|(source, a)| (format!("{{source=\"{source}\"}}"), f(a) as f64)).collect()
        };
        metric(
            names::SOURCE_PENDING,
            "gauge",
            "Records received and not yet answered, per source.",
            &per_answering(|a| a.pending),
        );
        metric(
            names::SOURCE_CONNECTIONS,
            "gauge",
            "Connections open to a source, per source.",
            &per_answering(|a| a.connections),
        );
        metric(
            names::SOURCE_BAD_CONNECTIONS,
            "counter",
            "Connections closed for a protocol error, per source.",
            &per_answering(|a| a.bad_connections),
        );
        out
    }
}

/// Plugin events (emitted by the registry): swaps and automatic rollbacks are counted, every
/// event but a supersession joins the history and the event stream.
impl PluginEventSink for Metrics {
    fn plugin_event(&self, event: &PluginEvent) {
        match event {
            PluginEvent::Swapped { .. } => self.swaps.fetch_add(1, Ordering::Relaxed),
            PluginEvent::AutoRolledBack { .. } => self.auto_rollbacks.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        if let Some(record) = event.record() {
            self.events.plugin(record);
        }
    }
}

/// A counter by two labels: a name (plugin, stage) and a fixed word (error class, action).
#[derive(Debug, Default)]
struct LabelledCounts(Mutex<BTreeMap<(String, &'static str), u64>>);

impl LabelledCounts {
    fn add(&self, name: &str, word: &'static str, n: u64) {
        *self.0.lock().expect("metrics lock").entry((name.to_string(), word)).or_insert(0) += n;
    }

    /// `{<name_label>="...",<word_label>="..."}` → value, for the exposition.
    fn samples(&self, name_label: &str, word_label: &str) -> Vec<(String, f64)> {
        let counts = self.0.lock().expect("metrics lock");
        counts
            .iter()
            .map(|((name, word), n)| {
                (format!("{{{name_label}=\"{}\",{word_label}=\"{word}\"}}", escape(name)), *n as f64)
            })
            .collect()
    }
}

/// Escapes a Prometheus label value.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
