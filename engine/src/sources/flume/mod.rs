//! The Flume source: `type = "flume"`. Sluice listens on `address` as a Flume NG Thrift source,
//! so a Flume agent's Thrift sink (or any Flume RPC client) pushes events to it, like Spark's
//! reliable Flume receiver. This folder owns the config and validation (`mod.rs`), the server
//! and its answers (`server.rs`), what stands between clients' bytes and the `thrift` crate
//! (`guard.rs`), the record encodings (`record.rs`), Flume's IDL (`flume.thrift`, from
//! apache/flume) and the Rust code generated from it (`protocol.rs`,
//! `scripts/gen-flume-thrift.sh`). It never touches the checkpoint file or the batch log's
//! format: it hands the log its blocks, as the socket source does.
//!
//! - Wire: the framed transport with the compact protocol (`protocol = "compact"`, the default
//!   of Flume's `ThriftRpcClient`, Thrift sink and Thrift source) or the binary protocol
//!   (`protocol = "binary"`); `ThriftSourceProtocol.append` and `appendBatch`. One thread per
//!   connection; calls on a connection are answered in order.
//! - Answers (Flume's `Status`, which has no "try later"): `OK` once the events are in the
//!   write-ahead log (`wal = true`), or once they are in the receiver's buffer without it;
//!   `FAILED` — "try later", nothing was taken, as Flume's own Thrift source answers when its
//!   channel is full — while the source is paused, held back by backpressure, over its rate, or
//!   stopping, and when the log did not take the events within [`ANSWER_WAIT`]; `ERROR` for a
//!   batch of more than `max_batch` events or a write-ahead log that failed. Flume's clients
//!   and sinks resend on anything but `OK`, so with `wal` nothing answered `OK` is lost (at
//!   least once: what was resent may arrive twice).
//! - A frame longer than `max_frame` (default [`DEFAULT_MAX_FRAME`], the limit of Flume's own
//!   `TFastFramedTransport`), a malformed frame, or a client speaking another protocol: that
//!   connection is closed with a log line (and counted); the others go on.
//!
//! Checked at load ([`FlumeSourceConfig::validate`]): `address` is `host:port` as the socket
//! source checks it, `wal` needs `checkpoint_dir`, `max_rate`, `max_batch` at least 1,
//! `max_frame` from 1 KiB to 1 GiB. The address is the source's resource: two sources may not
//! listen on one.

mod guard;
// Generated (see the file's header): neither formatted nor linted.
#[rustfmt::skip]
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic, unused_qualifications, dead_code)]
mod protocol;
mod record;
mod server;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{Cut, Position, Source, SourceContext, StartError};
use crate::batch_log::{BatchLog, LoggedInput};
use crate::block::Block;
use crate::fields::ConfigError;
use crate::receiver::Receiver;

/// `max_frame` when not set: 16 MB, the `maxLength` of Flume's `TFastFramedTransport`.
pub const DEFAULT_MAX_FRAME: usize = 16_384_000;
/// `max_batch` when not set: events in one `appendBatch`.
pub const DEFAULT_MAX_BATCH: usize = 10_000;
/// The longest a call waits for its events to reach the write-ahead log before it is answered
/// `FAILED` (Flume's clients time a call out after 20 s).
pub const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// `type = "flume"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlumeSourceConfig {
    /// Unique name; stages and sinks read it by this name.
    pub name: String,
    /// `host:port` to listen on (`0.0.0.0:4141` for every interface): an IPv4 address, an IPv6
    /// address in brackets or a hostname, and a port from 1 to 65535.
    pub address: String,
    /// The Thrift protocol the senders speak: `compact` (Flume's default) or `binary`.
    #[serde(default)]
    pub protocol: FlumeProtocol,
    /// What an event becomes: `text` (the body as a line) or `record` (headers, body and the
    /// `timestamp` header: `sluice_sdk::FlumeRecord`).
    #[serde(default)]
    pub format: FlumeFormat,
    /// Write the events of every call to the write-ahead log in `checkpoint_dir` before
    /// answering `OK`; after a crash, blocks of unfinished batches are replayed.
    #[serde(default)]
    pub wal: bool,
    /// The most events one `appendBatch` may carry (default 10000); a bigger one is answered
    /// `ERROR`.
    pub max_batch: Option<usize>,
    /// The largest frame (one call) a sender may send ("16MiB"; default 16384000 bytes, as
    /// Flume's own transport); a bigger one closes its connection.
    #[serde(default, with = "crate::fields::size::option")]
    pub max_frame: Option<usize>,
    /// Take at most this many records per second; calls over it are answered `FAILED` (try
    /// later).
    pub max_rate: Option<u64>,
}

/// `protocol`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlumeProtocol {
    /// `TCompactProtocol`, the default of Flume's Thrift clients and sinks.
    #[default]
    Compact,
    /// `TBinaryProtocol`.
    Binary,
}

/// `format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlumeFormat {
    /// The body as a UTF-8 line (`String`, like a socket line); a body that is not UTF-8 is
    /// dropped and counted as invalid.
    #[default]
    Text,
    /// The whole event: `sluice_sdk::FlumeRecord`.
    Record,
}

impl FlumeSourceConfig {
    /// The source; it listens when started.
    pub fn build(&self) -> FlumeSource {
        FlumeSource { config: self.clone(), started: None }
    }

