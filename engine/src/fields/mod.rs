//! What every configuration is made of, below the pipeline file and every component's config:
//! a [`ConfigError`] (where in the file, what was expected), human durations and their bounds
//! (`duration.rs`), sizes (`size.rs`), cut excerpts of long values (`shorten`) and the check that
//! a directory can be written (`writable.rs`).
//!
//! This room depends on no other room of the engine: `config/` (the pipeline file) and each
//! source's and sink's own config use it, so none of them needs the other to say what is wrong.

pub(crate) mod duration;
mod error;
pub(crate) mod size;
mod writable;

pub use duration::{MAX_INTERVAL, MAX_INTERVAL_TEXT, MAX_SPAN, MAX_SPAN_TEXT};
pub(crate) use duration::{millis, next_multiple};
pub use error::{ConfigError, ConfigErrors};
pub(crate) use error::{shorten, toml_error};
pub(crate) use writable::{WritableError, writable_dir};
