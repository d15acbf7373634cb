#![doc = include_str!("../../docs/ENGINE.md")]

pub mod admin;
pub mod batch;
pub mod block;
pub mod checkpoint;
pub mod cli;
pub mod codec;
pub mod config;
pub mod graph;
pub mod metrics;
pub mod pipeline;
pub mod receiver;
pub mod runtime;
pub mod sinks;
pub mod sources;
mod topology;

pub use pipeline::{Pipeline, RunOptions};
