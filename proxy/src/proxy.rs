//! The only `impl ProxyHttp`: glue between Pingora's phases and the domain modules.
//!
//! Every hub request is answered in `request_filter`, which runs before anything else can touch
//! the request: route → token → origin fetch with attestation → delivery. Pingora's own upstream
//! phases are never reached, because a frame must be verified whole before its first byte goes
//! to the hub, which a streaming upstream phase cannot promise. Metrics are recorded in
//! `logging`, once per request, from what the context collected.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::{Error, ErrorType};

use crate::auth::{AuthError, Grant, TokenVerifier};
use crate::config::Config;
use crate::delivery::{self, CacheStatus, HubError};
use crate::metrics::Metrics;
use crate::origin::{Attempt, Origin, Want};
use crate::route::{self, HubRequest, RouteLabel, Target};

/// Per-request state, filled as the request moves through the phases.
pub struct RequestCtx {
    started: Instant,
    route: RouteLabel,
    variant: &'static str,
    auth_failure: Option<AuthError>,
    origin: Option<Attempt>,
    body_bytes: usize,
}

/// The hub-facing proxy.
pub struct Edge {
    config: Config,
    tokens: TokenVerifier,
    origin: Origin,
    metrics: Arc<Metrics>,
}

impl Edge {
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Edge {
        Edge {
            tokens: TokenVerifier::new(
                config.auth.secret.expose(),
                &config.auth.audience,
                config.auth.leeway,
            ),
            origin: Origin::new(&config.origin),
            config,
            metrics,
        }
    }

    /// Answers one hub request; an `Err` is a failure to write to the hub.
    async fn serve(&self, session: &mut Session, ctx: &mut RequestCtx) -> pingora::Result<()> {
        let head = session.req_header().method == http::Method::HEAD;
        match self.frame(session, ctx).await {
            Ok(()) => Ok(()),
            Err(error) => delivery::write_error(session, &error, head).await,
        }
    }

    async fn frame(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<(), HubError> {
        let (req, grant) = self.authorise(session, ctx)?;
        let want = match req.target {
            Target::Latest => Want::Latest,
            Target::ByHash(hash) => Want::ByHash(hash),
            Target::Stream => {
                return Err(HubError::new(
                    501,
                    "not_implemented",
                    "the MJPEG stream is not available yet",
                ))
            }
        };
        let (result, attempt) = self.origin.fetch(grant.owner(), &req.camera, want).await;
        if let Some(reason) = attempt.rejection {
            tracing::warn!(reason = reason.as_str(), camera = %req.camera, "origin answer rejected");
        }
        ctx.origin = Some(attempt);
        let frame = result?;
        let header = delivery::frame_header(
            &frame,
            &req,
            CacheStatus::Miss,
            self.config.cache.latest_fresh,
        )
        .map_err(|e| HubError::new(500, "internal", e.to_string()))?;
        // The hub going away mid-body is not an error to answer; its bytes are simply not sent.
        ctx.body_bytes = delivery::write_frame(session, header, &frame.body, req.head)
            .await
            .unwrap_or(0);
        Ok(())
    }

    /// Parses the request line and verifies the token and the camera grant.
    fn authorise(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
    ) -> Result<(HubRequest, Grant), HubError> {
        let header = session.req_header();
        let req = route::parse(&header.method, header.uri.path(), header.uri.query())?;
        ctx.route = req.label();
        ctx.variant = req.variant.unwrap_or("full");
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
            route: RouteLabel::Other,
            variant: "full",
            auth_failure: None,
            origin: None,
            body_bytes: 0,
        }
    }

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

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let m = &self.metrics;
        let route = ctx.route.as_str();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        m.requests
            .with_label_values(&[route, &status.to_string()])
            .inc();
        m.request_duration
            .with_label_values(&[route])
            .observe(ctx.started.elapsed().as_secs_f64());
        if let Some(reason) = ctx.auth_failure {
            m.auth_failures.with_label_values(&[reason.as_str()]).inc();
        }
        if let Some(attempt) = &ctx.origin {
            m.origin_requests
                .with_label_values(&[attempt.outcome.as_str()])
                .inc();
            m.origin_duration.observe(attempt.elapsed.as_secs_f64());
            if let Some(reason) = attempt.rejection {
                m.origin_rejections
                    .with_label_values(&[reason.as_str()])
                    .inc();
            }
        }
        if ctx.body_bytes > 0 {
            m.response_bytes
                .with_label_values(&[ctx.variant])
                .inc_by(ctx.body_bytes as u64);
        }
    }
}
