//! The Kinesis source: `type = "kinesis"`. This folder owns its config and validation
//! (`mod.rs`), the AWS client and its error classes (`client.rs`), shard discovery and the
//! order shards are read in (`shards.rs`), the per-shard readers (`reader.rs`), cutting,
//! position, commit and replay (`source.rs`) and the record encodings (`record.rs`). It never
//! touches the checkpoint file or the batch log's format: it hands the log its ranges and the
//! checkpoint its [`Position`].
//!
//! - The shards of `stream` are listed every `discovery_interval`; each is read by a task of
//!   its own (`GetRecords` every `poll_interval`, at once while it is behind). After a reshard a
//!   child shard is read only once every parent has been read to its end and taken by a batch,
//!   so records of one partition key stay in order.
//! - At every block cut the source takes what its readers fetched, per shard, up to each shard's
//!   share of the batch (`max_rate` or the backpressure rate, split over the shards being read);
//!   the rest waits in the reader's buffer, and a reader whose buffer is full stops fetching. At
//!   the cut that closes a batch, the batch's sequence-number range per shard (first, last, and
//!   whether it took the shard to its end) goes to the batch log before the batch's blocks are
//!   handed over. After a crash a logged batch reads exactly its ranges again
//!   (`AT_SEQUENCE_NUMBER`): replayable, so Kinesis → an idempotent or transactional sink is
//!   exactly once.
//! - The checkpoint keeps, per shard, the last sequence number taken and the shards read to
//!   their end; a restart reads on `AFTER_SEQUENCE_NUMBER`.
//! - Throttling, expired iterators, limits and an unreachable endpoint are retried with back-off
//!   and reported on the receiver row; the run goes on.

mod client;
mod reader;
pub(crate) mod record;
mod shards;
mod source;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fields::ConfigError;
pub(crate) use source::KinesisSource;

/// `type = "kinesis"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinesisSourceConfig {
    /// Unique name; stages and sinks read it by this name.
    pub name: String,
    /// The stream to read.
    pub stream: String,
    /// The AWS region (default: the AWS configuration chain's, else `us-east-1`).
    pub region: Option<String>,
    /// Another endpoint than AWS's, e.g. `http://127.0.0.1:4567` (a local Kinesis) or a VPC
    /// endpoint.
    pub endpoint: Option<String>,
    /// Where a shard with no checkpointed position starts.
    #[serde(default)]
    pub initial_position: InitialPosition,
    /// What a record becomes: `text` (the data as a line) or `record` (partition key, sequence
    /// number, shard, arrival time and data: `sluice_sdk::KinesisRecord`).
    #[serde(default)]
    pub format: KinesisFormat,
    /// At most this many records per second, over all shards (each batch takes at most its
    /// share: rate × batch interval, split over the shards being read).
    pub max_rate: Option<u64>,
    /// How often the shards are listed (default 10 s).
    #[serde(default, with = "crate::fields::duration::option")]
    pub discovery_interval: Option<Duration>,
    /// How long a reader that is not behind waits between `GetRecords` calls (default 200 ms;
    /// Kinesis allows 5 calls per second per shard).
    #[serde(default, with = "crate::fields::duration::option")]
    pub poll_interval: Option<Duration>,
    /// At most this many records per `GetRecords` call (1 to 10 000; default 10 000).
    pub records_per_call: Option<i32>,
}

/// `initial_position`: `"trim_horizon"`, `"latest"` or `{ at_timestamp = "<RFC 3339>" }` (or
/// ms since the epoch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InitialPosition {
    /// The oldest record the stream keeps.
    #[default]
    TrimHorizon,
    /// Only records written after the source first started.
    Latest,
    /// Records that arrived at or after this time, ms since the epoch.
    AtTimestamp(i64),
}

const INITIAL_POSITION: &str =
    "\"trim_horizon\", \"latest\" or { at_timestamp = \"2026-12-01T00:00:00Z\" } (or ms since the epoch)";

impl<'de> Deserialize<'de> for InitialPosition {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct At {
            at_timestamp: toml::Value,
        }
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = InitialPosition;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(INITIAL_POSITION)
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Self::Value, E> {
                match name {
                    "trim_horizon" => Ok(InitialPosition::TrimHorizon),
                    "latest" => Ok(InitialPosition::Latest),
                    other => Err(E::custom(format!("expected {INITIAL_POSITION}, found \"{other}\""))),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let at: At = Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                timestamp_ms(&at.at_timestamp).map(InitialPosition::AtTimestamp).map_err(|found| {
                    serde::de::Error::custom(format!("at_timestamp: expected {INITIAL_POSITION}, found {found}"))
                })
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A time as ms since the epoch, from an integer, an RFC 3339 string or a TOML date-time; what
/// was found if it is none of them.
// The `String` is the value found, not a message: the caller puts it into serde's error.
fn timestamp_ms(value: &toml::Value) -> Result<i64, String> {
    let parse = |text: &str| {
        humantime::parse_rfc3339_weak(text)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_millis()).ok())
    };
    match value {
        toml::Value::Integer(ms) if *ms >= 0 => Ok(*ms),
        toml::Value::String(text) => parse(text).ok_or_else(|| format!("\"{text}\"")),
        toml::Value::Datetime(time) => parse(&time.to_string()).ok_or_else(|| time.to_string()),
        other => Err(other.to_string()),
    }
}

/// `format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KinesisFormat {
    /// The data as a UTF-8 line (`String`, like a socket line); data that is not UTF-8 is
    /// dropped and counted as invalid.
    #[default]
    Text,
    /// The whole record: `sluice_sdk::KinesisRecord`.
    Record,
}

