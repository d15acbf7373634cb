//! The TCP socket source: connects to `address` as a client and reads lines of UTF-8 text, like
//! Spark's `socketTextStream`.
//!
//! - A refused or failed connection is retried with exponential back-off (100 ms doubling to
//!   5 s), each attempt reported, as Spark's receiver restarts.
//! - The peer closing the connection ends the source: it is finished.
//! - A read error after connecting (a reset) reconnects.
//! - Lines end at `\n` (a preceding `\r` is dropped); a last line without `\n` still counts.
//! - With `wal = true`, each cut's blocks are written to the batch log before they count, and
//!   with `ack = true` the server is told how many lines are durable: nothing acknowledged is
//!   lost (at least once; a server resending what was not acknowledged may send a line twice).
//!   Without `wal`, lines in memory at a crash are lost (best effort).
//!
//! Checked at load ([`SocketSourceConfig::validate`]): `address` is `host:port` — an IPv4
//! address, an IPv6 address in brackets or a hostname (not resolved: DNS may answer differently
//! when the run connects), and a port from 1 to 65535; `wal` needs `checkpoint_dir`, `ack` needs
//! `wal`, `max_rate` is at least 1.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::watch;

use super::{Cut, Position, Source, SourceContext, StartError};
use crate::batch_log::{BatchLog, LoggedInput};
use crate::block::Block;
use crate::fields::{ConfigError, shorten};
use crate::receiver::rate::Throttle;
use crate::receiver::{LineFramer, Receiver};

/// First retry delay after a failed connection.
pub const RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(5);
const READ_CHUNK: usize = 256 * 1024;
/// How long the end of an acknowledged stream waits for its last records to become durable.
pub const FINAL_ACK_WAIT: Duration = Duration::from_secs(10);

/// `type = "socket"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketSourceConfig {
    /// Unique name; stages and sinks read it by this name.
    pub name: String,
    /// `host:port` of the server to read lines from: an IPv4 address, an IPv6 address in brackets
    /// (`[::1]:9999`) or a hostname, and a port from 1 to 65535.
    pub address: String,
    /// Write every block to the write-ahead log in `checkpoint_dir` before it counts as
    /// received; after a crash, blocks of unfinished batches are replayed.
    #[serde(default)]
    pub wal: bool,
    /// With `wal`: after each block is durable, write back to the server the number of lines of
    /// this connection made durable so far, as a decimal line (`"1200\n"`), so the server can
    /// resend what was not acknowledged after a crash.
    #[serde(default)]
    pub ack: bool,
    /// Read at most this many records per second (the server is then held back by TCP).
    pub max_rate: Option<u64>,
}

/// What is wrong with an address that should be `host:port` (long parts shortened).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AddressError {
    /// No `:` (or only inside brackets).
    #[error("no `:port`")]
    NoPort,
    /// An IPv6 address without its brackets.
    #[error("an IPv6 address goes in brackets: \"[{host}]:{port}\"")]
    Unbracketed {
        /// The host as written.
        host: String,
        /// The port as written.
        port: String,
    },
    /// Nothing after the `:`.
    #[error("no port after `:`")]
    EmptyPort,
    /// A port that is not digits.
    #[error("port `{}` is not a number", shorten(port, 20))]
    PortNotANumber {
        /// The port as written.
        port: String,
    },
    /// A port outside 1..=65535.
    #[error("port {} is out of range", shorten(port, 20))]
    PortOutOfRange {
        /// The port as written.
        port: String,
    },
    /// Brackets around something that is no IPv6 address.
    #[error("`{}` is not an IPv6 address in brackets", shorten(host, 50))]
    NotIpv6 {
        /// The host as written.
        host: String,
    },
    /// Nothing before the `:`.
    #[error("no host before `:`")]
    NoHost,
    /// Digits in the last label, but no IPv4 address.
    #[error("`{}` is not an IPv4 address", shorten(host, 50))]
    NotIpv4 {
        /// The host as written.
        host: String,
    },
    /// Neither an address nor a hostname.
    #[error(
        "`{}` is not an IP address or a hostname (letters, digits and `-` in labels separated by `.`)",
        shorten(host, 50)
    )]
    NotAHost {
        /// The host as written.
        host: String,
    },
}

