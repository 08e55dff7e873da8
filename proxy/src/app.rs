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
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::Context;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::protocols::http::v2::server::default_h2_options;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{
    ExecutionPhase, ListenFds, RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch,
};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use pingora::services::{ServiceReadyNotifier, ServiceWithDependents};

use crate::admin::Admin;
use crate::auth::TokenVerifier;
use crate::cache::FrameCache;
use crate::cluster::peer::PeerListener;
use crate::cluster::Cluster;
use crate::config::{Config, Secret};
use crate::delivery::Delivery;
use crate::hub::HubApp;
use crate::hub_listener::HubListener;
use crate::metrics::Metrics;
use crate::origin::Origin;
use crate::proxy::Edge;
use crate::reload::Reloader;
use crate::tls::{self, Certificates};

/// The hub and admin listeners: bound here, or (an upgrade) to be taken over from the running
/// instance, found by address in Pingora's table of inherited sockets.
pub struct Listeners {
    plain: Option<Socket>,
    tls: Option<Socket>,
    admin: Socket,
    /// `cluster.peer_listen`, for a member of a tier.
    peer: Option<Socket>,
}

/// One listener's address and, unless it is to be inherited, its bound socket.
pub struct Socket {
    pub addr: SocketAddr,
    pub bound: Option<TcpListener>,
}

impl Listeners {
    /// Binds `server.listen`, `server.tls_listen` (those set) and `server.admin_listen`.
    pub fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let bind = |addr: SocketAddr, key: &str| {
            let listener = TcpListener::bind(addr)
                .with_context(|| format!("cannot listen on {addr} ({key})"))?;
            // Pingora accepts on a tokio listener, which must not block its runtime thread.
            listener.set_nonblocking(true)?;
            let addr = local_addr(&listener);
            anyhow::Ok(Socket {
                addr,
                bound: Some(listener),
            })
        };
        let hub = |addr: Option<SocketAddr>, key: &str| {
            let Some(addr) = addr else {
                return anyhow::Ok(None);
            };
            let socket = bind(addr, key)?;
            if let (Some(bytes), Some(listener)) = (config.server.send_buffer, &socket.bound) {
                // Inherited by every accepted connection (it turns the kernel's autotuning off).
                socket2::SockRef::from(listener)
                    .set_send_buffer_size(bytes)
                    .context("cannot set server.send_buffer_bytes")?;
            }
            Ok(Some(socket))
        };
        Ok(Listeners {
            plain: hub(config.server.listen, "server.listen")?,
            tls: hub(config.server.tls_listen, "server.tls_listen")?,
            admin: bind(config.server.admin_listen, "server.admin_listen")?,
            peer: match &config.cluster {
                Some(cluster) => Some(bind(cluster.peer_listen, "cluster.peer_listen")?),
                None => None,
            },
        })
    }

    /// The listeners of `config`, to be taken over from the instance being upgraded (nothing is
    /// bound here: the running instance holds the addresses).
    pub fn inherit(config: &Config) -> anyhow::Result<Listeners> {
        let socket = |addr: SocketAddr| Socket { addr, bound: None };
        Ok(Listeners {
            plain: config.server.listen.map(socket),
            tls: config.server.tls_listen.map(socket),
            admin: socket(config.server.admin_listen),
            peer: config.cluster.as_ref().map(|c| socket(c.peer_listen)),
        })
    }

    /// The plaintext hub listener's address, else the TLS one's.
    pub fn hub_addr(&self) -> SocketAddr {
        self.plain_addr()
            .or(self.tls_addr())
            .expect("invariant: validation asks for at least one hub listener")
    }

    /// The plaintext hub listener's address, if there is one.
    pub fn plain_addr(&self) -> Option<SocketAddr> {
        self.plain.as_ref().map(|s| s.addr)
    }

    /// The TLS hub listener's address, if there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|s| s.addr)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.addr
    }

    /// The peer listener's address, for a member of a tier.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer.as_ref().map(|s| s.addr)
    }
}

