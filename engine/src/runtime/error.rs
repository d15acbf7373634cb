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
    /// WebAssembly, but refused at load time: it does not compile, breaks the ABI, or misbehaves
    /// while it is instantiated and asked to describe itself.
    #[error("{} is not a usable Sluice plugin: plugin `{plugin}`: {class}: {}{reason}", path.display(), at.as_ref().map(|at| format!("{at}: ")).unwrap_or_default())]
    Refused {
        /// The plugin's name in the pipeline file.
        plugin: String,
        /// The plugin file (or the upload it came from).
        path: PathBuf,
        /// What kind of refusal.
        class: LoadClass,
        /// The part of the module at fault, when one is.
        at: Option<ModulePart>,
        /// What is wrong with it.
        reason: String,
    },
    /// Built against another version of the plugin ABI.
    #[error(
        "{} was built for plugin ABI version {found}, this engine speaks version {expected} for its kind of file (version 1: core modules, version 2: components); rebuild it against a sluice-sdk of this release (plugin `{plugin}`: bad_abi)",
        path.display()
    )]
    AbiVersion {
        /// The plugin's name in the pipeline file.
        plugin: String,
        /// The plugin file.
        path: PathBuf,
        /// The version the plugin reports.
        found: u32,
        /// The version this engine speaks.
        expected: u32,
    },
}

impl LoadError {
    /// The class of the refusal, as logged and counted.
    pub(crate) fn class(&self) -> LoadClass {
        match self {
            Self::Read { .. } => LoadClass::Unreadable,
            Self::NotWasm { .. } => LoadClass::NotWasm,
            Self::Refused { class, .. } => *class,
            Self::AbiVersion { .. } => LoadClass::BadAbi,
        }
    }
}

/// A part of a module a refusal names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModulePart {
    /// An export, by name.
    Export(String),
    /// An import, as `module.name`.
    Import(String),
    /// The start function, run when the module is instantiated.
    StartFunction,
}

impl std::fmt::Display for ModulePart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Export(name) => write!(f, "export `{name}`"),
            Self::Import(name) => write!(f, "import `{name}`"),
            Self::StartFunction => f.write_str("the start function"),
        }
    }
}

/// Why a plugin file was refused at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoadClass {
    /// The file cannot be read.
    Unreadable,
    /// Not WebAssembly.
    NotWasm,
    /// Larger than a plugin may be, or with more exports than it may have.
    TooLarge,
    /// WebAssembly that does not validate or compile.
    Invalid,
    /// A missing or mistyped ABI export, an import the host does not provide, or another ABI
    /// version.
    BadAbi,
    /// Instantiation (its start function) or a describe call ran past `validate_timeout`.
    Deadline,
    /// Its initial memory, or memory it grew while loading, passed the memory cap.
    MemoryLimit,
    /// It trapped while loading (start function, ABI version or describe).
    Trap,
    /// A description that does not decode, lies outside memory or contradicts its export.
    BadOutput,
}

impl LoadClass {
    /// Name used in logs, messages and metrics.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Unreadable => "unreadable",
            Self::NotWasm => "not_wasm",
            Self::TooLarge => "too_large",
            Self::Invalid => "invalid",
            Self::BadAbi => "bad_abi",
            Self::Deadline => "deadline",
            Self::MemoryLimit => "memory_limit",
            Self::Trap => "trap",
            Self::BadOutput => "bad_output",
        }
    }

    /// The load class of a call that failed while loading.
    pub(crate) const fn of_call(error: &CallError) -> Self {
        match error.class() {
            ErrorClass::Trap => Self::Trap,
            ErrorClass::Deadline => Self::Deadline,
            ErrorClass::MemoryLimit => Self::MemoryLimit,
            ErrorClass::GuestError | ErrorClass::BadOutput => Self::BadOutput,
        }
    }
}

impl std::fmt::Display for LoadClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The class of a failed plugin call, each with its own policy (see `docs/ARCHITECTURE.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ErrorClass {
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
    pub(crate) const fn name(self) -> &'static str {
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
    #[error(
        "memory_limit: the guest tried to grow its memory to {desired} bytes, the cap is {limit} bytes{}",
        guest.as_deref().map(|said| format!("; then it failed with: {said}")).unwrap_or_default()
    )]
    MemoryLimit {
        /// Requested size.
        desired: usize,
        /// The cap.
        limit: usize,
        /// What the guest reported after the refusal, if it caught it and returned an error
        /// (a Python `MemoryError`, a JavaScript out-of-memory) rather than trapping.
        guest: Option<String>,
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
    pub(crate) const fn class(&self) -> ErrorClass {
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