/// What one batch took of one shard: sequence numbers `first..=last` (none if it took no
/// record), and whether it took the shard to its end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ShardRange {
    pub(crate) shard: String,
    pub(crate) first: Option<String>,
    pub(crate) last: Option<String>,
    #[serde(default)]
    pub(crate) ended: bool,
}

/// Where a Kinesis source is, as the checkpoint keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPositions {
    /// The last sequence number taken, per shard.
    pub after: BTreeMap<String, String>,
    /// The shards read to their end (closed by a reshard, every record taken).
    pub ended: BTreeSet<String>,
    /// When the source first started, ms since the epoch: where `initial_position = "latest"`
    /// starts a shard after a restart.
    pub started_ms: i64,
}

/// Orders Kinesis sequence numbers (decimal digits without leading zeros, up to 129 of them).
pub(crate) fn seq_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Default `records_per_call`, and its bounds.
const RECORDS_PER_CALL: i32 = 10_000;

impl KinesisSourceConfig {
    /// Every problem with this source's fields.
    pub(crate) fn validate(&self) -> Vec<ConfigError> {
        let at = format!("sources `{}`", self.name);
        let mut errors = Vec::new();
        let mut error = |field: &str, message: String| errors.push(ConfigError::new(format!("{at}.{field}"), message));
        let name_ok =
            |s: &str| (1..=128).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !name_ok(&self.stream) {
            error("stream", format!("expected a stream name (1–128 of A–Z a–z 0–9 _ . -), found \"{}\"", self.stream));
        }
        if let Some(region) = &self.region
            && (region.is_empty() || !region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
        {
            error("region", format!("expected an AWS region, e.g. \"us-east-1\", found \"{region}\""));
        }
        if let Some(endpoint) = &self.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            error("endpoint", format!("expected an http:// or https:// URL, found \"{endpoint}\""));
        }
        if self.max_rate == Some(0) {
            error("max_rate", "must be at least 1 record/s".into());
        }
        if let Some(n) = self.records_per_call
            && !(1..=RECORDS_PER_CALL).contains(&n)
        {
            error("records_per_call", format!("expected 1 to {RECORDS_PER_CALL}, found {n}"));
        }
        for (field, value) in [("discovery_interval", self.discovery_interval), ("poll_interval", self.poll_interval)] {
            if value == Some(Duration::ZERO) {
                error(field, "must be longer than 0".into());
            }
        }
        errors
    }

    /// The source.
    pub(crate) fn build(&self) -> KinesisSource {
        KinesisSource::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The deserializer's message as text: what these tests assert on.
    fn config(toml: &str) -> Result<KinesisSourceConfig, String> {
        toml::from_str(&format!("name = \"k\"\nstream = \"events\"\n{toml}")).map_err(|e| e.to_string())
    }

    #[test]
    fn initial_position_takes_names_or_a_time() {
        assert_eq!(config("").unwrap().initial_position, InitialPosition::TrimHorizon);
        assert_eq!(config("initial_position = \"latest\"").unwrap().initial_position, InitialPosition::Latest);
        let at = |v: &str| config(&format!("initial_position = {{ at_timestamp = {v} }}")).map(|c| c.initial_position);
        assert_eq!(at("1000").unwrap(), InitialPosition::AtTimestamp(1000));
        assert_eq!(at("\"1970-01-01T00:00:02Z\"").unwrap(), InitialPosition::AtTimestamp(2000));
        assert_eq!(at("1970-01-01T00:00:03Z").unwrap(), InitialPosition::AtTimestamp(3000));
        assert!(at("\"yesterday\"").unwrap_err().contains("at_timestamp: expected"), "{:?}", at("\"yesterday\""));
        let err = config("initial_position = \"oldest\"").unwrap_err();
        assert!(err.contains("\"trim_horizon\", \"latest\"") && err.contains("oldest"), "{err}");
    }

    #[test]
    fn fields_are_checked_by_name() {
        let fields = |toml: &str| config(toml).unwrap().validate().into_iter().map(|e| e.location).collect::<Vec<_>>();
        assert!(fields("endpoint = \"http://127.0.0.1:4567\"\nregion = \"eu-west-1\"").is_empty());
        assert_eq!(fields("endpoint = \"127.0.0.1:4567\""), ["sources `k`.endpoint"]);
        assert_eq!(fields("region = \"EU West\""), ["sources `k`.region"]);
        assert_eq!(
            fields("records_per_call = 0\nmax_rate = 0"),
            ["sources `k`.max_rate", "sources `k`.records_per_call"]
        );
        assert_eq!(fields("poll_interval = \"0s\""), ["sources `k`.poll_interval"]);
        let bad_stream: KinesisSourceConfig = toml::from_str("name = \"k\"\nstream = \"a b\"").unwrap();
        assert_eq!(bad_stream.validate().len(), 1);
    }

    #[test]
    fn sequence_numbers_order_by_length_then_digits() {
        use std::cmp::Ordering::*;
        assert_eq!(seq_cmp("9", "10"), Less);
        assert_eq!(seq_cmp("49680761008714586536425044472803425933589278204245311490", "4968"), Greater);
        assert_eq!(seq_cmp("123", "123"), Equal);
        assert_eq!(seq_cmp("124", "123"), Greater);
    }
}