fn local_addr(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .expect("invariant: a bound socket has an address")
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

/// The state the hub and admin listeners share, and what a reload replaces in it.
#[derive(Clone)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub cache: Arc<FrameCache>,
    /// The hub TLS listener's certificate, replaceable while it runs.
    pub certificates: Option<Arc<Certificates>>,
    /// The hub token verifier (`[auth]`).
    pub tokens: Arc<ArcSwap<TokenVerifier>>,
    /// Delivery settings and hubs' links (`[delivery]`).
    pub delivery: Arc<Delivery>,
    /// The admin bearer token (`[admin]`).
    pub admin_token: Arc<ArcSwap<Secret>>,
    /// The configuration in force: what a reload compares the file with.
    pub running: Arc<Mutex<Config>>,
    /// Set once the cache was handed to a new instance (an upgrade): purges are refused here.
    pub handed_over: Arc<AtomicBool>,
    /// The tier this node is a member of (`[cluster]`).
    pub cluster: Option<Arc<Cluster>>,
}

impl Shared {
    pub fn new(config: &Config) -> Shared {
        let metrics = Arc::new(Metrics::new().with_renditions(&config.delivery.renditions));
        let cluster = (config.cluster.as_ref())
            .map(|c| Arc::new(Cluster::new(c, &config.origin, metrics.clone())));
        let mut cache = FrameCache::new(
            config.cache.clone(),
            Origin::new(&config.origin),
            metrics.clone(),
        )
        .with_render_threads(config.delivery.render_threads)
        .with_limits(&config.limits);
        if let Some(cluster) = &cluster {
            cache = cache.with_cluster(cluster.clone());
        }
        let cache = Arc::new(cache);
        let certificates =
            config.tls.as_ref().map(|tls| {
                Arc::new(Certificates::new(tls).expect(
                    "invariant: the certificate was checked when the configuration was read",
                ))
            });
        Shared {
            metrics,
            cache,
            certificates,
            tokens: Arc::new(ArcSwap::from_pointee(crate::proxy::tokens(config))),
            delivery: Arc::new(Delivery::new(config.delivery.clone())),
            admin_token: Arc::new(ArcSwap::from_pointee(config.admin.token.clone())),
            running: Arc::new(Mutex::new(config.clone())),
            handed_over: Arc::new(AtomicBool::new(false)),
            cluster,
        }
    }
}

/// Runs the proxy until `shutdown` fires. Blocks the calling thread.
/// With `reload_from`, SIGHUP re-reads that configuration file ([`crate::reload`]).
pub fn run(
    config: Config,
    shared: Shared,
    listeners: Listeners,
    shutdown: Box<dyn ShutdownSignalWatch>,
    reload_from: Option<PathBuf>,
    upgrade: bool,
) {
    let (plain_addr, tls_addr) = (listeners.plain_addr(), listeners.tls_addr());
    let admin_addr = listeners.admin_addr();
    let peer = listeners.peer_addr();
    let grace = config.server.grace_period.as_secs();
    let open_files = crate::sealed::init();
    tracing::debug!(open_files, "open-file limit");
    let conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(grace),
        graceful_shutdown_timeout_seconds: Some(grace.max(1)),
        upgrade_sock: config.server.upgrade_sock.display().to_string(),
        ..ServerConf::default()
    };
    // With `upgrade`, bootstrapping waits for the running instance to hand its listening
    // sockets over (on SIGQUIT) through `server.upgrade_sock`.
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    server.bootstrap();
    let handover = crate::upgrade::socket_path(&config.server.upgrade_sock);
    if upgrade {
        // The sockets are ours now: the cache too, before a request is served.
        let max_body = config.origin.max_frame_bytes;
        let renditions = &config.delivery.renditions;
        crate::upgrade::take_over(&handover, &shared.cache, renditions, max_body);
    }

    let ready = Arc::new(AtomicBool::new(false));

    let bound = [Some(listeners.admin), listeners.peer];
    let handoff = server.add_service(ListenerHandoff {
        sockets: (bound.into_iter().flatten())
            .filter_map(|socket| Some((socket.addr.to_string(), socket.bound?.into_raw_fd())))
            .collect(),
    });
    add_hub_listeners(
        &mut server,
        &config,
        &shared,
        listeners.plain,
        listeners.tls,
    );

    let mut admin = Service::new(
        "framecache admin".to_string(),
        Admin::new(
            shared.metrics.clone(),
            shared.cache.clone(),
            shared.admin_token.clone(),
            ready.clone(),
            shared.handed_over.clone(),
        )
        .with_cluster(shared.cluster.clone()),
    );
    admin.threads = Some(1);
    admin.add_tcp(&admin_addr.to_string());
    server.add_service(admin).add_dependency(&handoff);
    if let (Some(cluster), Some(peer)) = (&shared.cluster, peer) {
        let listener = PeerListener {
            cache: shared.cache.clone(),
            tokens: shared.tokens.clone(),
            key: cluster.key().clone(),
            metrics: shared.metrics.clone(),
        };
        let mut service = Service::new("framecache peers".to_string(), listener);
        service.add_tcp(&peer.to_string());
        server.add_service(service).add_dependency(&handoff);
        let members = crate::cluster::Maintenance(cluster.clone());
        server.add_service(background_service("cluster members", members));
    }

    if let Some(path) = reload_from {
        add_serving_services(&mut server, &shared, path, handover);
    }
    watch_readiness(&server, ready);

    tracing::info!(plain = ?plain_addr, tls = ?tls_addr, admin = %admin_addr, peer = ?peer, "framecache listening");
    server.run(RunArgs {
        shutdown_signal: shutdown,
    });
}

