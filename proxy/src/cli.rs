//! The command line of SPEC: `serve`, `check-config`, `token`, `demo`.
//!
//! Exit codes: 0 ok, 64 bad usage or configuration, 1 runtime failure.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::Config;

/// Bad usage or configuration (sysexits' EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// A runtime failure.
pub const EXIT_FAILURE: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "framecache",
    version,
    about = "Edge proxy with an owner-scoped, content-addressed camera frame cache"
)]
pub struct Cli {
    /// Configuration file; with no subcommand, serve with it.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Serve {
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        /// Take the listening sockets over from the running instance (through
        /// `server.upgrade_sock`), which hands them over on SIGQUIT and then drains.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate configuration files; print every problem with its key path.
    CheckConfig {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Print a signed hub token.
    Token {
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
        /// Owner id (the token's `sub`).
        #[arg(long)]
        owner: String,
        /// A camera the token may read; repeat for more.
        #[arg(long = "camera", required = true)]
        cameras: Vec<String>,
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
    },
    /// Run a simulated camera backend and the proxy on loopback, with demo keys.
    #[cfg(feature = "demo")]
    Demo,
}

impl Cli {
    /// Parses the command line; usage errors exit 64, `--help` and `--version` exit 0.
    pub fn parse_or_exit() -> Cli {
        match Cli::try_parse() {
            Ok(cli) => cli,
            Err(e) => {
                let _ = e.print();
                std::process::exit(if e.use_stderr() { EXIT_USAGE.into() } else { 0 })
            }
        }
    }
}

/// Loads a configuration, printing every problem on failure.
pub fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EXIT_USAGE)
    })
}

/// `check-config PATH...`
pub fn check_config(paths: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    for path in paths {
        match Config::load(path) {
            Ok(_) => println!("{}: ok", path.display()),
            Err(e) => {
                eprintln!("{e}");
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_USAGE)
    }
}

/// `token --config PATH --owner ID --camera ID... [--ttl-secs N]`
pub fn token(config: &Config, owner: &str, cameras: &[String], ttl_secs: u64) -> ExitCode {
    match crate::auth::mint(
        config.auth.secret.expose(),
        &config.auth.audience,
        owner,
        cameras,
        Duration::from_secs(ttl_secs),
    ) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("framecache token: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// `serve --config PATH [--upgrade]`: loads the file (exit 64 on any problem), sets up logging
/// and serves it.
pub fn serve_file(path: &std::path::Path, upgrade: bool) -> ExitCode {
    match load(path) {
        Ok(config) => {
            init_tracing();
            serve(config, path, upgrade)
        }
        Err(code) => code,
    }
}

/// `serve --config PATH`: runs until SIGTERM (graceful) or SIGINT (fast); SIGHUP re-reads
/// `path`.
pub fn serve(config: Config, path: &std::path::Path, upgrade: bool) -> ExitCode {
    for (key, secret) in [
        ("auth.secret_file", &config.auth.secret),
        ("admin.token_file", &config.admin.token),
    ] {
        if secret.is_dev_only() {
            tracing::warn!(
                key,
                "serving with a development secret; never deploy config/dev keys"
            );
        }
    }
    let bound = if upgrade {
        crate::app::Listeners::inherit(&config)
    } else {
        crate::app::Listeners::bind(&config)
    };
    let listeners = match bound {
        Ok(listeners) => listeners,
        Err(e) => {
            eprintln!("framecache: {e:#}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let shared = crate::app::Shared::new(&config);
    crate::app::run(
        config,
        shared,
        listeners,
        Box::new(pingora::server::UnixShutdownSignalWatch),
        Some(path.to_path_buf()),
        upgrade,
    );
    ExitCode::SUCCESS
}

/// Logs to stderr, `RUST_LOG` filtered (default `info`), with Pingora's `log` records included.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let _ = tracing_log::LogTracer::init();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
