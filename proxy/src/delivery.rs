//! What the hub receives, and how: frame responses with SPEC's headers, JSON errors, and the
//! pace a hub must keep.
//!
//! Domain errors become an HTTP answer once, here, through [`HubError`]. [`condition`] decides
//! between 200, 304, 206 and 416; [`link`] measures hubs' links from their sockets and
//! remembers them for their next connections. A hub that takes less than 16 KiB per
//! `delivery.write_timeout_ms` is dropped; one that is merely slow is served.

pub mod condition;
pub mod link;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};

use crate::auth::AuthError;
use crate::cache::store::StoredFrame;
use crate::cache::{FrameCache, Lookup, Served};
use crate::config::DeliveryConfig;
use crate::origin::OriginError;
use crate::rendition::choose::{self, Reason};
use crate::rendition::{Chosen, RenditionError};
use crate::request::{FrameRef, FrameRequest, Target};
use crate::route::RouteError;
use condition::Answer;
use link::{LinkMemory, SETTLED_BYTES};

/// `Cache-Control` of a frame addressed by its hash: the bytes can never change.
const IMMUTABLE: &str = "private, max-age=31536000, immutable";

/// The quoted strong ETag of a frame: its blake3 address.
pub fn etag(frame: &StoredFrame) -> String {
    format!("\"{}\"", &*frame.hash.hex())
}

/// A hub must take at least this many bytes per `delivery.write_timeout_ms` to stay connected
/// (1.6 KB/s with the default 10 s).
pub const MIN_BYTES_PER_WRITE_TIMEOUT: usize = 16 * 1024;

/// The send rate, bytes per second, below which a write to a hub times out: Pingora gives each
/// write of `n` bytes `n / rate` seconds (at least one), so a body goes out in one write, not in
/// slices, and a slow hub is still served.
fn min_send_rate(write_timeout: Duration) -> usize {
    let millis = write_timeout.as_millis().max(1);
    ((MIN_BYTES_PER_WRITE_TIMEOUT as u128 * 1000) / millis).max(1) as usize
}

/// The longest a whole body of `len` bytes may take, headers and the final flush included (the
/// flush has no timeout of its own): one write timeout per 16 KiB, and two more.
fn write_deadline(write_timeout: Duration, len: usize) -> Duration {
    let writes = len.div_ceil(MIN_BYTES_PER_WRITE_TIMEOUT) as u32 + 2;
    write_timeout.saturating_mul(writes)
}

/// Delivery to hubs: its configuration, and what the proxy learnt of hubs' links.
pub struct Delivery {
    /// Replaced by a reload.
    config: ArcSwap<DeliveryConfig>,
    links: LinkMemory,
}

/// What answering a request did, for its metrics.
#[derive(Debug, Default)]
pub struct Sent {
    /// How a frame was answered, and the frame's length.
    pub answer: Option<(Answer, usize)>,
    /// Body bytes written.
    pub body_bytes: usize,
    /// When the response was written, if the request went on after that (learning the hub's
    /// link); request durations end here.
    pub finished: Option<Instant>,
    /// Writing to the hub failed: the connection is dropped, never finished or reused
    /// (finishing would flush, with no timeout, to a hub that may never read again).
    pub write_error: Option<Box<Error>>,
}

impl Delivery {
    pub fn new(config: DeliveryConfig) -> Delivery {
        Delivery {
            config: ArcSwap::from_pointee(config),
            links: LinkMemory::for_hubs(),
        }
    }

    /// The delivery settings in force.
    pub fn config(&self) -> Arc<DeliveryConfig> {
        self.config.load_full()
    }

    /// Applies reloaded settings to the requests that start from now on.
    pub fn reconfigure(&self, config: DeliveryConfig) {
        self.config.store(Arc::new(config));
    }

    /// Sets the pace a hub must keep on `session`, and how long its connection may idle.
    pub fn pace(&self, session: &mut Session) {
        let config = self.config.load();
        session.set_write_timeout(Some(config.write_timeout));
        session.set_min_send_rate(Some(min_send_rate(config.write_timeout)));
        let headers = &session.req_header().headers;
        // No hub route takes a body: one sent anyway is not drained (which could take as long
        // as its sender likes); the connection closes after the answer instead.
        let body = headers.contains_key(http::header::TRANSFER_ENCODING)
            || headers
                .get(http::header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() != b"0");
        if body || session.is_process_shutting_down() {
            session.set_keepalive(None);
        } else {
            // Pingora keeps an HTTP/1.1 connection open forever between requests unless told.
            session.set_keepalive(Some(config.idle_timeout.as_secs()));
        }
    }

