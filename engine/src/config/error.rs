//! Configuration errors: each names where in the file it is and what was expected.

use std::path::{Path, PathBuf};

/// One problem in a pipeline file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Where: `stages `words`.function`, `plugins.wordcount`; empty for the whole file.
    pub location: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl ConfigError {
    /// An error at `location`.
    pub fn new(location: impl Into<String>, message: impl Into<String>) -> Self {
        Self { location: location.into(), message: message.into() }
    }
}

/// Every problem found in one pipeline file.
#[derive(Clone, Debug, thiserror::Error)]
pub struct ConfigErrors {
    /// The pipeline file.
    pub file: PathBuf,
    /// The problems, in file order.
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// A single error in `file`.
    pub fn one(file: &Path, error: ConfigError) -> Self {
        Self { file: file.to_path_buf(), errors: vec![error] }
    }
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if error.location.is_empty() {
                write!(f, "{}: {}", self.file.display(), error.message)?;
            } else {
                write!(f, "{}: {}: {}", self.file.display(), error.location, error.message)?;
            }
        }
        Ok(())
    }
}
