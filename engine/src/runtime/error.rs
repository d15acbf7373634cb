//! Errors of the plugin runtime: loading a plugin, and the classified failures of a call.

use std::path::PathBuf;
use std::time::Duration;

/// A plugin file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The plugin file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not WebAssembly at all.
    #[error("{} is not a WebAssembly module: it starts with {found:02x?}, expected 00 61 73 6d (\"\\0asm\")", path.display())]
    NotWasm {
        /// The plugin file.
        path: PathBuf,
        /// Its first bytes.
        found: Vec<u8>,
    },
    /// WebAssembly, but not a Sluice plugin this engine can run.
    #[error("{} is not a usable Sluice plugin: {reason}", path.display())]
    Invalid {
        /// The plugin file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Built against another version of the plugin ABI.
    #[error(
        "{} was built for plugin ABI version {found}, this engine speaks version {expected}; rebuild it against a sluice-sdk of this release",
        path.display()
    )]
    AbiVersion {
        /// The plugin file.
        path: PathBuf,
        /// The version the plugin reports.
        found: u32,
        /// The version this engine speaks.
        expected: u32,
    },
}

/// The class of a failed plugin call, each with its own policy (see `docs/ARCHITECTURE.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The guest trapped: a panic, `unreachable`, out-of-bounds access, stack overflow.
    Trap,
    /// The call ran past its deadline.
    Deadline,
    /// The guest tried to grow its memory past the cap.
    MemoryLimit,
    /// The guest returned an error, e.g. a record that does not decode as its input type.
    GuestError,
    /// The guest's output breaks the ABI (bad framing, wrong record count).
    BadOutput,
}

impl ErrorClass {
    /// Name used in logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Trap => "trap",
            Self::Deadline => "deadline",
            Self::MemoryLimit => "memory_limit",
            Self::GuestError => "guest_error",
            Self::BadOutput => "bad_output",
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A failed plugin call.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The guest trapped.
    #[error("trap: {message}")]
    Trap {
        /// The panic message when the guest sent one, else the trap.
        message: String,
    },
    /// The call ran past its deadline.
    #[error("deadline: the call ran longer than {}", humantime::format_duration(*timeout))]
    Deadline {
        /// The per-call deadline.
        timeout: Duration,
    },
    /// The guest tried to grow its memory past the cap.
    #[error("memory_limit: the guest tried to grow its memory to {desired} bytes, the cap is {limit} bytes")]
    MemoryLimit {
        /// Requested size.
        desired: usize,
        /// The cap.
        limit: usize,
    },
    /// The guest reported an error.
    #[error("guest_error: {message}")]
    Guest {
        /// The guest's message.
        message: String,
    },
    /// The guest's output breaks the ABI.
    #[error("bad_output: {message}")]
    BadOutput {
        /// What is wrong.
        message: String,
    },
}

impl CallError {
    /// The class of this failure.
    pub const fn class(&self) -> ErrorClass {
        match self {
            Self::Trap { .. } => ErrorClass::Trap,
            Self::Deadline { .. } => ErrorClass::Deadline,
            Self::MemoryLimit { .. } => ErrorClass::MemoryLimit,
            Self::Guest { .. } => ErrorClass::GuestError,
            Self::BadOutput { .. } => ErrorClass::BadOutput,
        }
    }
}

/// The wasmtime engine cannot start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the plugin runtime: {0}")]
pub struct StartError(pub String);
