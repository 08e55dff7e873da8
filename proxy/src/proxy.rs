//! The only `impl ProxyHttp`: glue between Pingora's phases and the domain modules.
//!
//! Every hub request is answered in `request_filter`, which runs before anything else can touch
//! the request: route → token → frame cache (origin fetch with attestation on a miss) →
//! rendition → delivery. Pingora's own upstream phases are never reached, because a frame must
//! be verified whole before its first byte goes to the hub, which a streaming upstream phase
//! cannot promise. Metrics are recorded in `logging`, once per request, from what the context
//! collected; origin requests, which a coalesced fetch makes on behalf of several hub requests,
//! are recorded where they complete.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::modules::http::HttpModules;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::{Error, ErrorType};

use crate::access;
use crate::app::Shared;
use crate::auth::{AuthError, TokenVerifier};
use crate::cache::{FrameCache, Lookup, Via};
use crate::config::Config;
use crate::delivery::{self, Delivery, HubError, Sent};
use crate::limit::{Limit, StreamSlots};
use crate::metrics::{Metrics, RequestRecord};
use crate::rendition::{self, Chosen};
use crate::request::{FrameRef, FrameRequest, HubRequest, RouteLabel, Target};
use crate::route;
use crate::stream;

/// Per-request state, filled as the request moves through the phases.
pub struct RequestCtx {
    started: Instant,
    route: RouteLabel,
    auth_failure: Option<AuthError>,
    lookup: Option<Lookup>,
    /// The rendition answered with, and why.
    chosen: Option<Chosen>,
    sent: Sent,
    /// The hub stopped taking bytes for longer than the write timeout.
    write_timed_out: bool,
}

/// The hub-facing proxy.
pub struct Edge {
    /// Replaced whole by a reload.
    tokens: Arc<ArcSwap<TokenVerifier>>,
    cache: Arc<FrameCache>,
    delivery: Arc<Delivery>,
    metrics: Arc<Metrics>,
    /// MJPEG streams open per owner.
    streams: StreamSlots,
    /// The longest a stream lasts.
    stream_max: Duration,
    /// The largest request head (`limits.header_bytes`).
    header_bytes: usize,
}

impl Edge {
    pub fn new(config: &Config, shared: &Shared) -> Edge {
        Edge {
            tokens: shared.tokens.clone(),
            cache: shared.cache.clone(),
            delivery: shared.delivery.clone(),
            metrics: shared.metrics.clone(),
            streams: StreamSlots::new(config.limits.streams_per_owner),
            stream_max: config.limits.stream_max,
            header_bytes: config.limits.header_bytes,
        }
    }

    /// Answers one hub request; an `Err` is a failure to write to the hub.
    async fn serve(&self, session: &mut Session, ctx: &mut RequestCtx) -> pingora::Result<()> {
        let head = session.req_header().method == http::Method::HEAD;
        self.delivery.pace(session);
        // HTTP/1.1 heads were measured as they arrived (`hub`); an HTTP/2 one is measured here.
        let answered = if session.is_http2() && head_size(session) > self.header_bytes {
            self.metrics.record_limited(Limit::HeaderBytes);
            Err(HubError::new(
                431,
                "request_header_fields_too_large",
                "the request head is larger than this edge accepts",
            ))
        } else {
            self.answer(session, ctx).await
        };
        let result = match answered {
            Ok(()) => ctx.sent.write_error.take().map_or(Ok(()), Err),
            Err(error) => delivery::write_error(session, &error, head).await,
        };
        if let Err(e) = &result {
            ctx.write_timed_out |= *e.etype() == ErrorType::WriteTimedout;
        }
        result
    }

