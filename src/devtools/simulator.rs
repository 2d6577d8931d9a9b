//! `order-saga simulate`

/// Simulator options.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {}
