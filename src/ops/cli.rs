//! `order-saga ops …`

use std::process::ExitCode;

use crate::config::Config;

/// Operator commands.
#[derive(Debug, Clone, clap::Args)]
pub struct OpsArgs {}

pub async fn run(_cfg: &Config, _args: OpsArgs) -> anyhow::Result<ExitCode> {
    Ok(ExitCode::SUCCESS)
}
