//! The composition root.

use std::process::ExitCode;

use crate::config::Cli;

pub fn main(_cli: Cli) -> ExitCode {
    ExitCode::SUCCESS
}