    /// The rendition of `frame` to answer `req` with ([`choose::for_request`]), weighing the
    /// link of `session`'s hub.
    pub fn choose(
        &self,
        session: &Session,
        req: &FrameRequest,
        cache: &FrameCache,
        frame: &StoredFrame,
    ) -> Chosen {
        let link = || self.links.known(session, &req.owner);
        let headers = &session.req_header().headers;
        choose::for_request(req, headers, link, &self.config.load(), cache, frame)
    }

    /// Answers `req` with `served` in `chosen`: 200, 304, 206 or 416 as its conditions say.
    /// A hub going away mid-body is not an error to answer: it is recorded in `sent` and the
    /// connection is dropped. Each write has the write timeout, the whole body a deadline, so
    /// that a hub taking a trickle cannot hold the frame for ever.
    pub async fn frame(
        &self,
        session: &mut Session,
        req: &FrameRequest,
        served: &Served,
        chosen: Chosen,
        sent: &mut Sent,
    ) -> Result<(), HubError> {
        let len = served.frame.body.len();
        let etag = etag(&served.frame);
        let answer = Answer::decide(&session.req_header().headers, req.head, &etag, len);
        sent.answer = Some((answer, len));
        if answer == Answer::Unsatisfiable {
            return Err(HubError::unsatisfiable(len));
        }
        let (header, body) = frame_response(served, req, answer, chosen, etag)
            .map_err(|e| HubError::new(500, "internal", e.to_string()))?;
        let deadline = write_deadline(self.config.load().write_timeout, len);
        let written = write_response(session, header, body, req.head);
        match tokio::time::timeout(deadline, written).await {
            Ok(Ok(bytes)) => {
                sent.body_bytes = bytes;
                sent.finished = Some(Instant::now());
                // The connection's first frame chosen by the proxy: what delivering it
                // measures is kept for the hub's next connection, which may be its next poll.
                if matches!(chosen.reason, Reason::Unmeasured | Reason::Remembered)
                    && bytes as u64 >= SETTLED_BYTES
                {
                    self.links.learn(session, &req.owner).await;
                }
            }
            Ok(Err(e)) => sent.write_error = Some(e),
            Err(_) => {
                sent.write_error = Some(Error::explain(
                    ErrorType::WriteTimedout,
                    format!("the hub took longer than {deadline:?} for a frame of {len} bytes"),
                ))
            }
        }
        Ok(())
    }
}

/// Header names of frame responses that `http` has no constant for.
mod name {
    use http::header::HeaderName;

    pub const ACCEPT_CH: HeaderName = HeaderName::from_static("accept-ch");
    pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
    pub const X_FRAME_CAPTURED_AT: HeaderName = HeaderName::from_static("x-frame-captured-at");
    pub const X_FRAME_SEQ: HeaderName = HeaderName::from_static("x-frame-seq");
    pub const X_FRAME_VARIANT: HeaderName = HeaderName::from_static("x-frame-variant");
}