/// The hub listeners, plaintext and TLS, with the proxy behind them.
///
/// They are framecache's own: they wrap every plaintext connection so that frame bodies are sent
/// by reference, and admit connections and finish TLS handshakes within the edge's limits (see
/// `hub_listener`). Hub connections have neither a read nor a write buffer of Pingora's: an idle
/// keep-alive hub costs about 23 KB of memory.
fn add_hub_listeners(
    server: &mut Server,
    config: &Config,
    shared: &Shared,
    plain: Option<Socket>,
    tls: Option<Socket>,
) {
    let mut edge = pingora::proxy::http_proxy(&server.configuration, Edge::new(config, shared));
    let mut options = HttpServerOptions::default();
    options.h2c = config.server.h2;
    // An HTTP/2 connection with no stream open is closed as an idle HTTP/1.1 one is.
    options.h2_idle_timeout = Some(config.delivery.idle_timeout);
    edge.server_options = Some(options);
    let mut h2 = default_h2_options();
    // Twice the limit, so that a head between the two is refused by the proxy in its own words
    // (431 JSON, counted) rather than by the HTTP/2 library; the library bounds the rest.
    h2.max_header_list_size(2 * config.limits.header_bytes as u32);
    edge.h2_options = Some(h2);
    let hub = Arc::new(HubApp::new(
        edge,
        &config.limits,
        config.delivery.idle_timeout,
        config.server.h2,
        shared.metrics.clone(),
    ));
    if let Some(socket) = plain {
        let listener = HubListener::new("framecache hub", socket, None, hub.clone());
        server.add_service(listener);
    }
    if let (Some(socket), Some(certificates)) = (tls, &shared.certificates) {
        let acceptor = tls::acceptor(certificates.clone(), config.server.h2)
            .expect("invariant: the certificate was checked when the configuration was read");
        let tls = Some(Arc::new(acceptor));
        server.add_service(HubListener::new("framecache hub tls", socket, tls, hub));
    }
}

/// What only a served configuration file has: SIGHUP reloads of `path`, and the cache handed
/// over to the next instance at `handover` in an upgrade.
fn add_serving_services(server: &mut Server, shared: &Shared, path: PathBuf, handover: PathBuf) {
    let service = crate::upgrade::CacheHandover {
        path: handover,
        cache: shared.cache.clone(),
        handed_over: shared.handed_over.clone(),
    };
    server.add_service(background_service("cache handover", service));
    let reloader = Reloader {
        path,
        shared: shared.clone(),
    };
    server.add_service(background_service("configuration reload", reloader));
}

/// `/readyz` follows the server's phases: ready once it runs, not ready from the start of a
/// shutdown or an upgrade's drain.
fn watch_readiness(server: &Server, ready: Arc<AtomicBool>) {
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
    /// The plaintext hub listener's address (the TLS one's when there is no plaintext one).
    pub hub_addr: SocketAddr,
    /// The TLS hub listener's address, when there is one.
    pub tls_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    /// The peer listener's address, for a member of a tier.
    pub peer_addr: Option<SocketAddr>,
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
    let tls_addr = listeners.tls_addr();
    let peer_addr = listeners.peer_addr();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let shared = Shared::new(&config);
    let for_thread = shared.clone();
    let thread = std::thread::Builder::new()
        .name("framecache".into())
        .spawn(move || {
            let signal = Box::new(Trigger(rx));
            run(config, for_thread, listeners, signal, None, false)
        })
        .context("cannot start the proxy thread")?;
    Ok(Running {
        hub_addr,
        tls_addr,
        admin_addr,
        peer_addr,
        shared,
        stop,
        thread: Some(thread),
    })
}
