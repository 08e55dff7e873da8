//! Assembling and running the server: the hub proxy and the admin listener in one Pingora
//! server.
//!
//! Listening sockets are bound by [`Listeners::bind`] before Pingora starts, so that a busy port
//! is a clean error rather than a panic in a runtime thread, and so that tests and the demo can
//! bind port 0 and learn the port. The hub socket goes to framecache's own hub listener
//! ([`crate::hub_listener`]); the admin socket is handed to Pingora through its table of
//! inherited sockets, the path a graceful upgrade takes.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{IntoRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context;
use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{
    ExecutionPhase, ListenFds, RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch,
};
use pingora::services::listening::Service;
use pingora::services::{ServiceReadyNotifier, ServiceWithDependents};

use crate::admin::Admin;
use crate::cache::FrameCache;
use crate::config::Config;
use crate::hub::HubApp;
use crate::hub_listener::HubListener;
use crate::metrics::Metrics;
use crate::origin::Origin;
use crate::proxy::Edge;

/// The bound hub and admin sockets.
pub struct Listeners {
    hub: TcpListener,
    admin: TcpListener,
}

impl Listeners {
    /// Binds `server.listen` and `server.admin_listen`.
    pub fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let bind = |addr: SocketAddr, key: &str| {
            let listener = TcpListener::bind(addr)
                .with_context(|| format!("cannot listen on {addr} ({key})"))?;
            // Pingora accepts on a tokio listener, which must not block its runtime thread.
            listener.set_nonblocking(true)?;
            anyhow::Ok(listener)
        };
        let hub = bind(config.server.listen, "server.listen")?;
        if let Some(bytes) = config.server.send_buffer {
            // Inherited by every accepted connection (and it turns the kernel's autotuning off).
            socket2::SockRef::from(&hub)
                .set_send_buffer_size(bytes)
                .context("cannot set server.send_buffer_bytes")?;
        }
        Ok(Listeners {
            hub,
            admin: bind(config.server.admin_listen, "server.admin_listen")?,
        })
    }

    pub fn hub_addr(&self) -> SocketAddr {
        self.hub
            .local_addr()
            .expect("invariant: a bound socket has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("invariant: a bound socket has an address")
    }
}

/// Puts pre-bound sockets into Pingora's table of inherited sockets before the listening
/// services, which depend on it, start.
struct ListenerHandoff {
    sockets: Vec<(String, RawFd)>,
}

#[async_trait]
impl ServiceWithDependents for ListenerHandoff {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        _shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
        ready: ServiceReadyNotifier,
    ) {
        let fds = fds.expect("invariant: Pingora passes its socket table on Unix");
        let mut table = fds.lock();
        for (addr, fd) in self.sockets.drain(..) {
            table.add(addr, fd);
        }
        drop(table);
        ready.notify_ready();
    }

    fn name(&self) -> &str {
        "listener handoff"
    }

    fn threads(&self) -> Option<usize> {
        Some(1)
    }
}

/// The state the hub and admin listeners share.
#[derive(Clone)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub cache: Arc<FrameCache>,
}

impl Shared {
    pub fn new(config: &Config) -> Shared {
        let metrics = Arc::new(Metrics::new().with_renditions(&config.delivery.renditions));
        let cache = Arc::new(
            FrameCache::new(
                config.cache.clone(),
                Origin::new(&config.origin),
                metrics.clone(),
            )
            .with_render_threads(config.delivery.render_threads)
            .with_limits(&config.limits),
        );
        Shared { metrics, cache }
    }
}

/// Runs the proxy until `shutdown` fires. Blocks the calling thread.
pub fn run(
    config: Config,
    shared: Shared,
    listeners: Listeners,
    shutdown: Box<dyn ShutdownSignalWatch>,
) {
    let (hub_addr, admin_addr) = (listeners.hub_addr(), listeners.admin_addr());
    let grace = config.server.grace_period.as_secs();
    let open_files = crate::sealed::init();
    tracing::debug!(open_files, "open-file limit");
    let conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(grace),
        graceful_shutdown_timeout_seconds: Some(grace.max(1)),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let ready = Arc::new(AtomicBool::new(false));

    let handoff = server.add_service(ListenerHandoff {
        sockets: vec![(admin_addr.to_string(), listeners.admin.into_raw_fd())],
    });
    // The hub listener is framecache's own: it wraps every connection so that frame bodies
    // are sent by reference (see `hub_listener`). Hub connections have neither a read nor a
    // write buffer of Pingora's: an idle keep-alive hub costs about 23 KB of memory.
    let edge = pingora::proxy::http_proxy(
        &server.configuration,
        Edge::new(&config, shared.cache.clone(), shared.metrics.clone()),
    );
    let hub = HubApp::new(
        edge,
        &config.limits,
        config.delivery.idle_timeout,
        shared.metrics.clone(),
    );
    server.add_service(HubListener::new("framecache hub", listeners.hub, hub));

    let mut admin = Service::new(
        "framecache admin".to_string(),
        Admin::new(
            shared.metrics.clone(),
            shared.cache.clone(),
            config.admin.token.clone(),
            ready.clone(),
        ),
    );
    admin.threads = Some(1);
    admin.add_tcp(&admin_addr.to_string());
    server.add_service(admin).add_dependency(&handoff);

    let mut phases = server.watch_execution_phase();
    std::thread::spawn(move || {
        while let Ok(phase) = phases.blocking_recv() {
            match phase {
                ExecutionPhase::Running => ready.store(true, Ordering::Release),
                ExecutionPhase::GracefulTerminate | ExecutionPhase::ShutdownStarted => {
                    ready.store(false, Ordering::Release)
                }
                _ => {}
            }
        }
    });

    tracing::info!(hub = %hub_addr, admin = %admin_addr, "framecache listening");
    server.run(RunArgs {
        shutdown_signal: shutdown,
    });
}

/// A shutdown signal fired from code: the demo's and tests' way to stop a server.
struct Trigger(tokio::sync::watch::Receiver<bool>);

#[async_trait]
impl ShutdownSignalWatch for Trigger {
    async fn recv(&self) -> ShutdownSignal {
        let mut rx = self.0.clone();
        // An error means the sender is gone: stop as well.
        let _ = rx.wait_for(|stop| *stop).await;
        ShutdownSignal::FastShutdown
    }
}

/// A proxy running on its own thread, stopped when dropped.
pub struct Running {
    pub hub_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub shared: Shared,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    /// Stops the proxy and waits for its runtimes to end.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Binds the listeners and runs the proxy on a new thread.
pub fn spawn(config: Config) -> anyhow::Result<Running> {
    let listeners = Listeners::bind(&config)?;
    let (hub_addr, admin_addr) = (listeners.hub_addr(), listeners.admin_addr());
    let (stop, rx) = tokio::sync::watch::channel(false);
    let shared = Shared::new(&config);
    let for_thread = shared.clone();
    let thread = std::thread::Builder::new()
        .name("framecache".into())
        .spawn(move || run(config, for_thread, listeners, Box::new(Trigger(rx))))
        .context("cannot start the proxy thread")?;
    Ok(Running {
        hub_addr,
        admin_addr,
        shared,
        stop,
        thread: Some(thread),
    })
}
