#![doc = include_str!("../../docs/ENGINE.md")]

pub(crate) mod admin;
pub(crate) mod batch;
mod batch_log;
pub mod block;
pub mod checkpoint;
pub mod cli;
mod cluster;
pub mod codec;
pub mod config;
mod fields;
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod fuzzing;
pub mod graph;
mod harness;
mod kafka;
pub(crate) mod metrics;
mod pipeline;
pub(crate) mod receiver;
pub mod runtime;
pub(crate) mod sinks;
pub(crate) mod sources;
mod topology;

#[cfg(test)]
mod tests;

pub use pipeline::Pipeline;
pub use topology::{RunError, RunOptions};