/// Whether `address` is `host:port` as [`TcpStream::connect`] takes it, without resolving the
/// host; else what is wrong with it.
pub(crate) fn check_address(address: &str) -> Result<(), AddressError> {
    let Some((host, port)) = address.rsplit_once(':').filter(|_| !address.ends_with(']')) else {
        return Err(AddressError::NoPort);
    };
    if host.contains(':') && !host.starts_with('[') {
        return Err(AddressError::Unbracketed { host: host.to_string(), port: port.to_string() });
    }
    if port.is_empty() {
        return Err(AddressError::EmptyPort);
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AddressError::PortNotANumber { port: port.to_string() });
    }
    if !port.parse::<u32>().is_ok_and(|port| (1..=65535).contains(&port)) {
        return Err(AddressError::PortOutOfRange { port: port.to_string() });
    }
    if let Some(inner) = host.strip_prefix('[') {
        return match inner.strip_suffix(']').map(str::parse::<Ipv6Addr>) {
            Some(Ok(_)) => Ok(()),
            _ => Err(AddressError::NotIpv6 { host: host.to_string() }),
        };
    }
    if host.is_empty() {
        return Err(AddressError::NoHost);
    }
    // A last label of digits only is an IPv4 address or nothing (RFC 1123: `256.1.1.1` is no name).
    let last_label = host.trim_end_matches('.').rsplit('.').next().unwrap_or_default();
    let numeric = !last_label.is_empty() && last_label.bytes().all(|b| b.is_ascii_digit());
    if numeric {
        return match host.parse::<Ipv4Addr>() {
            Ok(_) => Ok(()),
            Err(_) => Err(AddressError::NotIpv4 { host: host.to_string() }),
        };
    }
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if host.len() > 253 || !host.trim_end_matches('.').split('.').all(label_ok) {
        return Err(AddressError::NotAHost { host: host.to_string() });
    }
    Ok(())
}

/// A socket source: a task that reads into its receiver, and the cuts that take the blocks
/// (logging them first with `wal`).
#[derive(Debug)]
pub struct SocketSource {
    config: SocketSourceConfig,
    /// Set by `start`.
    started: Option<Started>,
}

#[derive(Debug)]
struct Started {
    receiver: Arc<Receiver>,
    /// With `wal`: the log each cut's blocks go to before they count.
    wal: Option<BatchLog>,
}

impl SocketSourceConfig {
    /// The source; it connects when started.
    pub fn build(&self) -> SocketSource {
        SocketSource { config: self.clone(), started: None }
    }
}

impl Source for SocketSource {
    fn resume(&mut self, _position: Option<Position>, _logged: &[(u64, &LoggedInput)]) {
        // Nothing to take up: what the last run received and logged is replayed from the log.
    }

    fn start(&mut self, context: SourceContext) -> Result<(), StartError> {
        let receiver = context.receiver.clone();
        receiver.set_rate(self.config.max_rate.map(|r| r as f64));
        let reader = Reader { config: self.config.clone(), receiver: receiver.clone() };
        context.io.spawn(reader.run(context.stop));
        let wal = if self.config.wal { context.log } else { None };
        self.started = Some(Started { receiver, wal });
        Ok(())
    }

    fn finished(&mut self, _stopping: bool) -> bool {
        // The reader finishes on a stop by itself.
        self.started.as_ref().is_none_or(|s| s.receiver.is_finished())
    }

    fn cut(&mut self, cut: Cut) -> Vec<Block> {
        let Some(started) = &self.started else { return Vec::new() };
        let blocks = started.receiver.cut(cut.seq);
        if let Some(log) = &started.wal {
            log_blocks(log, cut.batch, &started.receiver, &blocks);
        }
        blocks
    }

    fn position(&self, _through: u64) -> Position {
        Position::Nothing
    }

    fn commit(&mut self, _through: u64) {
        // Acknowledgements follow the write-ahead log, which is durable before the checkpoint.
    }

    fn replay(&mut self, _time: u64, logged: LoggedInput) -> Vec<Block> {
        logged.blocks
    }
}

/// Writes a cut's blocks to the write-ahead log, then lets the reader acknowledge them.
pub(crate) fn log_blocks(log: &BatchLog, batch: u64, receiver: &Receiver, blocks: &[Block]) {
    let mut lines = 0;
    for (n, block) in blocks.iter().enumerate() {
        if let Err(err) = log.write_block(batch, n, block) {
            tracing::error!(source = %receiver.name, "cannot write the write-ahead log in {}: {err}; no more acknowledgements", log.root().display());
            receiver.set_error(format!("write-ahead log: {err}"));
            receiver.wal_write_failed();
            return;
        }
        lines += block.records + block.invalid;
    }
    if lines > 0 {
        receiver.made_durable(lines);
    }
}

/// The task that reads the connection into the receiver.
#[derive(Debug)]
struct Reader {
    config: SocketSourceConfig,
    receiver: Arc<Receiver>,
}

