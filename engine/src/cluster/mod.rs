//! One pipeline on many machines: `[cluster]` in the pipeline file. Every `sluice` process started
//! with the same file joins the Kafka source's consumer group `group_id` (cooperative-sticky
//! assignment); Kafka's group protocol decides which member reads which partition, and the
//! checkpoint store ([`store`]) holds each partition's batch log, so a member that gains a
//! partition carries on exactly where its last owner stopped. No home-made cluster manager.
//!
//! This room owns the `[cluster]` section, its validation (what a cluster can run today) and the
//! checkpoint store. It never touches Kafka: the Kafka source (`sources/kafka/member.rs`) joins
//! the group and writes the log; the scheduler runs each partition's records as a task of their
//! own (`block::Task`), so each partition's output is written under its own batch and name.
//!
//! What runs in a cluster today: one Kafka source, per-record and per-partition stages (`map`,
//! `flat_map`, `filter`, `map_partitions`, `key_by`, `union`, `repartition`), and the file,
//! print and dashboard sinks. Stages that group by key across partitions need the repartition
//! topic, not built yet: they are refused with that reason, as are the Kafka and PostgreSQL
//! sinks (their replay detection is per sink, not yet per partition).

pub(crate) mod store;

use std::time::Duration;

use serde::Deserialize;

use crate::config::{PipelineConfig, StageOp};
use crate::fields::{ConfigError, duration};
use crate::sinks::SinkConfig;
use crate::sources::SourceConfig;

pub(crate) use store::CheckpointStore;

/// What a member's source works with: its group, its name, the store.
#[derive(Clone, Debug)]
pub(crate) struct Membership {
    /// `group_id`.
    pub(crate) group_id: String,
    /// This member's name.
    pub(crate) member: String,
    /// The checkpoint store.
    pub(crate) store: CheckpointStore,
    /// `session_timeout`.
    pub(crate) session_timeout: Duration,
}

impl Membership {
    /// Opens the store of `config` for pipeline `pipeline`.
    pub(crate) fn open(config: &ClusterConfig, pipeline: &str) -> Result<Self, store::StoreError> {
        Ok(Self {
            group_id: config.group_id.clone(),
            member: config.member(),
            store: CheckpointStore::open(&config.checkpoint_store, pipeline)?,
            session_timeout: config.session_timeout(),
        })
    }
}

/// Default `session_timeout`: a member that stops heartbeating loses its partitions after this.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// `[cluster]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClusterConfig {
    /// The Kafka consumer group every member joins.
    pub group_id: String,
    /// Where partitions' batch logs live: `file:///shared/dir` or `s3://bucket/prefix`
    /// (endpoint, region and credentials from the `AWS_*` environment).
    pub checkpoint_store: String,
    /// This member's name in logs and the store (default `<host>-<pid>`).
    pub member: Option<String>,
    /// How long a silent member keeps its partitions (default 10 s; 1 s to 5 min).
    #[serde(default, with = "duration::option")]
    pub session_timeout: Option<Duration>,
}

impl ClusterConfig {
    /// This member's name.
    pub(crate) fn member(&self) -> String {
        self.member.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
            let host = if host.is_empty() { "sluice".to_string() } else { host };
            format!("{host}-{}", std::process::id())
        })
    }

    /// `session_timeout`, or its default.
    pub(crate) fn session_timeout(&self) -> Duration {
        self.session_timeout.unwrap_or(SESSION_TIMEOUT)
    }

    /// Everything a cluster cannot run, each naming the field.
    pub(crate) fn validate(&self, config: &PipelineConfig) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if self.group_id.trim().is_empty() {
            errors
                .push(ConfigError::new("cluster.group_id", "must not be empty: the consumer group every member joins"));
        }
        if let Some(problem) = url_problem(&self.checkpoint_store) {
            errors.push(ConfigError::new("cluster.checkpoint_store", problem));
        }
        if let Some(timeout) = self.session_timeout
            && !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&timeout)
        {
            errors.push(ConfigError::new("cluster.session_timeout", "expected 1s to 5m"));
        }
        if self.member.as_deref().is_some_and(|m| m.trim().is_empty()) {
            errors.push(ConfigError::new("cluster.member", "must not be empty (leave it out for <host>-<pid>)"));
        }
        if config.pipeline.checkpoint_dir.is_some() {
            errors.push(ConfigError::new(
                "pipeline.checkpoint_dir",
                "a cluster keeps its checkpoints in cluster.checkpoint_store: remove checkpoint_dir",
            ));
        }
        match config.sources.as_slice() {
            [SourceConfig::Kafka(kafka)] if kafka.group_id.is_some() => errors.push(ConfigError::new(
                format!("sources `{}`.group_id", kafka.name),
                "in a cluster the group is cluster.group_id: remove it here",
            )),
            [SourceConfig::Kafka(_)] => {}
            _ => errors.push(ConfigError::new(
                "sources",
                "a cluster reads one source, of type \"kafka\": its partitions are what the members share",
            )),
        }
        for stage in &config.stages {
            if !per_partition(&stage.op) {
                errors.push(ConfigError::new(
                    format!("stages `{}`.op", stage.name),
                    "groups records across partitions, which a cluster cannot run yet (keyed work needs \
                     the repartition topic); in a cluster use map, flat_map, filter, map_partitions, \
                     key_by, union or repartition",
                ));
            }
        }
        for sink in &config.sinks {
            if matches!(sink, SinkConfig::Kafka(_) | SinkConfig::Postgres(_)) {
                errors.push(ConfigError::new(
                    format!("sinks `{}`.type", sink.name()),
                    "a cluster cannot write to this sink type yet (its replay detection is per sink, not \
                     per partition); in a cluster use file, print or dashboard",
                ));
            }
        }
        errors
    }
}

