//! The peer listener (`cluster.peer_listen`): where other members ask this one, as a camera's
//! home, for frames.
//!
//! It speaks the camera-backend protocol (`GET /cameras/{camera}/frame`,
//! `GET /cameras/{camera}/frames/{hash}`), so an asking member attests the answer with the
//! same code as an origin's. A request needs a valid peer credential (else 401, counted in
//! `framecache_peer_auth_failures_total`) and the hub's own bearer token, verified here as a
//! hub listener would (401/403): the owner comes from that token only (an `X-Framecache-Owner`
//! header, which makes the request a complete camera-backend one, must agree with it). The frame comes from
//! this node's cache or its origin, never from another member.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use framecache_protocol as protocol;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use super::credential::{self, PeerKey};
use crate::access;
use crate::auth::{AuthError, TokenVerifier};
use crate::cache::{FrameCache, Lookup, Served, Via};
use crate::delivery;
use crate::identity::{CameraId, ContentHash};
use crate::metrics::Metrics;
use crate::origin::OriginError;
use crate::request::FrameRef;

/// The peer listener's application.
pub struct PeerListener {
    pub cache: Arc<FrameCache>,
    /// The hub token verifier, replaced by a reload.
    pub tokens: Arc<ArcSwap<TokenVerifier>>,
    pub key: PeerKey,
    pub metrics: Arc<Metrics>,
}

/// An answer that is not a frame.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: &'static str,
}

const fn refusal(status: StatusCode, code: &'static str, message: &'static str) -> Refusal {
    Refusal {
        status,
        code,
        message,
    }
}

/// A peer request's path: `/cameras/{camera}/frame` or `/cameras/{camera}/frames/{hash}`,
/// exactly, with no query.
pub fn parse_path(path: &str, query: Option<&str>) -> Option<(CameraId, FrameRef)> {
    if query.is_some() {
        return None;
    }
    let rest = path.strip_prefix("/cameras/")?;
    let (camera, rest) = rest.split_once('/')?;
    let camera = CameraId::parse(camera).ok()?;
    if rest == "frame" {
        return Some((camera, FrameRef::Latest));
    }
    let hash = rest.strip_prefix("frames/")?;
    let hash = ContentHash::parse(hash).ok()?;
    Some((camera, FrameRef::ByHash(hash)))
}

impl PeerListener {
    async fn answer(&self, session: &ServerSession) -> Result<(Served, CameraId), Refusal> {
        let req = session.req_header();
        if req.method != Method::GET {
            return Err(refusal(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use GET",
            ));
        }
        let authorization = single(session, http::header::AUTHORIZATION.as_str());
        let path = req.uri.path();
        let request = credential::Request {
            method: req.method.as_str(),
            path,
            authorization: authorization.unwrap_or_default(),
        };
        let checked = match single(session, credential::HEADER) {
            Some(value) => (self.key)
                .check(value, &request, credential::unix_now())
                .map(|_| ()),
            None => Err(credential::CredentialError::Missing),
        };
        if let Err(why) = checked {
            self.metrics.cluster.peer_auth_failures.inc();
            tracing::warn!(reason = %why, "peer request refused");
            return Err(refusal(
                StatusCode::UNAUTHORIZED,
                "invalid_peer_credential",
                "this listener serves members of the tier only",
            ));
        }
        let Some((camera, frame)) = parse_path(path, req.uri.query()) else {
            return Err(refusal(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such resource",
            ));
        };
        let tokens = self.tokens.load();
        // The hub's token, or the access link it came with (forwarded under its own scheme).
        let link = authorization
            .and_then(|a| a.strip_prefix(access::FORWARD_SCHEME.as_bytes()))
            .and_then(|rest| rest.strip_prefix(b" "));
        let owner = match link {
            // A link serves a camera's latest frame (and stream) only, here as on a hub listener.
            Some(_) if frame != FrameRef::Latest => Err(AuthError::Malformed),
            Some(link) => std::str::from_utf8(link)
                .map_err(|_| AuthError::Malformed)
                .and_then(|link| tokens.verify_access(link, &camera))
                .map(|access| access.owner),
            None => {
                let values = req.headers.get_all(http::header::AUTHORIZATION);
                (tokens.verify(values.into_iter().map(|v| v.as_bytes())))
                    .and_then(|grant| grant.camera(&camera).map(|()| grant.owner().clone()))
            }
        };
        let owner = owner.map_err(|e| {
            let hub = delivery::HubError::from(e);
            let status = StatusCode::from_u16(hub.status).unwrap_or(StatusCode::UNAUTHORIZED);
            refusal(
                status,
                hub.code,
                "the hub's credential does not grant this camera",
            )
        })?;
        // The asking member says whose request it is; it must be the token's owner, which is
        // the only word taken for it.
        if single(session, protocol::OWNER).is_some_and(|said| said != owner.as_str().as_bytes()) {
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                "owner_mismatch",
                "the owner header is not the hub token's owner",
            ));
        }
        match self.cache.get(&owner, &camera, frame, &Via::Origin).await {
            // A frame served stale because the origin fails is this member's fallback, not
            // an answer: the asking member falls back on its own copy, within its own bounds.
            Ok(served) if served.lookup == Lookup::Stale => Err(refusal(
                StatusCode::GATEWAY_TIMEOUT,
                "origin_unavailable",
                "the camera backend is failing; only a stale copy is here",
            )),
            Ok(served) => Ok((served, camera)),
            Err(error) => Err(origin_refusal(&error)),
        }
    }
}

