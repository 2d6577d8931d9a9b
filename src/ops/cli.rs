//! `order-saga ops …`

/// Operator commands.
#[derive(Debug, Clone, clap::Args)]
pub struct OpsArgs {}
