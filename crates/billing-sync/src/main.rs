//! The `billing-sync` binary: parse and validate the configuration, then hand over to the library.

use std::process::ExitCode;

use billing_sync::config::{Cli, ConfigError};
use clap::Parser;

/// See the workspace manifest for why not the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => match ConfigError::from_clap(&err) {
            Some(err) => return config_failure(&err),
            // Usage errors, `--help` and `--version`: clap's own words and exit status.
            None => err.exit(),
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.common.runtime_threads())
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("billing-sync: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(billing_sync::run(cli.command, cli.common)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(billing_sync::RunError::Config(err)) => config_failure(&err),
        Err(billing_sync::RunError::Failed(err)) => {
            eprintln!("billing-sync: {}", billing_sync::error_line(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// A bad configuration value is a usage error: exit status 2, one line.
fn config_failure(err: &ConfigError) -> ExitCode {
    eprintln!("billing-sync: {err}");
    ExitCode::from(2)
}