    pub(crate) fn max_frame(&self) -> usize {
        self.max_frame.unwrap_or(DEFAULT_MAX_FRAME)
    }

    pub(crate) fn max_batch(&self) -> usize {
        self.max_batch.unwrap_or(DEFAULT_MAX_BATCH)
    }

    /// What `sluice check` says of its answers.
    pub(crate) const fn answer_note(&self) -> &'static str {
        if self.wal {
            "OK answered once the events are in the write-ahead log"
        } else {
            "OK answered once the events are in memory: a crash loses what was answered"
        }
    }

    /// Every problem of this source's fields, each at ``sources `<name>`.<field>``; `checkpointed`:
    /// the pipeline has a `checkpoint_dir` (where the write-ahead log lives).
    pub fn validate(&self, checkpointed: bool) -> Vec<ConfigError> {
        let at = |field: &str| format!("sources `{}`.{field}", self.name);
        let mut errors = Vec::new();
        if let Err(problem) = super::socket::check_address(&self.address) {
            errors.push(ConfigError::new(
                at("address"),
                format!(
                    "expected \"host:port\" to listen on (an IP address or hostname, then a port from 1 to 65535, \
                     e.g. \"0.0.0.0:4141\"), found \"{}\": {problem}",
                    crate::fields::shorten(&self.address, 100)
                ),
            ));
        }
        if self.wal && !checkpointed {
            errors.push(ConfigError::new(
                at("wal"),
                "the write-ahead log lives in the checkpoint: set [pipeline] checkpoint_dir",
            ));
        }
        if self.max_rate == Some(0) {
            errors.push(ConfigError::new(at("max_rate"), "must be at least 1 record/s"));
        }
        if self.max_batch == Some(0) {
            errors.push(ConfigError::new(at("max_batch"), "must be at least 1 event"));
        }
        if let Some(size) = self.max_frame.filter(|size| !(1024..=1 << 30).contains(size)) {
            errors.push(ConfigError::new(at("max_frame"), format!("expected 1KiB to 1GiB, found {size} bytes")));
        }
        errors
    }
}

/// A Flume source: a server that takes events into its receiver, and the cuts that take the
/// blocks (logging them first with `wal`, which lets the server answer `OK`).
#[derive(Debug)]
pub struct FlumeSource {
    config: FlumeSourceConfig,
    /// Set by `start`.
    started: Option<Started>,
}

#[derive(Debug)]
struct Started {
    receiver: Arc<Receiver>,
    /// With `wal`: the log each cut's blocks go to before they count.
    wal: Option<BatchLog>,
}

impl Source for FlumeSource {
    fn resume(&mut self, _position: Option<Position>, _logged: &[(u64, &LoggedInput)]) {
        // Nothing to take up: what the last run logged is replayed from the log.
    }

    fn start(&mut self, context: SourceContext) -> Result<(), StartError> {
        let receiver = context.receiver.clone();
        receiver.set_rate(self.config.max_rate.map(|r| r as f64));
        receiver.answers_update(|_| {});
        let wal = if self.config.wal { context.log.clone() } else { None };
        server::Server::bind(&self.config, &context, wal.is_some())?.spawn();
        self.started = Some(Started { receiver, wal });
        Ok(())
    }

    fn finished(&mut self, stopping: bool) -> bool {
        // Senders never end a Flume source: only a stop does.
        if stopping && let Some(started) = &self.started {
            started.receiver.finish();
        }
        stopping
    }

    fn cut(&mut self, cut: Cut) -> Vec<Block> {
        let Some(started) = &self.started else { return Vec::new() };
        let blocks = started.receiver.cut(cut.seq);
        if let Some(log) = &started.wal {
            super::socket::log_blocks(log, cut.batch, &started.receiver, &blocks);
        }
        blocks
    }

    fn position(&self, _through: u64) -> Position {
        Position::Nothing
    }

    fn commit(&mut self, _through: u64) {
        // Answers follow the write-ahead log, which is durable before the checkpoint.
    }

    fn replay(&mut self, _time: u64, logged: LoggedInput) -> Vec<Block> {
        logged.blocks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> FlumeSourceConfig {
        toml::from_str(&format!("name = \"events\"\n{toml}")).unwrap()
    }

    #[test]
    fn validate_names_the_source_and_field() {
        let bad = config("address = \"0.0.0.0\"\nwal = true\nmax_rate = 0\nmax_batch = 0\nmax_frame = \"10B\"");
        let errors = bad.validate(false);
        let locations: Vec<&str> = errors.iter().map(|e| e.location.as_str()).collect();
        assert_eq!(
            locations,
            [
                "sources `events`.address",
                "sources `events`.wal",
                "sources `events`.max_rate",
                "sources `events`.max_batch",
                "sources `events`.max_frame"
            ]
        );
        assert!(errors[0].message.contains("found \"0.0.0.0\": no `:port`"), "{errors:?}");
        assert_eq!(errors[4].message, "expected 1KiB to 1GiB, found 10 bytes");
        let good = config("address = \"127.0.0.1:4141\"\nwal = true\nformat = \"record\"\nprotocol = \"binary\"");
        assert_eq!(good.validate(true), []);
        assert_eq!((good.max_frame(), good.max_batch()), (DEFAULT_MAX_FRAME, DEFAULT_MAX_BATCH));
    }
}
