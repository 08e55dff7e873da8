//! The only `impl ProxyHttp`: glue between Pingora's phases and the domain modules.
//!
//! Every hub request is answered in `request_filter`, which runs before anything else can touch
//! the request: route → token → frame cache (origin fetch with attestation on a miss) →
//! delivery. Pingora's own upstream phases are never reached, because a frame must be verified
//! whole before its first byte goes to the hub, which a streaming upstream phase cannot
//! promise. Metrics are recorded in `logging`, once per request, from what the context
//! collected; origin requests, which a coalesced fetch makes on behalf of several hub
//! requests, are recorded where they complete.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::modules::http::HttpModules;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::{Error, ErrorType};

use crate::auth::{AuthError, Grant, TokenVerifier};
use crate::cache::key::Route;
use crate::cache::store::StoredFrame;
use crate::cache::{FrameCache, Lookup};
use crate::config::{Config, DeliveryConfig};
use crate::delivery::choice::{self, HubKey, Link, LinkMemory, Reason, TcpInfo};
use crate::delivery::condition::Answer;
use crate::delivery::{self, Chosen, HubError};
use crate::identity::OwnerId;
use crate::metrics::Metrics;
use crate::render;
use crate::route::{self, HubRequest, RouteLabel, Target};
use crate::stream;
use crate::variant::Rendition;

/// Per-request state, filled as the request moves through the phases.
pub struct RequestCtx {
    started: Instant,
    /// When the response was written, if the request went on after that (learning the hub's
    /// link); request durations end here.
    finished: Option<Instant>,
    route: RouteLabel,
    /// The rendition answered with, and why.
    chosen: Option<Chosen>,
    /// The hub stopped taking bytes for longer than the write timeout.
    write_timed_out: bool,
    /// Writing to the hub failed: the connection is dropped, never finished or reused (finishing
    /// would flush, with no timeout, to a hub that may never read again).
    write_error: Option<Box<Error>>,
    auth_failure: Option<AuthError>,
    lookup: Option<Lookup>,
    /// How a frame was answered, and the frame's length.
    answer: Option<(Answer, usize)>,
    body_bytes: usize,
}

/// The hub-facing proxy.
pub struct Edge {
    tokens: TokenVerifier,
    cache: Arc<FrameCache>,
    delivery: DeliveryConfig,
    metrics: Arc<Metrics>,
    /// Links measured on hubs' earlier connections, for their new ones.
    links: LinkMemory,
}

/// How long a hub's measured link is remembered for its next connection: longer than the
/// slowest polling hubs' interval (60 s), shorter than a home link's changes.
const LINK_MEMORY_TTL: Duration = Duration::from_secs(600);
/// At most this many hubs' links remembered: about 10 MiB.
const LINK_MEMORY_MAX: usize = 65_536;
/// How long a connection's first frame may take to be acknowledged before what has been
/// measured so far is kept.
const LEARN_WAIT: Duration = Duration::from_secs(10);

impl Edge {
    pub fn new(config: &Config, cache: Arc<FrameCache>, metrics: Arc<Metrics>) -> Edge {
        Edge {
            tokens: TokenVerifier::new(
                config.auth.secret.expose(),
                &config.auth.audience,
                config.auth.leeway,
            ),
            cache,
            delivery: config.delivery.clone(),
            metrics,
            links: LinkMemory::new(LINK_MEMORY_TTL, LINK_MEMORY_MAX),
        }
    }

    /// Answers one hub request; an `Err` is a failure to write to the hub.
    async fn serve(&self, session: &mut Session, ctx: &mut RequestCtx) -> pingora::Result<()> {
        let head = session.req_header().method == http::Method::HEAD;
        // A hub that takes less than 16 KiB per write timeout is dropped; one that is merely
        // slow is served.
        session.set_write_timeout(Some(self.delivery.write_timeout));
        session.set_min_send_rate(Some(delivery::min_send_rate(self.delivery.write_timeout)));
        // Pingora keeps an HTTP/1.1 connection open forever between requests unless told.
        session.set_keepalive(Some(self.delivery.idle_timeout.as_secs()));
        let result = match self.frame(session, ctx).await {
            Ok(()) => ctx.write_error.take().map_or(Ok(()), Err),
            Err(error) => delivery::write_error(session, &error, head).await,
        };
        if let Err(e) = &result {
            ctx.write_timed_out |= *e.etype() == ErrorType::WriteTimedout;
        }
        result
    }

