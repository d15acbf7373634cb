//! The Kafka source, Spark's direct stream: `type = "kafka"`. This folder owns its config and
//! validation (`mod.rs`), reading and offsets (`source.rs`), partition discovery
//! (`discover.rs`) and the record encodings (`record.rs`). It never touches the checkpoint file
//! or the batch log's format: it hands the log its ranges and the checkpoint its [`Position`].
//!
//! - Partitions of `topics` (or of every topic matching `topic_pattern`) are assigned to one
//!   consumer directly (no group membership: the source decides what each batch takes);
//!   partitions that appear later are found every `discovery_interval` and read from their
//!   beginning.
//! - At every block cut the source takes what librdkafka has fetched, per partition, up to each
//!   partition's share of the batch (`max_rate_per_partition`, or the backpressure rate split
//!   over the partitions); a partition at its share is paused until the next batch. At the cut
//!   that closes a batch, the batch's offset ranges `[from, until)` per partition are written to
//!   the batch log before the batch's blocks are handed over (one block per partition and cut,
//!   so partitions run in parallel). After a crash a logged batch reads exactly its ranges
//!   again: replayable, so Kafka → an idempotent or transactional sink is exactly once.
//! - The checkpoint keeps the next offset of every partition; once it is durable, those offsets
//!   are committed to `group_id`, so Kafka's tools show the pipeline's lag. Without
//!   `checkpoint_dir`, offsets are committed after each batch's sinks have committed, and a
//!   restart resumes from the group's committed offsets (at least once).
//! - A source owns its group id: a group with active members (another consumer reading with it)
//!   is refused at start. Give each pipeline its own `group_id`.
//! - An unreachable broker or a topic that does not exist yet is retried with back-off and
//!   reported on the receiver row; the run goes on.
//! - As a cluster's member (`[cluster]`, `member.rs`) all of the above about assignment and
//!   the batch log is different: the source subscribes in the cluster's group (cooperative-
//!   sticky) and the group assigns; each partition's batch log is in the checkpoint store, not
//!   the batch log; each partition's records of a batch are a task of their own.

mod discover;
mod member;
mod probe;
pub(crate) mod record;
mod shuffled;
mod source;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Position;
use crate::fields::ConfigError;
pub(crate) use source::{KafkaSource, KafkaStartError};

/// `type = "kafka"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Unique name; stages and sinks read it by this name.
    pub name: String,
    /// Bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The topics to read (or `topic_pattern`).
    pub topics: Option<Vec<String>>,
    /// A regular expression: every topic whose whole name matches is read (or `topics`).
    pub topic_pattern: Option<String>,
    /// The consumer group offsets are committed to (default `sluice.<pipeline>.<source>`).
    pub group_id: Option<String>,
    /// Where a partition with no checkpointed or committed offset starts.
    #[serde(default)]
    pub starting_offsets: StartingOffsets,
    /// At most this many records per second per partition (each batch takes at most its
    /// share: rate × batch interval).
    pub max_rate_per_partition: Option<u64>,
    /// What a record becomes: `text` (the value as a line) or `record` (key, value, topic,
    /// partition, offset, timestamp, headers: `sluice_sdk::KafkaRecord`).
    #[serde(default)]
    pub format: KafkaFormat,
    /// How often new partitions are looked for (default 5 s).
    #[serde(default, with = "crate::fields::duration::option")]
    pub discovery_interval: Option<Duration>,
    /// More librdkafka consumer properties (TLS, SASL, fetch sizes), passed through.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// `starting_offsets`: `"earliest"`, `"latest"`, or per partition
/// `{ "<topic>" = { "<partition>" = <offset> } }` (other partitions start at the earliest).
#[derive(Clone, Debug, Default)]
pub enum StartingOffsets {
    /// By name.
    Named(StartingPoint),
    /// Offsets by topic and partition.
    Partitions(BTreeMap<String, BTreeMap<String, i64>>),
    /// The default: the earliest.
    #[default]
    Earliest,
}

