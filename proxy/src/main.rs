use std::process::ExitCode;

use framecache::cli::{self, Cli, Command, EXIT_USAGE};

/// mimalloc: per-thread free lists suit the proxy's many short-lived per-request buffers, and
/// it spent about half of what glibc's malloc did on the hit path.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse_or_exit();
    match (cli.command, cli.config) {
        (Some(Command::CheckConfig { paths }), _) => cli::check_config(&paths),
        (
            Some(Command::Token {
                config,
                owner,
                cameras,
                ttl_secs,
            }),
            _,
        ) => match cli::load(&config) {
            Ok(config) => cli::token(&config, &owner, &cameras, ttl_secs),
            Err(code) => code,
        },
        (Some(Command::Serve { config, upgrade }), _) => cli::serve_file(&config, upgrade),
        (None, Some(config)) => cli::serve_file(&config, false),
        #[cfg(feature = "demo")]
        (Some(Command::Demo), _) => {
            cli::init_tracing();
            framecache::demo::run()
        }
        (None, None) => {
            eprintln!("framecache: give --config PATH or a subcommand; see --help");
            ExitCode::from(EXIT_USAGE)
        }
    }
}
