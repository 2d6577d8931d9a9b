//! The `order-saga` binary: parse the configuration, hand over to [`order_saga::app`].

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match order_saga::cli::Cli::parse_with_file(std::env::args_os()) {
        Ok(cli) => cli,
        Err(order_saga::config::ConfigError::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("order-saga: {e}");
            return ExitCode::from(2);
        }
    };
    order_saga::app::main(cli)
}