/// The response header of a frame answered as `answer` (not `Unsatisfiable`, an error), with
/// its [`etag`], and the body to send with it.
///
/// A 304 carries what RFC 9110 §15.4.5 asks of it (`ETag`, `Cache-Control`, `Content-Location`,
/// `Vary`), what refreshes the hub's stored copy (`Age`, `Cache-Status`) and the attested
/// sequence and capture time, and none of the representation's other metadata: it is the answer
/// hubs get on most polls.
///
/// Built as a plain `http` header map with constant names, so that nothing is parsed or
/// validated twice on the hit path; Pingora writes it as it is.
pub fn frame_response(
    served: &Served,
    req: &FrameRequest,
    answer: Answer,
    chosen: Chosen,
    etag: String,
) -> Result<(ResponseHeader, Option<Bytes>), http::Error> {
    use http::header::{self, HeaderValue};
    use http::StatusCode;

    let frame = &served.frame;
    let len = frame.body.len();
    let (status, body) = match answer {
        Answer::NotModified => (StatusCode::NOT_MODIFIED, None),
        Answer::Partial { start, end } => (
            StatusCode::PARTIAL_CONTENT,
            Some(frame.body.slice(start..=end)),
        ),
        _ => (StatusCode::OK, Some(frame.body.clone())),
    };
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = status;
    let h = &mut parts.headers;
    h.reserve(16);
    if let Some(body) = &body {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    if let Answer::Partial { start, end } = answer {
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::try_from(format!("bytes {start}-{end}/{len}"))?,
        );
    }
    h.insert(header::ETAG, HeaderValue::try_from(etag)?);
    h.insert(header::CACHE_CONTROL, cache_control(served, req)?);
    h.insert(
        name::CACHE_STATUS,
        HeaderValue::from_static(served.lookup.cache_status()),
    );
    h.insert(header::AGE, HeaderValue::from(served.age.as_secs()));
    let variant = chosen.rendition.variant;
    if let Some(location) = content_location(req, frame, chosen) {
        h.insert(header::CONTENT_LOCATION, location?);
    }
    if chosen.reason != Reason::Requested {
        // Another hint, or another link, may get another rendition at this URL.
        h.insert(header::VARY, HeaderValue::from_static(choose::ACCEPT_CH));
    }
    h.insert(name::X_FRAME_SEQ, HeaderValue::from(frame.seq));
    h.insert(
        name::X_FRAME_CAPTURED_AT,
        HeaderValue::from(frame.captured_at_ms),
    );
    if answer != Answer::NotModified {
        // The representation's own metadata, which a 304 leaves out.
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        h.insert(
            name::X_FRAME_VARIANT,
            HeaderValue::from_static(variant.as_str()),
        );
        if chosen.reason != Reason::Requested {
            // Asked for where the answer depends on them: not for a rendition asked by name.
            h.insert(name::ACCEPT_CH, HeaderValue::from_static(choose::ACCEPT_CH));
        }
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    Ok((ResponseHeader::from(parts), body))
}

/// `Cache-Control` of a frame answer: immutable by hash; else the latest frame's remaining
/// freshness, none when stale, and `no-store` when the origin said so.
fn cache_control(
    served: &Served,
    req: &FrameRequest,
) -> Result<http::HeaderValue, http::header::InvalidHeaderValue> {
    use http::HeaderValue;
    Ok(match req.target {
        Target::Frame(FrameRef::ByHash(_)) => HeaderValue::from_static(IMMUTABLE),
        _ if served.no_store => HeaderValue::from_static("private, no-store"),
        _ if matches!(served.lookup, Lookup::Stale | Lookup::Revalidating) => {
            HeaderValue::from_static("private, max-age=0")
        }
        _ => HeaderValue::try_from(format!(
            "private, max-age={}",
            max_age(served.age, served.fresh_for)
        ))?,
    })
}

/// `Content-Location` of a frame answer: the by-hash address of the bytes served, for a latest
/// frame or a rendition (a by-hash `full` answer is at its own address already).
fn content_location(
    req: &FrameRequest,
    frame: &StoredFrame,
    chosen: Chosen,
) -> Option<Result<http::HeaderValue, http::header::InvalidHeaderValue>> {
    let variant = chosen.rendition.variant;
    if req.target != Target::Frame(FrameRef::Latest) && variant.is_full() {
        return None;
    }
    let query = if variant.is_full() {
        String::new()
    } else {
        format!("?variant={variant}")
    };
    let address = frame.address();
    let location = format!(
        "/v1/cameras/{}/frames/{}{query}",
        req.camera,
        &*address.hex()
    );
    Some(http::HeaderValue::try_from(location))
}

/// The `max-age` of a frame `age` old and fresh for `lifetime`, sent beside `Age` (`age` in whole
/// seconds). The hub's cache takes `Age` off `max-age` itself (RFC 9111, 4.2.3), so the two
/// together never promise more than the remaining freshness, in whole seconds.
fn max_age(age: Duration, lifetime: Duration) -> u64 {
    age.as_secs() + lifetime.saturating_sub(age).as_secs()
}

/// Writes a response (headers only for HEAD); returns the body bytes sent. The body is the
/// shared bytes, not a copy.
pub async fn write_response(
    session: &mut Session,
    header: ResponseHeader,
    body: Option<Bytes>,
    head: bool,
) -> pingora::Result<usize> {
    let body = body.filter(|_| !head);
    session
        .write_response_header(Box::new(header), body.is_none())
        .await?;
    let Some(body) = body else {
        return Ok(0);
    };
    let sent = body.len();
    session.write_response_body(Some(body), true).await?;
    Ok(sent)
}

/// An error answer: status, a stable code, a human message, and the headers it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// One more header the answer needs: `Allow` for 405, `Content-Range` for 416.
    pub header: Option<(&'static str, String)>,
}

impl HubError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> HubError {
        HubError {
            status,
            code,
            message: message.into(),
            header: None,
        }
    }

    /// The response header and body.
    pub fn response(&self) -> pingora::Result<(ResponseHeader, Bytes)> {
        let body = error_body(self.code, &self.message);
        let mut h = ResponseHeader::build_no_case(self.status, Some(6))?;
        h.insert_header("content-type", "application/json")?;
        h.insert_header("content-length", body.len())?;
        h.insert_header("cache-control", "no-store")?;
        h.insert_header("x-content-type-options", "nosniff")?;
        if self.status == 401 {
            h.insert_header("www-authenticate", "Bearer error=\"invalid_token\"")?;
        }
        if let Some((name, value)) = &self.header {
            h.insert_header(*name, value.as_str())?;
        }
        Ok((h, body))
    }
}