    async fn frame(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<(), HubError> {
        let (req, grant) = self.authorise(session, ctx)?;
        let route = match req.target {
            Target::Latest => Route::Latest,
            Target::ByHash(hash) => Route::ByHash(hash),
            Target::Stream => {
                // Chosen per frame: a subscriber whose link changes gets other renditions.
                let choose = |session: &Session, frame: &StoredFrame| {
                    self.chosen(session, &req, grant.owner(), frame)
                };
                let subscriber = stream::Subscriber {
                    cache: &self.cache,
                    owner: grant.owner(),
                    camera: &req.camera,
                    config: &self.delivery,
                    metrics: &self.metrics,
                    choose: &choose,
                };
                let (sent, ended_by) = subscriber.serve(session).await?;
                ctx.body_bytes = sent;
                ctx.write_error = Some(ended_by);
                return Ok(());
            }
        };
        // A lookup that ends in an error counts as a miss.
        ctx.lookup = Some(Lookup::Miss { stored: false });
        let owner = grant.owner();
        let source = self.cache.get(owner, &req.camera, route).await?;
        ctx.lookup = Some(source.lookup);
        let chosen = self.chosen(session, &req, owner, &source.frame);
        let (served, chosen) =
            delivery::rendition(&self.cache, owner, &req.camera, source, chosen).await?;
        ctx.chosen = Some(chosen);
        let len = served.frame.body.len();
        let etag = delivery::etag(&served.frame);
        let answer = Answer::decide(&session.req_header().headers, req.head, &etag, len);
        ctx.answer = Some((answer, len));
        if answer == Answer::Unsatisfiable {
            return Err(HubError::unsatisfiable(len));
        }
        let (header, body) = delivery::frame_response(&served, &req, answer, chosen, etag)
            .map_err(|e| HubError::new(500, "internal", e.to_string()))?;
        // The hub going away mid-body is not an error to answer: the connection is dropped.
        // Each write has the write timeout; the whole body a deadline, so that a hub taking a
        // trickle cannot hold the frame for ever.
        let deadline = delivery::write_deadline(self.delivery.write_timeout, len);
        match tokio::time::timeout(
            deadline,
            delivery::write_response(session, header, body, req.head),
        )
        .await
        {
            Ok(Ok(sent)) => {
                ctx.body_bytes = sent;
                ctx.finished = Some(Instant::now());
                // The connection's first frame chosen by the proxy: what delivering it measures
                // is kept for the hub's next connection, which may be its next poll.
                if matches!(chosen.reason, Reason::Unmeasured | Reason::Remembered)
                    && sent as u64 >= choice::SETTLED_BYTES
                {
                    self.learn_link(session, owner).await;
                }
            }
            Ok(Err(e)) => ctx.write_error = Some(e),
            Err(_) => {
                ctx.write_error = Some(Error::explain(
                    ErrorType::WriteTimedout,
                    format!("the hub took longer than {deadline:?} for a frame of {len} bytes"),
                ))
            }
        }
        Ok(())
    }

    /// The rendition of `frame` to answer `req` with: the one asked for; `full` for a content
    /// address (it names the frame with those bytes); else the proxy's choice for the hub, from
    /// its hints, from what its connection's `TCP_INFO` says of the link, or, on a new
    /// connection, from what the same hub's last connection measured, within
    /// `delivery.target_time_ms`.
    fn chosen(
        &self,
        session: &Session,
        req: &HubRequest,
        owner: &OwnerId,
        frame: &StoredFrame,
    ) -> Chosen {
        let asked = match (req.variant, &req.target) {
            (Some(rendition), _) => Some(rendition),
            (None, Target::ByHash(_)) => Some(Rendition::FULL),
            (None, _) => None,
        };
        if let Some(rendition) = asked {
            return Chosen {
                rendition,
                reason: Reason::Requested,
            };
        }
        let camera = &req.camera;
        // The connection's own measurement, else what the hub's last connection measured.
        let measured = || {
            if let Some(link) = tcp_info(session).as_ref().and_then(Link::measured) {
                return Some((link, Reason::Measured));
            }
            let link = self.links.recall(&hub_key(session, owner)?)?;
            Some((link, Reason::Remembered))
        };
        // Read only when a smaller rendition is weighed (a fast link settles on `full` first).
        let source = std::cell::OnceCell::new();
        let (rendition, reason) = choice::choose(
            &self.delivery.renditions,
            &session.req_header().headers,
            measured,
            self.delivery.target_time,
            |r| {
                if r.variant.is_full() {
                    return frame.body.len();
                }
                self.cache
                    .cached_rendition_len(owner, camera, frame.hash, *r)
                    .unwrap_or_else(|| {
                        let source = source.get_or_init(|| choice::Source {
                            len: frame.body.len(),
                            width: render::dimensions(&frame.body).map(|(w, _)| w),
                        });
                        choice::estimate(r, source)
                    })
            },
        );
        Chosen { rendition, reason }
    }

    /// Waits (at most [`LEARN_WAIT`], and not while the proxy shuts down) until the frame just
    /// written has been acknowledged, then keeps the link it measured for the hub's next
    /// connection. The frame may still sit in the kernel's send buffer; a hub reads it before
    /// it asks anything more of this connection, so the wait delays its next request by at
    /// most one check (≤ 50 ms), once per connection. Request durations end before it.
    async fn learn_link(&self, session: &Session, owner: &OwnerId) {
        let Some(hub) = hub_key(session, owner) else {
            return;
        };
        let started = Instant::now();
        let mut pause = Duration::from_millis(5);
        while let Some(info) = tcp_info(session) {
            if !info.outstanding
                || started.elapsed() >= LEARN_WAIT
                || session.is_process_shutting_down()
            {
                self.links.remember(hub, &info);
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Parses the request line and verifies the token and the camera grant.
    fn authorise(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
    ) -> Result<(HubRequest, Arc<Grant>), HubError> {
        let header = session.req_header();
        let req = route::parse(
            &header.method,
            header.uri.path(),
            header.uri.query(),
            &self.delivery.renditions,
        )?;
        ctx.route = req.label();
        let values = header
            .headers
            .get_all(http::header::AUTHORIZATION)
            .into_iter()
            .map(|v| v.as_bytes());
        let grant = self
            .tokens
            .verify(values)
            .and_then(|grant| grant.camera(&req.camera).map(|()| grant))
            .map_err(|e| {
                ctx.auth_failure = Some(e);
                HubError::from(e)
            })?;
        Ok((req, grant))
    }
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            finished: None,
            route: RouteLabel::Other,
            chosen: None,
            write_timed_out: false,
            write_error: None,
            auth_failure: None,
            lookup: None,
            answer: None,
            body_bytes: 0,
        }
    }

    /// None: frames are JPEG, already compressed, and every answer is written in
    /// `request_filter`. Pingora's default adds a (disabled) compression module that every
    /// response would pass through.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<bool> {
        self.serve(session, ctx).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        Err(Error::explain(
            ErrorType::InternalError,
            "every hub request is answered in request_filter",
        ))
    }

    /// A hub that goes away or stops reading is counted, not logged as a proxy error.
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, error: &Error) -> bool {
        matches!(
            error.etype(),
            ErrorType::WriteTimedout | ErrorType::WriteError | ErrorType::ConnectionClosed
        )
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let m = &self.metrics;
        let route = ctx.route.as_str();
        // "0": nothing was written (the hub went away before an answer).
        let status = session
            .response_written()
            .map_or("0", |r| r.status.as_str());
        m.requests.with_label_values(&[route, status]).inc();
        m.request_duration.with_label_values(&[route]).observe(
            ctx.finished
                .unwrap_or_else(Instant::now)
                .duration_since(ctx.started)
                .as_secs_f64(),
        );
        if let Some(reason) = ctx.auth_failure {
            m.auth_failures.with_label_values(&[reason.as_str()]).inc();
        }
        if let Some(lookup) = ctx.lookup {
            m.cache_lookups.with_label_values(&[lookup.as_str()]).inc();
        }
        if let Some((answer, len)) = ctx.answer {
            m.record_answer(route, answer, len);
        }
        if let Some(chosen) = ctx.chosen {
            let variant = chosen.rendition.variant.as_str();
            m.variant_choices
                .with_label_values(&[variant, chosen.reason.as_str()])
                .inc();
            if ctx.body_bytes > 0 {
                m.response_bytes
                    .with_label_values(&[variant])
                    .inc_by(ctx.body_bytes as u64);
            }
        }
        if ctx.write_timed_out {
            m.hub_write_timeouts.with_label_values(&[route]).inc();
        }
    }
}

/// The hub connection's `TCP_INFO`, when the socket has one.
fn tcp_info(session: &Session) -> Option<TcpInfo> {
    let info = session.digest()?.socket_digest.as_ref()?.tcp_info()?;
    Some(TcpInfo {
        delivery_rate: info.tcpi_delivery_rate,
        rtt_us: info.tcpi_rtt,
        bytes_acked: info.tcpi_bytes_acked,
        busy_time_us: info.tcpi_busy_time,
        outstanding: info.tcpi_unacked > 0 || info.tcpi_notsent_bytes > 0,
    })
}

/// Which hub the connection comes from, as far as can be told; `None` without an IP peer.
fn hub_key(session: &Session, owner: &OwnerId) -> Option<HubKey> {
    let addr: IpAddr = session.client_addr()?.as_inet()?.ip();
    let agent = session.req_header().headers.get(http::header::USER_AGENT);
    Some(HubKey::new(owner, addr, agent.map(|v| v.as_bytes())))
}