impl SocketSourceConfig {
    /// Every problem of this source's fields, each at ``sources `<name>`.<field>``; `checkpointed`:
    /// the pipeline has a `checkpoint_dir` (where the write-ahead log lives).
    pub fn validate(&self, checkpointed: bool) -> Vec<ConfigError> {
        let at = |field: &str| format!("sources `{}`.{field}", self.name);
        let mut errors = Vec::new();
        if let Err(problem) = check_address(&self.address) {
            errors.push(ConfigError::new(
                at("address"),
                format!(
                    "expected \"host:port\" (an IP address or hostname, then a port from 1 to 65535, e.g. \
                     \"127.0.0.1:9999\" or \"localhost:9999\"), found \"{}\": {problem}",
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
        if self.ack && !self.wal {
            errors
                .push(ConfigError::new(at("ack"), "acknowledgements report records made durable: needs `wal = true`"));
        }
        if self.max_rate == Some(0) {
            errors.push(ConfigError::new(at("max_rate"), "must be at least 1 record/s"));
        }
        errors
    }
}

impl Reader {
    /// Reads until the peer closes the connection or `stop` turns true, then marks the receiver
    /// finished.
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let name = &self.config.name;
        let address = &self.config.address;
        let mut delay = RETRY_MIN;
        let mut attempt = 0u32;
        loop {
            if *stop.borrow() {
                break;
            }
            attempt += 1;
            let connected = tokio::select! {
                connected = TcpStream::connect(address) => connected,
                _ = stop.changed() => break,
            };
            let stream = match connected {
                Ok(stream) => stream,
                Err(err) => {
                    tracing::warn!(source = %name, %address, attempt, retry_in_ms = crate::fields::millis(delay), "cannot connect: {err}");
                    self.receiver.set_error(format!("cannot connect to {address}: {err}"));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => break,
                    }
                    delay = (delay * 2).min(RETRY_MAX);
                    continue;
                }
            };
            tracing::info!(source = %name, %address, "connected");
            self.receiver.clear_error();
            delay = RETRY_MIN;
            attempt = 0;
            match self.read(stream, &mut stop).await {
                Ok(()) => break,
                Err(err) => {
                    tracing::warn!(source = %name, %address, "connection lost: {err}; reconnecting");
                    self.receiver.set_error(format!("connection to {address} lost: {err}"));
                }
            }
        }
        self.receiver.finish();
        tracing::info!(source = %name, "source finished");
    }

    /// Reads lines until end of stream (Ok) or an error (Err, to reconnect), at most at the
    /// receiver's rate, acknowledging durable records if asked to.
    async fn read(&self, stream: TcpStream, stop: &mut watch::Receiver<bool>) -> std::io::Result<()> {
        let (mut reader, mut writer) = stream.into_split();
        let mut framer = LineFramer::default();
        let mut chunk = vec![0u8; READ_CHUNK];
        let mut throttle = Throttle::default();
        // Lines received before this connection: acknowledgements count this connection's.
        let base = self.receiver.lines();
        let mut acked = 0u64;
        // The stop sender dropped (a library caller's choice): nothing can stop us but the end.
        let mut stop_gone = false;
        loop {
            // Armed before reading the durable count, so no wake-up falls in between.
            let durable_changed = self.receiver.durable_changed.notified();
            tokio::pin!(durable_changed);
            durable_changed.as_mut().enable();
            if self.config.ack {
                self.acknowledge(&mut writer, base, &mut acked).await;
            }
            // A stop: the partial line is dropped (its sender resends it whole), not framed.
            if *stop.borrow() {
                if self.config.ack {
                    self.acknowledge_all(&mut writer, base, &mut acked, stop).await;
                }
                return Ok(());
            }
            // Paused or held back: read nothing (TCP holds the server back), keep acknowledging.
            if self.receiver.is_holding() {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    changed = stop.changed(), if !stop_gone => stop_gone = changed.is_err(),
                    _ = &mut durable_changed, if self.config.ack => {}
                }
                continue;
            }
            // `max_rate`, or what backpressure set (never above `max_rate`).
            let rate = self.receiver.rate();
            // Under a rate, read about 100 ms of ~100-byte lines at a time.
            let len = rate.map_or(READ_CHUNK, |r| ((r * 10.0) as usize).clamp(4096, READ_CHUNK));
            let n = tokio::select! {
                n = reader.read(&mut chunk[..len]) => n,
                changed = stop.changed(), if !stop_gone => {
                    stop_gone = changed.is_err();
                    continue;
                }
                _ = &mut durable_changed, if self.config.ack => continue,
            };
            match n {
                Ok(0) => {
                    // The end of the stream: a last line without `\n` still counts.
                    self.receiver.append(|block| framer.finish(block));
                    if self.config.ack {
                        self.acknowledge_all(&mut writer, base, &mut acked, stop).await;
                    }
                    return Ok(());
                }
                Ok(n) => {
                    let before = self.receiver.received();
                    self.receiver.append(|block| framer.push(&chunk[..n], block));
                    if let Some(rate) = rate {
                        let wait = throttle.wait(self.receiver.received() - before, rate);
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            changed = stop.changed(), if !stop_gone => stop_gone = changed.is_err(),
                        }
                    }
                }
                Err(err) => {
                    // The partial line is lost with the connection, as in Spark; what was not
                    // acknowledged, an acknowledging server sends again.
                    return Err(err);
                }
            }
        }
    }