/// Whether a stage's op works on each partition's records alone.
fn per_partition(op: &StageOp) -> bool {
    matches!(
        op,
        StageOp::Map
            | StageOp::FlatMap
            | StageOp::Filter
            | StageOp::MapPartitions
            | StageOp::KeyBy
            | StageOp::Union
            | StageOp::Repartition(_)
    )
}

/// What is wrong with `checkpoint_store`'s form (the store itself is not asked), if anything.
fn url_problem(url: &str) -> Option<String> {
    const EXPECTED: &str = "expected file:///absolute/directory or s3://bucket/prefix";
    match url::Url::parse(url) {
        Err(err) => Some(format!("not a URL ({err}); {EXPECTED}")),
        Ok(parsed) if parsed.scheme() == "file" && parsed.to_file_path().is_ok() => None,
        Ok(parsed) if parsed.scheme() == "s3" && parsed.host_str().is_some_and(|b| !b.is_empty()) => None,
        Ok(_) => Some(format!("`{url}`: {EXPECTED}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[pipeline]
name = "p"

[plugins]

[[sources]]
name = "lines"
type = "kafka"
brokers = "127.0.0.1:9092"
topics = ["lines"]

[[sinks]]
name = "out"
input = "lines"
type = "file"
path = "out"
"#;

    fn problems(cluster: &str, more: &str) -> Vec<String> {
        let config: PipelineConfig = toml::from_str(&format!("{BASE}{more}\n[cluster]\n{cluster}")).unwrap();
        let cluster = config.cluster.as_ref().expect("a [cluster] section");
        cluster.validate(&config).into_iter().map(|e| format!("{}: {}", e.location, e.message)).collect()
    }

    const GOOD: &str = "group_id = \"g\"\ncheckpoint_store = \"file:///tmp/store\"\n";

    #[test]
    fn a_kafka_source_with_per_partition_stages_and_file_sinks_runs_in_a_cluster() {
        assert!(problems(GOOD, "").is_empty(), "{:?}", problems(GOOD, ""));
        let s3 = "group_id = \"g\"\ncheckpoint_store = \"s3://bucket/prefix\"\n";
        assert!(problems(s3, "").is_empty());
    }

    #[test]
    fn what_a_cluster_cannot_run_is_refused_by_field() {
        let bad_store = problems("group_id = \"g\"\ncheckpoint_store = \"/tmp/store\"\n", "");
        assert!(bad_store[0].starts_with("cluster.checkpoint_store: not a URL"), "{bad_store:?}");
        let bad_scheme = problems("group_id = \"g\"\ncheckpoint_store = \"http://x/y\"\n", "");
        assert!(bad_scheme[0].contains("expected file:///absolute/directory or s3://bucket/prefix"), "{bad_scheme:?}");
        let keyed = problems(GOOD, "[[stages]]\nname = \"c\"\ninput = \"lines\"\nop = \"count_by_value\"\n");
        assert_eq!(keyed.len(), 1, "{keyed:?}");
        assert!(keyed[0].starts_with("stages `c`.op: groups records across partitions"), "{keyed:?}");
        let timeout = problems(&format!("{GOOD}session_timeout = \"10m\"\n"), "");
        assert_eq!(timeout, ["cluster.session_timeout: expected 1s to 5m"]);
        let empty = problems("group_id = \" \"\ncheckpoint_store = \"file:///tmp/s\"\n", "");
        assert_eq!(empty.len(), 1);
        assert!(empty[0].starts_with("cluster.group_id"));
    }

    #[test]
    fn a_cluster_reads_one_kafka_source_and_keeps_no_checkpoint_dir() {
        let two = problems(GOOD, "[[sources]]\nname = \"more\"\ntype = \"socket\"\naddress = \"127.0.0.1:9\"\n");
        assert!(two.iter().any(|p| p.starts_with("sources: a cluster reads one source")), "{two:?}");
        let with_dir = BASE.replace("name = \"p\"", "name = \"p\"\ncheckpoint_dir = \"c\"");
        let config: PipelineConfig = toml::from_str(&format!("{with_dir}\n[cluster]\n{GOOD}")).unwrap();
        let found = config.cluster.as_ref().unwrap().validate(&config);
        assert!(found.iter().any(|e| e.location == "pipeline.checkpoint_dir"), "{found:?}");
    }
}
