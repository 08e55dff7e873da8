//! `camsim`: the simulated camera backend. See the library docs.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use camsim::cli::{self, Args};

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error) if !error.use_stderr() => {
            let _ = error.print(); // --help, --version
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("camsim: {}", cli::one_line(&error));
            return ExitCode::from(64);
        }
    };
    let config = match args.into_config() {
        Ok(config) => config,
        Err(problems) => {
            for problem in problems {
                eprintln!("camsim: {problem}");
            }
            return ExitCode::from(64);
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("camsim: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(async { camsim::run(config, cli::shutdown_signal()?).await }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("camsim: {error:#}");
            ExitCode::FAILURE
        }
    }
}