/// The head of a JSON answer of `len` bytes that no cache keeps.
pub fn json_header(status: u16, len: usize) -> pingora::Result<ResponseHeader> {
    let mut h = ResponseHeader::build_no_case(status, Some(4))?;
    h.insert_header("content-type", "application/json")?;
    h.insert_header("content-length", len)?;
    h.insert_header("cache-control", "no-store")?;
    h.insert_header("x-content-type-options", "nosniff")?;
    Ok(h)
}

/// The JSON body of every error answer, hub or admin: `{"error": code, "message": message}`.
pub fn error_body(code: &str, message: &str) -> Bytes {
    Bytes::from(serde_json::json!({"error": code, "message": message}).to_string())
}

impl HubError {
    /// 429: a limit of `[limits]` refused the request; try again in a second.
    pub fn too_many(message: &str) -> HubError {
        HubError {
            header: Some(("retry-after", "1".to_string())),
            ..HubError::new(429, "too_many_requests", message)
        }
    }

    /// 416 for a range outside a frame of `len` bytes.
    pub fn unsatisfiable(len: usize) -> HubError {
        HubError {
            header: Some(("content-range", format!("bytes */{len}"))),
            ..HubError::new(
                416,
                "range_not_satisfiable",
                format!("the frame has {len} bytes"),
            )
        }
    }
}

impl From<RouteError> for HubError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::BadRequest(why) => HubError::new(400, "bad_request", why),
            RouteError::NotFound => HubError::new(404, "not_found", "no such resource"),
            RouteError::MethodNotAllowed(allow) => HubError {
                header: Some(("allow", allow.to_string())),
                ..HubError::new(405, "method_not_allowed", format!("use {allow}"))
            },
        }
    }
}

impl From<AuthError> for HubError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::CameraNotGranted => HubError::new(403, "forbidden", e.to_string()),
            _ => HubError::new(401, "invalid_token", e.to_string()),
        }
    }
}

impl From<OriginError> for HubError {
    fn from(e: OriginError) -> Self {
        let message = e.to_string();
        match e {
            OriginError::NotFound => HubError::new(404, "not_found", message),
            OriginError::Forbidden => HubError::new(403, "forbidden", message),
            OriginError::Rejected(_) => HubError::new(502, "bad_gateway", message),
            // The detail (Pingora's error context) is for the log, not for hubs.
            OriginError::Io(detail) => {
                tracing::debug!(%detail, "origin exchange failed");
                HubError::new(502, "bad_gateway", "the origin's answer could not be read")
            }
            OriginError::Unreachable => HubError::new(503, "origin_unavailable", message),
            OriginError::Timeout | OriginError::HomeOrigin { timed_out: true } => {
                HubError::new(504, "origin_timeout", message)
            }
            OriginError::HomeOrigin { timed_out: false } => {
                HubError::new(502, "bad_gateway", message)
            }
            OriginError::Limited { retry_after } => HubError {
                header: Some((
                    "retry-after",
                    retry_after.as_secs_f64().ceil().max(1.0).to_string(),
                )),
                ..HubError::new(429, "too_many_requests", message)
            },
        }
    }
}

