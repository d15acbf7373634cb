//! The TCP socket source: connects to `address` as a client and reads lines of UTF-8 text, like
//! Spark's `socketTextStream`.
//!
//! - A refused or failed connection is retried with exponential back-off (100 ms doubling to
//!   5 s), each attempt reported, as Spark's receiver restarts.
//! - The peer closing the connection ends the source: it is finished.
//! - A read error after connecting (a reset) reconnects.
//! - Lines end at `\n` (a preceding `\r` is dropped); a last line without `\n` still counts.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::receiver::{LineFramer, Receiver};

/// First retry delay after a failed connection.
pub const RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(5);
const READ_CHUNK: usize = 256 * 1024;

/// `type = "socket"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketSourceConfig {
    /// Unique name; stages and sinks read it by this name.
    pub name: String,
    /// `host:port` of the server to read lines from.
    pub address: String,
}

/// A running socket source.
#[derive(Debug)]
pub struct SocketSource {
    config: SocketSourceConfig,
    receiver: Arc<Receiver>,
}

impl SocketSourceConfig {
    /// The source, feeding `receiver`.
    pub fn build(&self, receiver: Arc<Receiver>) -> SocketSource {
        SocketSource { config: self.clone(), receiver }
    }
}

impl SocketSource {
    /// Reads until the peer closes the connection or `stop` turns true, then marks the receiver
    /// finished.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
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
                    tracing::warn!(source = %name, %address, attempt, retry_in_ms = delay.as_millis() as u64, "cannot connect: {err}");
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

    /// Reads lines until end of stream (Ok) or an error (Err, to reconnect).
    async fn read(&self, mut stream: TcpStream, stop: &mut watch::Receiver<bool>) -> std::io::Result<()> {
        let mut framer = LineFramer::default();
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            let n = tokio::select! {
                n = stream.read(&mut chunk) => n,
                _ = stop.changed() => Ok(0),
            };
            match n {
                Ok(0) => {
                    self.receiver.append(|block| framer.finish(block));
                    return Ok(());
                }
                Ok(n) => self.receiver.append(|block| framer.push(&chunk[..n], block)),
                Err(err) => {
                    // The partial line is lost with the connection, as in Spark.
                    return Err(err);
                }
            }
        }
    }
}