    /// route → token → cache → rendition → delivery.
    async fn answer(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<(), HubError> {
        let req = self.authorise(session, ctx)?;
        match req.target {
            Target::Stream => return self.stream(session, ctx, &req).await,
            Target::Links => return self.links(session, ctx, &req).await,
            Target::Frame(_) => {}
        }
        // A lookup that ends in an error counts as a miss.
        ctx.lookup = Some(Lookup::Miss { stored: false });
        let source = (self.cache)
            .get(&req.owner, &req.camera, req.target.frame(), &req.via)
            .await?;
        ctx.lookup = Some(source.lookup);
        let chosen = (self.delivery).choose(session, &req, &self.cache, &source.frame);
        let (served, chosen) = rendition::serve(&self.cache, &req, source, chosen).await?;
        ctx.chosen = Some(chosen);
        (self.delivery)
            .frame(session, &req, &served, chosen, &mut ctx.sent)
            .await
    }

    /// The MJPEG stream, until the hub goes away or stalls.
    async fn stream(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        req: &FrameRequest,
    ) -> Result<(), HubError> {
        let Some(_slot) = self.streams.acquire(&req.owner) else {
            self.metrics.record_limited(Limit::StreamsPerOwner);
            return Err(HubError::too_many(
                "this owner has as many streams open as limits.streams_per_owner allows",
            ));
        };
        let subscriber = stream::Subscriber {
            req,
            cache: &self.cache,
            delivery: &self.delivery,
            metrics: &self.metrics,
            max: self.stream_max,
        };
        let (sent, ended) = subscriber.serve(session).await?;
        ctx.sent.body_bytes = sent;
        match ended {
            stream::Ended::Hub(error) => ctx.sent.write_error = Some(error),
            stream::Ended::Limit(limit) => self.metrics.record_limited(limit),
            stream::Ended::Shutdown | stream::Ended::Refused => {}
        }
        Ok(())
    }

    /// Access links to the camera's latest frame and stream, for the token's holder.
    async fn links(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        req: &FrameRequest,
    ) -> Result<(), HubError> {
        let (access, expires_at) =
            (self.tokens.load()).link(&req.owner, req.valid_until, &req.camera);
        let camera = req.camera.as_str();
        let body = serde_json::json!({
            "frame": format!("/v1/cameras/{camera}/frame?access={access}"),
            "stream": format!("/v1/cameras/{camera}/stream?access={access}"),
            "expires_at": expires_at,
        })
        .to_string();
        let header = delivery::json_header(200, body.len())
            .map_err(|_| HubError::new(500, "internal", "the answer could not be made"))?;
        if let Err(error) =
            delivery::write_response(session, header, Some(body.into()), false).await
        {
            ctx.sent.write_error = Some(error);
        }
        Ok(())
    }

    /// A request with an access link: the link must be for this camera, still valid, on the
    /// latest frame or the stream, and come without a token.
    fn by_link(
        &self,
        req: HubRequest,
        access: &str,
        with_token: bool,
        ctx: &mut RequestCtx,
    ) -> Result<FrameRequest, HubError> {
        if with_token {
            return Err(HubError::new(
                400,
                "bad_request",
                "send a bearer token or an access link, not both",
            ));
        }
        let placed = matches!(req.target, Target::Frame(FrameRef::Latest) | Target::Stream);
        let granted = match placed {
            true => self.tokens.load().verify_access(access, &req.camera),
            false => Err(AuthError::Malformed),
        };
        let granted = granted.map_err(|e| {
            ctx.auth_failure = Some(e);
            HubError::from(e)
        })?;
        // The camera's home member verifies the link itself, as it does a token.
        let via = match self.cache.clustered() {
            true => Via::Hub(format!("{} {access}", access::FORWARD_SCHEME).into()),
            false => Via::Origin,
        };
        Ok(req.authorised(granted.owner, granted.expires_at, via))
    }

    /// Parses the request line and verifies the token (or access link) and the camera grant.
    fn authorise(&self, session: &Session, ctx: &mut RequestCtx) -> Result<FrameRequest, HubError> {
        let header = session.req_header();
        let mut req = route::parse(
            &header.method,
            header.uri.path(),
            header.uri.query(),
            &self.delivery.config().renditions,
        )?;
        ctx.route = req.target.label();
        let values = header.headers.get_all(http::header::AUTHORIZATION);
        if let Some(access) = req.access.take() {
            let with_token = values.iter().next().is_some();
            return self.by_link(req, &access, with_token, ctx);
        }
        // With other members, a miss may be asked of the camera's home, which verifies the
        // hub's own token: it goes along (exactly one header, else verification fails below).
        let via = match values.iter().next() {
            Some(value) if self.cache.clustered() => match value.to_str() {
                Ok(text) => Via::Hub(text.into()),
                Err(_) => Via::Origin,
            },
            _ => Via::Origin,
        };
        let grant = self
            .tokens
            .load()
            .verify(values.into_iter().map(|v| v.as_bytes()))
            .and_then(|grant| grant.camera(&req.camera).map(|()| grant))
            .map_err(|e| {
                ctx.auth_failure = Some(e);
                HubError::from(e)
            })?;
        if grant.by_previous_key() {
            self.metrics.hub.auth_previous_key_uses.inc();
        }
        Ok(req.authorised(grant.owner().clone(), grant.valid_until(), via))
    }
}

/// A request head's size as HTTP/2 counts its header list (RFC 9113 §6.5.2: each field's
/// name and value and 32 bytes), the pseudo-header fields included.
fn head_size(session: &Session) -> usize {
    let req = session.req_header();
    let fields: usize = req
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum();
    let target = req.uri.path_and_query().map_or(0, |p| p.as_str().len());
    fields + req.method.as_str().len() + target + 4 * 32
}

/// The token verifier `config` asks for: its secret, then its previous ones.
pub fn tokens(config: &Config) -> TokenVerifier {
    let auth = &config.auth;
    TokenVerifier::new(auth.secret.expose(), &auth.audience, auth.leeway)
        .with_previous(auth.previous_secrets.iter().map(|s| s.expose()))
        .with_link_ttl(auth.link_ttl)
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            route: RouteLabel::Other,
            auth_failure: None,
            lookup: None,
            chosen: None,
            sent: Sent::default(),
            write_timed_out: false,
        }
    }

    /// Error logs name the method and the path only: a query may hold an access link, which is
    /// never logged.
    fn request_summary(&self, session: &Session, _ctx: &RequestCtx) -> String {
        let req = session.req_header();
        format!("{} {}", req.method, req.uri.path())
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
        // "0": nothing was written (the hub went away before an answer).
        let status = session
            .response_written()
            .map_or("0", |r| r.status.as_str());
        let ended = ctx.sent.finished.unwrap_or_else(Instant::now);
        self.metrics.record_request(&RequestRecord {
            route: ctx.route,
            status,
            duration: ended.duration_since(ctx.started),
            auth_failure: ctx.auth_failure,
            lookup: ctx.lookup,
            answer: ctx.sent.answer,
            chosen: ctx.chosen,
            body_bytes: ctx.sent.body_bytes,
            write_timed_out: ctx.write_timed_out,
        });
    }
}
