//! Sources: where records come from. Each kind has a config (`type = "..."` in `[[sources]]`) and
//! a task that feeds a [`Receiver`](crate::receiver::Receiver).

pub mod directory;
pub mod socket;

use serde::Deserialize;

pub use directory::DirectorySourceConfig;
pub use socket::SocketSourceConfig;

/// `[[sources]]`, tagged by `type`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    /// Lines of text from a TCP server (the engine connects as a client, like Spark's
    /// `socketTextStream`).
    Socket(SocketSourceConfig),
    /// Lines of the files that appear in a directory (like Spark's `textFileStream`).
    Directory(DirectorySourceConfig),
}

impl SourceConfig {
    /// The source's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Socket(config) => &config.name,
            Self::Directory(config) => &config.name,
        }
    }
}
