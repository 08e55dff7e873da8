//! The `camsim` command line: flags to a [`Config`], and the shutdown signal.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::config::{parse_key_hex, Config};
use crate::fault::Faults;

/// Simulated camera backend for framecache: signed JPEG frames and injectable faults.
#[derive(Debug, Parser)]
#[command(name = "camsim", version)]
pub struct Args {
    /// Address to listen on, e.g. 127.0.0.1:9090.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// File holding the frame signing key: 64 hex chars.
    #[arg(long, value_name = "PATH")]
    pub signing_key_file: PathBuf,
    /// Number of owners (owner-1 .. owner-N).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub owners: usize,
    /// Cameras each owner owns.
    #[arg(long, value_name = "K", default_value_t = 2)]
    pub cameras_per_owner: usize,
    /// Picture width in pixels.
    #[arg(long, value_name = "W", default_value_t = 1280)]
    pub width: u32,
    /// Picture height in pixels.
    #[arg(long, value_name = "H", default_value_t = 720)]
    pub height: u32,
    /// JPEG quality, 1..=100.
    #[arg(long, value_name = "Q", default_value_t = 80)]
    pub quality: u8,
    /// Frames per second per camera; 0 freezes them (POST /control/advance moves them).
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    pub fps: f64,
    /// Frames kept per camera for by-hash requests.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub retain_frames: usize,
    /// Cache-Control header to send with frames.
    #[arg(long, value_name = "V")]
    pub cache_control: Option<String>,
    /// JSON file with the faults to inject from the start (same shape as /control/faults).
    #[arg(long, value_name = "JSON")]
    pub faults_file: Option<PathBuf>,
}

impl Args {
    /// The configuration these flags describe, or every problem, one line each.
    pub fn into_config(self) -> Result<Config, Vec<String>> {
        let mut problems = Vec::new();
        let key_path = self.signing_key_file.display();
        let signing_key = match std::fs::read_to_string(&self.signing_key_file) {
            Ok(text) => parse_key_hex(&text)
                .map_err(|e| problems.push(format!("--signing-key-file {key_path}: {e}")))
                .unwrap_or_default(),
            Err(e) => {
                problems.push(format!("--signing-key-file {key_path}: {e}"));
                [0; 32]
            }
        };
        let faults = match &self.faults_file {
            None => Faults::default(),
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
                .unwrap_or_else(|e| {
                    problems.push(format!("--faults-file {}: {e}", path.display()));
                    Faults::default()
                }),
        };
        let config = Config {
            listen: self.listen,
            signing_key,
            owners: self.owners,
            cameras_per_owner: self.cameras_per_owner,
            width: self.width,
            height: self.height,
            quality: self.quality,
            fps: self.fps,
            retain_frames: self.retain_frames,
            cache_control: self.cache_control,
            faults,
        };
        problems.extend(config.problems());
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }
}

/// A clap error as one line: its message without the usage text.
pub fn one_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let message: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|line| !line.is_empty() && !line.starts_with("Usage:"))
        .collect();
    message.join(" ").trim_start_matches("error: ").to_owned()
}

/// A future that resolves on Ctrl-C (or SIGTERM on Unix). The handlers are installed now, so a
/// signal that arrives before the future is first polled is not lost. Call it inside the
/// runtime.
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_errors_become_one_line() {
        let error = Args::try_parse_from(["camsim", "--listen", "127.0.0.1:1"]).unwrap_err();
        let line = one_line(&error);
        assert!(!line.contains('\n'));
        assert!(line.contains("--signing-key-file"), "{line}");
    }

    #[test]
    fn unreadable_files_and_bad_values_are_all_reported() {
        let args = Args::try_parse_from([
            "camsim",
            "--listen",
            "127.0.0.1:0",
            "--signing-key-file",
            "no-such-key-file",
            "--faults-file",
            "no-such-faults-file",
            "--quality",
            "0",
        ])
        .unwrap();
        let problems = args.into_config().unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
    }
}