const STARTING_OFFSETS: &str =
    "\"earliest\", \"latest\" or offsets per partition, e.g. { \"events\" = { \"0\" = 42 } }";

impl<'de> Deserialize<'de> for StartingOffsets {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = StartingOffsets;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(STARTING_OFFSETS)
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Self::Value, E> {
                match name {
                    "earliest" => Ok(StartingOffsets::Named(StartingPoint::Earliest)),
                    "latest" => Ok(StartingOffsets::Named(StartingPoint::Latest)),
                    other => {
                        Err(E::custom(format!("starting_offsets: expected {STARTING_OFFSETS}, found \"{other}\"")))
                    }
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(StartingOffsets::Partitions)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `"earliest"` or `"latest"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartingPoint {
    /// The oldest record still in the partition.
    Earliest,
    /// Only records written after the source starts.
    Latest,
}

/// `format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaFormat {
    /// The value as a UTF-8 line (`String`, like a socket line); a value that is missing or not
    /// UTF-8 is dropped and counted as invalid.
    #[default]
    Text,
    /// The whole record: `sluice_sdk::KafkaRecord`.
    Record,
}

/// One partition of one topic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopicPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

/// The records of one partition one batch took: offsets `from..until`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OffsetRange {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) from: i64,
    pub(crate) until: i64,
}

/// Properties the source sets itself, and the field that decides each.
const OWNED: &[(&str, &str)] = &[
    ("bootstrap.servers", "`brokers`"),
    ("group.id", "`group_id`"),
    ("auto.offset.reset", "`starting_offsets`"),
    ("enable.auto.commit", "the source (offsets are committed after each checkpoint)"),
    ("enable.auto.offset.store", "the source"),
    ("enable.partition.eof", "the source"),
    ("partition.assignment.strategy", "`[cluster]` (cooperative-sticky)"),
    ("session.timeout.ms", "`cluster.session_timeout`"),
];

impl KafkaSourceConfig {
    /// Every problem with this source's fields.
    pub(crate) fn validate(&self) -> Vec<ConfigError> {
        let at = format!("sources `{}`", self.name);
        let mut errors = Vec::new();
        match (&self.topics, &self.topic_pattern) {
            (Some(_), Some(_)) => errors.push(ConfigError::new(
                format!("{at}.topic_pattern"),
                "give either `topics` or `topic_pattern`, not both",
            )),
            (None, None) => errors.push(ConfigError::new(
                format!("{at}.topics"),
                "missing: the topics to read, e.g. topics = [\"events\"] (or topic_pattern = \"events-.*\")",
            )),
            (Some(topics), None) if topics.is_empty() || topics.iter().any(|t| t.trim().is_empty()) => {
                errors.push(ConfigError::new(format!("{at}.topics"), "expected one or more non-empty topic names"))
            }
            (None, Some(pattern)) => {
                if let Err(err) = regex::Regex::new(pattern) {
                    errors.push(ConfigError::new(
                        format!("{at}.topic_pattern"),
                        format!("expected a regular expression: {err}"),
                    ));
                }
            }
            (Some(_), None) => {}
        }
        if self.max_rate_per_partition == Some(0) {
            errors.push(ConfigError::new(format!("{at}.max_rate_per_partition"), "must be at least 1 record/s"));
        }
        if let StartingOffsets::Partitions(topics) = &self.starting_offsets {
            for (topic, partitions) in topics {
                for (partition, offset) in partitions {
                    if partition.parse::<i32>().map_or(true, |p| p < 0) || *offset < 0 {
                        errors.push(ConfigError::new(
                            format!("{at}.starting_offsets.{topic}.{partition}"),
                            format!(
                                "expected a partition number and an offset ≥ 0, e.g. {{ \"{topic}\" = {{ \"0\" = 42 }} }}, found {partition} = {offset}"
                            ),
                        ));
                    }
                }
            }
        }
        if self.group_id.as_deref().is_some_and(|g| g.trim().is_empty()) {
            errors.push(ConfigError::new(format!("{at}.group_id"), "expected a non-empty consumer group id"));
        }
        crate::kafka::validate_client::<rdkafka::consumer::BaseConsumer>(
            &at,
            &self.brokers,
            &self.properties,
            OWNED,
            &mut errors,
        );
        errors
    }

    /// `group_id`, or the default for pipeline `pipeline`.
    pub(crate) fn group(&self, pipeline: &str) -> String {
        self.group_id.clone().unwrap_or_else(|| format!("sluice.{pipeline}.{}", self.name))
    }

    /// The configured start of `partition`, if `starting_offsets` names it.
    pub(crate) fn starting_offset(&self, partition: &TopicPartition) -> Option<i64> {
        let StartingOffsets::Partitions(topics) = &self.starting_offsets else { return None };
        topics.get(&partition.topic)?.iter().find(|(p, _)| p.parse() == Ok(partition.partition)).map(|(_, o)| *o)
    }

    /// `auto.offset.reset` for partitions without an offset.
    pub(crate) fn reset(&self) -> &'static str {
        match self.starting_offsets {
            StartingOffsets::Named(StartingPoint::Latest) => "latest",
            _ => "earliest",
        }
    }

    /// The source.
    pub(crate) fn build(&self) -> KafkaSource {
        KafkaSource::new(self.clone())
    }
}

/// The checkpoint's position of a Kafka source: the next offset of every partition read.
pub(crate) fn position(next: &BTreeMap<TopicPartition, i64>) -> Position {
    let mut topics: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
    for (tp, offset) in next {
        topics.entry(tp.topic.clone()).or_default().insert(tp.partition, *offset);
    }
    Position::Offsets(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> KafkaSourceConfig {
        toml::from_str(&format!("name = \"k\"\nbrokers = \"127.0.0.1:9092\"\n{toml}")).unwrap()
    }

    #[test]
    fn topics_or_a_pattern_and_owned_properties_are_checked_by_field() {
        let fields = |c: &KafkaSourceConfig| c.validate().into_iter().map(|e| e.location).collect::<Vec<_>>();
        assert!(fields(&config("topics = [\"a\"]")).is_empty());
        assert_eq!(fields(&config("")), ["sources `k`.topics"]);
        assert_eq!(fields(&config("topics = [\"a\"]\ntopic_pattern = \"a.*\"")), ["sources `k`.topic_pattern"]);
        assert_eq!(fields(&config("topic_pattern = \"a(\"")), ["sources `k`.topic_pattern"]);
        assert_eq!(
            fields(&config("topics = [\"a\"]\n[properties]\n\"group.id\" = \"x\"")),
            ["sources `k`.properties.group.id"]
        );
        let unknown = config("topics = [\"a\"]\n[properties]\n\"no.such.thing\" = \"x\"").validate();
        assert_eq!(unknown.len(), 1);
        assert!(unknown[0].message.contains("no.such.thing"), "{}", unknown[0].message);
    }

    #[test]
    fn starting_offsets_take_names_or_offsets_per_partition() {
        let c = config("topics = [\"a\"]\nstarting_offsets = \"latest\"");
        assert_eq!(c.reset(), "latest");
        let c = config("topics = [\"a\"]\nstarting_offsets = { a = { \"1\" = 42 } }");
        assert_eq!(c.reset(), "earliest");
        assert_eq!(c.starting_offset(&TopicPartition { topic: "a".into(), partition: 1 }), Some(42));
        assert_eq!(c.starting_offset(&TopicPartition { topic: "a".into(), partition: 0 }), None);
        assert_eq!(config("topics = [\"a\"]\nstarting_offsets = { a = { x = 1 } }").validate().len(), 1);
    }
}
