//! One pipeline on many machines: `[cluster]` in the pipeline file. Every `sluice` process started
//! with the same file joins the Kafka source's consumer group `group_id` (cooperative-sticky
//! assignment); Kafka's group protocol decides which member reads which partition, and the
//! checkpoint store ([`store`]) holds each partition's batch log, so a member that gains a
//! partition carries on exactly where its last owner stopped. No home-made cluster manager.
//!
//! This room owns the `[cluster]` section, its fields' validation, the checkpoint store
//! (`config/cluster.rs` checks what a cluster can run, with the rest of the file), each
//! member's heartbeat ([`members`]) and cluster-wide hot swaps ([`agent`], [`deploys`]). It
//! never touches Kafka: the Kafka source (`sources/kafka/member.rs`) joins the group and writes
//! the partitions' logs; the scheduler runs each partition's records as a task of their own
//! (`block::Task`), so each partition's output is written under its own batch and name, and asks
//! the agent before each batch which versions serve it.
//!
//! What runs in a cluster today: one Kafka source, per-record and per-partition stages (`map`,
//! `flat_map`, `filter`, `map_partitions`, `key_by`, `union`, `repartition`), the file, print,
//! dashboard and PostgreSQL sinks (the last with progress rows per partition and batch), and
//! the Kafka sink at least once. Stages that group by key across partitions need the
//! repartition topic, not built yet: they are refused with that reason, as is a transactional
//! Kafka sink (its transactional id is per sink, not yet per partition).

pub(crate) mod agent;
mod deploys;
mod members;
pub(crate) mod store;

use std::time::Duration;

use serde::Deserialize;

use crate::fields::{ConfigError, duration};

pub(crate) use agent::{Agent, JoinError};
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
    /// With a keyed stage: the repartition topic the source also reads (and creates).
    pub(crate) shuffle_topic: Option<String>,
}

impl Membership {
    /// Opens the store of `config` for pipeline `pipeline`, as member `member` (`--member`)
    /// or the one the config names.
    pub(crate) fn open(
        config: &ClusterConfig,
        pipeline: &str,
        member: Option<&str>,
    ) -> Result<Self, store::StoreError> {
        Ok(Self {
            group_id: config.group_id.clone(),
            member: member.map_or_else(|| config.member(), str::to_string),
            store: CheckpointStore::open(&config.checkpoint_store, pipeline)?,
            session_timeout: config.session_timeout(),
            shuffle_topic: None,
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
            let host: String =
                host.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')).collect();
            let host = if host.is_empty() || host.starts_with('.') { "sluice".to_string() } else { host };
            format!("{host}-{}", std::process::id())
        })
    }

    /// `session_timeout`, or its default.
    pub(crate) fn session_timeout(&self) -> Duration {
        self.session_timeout.unwrap_or(SESSION_TIMEOUT)
    }

    /// Problems with `[cluster]`'s own fields; what a cluster can run is checked with the
    /// rest of the file (`config/cluster.rs`).
    pub(crate) fn validate(&self) -> Vec<ConfigError> {
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
        if let Some(problem) = self.member.as_deref().and_then(member_name_problem) {
            errors.push(ConfigError::new("cluster.member", format!("{problem} (leave it out for <host>-<pid>)")));
        }
        errors
    }
}

/// What is wrong with a member's name, if anything: it names objects in the store and shows in
/// URLs and metric labels, so it keeps to `A-Z a-z 0-9 . _ -`.
pub(crate) fn member_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 128 {
        return Some("expected 1 to 128 characters");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    (!name.chars().all(allowed) || name.starts_with('.'))
        .then_some("expected letters, digits, `.`, `_` and `-`, not starting with `.`")
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