impl From<RenditionError> for HubError {
    fn from(e: RenditionError) -> Self {
        let message = e.to_string();
        match e {
            RenditionError::Origin(e) => HubError::from(e),
            RenditionError::Failed(_) => HubError::new(502, "rendition_failed", message),
            RenditionError::Busy => HubError {
                header: Some(("retry-after", "1".to_string())),
                ..HubError::new(503, "rendition_busy", message)
            },
        }
    }
}

/// Writes an error answer (headers only for HEAD).
pub async fn write_error(
    session: &mut Session,
    error: &HubError,
    head: bool,
) -> pingora::Result<()> {
    let (header, body) = error.response()?;
    write_response(session, header, Some(body), head).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::origin::Rejection;

    #[test]
    fn slow_hubs_get_time_in_proportion_to_the_body() {
        // 16 KiB per write timeout: 1.6 KB/s at the default 10 s.
        assert_eq!(min_send_rate(Duration::from_secs(10)), 1638);
        assert_eq!(min_send_rate(Duration::from_millis(300)), 54_613);
        assert_eq!(min_send_rate(Duration::from_secs(600)), 27);
        assert_eq!(
            write_deadline(Duration::from_secs(10), 94_000),
            Duration::from_secs(80)
        );
        assert_eq!(
            write_deadline(Duration::from_secs(1), 0),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn max_age_less_age_is_at_most_the_remaining_freshness() {
        let ms = Duration::from_millis;
        let promised = |age: Duration, lifetime: Duration| max_age(age, lifetime) - age.as_secs();
        assert_eq!(max_age(Duration::ZERO, ms(60_000)), 60);
        assert_eq!(max_age(ms(1_100), ms(60_000)), 59);
        assert_eq!(promised(ms(1_100), ms(60_000)), 58);
        assert_eq!(max_age(ms(2_000), ms(60_000)), 60);
        assert_eq!(promised(ms(2_000), ms(60_000)), 58);
        // A frame fresh for a second and already aged is not kept by the hub.
        assert_eq!(max_age(ms(100), ms(1_000)), 0);
        assert_eq!(max_age(ms(1_500), ms(1_000)), 1);
        assert_eq!(promised(ms(1_500), ms(1_000)), 0);
        for age in (0..5_000).step_by(7) {
            for lifetime in [0, 999, 1_000, 1_001, 4_321] {
                let remaining = ms(lifetime).saturating_sub(ms(age));
                assert!(promised(ms(age), ms(lifetime)) <= remaining.as_secs());
            }
        }
    }

    #[test]
    fn statuses_follow_spec() {
        let s = |e: HubError| e.status;
        assert_eq!(s(RouteError::NotFound.into()), 404);
        assert_eq!(s(RouteError::BadRequest("x").into()), 400);
        assert_eq!(s(RouteError::MethodNotAllowed("GET").into()), 405);
        assert_eq!(s(AuthError::Expired.into()), 401);
        assert_eq!(s(AuthError::CameraNotGranted.into()), 403);
        assert_eq!(
            s(OriginError::Rejected(Rejection::BadSignature).into()),
            502
        );
        assert_eq!(s(OriginError::Unreachable.into()), 503);
        assert_eq!(s(OriginError::Timeout.into()), 504);
        assert_eq!(s(OriginError::NotFound.into()), 404);
        assert_eq!(s(OriginError::Forbidden.into()), 403);
    }

    #[test]
    fn error_body_is_json_with_code_and_message() {
        let (h, body) = HubError::from(AuthError::Missing).response().unwrap();
        assert_eq!(h.status.as_u16(), 401);
        assert_eq!(
            h.headers.get("www-authenticate").unwrap(),
            "Bearer error=\"invalid_token\""
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "invalid_token");
        assert_eq!(v["message"], "no bearer token was sent");
    }
}