/// How the origin's failure reaches the asking member: its 403/404 as they are (the member
/// evicts what it holds), the owner's budget as 429, its silence as 504, anything else 502.
fn origin_refusal(error: &OriginError) -> Refusal {
    match error {
        OriginError::NotFound => refusal(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such camera or frame",
        ),
        OriginError::Forbidden => refusal(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the camera backend refused this owner",
        ),
        OriginError::Limited { .. } => refusal(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "this owner's origin budget is spent",
        ),
        OriginError::Timeout => refusal(
            StatusCode::GATEWAY_TIMEOUT,
            "origin_timeout",
            "the camera backend did not answer in time",
        ),
        _ => refusal(
            StatusCode::BAD_GATEWAY,
            "origin_error",
            "no verified frame from the camera backend",
        ),
    }
}

/// The value of a header that must appear at most once; `None` when absent or repeated.
fn single<'a>(session: &'a ServerSession, name: &str) -> Option<&'a [u8]> {
    let mut values = session.req_header().headers.get_all(name).into_iter();
    match (values.next(), values.next()) {
        (Some(value), None) => Some(value.as_bytes()),
        _ => None,
    }
}

#[async_trait]
impl ServeHttp for PeerListener {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match self.answer(session).await {
            Ok((served, camera)) => frame_response(&served, &camera),
            Err(refused) => {
                let body = delivery::error_body(refused.code, refused.message).to_vec();
                let mut builder = Response::builder()
                    .status(refused.status)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(http::header::CONTENT_LENGTH, body.len())
                    .header(http::header::CACHE_CONTROL, "no-store");
                if refused.status == StatusCode::TOO_MANY_REQUESTS {
                    builder = builder.header(http::header::RETRY_AFTER, "1");
                }
                builder
                    .body(body)
                    .expect("invariant: static header values are valid")
            }
        }
    }
}

/// The frame with the origin's attestation, under the owner its entry was stored for (the
/// asking member checks it against its own hub's), with its freshness lifetime (`max-age`,
/// whole seconds rounded up: the asking member keeps it at most `cache.latest_fresh_ms`
/// anyway) and its `Age`, so that the asking member's copy is as old as this one.
fn frame_response(served: &Served, camera: &CameraId) -> Response<Vec<u8>> {
    let frame = &served.frame;
    let Some(signature) = frame.signature else {
        // A frame kept without its signature (an older instance handed it over): nothing to
        // attest it with. This member's own shortcoming: the asking member asks the next.
        let body =
            delivery::error_body("unattested", "this frame's signature was not kept").to_vec();
        return Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .expect("invariant: static header values are valid");
    };
    let max_age = (served.fresh_for.as_millis().div_ceil(1000)).min(31_536_000);
    let cache_control = if served.no_store {
        "no-store".to_string()
    } else {
        format!("max-age={max_age}")
    };
    let owner = &served.owner;
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "image/jpeg")
        .header(http::header::CONTENT_LENGTH, frame.body.len())
        .header(http::header::CACHE_CONTROL, cache_control)
        .header(http::header::AGE, served.age.as_secs())
        .header(protocol::FRAME_OWNER, owner.as_str())
        .header(protocol::FRAME_CAMERA, camera.as_str())
        .header(protocol::FRAME_SEQ, frame.seq)
        .header(protocol::FRAME_CAPTURED_AT, frame.captured_at_ms)
        .header(protocol::FRAME_SIGNATURE, signature.to_hex().as_str())
        .body(frame.body.to_vec())
        .expect("invariant: header values are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_exact() {
        let hash = "ab".repeat(32);
        assert_eq!(
            parse_path("/cameras/cam-1/frame", None).map(|(c, f)| (c.as_str().to_string(), f)),
            Some(("cam-1".into(), FrameRef::Latest))
        );
        assert!(matches!(
            parse_path(&format!("/cameras/cam-1/frames/{hash}"), None),
            Some((_, FrameRef::ByHash(_)))
        ));
        for bad in [
            "/cameras/cam-1/frame/",
            "/cameras//frame",
            "/cameras/cam-1/frames/xyz",
            "/cameras/cam-1/stream",
            "/v1/cameras/cam-1/frame",
            "/cameras/cam-1/../cam-2/frame",
            "/cameras/cam%2D1/frame",
        ] {
            assert!(parse_path(bad, None).is_none(), "{bad}");
        }
        assert!(parse_path("/cameras/cam-1/frame", Some("x=1")).is_none());
    }
}
