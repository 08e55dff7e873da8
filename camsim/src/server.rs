//! The listener: accepting connections, the keep-alive loop, dispatch, and the [`Handle`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::camera::Cameras;
use crate::config::Config;
use crate::control;
use crate::delivery;
use crate::fault::Faults;
use crate::frame::Capture;
use crate::http::{self, Outcome, Request, Response};
use crate::route::{route, Route, RouteError};
use crate::stats::{Recorder, Stats};
use crate::topology::Topology;

/// How long a kept-alive connection may wait for its next request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a closing connection drains what the client still sends, so the client sees our
/// FIN and answer rather than a reset.
const LINGER: Duration = Duration::from_millis(500);
/// Pause after a failed accept (out of file descriptors, say) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// State shared by every connection.
pub(crate) struct Shared {
    pub topology: Topology,
    pub cameras: Cameras,
    pub recorder: Recorder,
    pub cache_control: Option<String>,
    faults: RwLock<Faults>,
}

impl Shared {
    pub fn faults(&self) -> Faults {
        self.faults
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.faults.write().unwrap_or_else(PoisonError::into_inner) = faults;
    }
}

/// A running camsim. Dropping it stops the server too (without waiting); prefer
/// [`Handle::shutdown`].
pub struct Handle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Handle {
    /// The address the listener is bound to (the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn topology(&self) -> &Topology {
        &self.shared.topology
    }

    /// Replaces the faults; takes effect for the next request.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.set_faults(faults);
    }

    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.recorder.snapshot()
    }

    /// Moves `camera` to its next frame now; the new seq, `None` for an unknown camera.
    pub fn advance(&self, camera: &str) -> Option<u64> {
        self.shared.cameras.advance(camera)
    }

    /// Stops accepting, closes every connection, and returns once all are gone.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::error!(%error, "camsim server task failed");
        }
    }
}

/// Binds the listener (port 0 allowed) and serves on the current tokio runtime; returns at once.
pub async fn start(config: Config) -> anyhow::Result<Handle> {
    let problems = config.problems();
    if !problems.is_empty() {
        anyhow::bail!("invalid camsim configuration: {}", problems.join("; "));
    }
    let listener =
        listen(config.listen).with_context(|| format!("cannot listen on {}", config.listen))?;
    let local_addr = listener.local_addr()?;
    let topology = Topology::new(config.owners, config.cameras_per_owner);
    let ids = topology.cameras();
    let capture = Capture {
        key: config.signing_key,
        width: config.width,
        height: config.height,
        quality: config.quality,
    };
    let shared = Arc::new(Shared {
        cameras: Cameras::new(&ids, config.fps, config.retain_frames, capture),
        recorder: Recorder::new(&ids),
        cache_control: config.cache_control,
        faults: RwLock::new(config.faults),
        topology,
    });
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(accept(listener, Arc::clone(&shared), stopped));
    tracing::debug!(%local_addr, "camsim listening");
    Ok(Handle {
        local_addr,
        shared,
        stop,
        task,
    })
}

/// How many connections may wait to be accepted: a proxy's cold-cache storm opens hundreds at
/// once, and a real backend's listener takes them (the kernel caps it at `net.core.somaxconn`).
/// With the usual 128, connects beyond it wait a second for a retransmitted SYN.
const ACCEPT_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// Starts camsim, prints where it listens and who reads which camera, serves until `shutdown`
/// completes, then shuts down cleanly.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let handle = start(config).await?;
    println!("camsim listening on http://{}", handle.local_addr());
    for owner in handle.topology().owners() {
        let cameras = handle.topology().cameras_of(&owner);
        println!("  {owner}: {}", cameras.join(", "));
    }
    shutdown.await;
    tracing::info!("camsim shutting down");
    handle.shutdown().await;
    Ok(())
}

/// Resolves once a stop is requested or the [`Handle`] is gone.
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

async fn accept(listener: TcpListener, shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stop_requested(&mut stopped) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    shared.recorder.connection_opened();
                    let shared = Arc::clone(&shared);
                    let mut stopped = stopped.clone();
                    connections.spawn(async move {
                        tokio::select! {
                            () = serve(&shared, stream) => {}
                            () = stop_requested(&mut stopped) => {}
                        }
                        shared.recorder.connection_closed();
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// One connection: requests in a loop while the client keeps it alive.
async fn serve(shared: &Shared, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(8 * 1024);
    loop {
        let request =
            match tokio::time::timeout(IDLE_TIMEOUT, http::read_request(&mut stream, &mut buf))
                .await
            {
                Err(_idle) => break,
                Ok(Ok(request)) => request,
                Ok(Err(error)) => {
                    if let Some(response) = error.response() {
                        shared.recorder.request();
                        tracing::debug!(%error, "unreadable request");
                        let _ = response.send(&mut stream, false, true).await;
                    }
                    break;
                }
            };
        shared.recorder.request();
        match dispatch(shared, &mut stream, &request).await {
            Ok(Outcome::Open) if request.keep_alive => continue,
            Ok(Outcome::Abort) => return,
            Ok(_) => break,
            Err(error) => {
                tracing::debug!(%error, "connection failed");
                return;
            }
        }
    }
    close(stream).await;
}

/// Closes gracefully: FIN, then drain what the client still sends for a moment.
async fn close(mut stream: TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 1024];
    let drain = async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

async fn dispatch(
    shared: &Shared,
    stream: &mut TcpStream,
    request: &Request,
) -> io::Result<Outcome> {
    let response = match route(&request.method, &request.path, request.query.as_deref()) {
        Ok(Route::Frame { camera, hash }) => {
            return delivery::serve_frame(shared, stream, request, &camera, hash.as_deref()).await
        }
        Ok(Route::GetFaults) => control::get_faults(shared),
        Ok(Route::PutFaults) => control::put_faults(shared, &request.body),
        Ok(Route::Advance { camera }) => control::advance(shared, &camera),
        Ok(Route::Stats) => control::stats(shared),
        Ok(Route::Topology) => control::topology(shared),
        Err(RouteError::NotFound) => {
            Response::text(404, &format!("no such resource: {}", request.path))
        }
        Err(RouteError::MethodNotAllowed { allow }) => {
            Response::text(405, &format!("method {} not allowed", request.method))
                .with_header("Allow", allow)
        }
        Err(RouteError::BadRequest(message)) => Response::text(400, &message),
    };
    let close = !request.keep_alive;
    response
        .send(stream, request.method == "HEAD", close)
        .await?;
    Ok(if close { Outcome::Close } else { Outcome::Open })
}
