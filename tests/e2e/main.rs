//! End-to-end tests: the real `sluice` binary, real TCP sockets, real Wasm plugins built from
//! `plugins/` by `scripts/build-plugins.sh` on first use.

mod admin;
mod bad_config;
mod cluster;
mod components;
mod connectors;
mod dashboard;
mod examples;
mod faults;
mod flume;
mod hot_swap;
mod kafka;
mod kafka_postgres;
mod kafka_transactions;
mod kinesis;
mod load_sandbox;
mod operators;
mod plugin_errors;
mod plugin_kit;
mod postgres;
mod recovery;
mod sandbox;
mod shutdown;
mod support;
mod wordcount;
