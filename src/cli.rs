//! The command line: the subcommands, over the options of [`Config`].
//!
//! Kept apart from `config` so that the configuration, which every layer
//! reads, imports none of the tools the subcommands run (ops, dev tools).

use std::ffi::OsString;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError};

/// order-saga: the system of record and saga orchestrator for e-commerce orders.
///
/// Orders live in MySQL; one saga per order is driven by Kafka events, with an
/// inbox for de-duplication, a transactional outbox for publishing and durable
/// timers for timeouts. Every option can also be set with the environment
/// variable shown, or in the TOML file given with --config.
#[derive(Debug, Parser)]
#[command(name = "order-saga", version, max_term_width = 110)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: HTTP ingress, saga consumer, outbox relay and timeout sweeper.
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Saga definitions in --sagas-dir.
    Sagas {
        #[command(subcommand)]
        command: SagasCommand,
    },
    /// Durable timers.
    Timeouts {
        #[command(subcommand)]
        command: TimeoutsCommand,
    },
    /// Kafka topics.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Operator tools: inspect stuck sagas and act on them (see `order-saga ops --help`).
    Ops(crate::ops::cli::OpsArgs),
    /// Development tool: play the inventory and payment services over Kafka.
    Simulate(crate::devtools::simulator::SimulateArgs),
    /// Development tool: an in-memory Confluent Schema Registry stand-in. Never for production
    /// (only in builds with the `dev-registry` feature).
    #[cfg(feature = "dev-registry")]
    DevRegistry {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8081", env = "ORDER_SAGA_DEV_REGISTRY_ADDR")]
        addr: std::net::SocketAddr,
    },
}

#[derive(Debug, Subcommand)]
pub enum SagasCommand {
    /// Load and validate every definition; print a summary or the errors (with file and line).
    Check,
    /// What changed from one definition file to another: states, steps, timers, manual events
    /// and transitions added, removed and changed, in words, then the new one's Mermaid diagram
    /// with the changes marked. Exit status 0: no difference, 1: differences, 2: an invalid file.
    Diff {
        old: std::path::PathBuf,
        new: std::path::PathBuf,
        /// `text` (words and the diagram) or `json`.
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// For every saga in flight (in the database), what NEW.toml would do differently: its
    /// recorded transitions replayed through NEW, and what its current state would do next.
    /// Per-state counts and a sample; exit 0: none would behave differently, 1: some would,
    /// 2: an invalid file. Read-only.
    Preview {
        new: std::path::PathBuf,
        /// `text` or `json`.
        #[arg(long, default_value = "text")]
        format: String,
        /// Divergent sagas listed (the counts cover all).
        #[arg(long, default_value_t = 20)]
        sample: usize,
    },
    /// Run the scenario files (time-skipping: no database, broker or clock) against the
    /// definitions, and say which transitions no scenario takes. Exit status 0: every scenario
    /// passed, 1: some failed, 2: a file is invalid.
    Test {
        /// The directory of scenario files (`*.toml`).
        #[arg(long, default_value = "sagas/tests")]
        dir: std::path::PathBuf,
    },
    /// Print the saga as a Mermaid state diagram.
    Graph {
        /// Definition version to draw (default: the newest).
        #[arg(long)]
        version: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TimeoutsCommand {
    /// Fire every due timer once (for external schedulers), then exit.
    Sweep,
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create every topic the daemon reads or writes (idempotent).
    Create {
        /// Partitions per topic. All saga topics need the same count so that an
        /// order's events land in the same partition number everywhere.
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        /// Replication factor.
        #[arg(long, default_value_t = 1)]
        replication: i32,
    },
}

impl Cli {
    /// Parses `args` (including argv\[0\]), merging the TOML file named by
    /// `--config`/`ORDER_SAGA_CONFIG` under flags and environment.
    pub fn parse_with_file<I, T>(args: I) -> Result<Cli, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        crate::config::parse_with_file(args)
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
