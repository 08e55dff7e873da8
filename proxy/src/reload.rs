//! SIGHUP: the configuration file read again, validated as `check-config` does, and applied
//! while the proxy runs.
//!
//! What a reload changes: hub-token secrets ([`crate::auth`]), frame-signing keys and origin
//! addresses and timeouts (a new [`crate::origin::Origin`]; fetches under way finish with the
//! old one), the admin token, the TLS certificate and key (new handshakes use the new pair, open
//! connections go on), and the cache and delivery settings (a smaller `cache.max_bytes` evicts
//! down to it at once). Listener addresses, threads and `[limits]` change only by an upgrade or
//! a restart; a reload that changes them applies the rest and logs what it left. An invalid file
//! changes nothing: every problem is logged as `check-config` prints it. Each reload is counted
//! in `framecache_config_reloads_total{result}`.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::app::Shared;
use crate::config::Config;
use crate::origin::Origin;

/// Re-reads `path` on every SIGHUP and applies it to `shared`.
pub struct Reloader {
    pub path: PathBuf,
    pub shared: Shared,
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                tracing::error!(%error, "cannot watch SIGHUP: configuration reloads are off");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hangups.recv() => {
                    reload(&self.path, &self.shared);
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Reads `path` and applies it to `shared`, or logs every problem and changes nothing.
/// Returns whether it was applied.
pub fn reload(path: &std::path::Path, shared: &Shared) -> bool {
    match Config::load(path) {
        Ok(config) => {
            let left = apply(shared, config);
            if !left.is_empty() {
                tracing::warn!(
                    keys = left.join(", "),
                    "configuration reloaded; these change only by an upgrade or a restart"
                );
            } else {
                tracing::info!(path = %path.display(), "configuration reloaded");
            }
            shared.metrics.record_reload(true, unix_now());
            true
        }
        Err(error) => {
            for problem in &error.problems {
                tracing::error!(
                    "{}: {problem}; configuration not reloaded",
                    error.path.display()
                );
            }
            shared.metrics.record_reload(false, unix_now());
            false
        }
    }
}

/// Applies `new` to the running proxy; returns the keys that changed and cannot change while
/// it runs.
pub fn apply(shared: &Shared, new: Config) -> Vec<&'static str> {
    let mut running = shared.running.lock().unwrap_or_else(|e| e.into_inner());
    let mut left = Vec::new();
    let server = (&running.server, &new.server);
    if server.0.listen != server.1.listen
        || server.0.tls_listen != server.1.tls_listen
        || server.0.admin_listen != server.1.admin_listen
    {
        left.push("server listener addresses");
    }
    if server.0.threads != server.1.threads || server.0.h2 != server.1.h2 {
        left.push("server.threads, server.h2");
    }
    if server.0.send_buffer != server.1.send_buffer {
        left.push("server.send_buffer_bytes");
    }
    if server.0.grace_period != server.1.grace_period
        || server.0.upgrade_sock != server.1.upgrade_sock
    {
        left.push("server.grace_period_secs, server.upgrade_sock");
    }
    if running.limits != new.limits {
        left.push("[limits]");
    }
    if running.cluster != new.cluster {
        left.push("[cluster]");
    }
    if running.auth != new.auth {
        shared
            .tokens
            .store(std::sync::Arc::new(crate::proxy::tokens(&new)));
    }
    if running.admin != new.admin {
        shared
            .admin_token
            .store(std::sync::Arc::new(new.admin.token.clone()));
    }
    let origin = (running.origin != new.origin).then(|| Origin::new(&new.origin));
    if let (Some(cluster), true) = (&shared.cluster, origin.is_some()) {
        // Home nodes' answers are attested with the new signing keys and timeouts too.
        cluster.reconfigure(&new.origin);
    }
    if origin.is_some() || running.cache != new.cache {
        shared.cache.reconfigure(new.cache.clone(), origin);
    }
    if running.delivery != new.delivery {
        shared.delivery.reconfigure(new.delivery.clone());
    }
    match (&shared.certificates, &new.tls) {
        (Some(certificates), Some(tls)) if running.tls.as_ref() != Some(tls) => {
            if let Err(error) = certificates.replace(tls) {
                // Checked when the file was read; reported all the same.
                tracing::error!(%error, "TLS certificate not replaced");
            }
        }
        (None, Some(_)) | (Some(_), None) => left.push("[tls] (with server.tls_listen)"),
        _ => {}
    }
    // What could not change stays as it runs, so that the next reload compares with the truth.
    let mut applied = new;
    applied.server = running.server.clone();
    applied.limits = running.limits.clone();
    applied.cluster = running.cluster.clone();
    if shared.certificates.is_some() != applied.tls.is_some() {
        applied.tls = running.tls.clone();
    }
    *running = applied;
    left
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
