//! The Thrift server of a Flume source: a thread accepting connections on the bound address,
//! and a thread per connection running the generated `ThriftSourceProtocolSyncProcessor` over
//! the framed transport (through [`FrameGuard`] and [`BoundedInput`]) with a [`Handler`] that
//! decides each call's answer (see the folder's docs). A connection ends when its client
//! closes it, when a call cannot be decoded (logged, counted, the client's problem only), or
//! when the source stops.

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TCompactInputProtocol, TCompactOutputProtocol, TInputProtocol,
    TOutputProtocol,
};
use thrift::server::TProcessor;
use thrift::transport::{TFramedReadTransport, TFramedWriteTransport};
use tokio::sync::watch;

use super::guard::{BoundedInput, Failed, FrameGuard};
use super::protocol::{Status, ThriftFlumeEvent, ThriftSourceProtocolSyncHandler, ThriftSourceProtocolSyncProcessor};
use super::{ANSWER_WAIT, FlumeFormat, FlumeProtocol, FlumeSourceConfig};
use crate::receiver::Receiver;

/// How often a blocked read or accept looks at the stop signal.
const POLL: Duration = Duration::from_millis(100);

/// The answer to one call, before it becomes Flume's `Status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// Taken (in the write-ahead log, with `wal`).
    Ok,
    /// Not taken now; the sender resends later (`FAILED`).
    TryLater,
    /// Not taken: the call is wrong or the log failed (`ERROR`).
    Error,
}

impl Answer {
    const fn status(self) -> Status {
        match self {
            Self::Ok => Status::OK,
            Self::TryLater => Status::FAILED,
            Self::Error => Status::ERROR,
        }
    }
}

/// A bound listener and what its connections need.
#[derive(Debug)]
pub(super) struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

/// What every connection of one source shares.
#[derive(Debug)]
struct Shared {
    name: String,
    protocol: FlumeProtocol,
    format: FlumeFormat,
    max_frame: usize,
    max_batch: usize,
    /// Wait for the write-ahead log before answering `OK`.
    wal: bool,
    receiver: Arc<Receiver>,
    stop: watch::Receiver<bool>,
    io: tokio::runtime::Handle,
    /// Under a rate: when the next call may be taken.
    next_free: Mutex<Option<Instant>>,
}

impl Server {
    /// Binds the address (a bind that fails fails the start: the address is in use).
    pub(super) fn bind(config: &FlumeSourceConfig, context: &super::SourceContext, wal: bool) -> std::io::Result<Self> {
        let listener = TcpListener::bind(&config.address).map_err(|err| {
            std::io::Error::new(
                err.kind(),
                format!("source `{}`: cannot listen on {}: {err}", config.name, config.address),
            )
        })?;
        listener.set_nonblocking(true)?;
        tracing::info!(source = %config.name, address = %listener.local_addr()?, protocol = ?config.protocol, "listening for Flume Thrift clients");
        let shared = Shared {
            name: config.name.clone(),
            protocol: config.protocol,
            format: config.format,
            max_frame: config.max_frame(),
            max_batch: config.max_batch(),
            wal,
            receiver: context.receiver.clone(),
            stop: context.stop.clone(),
            io: context.io.clone(),
            next_free: Mutex::new(None),
        };
        Ok(Self { listener, shared: Arc::new(shared) })
    }

    /// Accepts connections on a thread of its own until the source stops.
    pub(super) fn spawn(self) {
        let name = format!("flume-{}", self.shared.name);
        let spawned = std::thread::Builder::new().name(name).spawn(move || self.accept());
        if let Err(err) = spawned {
            tracing::error!("cannot start a Flume source's thread: {err}");
        }
    }

    fn accept(self) {
        while !*self.shared.stop.borrow() {
            match self.listener.accept() {
                Ok((stream, peer)) => self.serve(stream, peer),
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
                Err(err) => {
                    tracing::warn!(source = %self.shared.name, "accept failed: {err}");
                    std::thread::sleep(POLL);
                }
            }
        }
        tracing::info!(source = %self.shared.name, "stopped listening");
    }

    fn serve(&self, stream: TcpStream, peer: std::net::SocketAddr) {
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("flume-{}-conn", shared.name))
            .spawn(move || Connection { shared, peer }.run(stream));
        if let Err(err) = spawned {
            tracing::warn!(source = %self.shared.name, %peer, "cannot serve a connection: {err}");
        }
    }
}

/// One client's connection.
struct Connection {
    shared: Arc<Shared>,
    peer: std::net::SocketAddr,
}

impl Connection {
    fn run(self, stream: TcpStream) {
        let receiver = &self.shared.receiver;
        receiver.answers_update(|a| a.connections += 1);
        tracing::debug!(source = %self.shared.name, peer = %self.peer, "connected");
        let outcome = self.process(stream);
        receiver.answers_update(|a| a.connections -= 1);
        match outcome {
            Ok(()) => tracing::debug!(source = %self.shared.name, peer = %self.peer, "disconnected"),
            Err(err) => {
                let err = describe(&err);
                tracing::warn!(source = %self.shared.name, peer = %self.peer, "connection closed: {err}");
                receiver.answers_update(|a| a.bad_connections += 1);
                receiver.set_error(format!("connection from {} closed: {err}", self.peer));
            }
        }
    }

