//! Integration tests: one binary (fast linking, shared helpers).

// Test code: a panic with a backtrace is the right failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod cli;
mod console;
mod daemon;
mod db_client;
mod decisions;
mod docs;
mod group_commit;
mod helpers;
mod input_fuzz;
mod kafka_client;
mod listener;
mod migrate;
mod ops;
mod orders_api;
mod partitioning;
mod proxy;
mod reliability;
mod replicas;
mod saga_flow;
mod transport;
mod write_script;
