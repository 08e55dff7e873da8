//! Binary upgrade, the cache's part: Pingora hands the listening sockets from the running
//! instance to the new one (`serve --upgrade`, SIGQUIT to the old); this module hands the
//! frame cache over beside them, so the new instance starts warm ([`crate::cache::handover`]).
//!
//! The running instance listens on `server.upgrade_sock` + `.cache`, a Unix socket; each end
//! checks the other's credentials (`SO_PEERCRED`) and talks only to a process of its own user.
//! The new instance asks once it holds the listening sockets, before it serves a request. The
//! old one goes on answering hubs for Pingora's few seconds of overlap, but from the handover on
//! it refuses purges (503, `Retry-After`), so that a purge is never carried out where the new
//! instance would not see it: the purging client asks again and reaches the new one.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::cache::FrameCache;
use crate::rendition::Catalogue;

/// The cache handover socket beside `upgrade_sock`.
pub fn socket_path(upgrade_sock: &Path) -> PathBuf {
    let mut path = upgrade_sock.as_os_str().to_owned();
    path.push(".cache");
    PathBuf::from(path)
}

/// Serves the cache to a new instance that asks, for as long as this one runs.
pub struct CacheHandover {
    pub path: PathBuf,
    pub cache: Arc<FrameCache>,
    /// Set once the cache was handed over: purges are refused from then on.
    pub handed_over: Arc<AtomicBool>,
}

/// Whether the process at the other end of `stream` runs as this one's user.
fn same_user(stream: &impl std::os::fd::AsFd) -> bool {
    rustix::net::sockopt::socket_peercred(stream)
        .is_ok_and(|peer| peer.uid == rustix::process::geteuid())
}

#[async_trait]
impl BackgroundService for CacheHandover {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let listener = match bind(&self.path) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, path = %self.path.display(), "no cache handover socket: an upgrade will start cold");
                return;
            }
        };
        let listener = match tokio::net::UnixListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "cannot watch the cache handover socket");
                return;
            }
        };
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    if !same_user(&stream) {
                        tracing::warn!("cache handover asked by a process of another user: refused");
                        continue;
                    }
                    // From now on a purge here could be missed by the new instance.
                    self.handed_over.store(true, Ordering::SeqCst);
                    let cache = Arc::clone(&self.cache);
                    tokio::task::spawn_blocking(move || hand_over(&cache, stream));
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        drop(listener);
    }
}

fn bind(path: &Path) -> std::io::Result<UnixListener> {
    // The path of the instance this one took over from (or one that is gone): an instance that
    // still listens there keeps its socket, unnamed, until it exits.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn hand_over(cache: &FrameCache, stream: tokio::net::UnixStream) {
    let result = stream.into_std().and_then(|mut stream| {
        stream.set_nonblocking(false)?;
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        cache.hand_over(&mut stream)
    });
    match result {
        Ok(entries) => tracing::info!(entries, "cache handed over to the new instance"),
        Err(error) => tracing::warn!(%error, "cache handover failed"),
    }
}

/// Takes the cache over from the instance being upgraded, when it offers one at `path`; what
/// does not check out is dropped and counted. No body longer than `max_body` is read.
pub fn take_over(path: &Path, cache: &FrameCache, catalogue: &Catalogue, max_body: usize) {
    let mut stream = match UnixStream::connect(path) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::info!(%error, path = %path.display(), "no cache to take over: starting cold");
            return;
        }
    };
    if !same_user(&stream) {
        tracing::warn!(path = %path.display(), "the cache handover socket belongs to another user: starting cold");
        return;
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    match cache.take_over(&mut stream, catalogue, max_body) {
        Ok(taken) => tracing::info!(
            entries = taken.entries,
            dropped = taken.dropped,
            "cache taken over from the previous instance"
        ),
        Err(error) => tracing::warn!(%error, "cache takeover failed: starting cold"),
    }
}