    /// Answers calls until the client closes the connection (Ok) or a call cannot be read or
    /// answered (Err).
    fn process(&self, stream: TcpStream) -> thrift::Result<()> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(POLL))?;
        stream.set_nodelay(true)?;
        let write = stream.try_clone()?;
        let max_frame = self.shared.max_frame;
        let read = TFramedReadTransport::new(FrameGuard::new(stream, max_frame, self.shared.stop.clone()));
        let write = TFramedWriteTransport::new(write);
        let failed = Failed::default();
        let (mut input, mut output): (Box<dyn TInputProtocol>, Box<dyn TOutputProtocol>) = match self.shared.protocol {
            FlumeProtocol::Compact => (
                Box::new(BoundedInput::new(TCompactInputProtocol::new(read), max_frame, failed.clone())),
                Box::new(TCompactOutputProtocol::new(write)),
            ),
            FlumeProtocol::Binary => (
                Box::new(BoundedInput::new(TBinaryInputProtocol::new(read, false), max_frame, failed.clone())),
                Box::new(TBinaryOutputProtocol::new(write, true)),
            ),
        };
        let processor = ThriftSourceProtocolSyncProcessor::new(Handler { shared: self.shared.clone() });
        loop {
            match processor.process(&mut *input, &mut *output) {
                // The call could not be decoded (the processor answered it with an exception):
                // the rest of its frame cannot be trusted.
                Ok(()) if let Some(why) = failed.take() => {
                    return Err(thrift::Error::Protocol(thrift::ProtocolError::new(
                        thrift::ProtocolErrorKind::InvalidData,
                        why,
                    )));
                }
                Ok(()) => {}
                Err(thrift::Error::Transport(err)) if err.kind == thrift::TransportErrorKind::EndOfFile => {
                    return Ok(());
                }
                Err(thrift::Error::Transport(err)) if *self.shared.stop.borrow() => {
                    tracing::debug!(source = %self.shared.name, "closing a connection at stop: {err}");
                    return Ok(());
                }
                Err(err) => return Err(err),
            }
        }
    }
}

/// An error's own words (thrift's `Display` of a transport or protocol error names only its
/// kind).
fn describe(err: &thrift::Error) -> String {
    match err {
        thrift::Error::Transport(e) => e.message.clone(),
        thrift::Error::Protocol(e) => e.message.clone(),
        thrift::Error::Application(e) => e.message.clone(),
        thrift::Error::User(e) => e.to_string(),
    }
}

/// Decides each call's answer.
struct Handler {
    shared: Arc<Shared>,
}

impl ThriftSourceProtocolSyncHandler for Handler {
    fn handle_append(&self, event: ThriftFlumeEvent) -> thrift::Result<Status> {
        Ok(self.take(&[event]).status())
    }

    fn handle_append_batch(&self, events: Vec<ThriftFlumeEvent>) -> thrift::Result<Status> {
        Ok(self.take(&events).status())
    }
}

impl Handler {
    /// Takes the events of one call, or says why not; counts the answer.
    fn take(&self, events: &[ThriftFlumeEvent]) -> Answer {
        let answer = self.decide(events);
        self.shared.receiver.answers_update(|a| match answer {
            Answer::Ok => a.ok += 1,
            Answer::TryLater => a.try_later += 1,
            Answer::Error => a.error += 1,
        });
        answer
    }

    fn decide(&self, events: &[ThriftFlumeEvent]) -> Answer {
        let shared = &self.shared;
        let receiver = &shared.receiver;
        if events.len() > shared.max_batch {
            let message = format!("a batch of {} events is more than max_batch ({})", events.len(), shared.max_batch);
            tracing::warn!(source = %shared.name, "{message}: answered ERROR; lower the sender's batch size");
            receiver.set_error(message);
            return Answer::Error;
        }
        if shared.wal && receiver.wal_failed() {
            return Answer::Error;
        }
        if *shared.stop.borrow() || receiver.is_finished() || receiver.is_holding() || !self.within_rate(events.len()) {
            return Answer::TryLater;
        }
        let n = events.len() as u64;
        receiver.answers_update(|a| a.pending += n);
        let through = receiver.append_through(|block| super::record::append(shared.format, events, block));
        let answer = if shared.wal { self.wait_durable(through) } else { Answer::Ok };
        receiver.answers_update(|a| a.pending -= n);
        answer
    }

    /// Under a rate, whether `n` more records may be taken now (then they are counted against it).
    fn within_rate(&self, n: usize) -> bool {
        let Some(rate) = self.shared.receiver.rate() else { return true };
        let now = Instant::now();
        let mut next_free = self.shared.next_free.lock().expect("rate lock");
        match *next_free {
            Some(free) if free > now => false,
            _ => {
                *next_free = Some(now + Duration::from_secs_f64(n as f64 / rate.max(1.0)));
                true
            }
        }
    }

    /// Waits until the write-ahead log holds every line through `through`.
    fn wait_durable(&self, through: u64) -> Answer {
        let receiver = &self.shared.receiver;
        let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
        self.shared.io.block_on(async {
            loop {
                // Armed before reading the durable count, so no wake-up falls in between.
                let changed = receiver.durable_changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if receiver.wal_failed() {
                    return Answer::Error;
                }
                if receiver.durable() >= through {
                    return Answer::Ok;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Answer::TryLater;
                }
                let _ = tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + POLL), changed).await;
            }
        })
    }
}