    /// Writes the number of this connection's records made durable, if it grew.
    async fn acknowledge(&self, writer: &mut OwnedWriteHalf, base: u64, acked: &mut u64) {
        if self.receiver.wal_failed() {
            // Lines that are not durable must not be covered by a later count.
            return;
        }
        let durable = self.receiver.durable().saturating_sub(base);
        if durable > *acked {
            // A server that does not read acknowledgements is not an error.
            if writer.write_all(format!("{durable}\n").as_bytes()).await.is_ok() {
                *acked = durable;
            }
        }
    }

    /// At the end of the stream: acknowledges until every record received is durable (at most
    /// [`FINAL_ACK_WAIT`], as the block clock runs on).
    async fn acknowledge_all(
        &self,
        writer: &mut OwnedWriteHalf,
        base: u64,
        acked: &mut u64,
        stop: &mut watch::Receiver<bool>,
    ) {
        let received = self.receiver.lines();
        let deadline = tokio::time::Instant::now() + FINAL_ACK_WAIT;
        while self.receiver.durable() < received
            && !self.receiver.wal_failed()
            && tokio::time::Instant::now() < deadline
        {
            self.acknowledge(writer, base, acked).await;
            tokio::select! {
                _ = self.receiver.durable_changed.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = stop.changed() => {}
            }
        }
        self.acknowledge(writer, base, acked).await;
        let _ = writer.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_and_port_without_resolving_the_host() {
        for good in ["127.0.0.1:9999", "localhost:9", "kafka.internal:9092", "[::1]:1", "a-b.c:65535", "x.:80"] {
            assert_eq!(check_address(good), Ok(()), "{good}");
        }
        for (bad, problem) in [
            ("not an address", "no `:port`"),
            ("127.0.0.1:99999", "port 99999 is out of range"),
            ("127.0.0.1:0", "port 0 is out of range"),
            ("127.0.0.1:http", "port `http` is not a number"),
            ("127.0.0.1:", "no port after `:`"),
            (":9999", "no host before `:`"),
            ("::1:9999", "an IPv6 address goes in brackets: \"[::1]:9999\""),
            ("[127.0.0.1]:9999", "`[127.0.0.1]` is not an IPv6 address in brackets"),
            ("[::1]", "no `:port`"),
            ("127.0.0.1:+80", "port `+80` is not a number"),
            ("256.1.1.1:80", "`256.1.1.1` is not an IPv4 address"),
            ("not an:80", "`not an` is not an IP address or a hostname"),
            ("-bad.host:80", "`-bad.host` is not an IP address or a hostname"),
            (".:80", "`.` is not an IP address or a hostname"),
        ] {
            let found = check_address(bad).unwrap_err().to_string();
            assert!(found.starts_with(problem), "{bad}: {found}");
        }
    }

    #[test]
    fn validate_names_the_source_and_field() {
        let config = SocketSourceConfig {
            name: "lines".into(),
            address: "127.0.0.1:99999".into(),
            wal: false,
            ack: true,
            max_rate: Some(0),
        };
        let errors = config.validate(false);
        let locations: Vec<&str> = errors.iter().map(|e| e.location.as_str()).collect();
        assert_eq!(locations, ["sources `lines`.address", "sources `lines`.ack", "sources `lines`.max_rate"]);
        assert!(errors[0].message.contains("found \"127.0.0.1:99999\": port 99999 is out of range"), "{errors:?}");
        let durable = SocketSourceConfig { address: "localhost:9".into(), wal: true, max_rate: None, ..config };
        assert_eq!(durable.validate(true), []);
        assert_eq!(durable.validate(false)[0].location, "sources `lines`.wal");
    }
}
