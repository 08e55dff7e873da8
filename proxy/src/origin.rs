//! Camera-backend requests through Pingora's HTTP/1 connector, and attestation of the answer.
//!
//! A frame is buffered whole and checked before any byte of it reaches a hub: status, content
//! type, a complete body within `origin.max_frame_bytes`, the owner and camera the origin
//! claims, the keyed blake3 signature made where the frame was captured and, for by-hash
//! fetches, the body's own hash. Anything else is a [`Rejection`] with its reason.
//!
//! Those checks are a pure function of the answer, [`attest`], apart from the connection: the
//! fuzz targets and unit tests drive it directly.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use framecache_protocol as protocol;
use http::{HeaderMap, StatusCode};
use pingora::connectors::{ConnectorOptions, TransportConnector};
use pingora::http::RequestHeader;
use pingora::protocols::http::v1::client::HttpSession;
use pingora::upstreams::peer::{HttpPeer, Peer};
use thiserror::Error;
use tokio::time::{timeout_at, Instant as Deadline};

use crate::config::OriginConfig;
use crate::identity::{CameraId, ContentHash, OwnerId};
use crate::request::FrameRef;

/// How long an idle origin connection stays in the pool.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Informational (1xx) answers read before the final one; more is a misbehaving origin.
const MAX_INFORMATIONAL: usize = 8;

/// A frame whose origin answer passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedFrame {
    pub owner: OwnerId,
    pub camera: CameraId,
    pub hash: ContentHash,
    pub seq: u64,
    /// Capture time, ms since the epoch, as attested by the signature.
    pub captured_at_ms: u64,
    /// The signature that verified: kept with the frame, so that a home node can hand it on.
    pub signature: blake3::Hash,
    pub body: Bytes,
    /// The origin's `Cache-Control: max-age`, if any.
    pub max_age: Option<Duration>,
    /// The answer's `Age` (a home member's copy; at most a day is believed), else zero.
    pub age: Duration,
    /// The origin's `Cache-Control: no-store`.
    pub no_store: bool,
    /// The signature verified with a previous signing key, not the current one.
    pub previous_key: bool,
}

/// Why an origin answer was refused. The labels are SPEC's `reason` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Rejection {
    #[error("the frame names another owner")]
    OwnerMismatch,
    #[error("the frame names another camera")]
    CameraMismatch,
    #[error("the frame's signature is missing or does not verify")]
    BadSignature,
    #[error("the body does not hash to the requested address")]
    HashMismatch,
    #[error("the body ended before its announced length")]
    Truncated,
    #[error("the body is larger than origin.max_frame_bytes")]
    TooLarge,
    #[error("the origin answered with an unexpected status")]
    BadStatus,
    #[error("the origin answered with a content type other than image/jpeg")]
    BadContentType,
}

impl Rejection {
    pub const ALL: [Rejection; 8] = [
        Rejection::OwnerMismatch,
        Rejection::CameraMismatch,
        Rejection::BadSignature,
        Rejection::HashMismatch,
        Rejection::Truncated,
        Rejection::TooLarge,
        Rejection::BadStatus,
        Rejection::BadContentType,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Rejection::OwnerMismatch => "owner_mismatch",
            Rejection::CameraMismatch => "camera_mismatch",
            Rejection::BadSignature => "bad_signature",
            Rejection::HashMismatch => "hash_mismatch",
            Rejection::Truncated => "truncated",
            Rejection::TooLarge => "too_large",
            Rejection::BadStatus => "bad_status",
            Rejection::BadContentType => "bad_content_type",
        }
    }
}

/// Why no verified frame came back.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OriginError {
    #[error("origin answer rejected: {0}")]
    Rejected(Rejection),
    #[error("the origin has no such camera or frame")]
    NotFound,
    #[error("the origin refused this owner")]
    Forbidden,
    #[error("the origin did not answer within origin.response_timeout_ms")]
    Timeout,
    #[error("no origin could be reached")]
    Unreachable,
    #[error("the origin connection failed: {0}")]
    Io(String),
    /// The camera's home member asked the origin and got no frame (502), or none in time
    /// (504): final for the member that asked it, which answers from its own stale copy or
    /// with the same error.
    #[error("the camera's home member got no frame from the origin")]
    HomeOrigin { timed_out: bool },
    /// Not the origin's doing: the owner's origin request budget (`limits.owner_origin_rps`) is
    /// spent, and no request was made.
    #[error("too many origin requests for this owner; try again shortly")]
    Limited { retry_after: Duration },
}

/// The outcome label of one origin request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Rejected,
    Error,
    Timeout,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Ok,
        Outcome::Rejected,
        Outcome::Error,
        Outcome::Timeout,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Rejected => "rejected",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
        }
    }

    /// The outcome of a fetch's result. A 404 or 403 is an acceptable answer.
    pub fn of(result: &Result<VerifiedFrame, OriginError>) -> Outcome {
        match result {
            Ok(_) | Err(OriginError::NotFound | OriginError::Forbidden) => Outcome::Ok,
            Err(OriginError::Rejected(_)) => Outcome::Rejected,
            Err(OriginError::Timeout | OriginError::HomeOrigin { timed_out: true }) => {
                Outcome::Timeout
            }
            Err(
                OriginError::Unreachable
                | OriginError::Io(_)
                | OriginError::Limited { .. }
                | OriginError::HomeOrigin { timed_out: false },
            ) => Outcome::Error,
        }
    }
}

/// The record of one origin request, for metrics and logs.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub outcome: Outcome,
    pub rejection: Option<Rejection>,
    pub elapsed: Duration,
}

impl Attempt {
    /// The record of a request that began at `started` and ended with `result`.
    fn of(result: &Result<VerifiedFrame, OriginError>, started: Instant) -> Attempt {
        Attempt {
            outcome: Outcome::of(result),
            rejection: match result {
                Err(OriginError::Rejected(r)) => Some(*r),
                _ => None,
            },
            elapsed: started.elapsed(),
        }
    }
}

/// Camera backends, reached through Pingora's pooled transport connector.
pub struct Origin {
    connector: TransportConnector,
    peers: Vec<(SocketAddr, HttpPeer)>,
    next: AtomicUsize,
    /// The current signing key first, then the previous ones, in order.
    signing_keys: Vec<[u8; 32]>,
    max_frame_bytes: usize,
    response_timeout: Duration,
    connect_timeout: Duration,
    /// Asking home nodes, not camera backends: an answer other than 200, 403 or 404 is the
    /// home's own failure (an error to try elsewhere), not an origin answer to refuse.
    asks_peers: bool,
}

/// What one origin address made of a request.
enum Exchange {
    /// It answered, or failed after a connection was made: the result is final.
    Done(Result<VerifiedFrame, OriginError>),
    /// No connection could be made: the next address may be tried.
    NoConnection(pingora::BError),
}

impl Origin {
    pub fn new(config: &OriginConfig) -> Origin {
        let peers = config
            .addresses
            .iter()
            .map(|addr| {
                let mut peer = HttpPeer::new(*addr, false, String::new());
                peer.options.connection_timeout = Some(config.connect_timeout);
                peer.options.total_connection_timeout = Some(config.connect_timeout);
                peer.options.idle_timeout = Some(IDLE_TIMEOUT);
                (*addr, peer)
            })
            .collect();
        let mut options = ConnectorOptions::new(config.addresses.len().max(1) * 64);
        options.keepalive_pool_size = 256;
        Origin {
            connector: TransportConnector::new(Some(options)),
            peers,
            next: AtomicUsize::new(0),
            signing_keys: std::iter::once(config.signing_key)
                .chain(config.previous_signing_keys.iter().copied())
                .collect(),
            max_frame_bytes: config.max_frame_bytes,
            response_timeout: config.response_timeout,
            connect_timeout: config.connect_timeout,
            asks_peers: false,
        }
    }

    /// A client of other members' peer listeners, with `config`'s timeouts, frame size limit
    /// and signing keys: a home's answer is attested exactly as an origin's.
    pub fn for_peers(config: &OriginConfig) -> Origin {
        let mut options = ConnectorOptions::new(64);
        options.keepalive_pool_size = 256;
        Origin {
            connector: TransportConnector::new(Some(options)),
            peers: Vec::new(),
            asks_peers: true,
            // Longer than the home's own origin request may take, so that a slow origin
            // reaches the asking member as the home's 504, not as the home's silence.
            response_timeout: config.response_timeout
                + config.connect_timeout
                + Duration::from_secs(1),
            ..Origin::new(config)
        }
    }

    /// Asks the member at `addr` for one frame of `owner`'s at `path` ([`frame_path`], which
    /// the caller's peer credential signs), sending `headers` (the hub's authorization and that
    /// credential), and attests the answer.
    pub async fn ask(
        &self,
        addr: SocketAddr,
        path: &str,
        (owner, camera, frame): (&OwnerId, &CameraId, FrameRef),
        headers: &[(&str, &str)],
    ) -> (Result<VerifiedFrame, OriginError>, Attempt) {
        let started = Instant::now();
        let peer = self.http_peer(addr);
        let result = match (self.fetch_from(&peer, path, headers, owner, camera, frame)).await {
            Exchange::Done(result) => result,
            Exchange::NoConnection(error) => {
                tracing::warn!(%error, member = %addr, "member unreachable");
                Err(OriginError::Unreachable)
            }
        };
        let attempt = Attempt::of(&result, started);
        (result, attempt)
    }

    fn http_peer(&self, addr: SocketAddr) -> HttpPeer {
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.total_connection_timeout = Some(self.connect_timeout);
        peer.options.idle_timeout = Some(IDLE_TIMEOUT);
        peer
    }

    /// Fetches and verifies one frame for `owner`.
    pub async fn fetch(
        &self,
        owner: &OwnerId,
        camera: &CameraId,
        frame: FrameRef,
    ) -> (Result<VerifiedFrame, OriginError>, Attempt) {
        let started = Instant::now();
        let result = self.fetch_from_any(owner, camera, frame).await;
        let attempt = Attempt::of(&result, started);
        (result, attempt)
    }

    /// Tries the origins in turn, starting from the next in rotation, until one can be reached.
    async fn fetch_from_any(
        &self,
        owner: &OwnerId,
        camera: &CameraId,
        frame: FrameRef,
    ) -> Result<VerifiedFrame, OriginError> {
        let path = frame_path(camera, frame);
        let headers = [(protocol::OWNER, owner.as_str())];
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.peers.len() {
            let (addr, peer) = &self.peers[(start + i) % self.peers.len()];
            match (self.fetch_from(peer, &path, &headers, owner, camera, frame)).await {
                Exchange::Done(result) => return result,
                Exchange::NoConnection(error) => {
                    tracing::warn!(%error, origin = %addr, "origin unreachable");
                }
            }
        }
        Err(OriginError::Unreachable)
    }

    /// One request to one origin address, within `origin.response_timeout_ms` from the first
    /// send (connecting has its own `origin.connect_timeout_ms`).
    ///
    /// A pooled connection may have been closed by the origin while it sat idle, which shows
    /// only when it is used: a send or response-header failure on one is retried once, on a new
    /// connection. A failure on a new connection is the origin's own, and final; a failure to
    /// connect lets the caller try the next address.
    async fn fetch_from(
        &self,
        peer: &HttpPeer,
        path: &str,
        headers: &[(&str, &str)],
        owner: &OwnerId,
        camera: &CameraId,
        frame: FrameRef,
    ) -> Exchange {
        let mut deadline = None;
        if let Some(stream) = self.connector.reused_stream(peer).await {
            let until = *deadline.insert(Deadline::now() + self.response_timeout);
            let mut session = HttpSession::new_with_options(stream, peer);
            match timeout_at(until, self.send(&mut session, path, headers)).await {
                Err(_) => return Exchange::Done(Err(OriginError::Timeout)),
                Ok(Ok(())) => {
                    let result = self.finish(peer, session, until, owner, camera, frame);
                    return Exchange::Done(result.await);
                }
                Ok(Err(error)) => {
                    tracing::debug!(%error, "pooled origin connection failed; retrying on a new one");
                }
            }
        }
        let stream = match self.connector.new_stream(peer).await {
            Ok(stream) => stream,
            Err(error) => return Exchange::NoConnection(error),
        };
        let until = deadline.unwrap_or_else(|| Deadline::now() + self.response_timeout);
        let mut session = HttpSession::new_with_options(stream, peer);
        match timeout_at(until, self.send(&mut session, path, headers)).await {
            Err(_) => Exchange::Done(Err(OriginError::Timeout)),
            Ok(Err(error)) => Exchange::Done(Err(OriginError::Io(error.to_string()))),
            Ok(Ok(())) => {
                let result = self.finish(peer, session, until, owner, camera, frame);
                Exchange::Done(result.await)
            }
        }
    }

    /// Reads and verifies the answer whose header `send` read, and pools the connection when
    /// the whole answer was read and acceptable.
    async fn finish(
        &self,
        peer: &HttpPeer,
        mut session: HttpSession,
        deadline: Deadline,
        owner: &OwnerId,
        camera: &CameraId,
        frame: FrameRef,
    ) -> Result<VerifiedFrame, OriginError> {
        let verified = timeout_at(deadline, self.receive(&mut session, owner, camera, frame))
            .await
            .map_err(|_| OriginError::Timeout)??;
        // The body was read to its end: the connection may serve the next request, unless the
        // origin asked to close it.
        session.respect_keepalive();
        if let Some(stream) = session.reuse().await {
            self.connector
                .release_stream(stream, peer.reuse_hash(), Some(IDLE_TIMEOUT));
        }
        Ok(verified)
    }

    /// Sends the request and reads the final response header, past any informational (1xx)
    /// answers such as `100 Continue` or `103 Early Hints`. A `101` is final (and refused by
    /// [`Self::receive`]); so is the answer after [`MAX_INFORMATIONAL`] informational ones.
    async fn send(
        &self,
        session: &mut HttpSession,
        path: &str,
        headers: &[(&str, &str)],
    ) -> pingora::Result<()> {
        let mut req = RequestHeader::build("GET", path.as_bytes(), Some(3 + headers.len()))?;
        req.insert_header("host", "camera-backend")?;
        req.insert_header("accept", "image/jpeg")?;
        for (name, value) in headers {
            req.append_header(name.to_string(), *value)?;
        }
        session.write_request_header(Box::new(req)).await?;
        session.read_response().await?;
        for _ in 0..MAX_INFORMATIONAL {
            match session.get_status().map(|s| s.as_u16()) {
                Some(status) if (100..200).contains(&status) && status != 101 => {
                    session.read_response().await?;
                }
                _ => break,
            }
        }
        Ok(())
    }

    /// Checks the answer's head, reads the body within the size limit, and attests it: the
    /// two halves of [`attest`], with the body read between them, so that an answer of the
    /// wrong status, type, owner or camera is refused before its body is read.
    async fn receive(
        &self,
        session: &mut HttpSession,
        owner: &OwnerId,
        camera: &CameraId,
        frame: FrameRef,
    ) -> Result<VerifiedFrame, OriginError> {
        let resp = session
            .resp_header()
            .ok_or_else(|| OriginError::Io("no response header".into()))?;
        if self.asks_peers {
            peer_status(resp)?;
        }
        let attestation = Attestation::read(resp.status, &resp.headers, owner, camera)?;
        let announced = attestation.content_length;
        if announced.is_some_and(|n| n > self.max_frame_bytes as u64) {
            return Err(OriginError::Rejected(Rejection::TooLarge));
        }
        let body = self.read_body(session, announced).await?;
        attestation.verify(body, frame, &self.signing_keys)
    }

    async fn read_body(
        &self,
        session: &mut HttpSession,
        announced: Option<u64>,
    ) -> Result<Bytes, OriginError> {
        let mut body = BytesMut::with_capacity(announced.unwrap_or(64 * 1024) as usize);
        loop {
            match session.read_body_bytes().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > self.max_frame_bytes {
                        return Err(OriginError::Rejected(Rejection::TooLarge));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(_) => return Err(OriginError::Rejected(Rejection::Truncated)),
            }
        }
        if announced.is_some_and(|n| n != body.len() as u64) || !session.is_body_done() {
            return Err(OriginError::Rejected(Rejection::Truncated));
        }
        Ok(body.freeze())
    }
}

/// The path of `camera`'s `frame` in the camera-backend protocol, which home nodes answer too.
pub fn frame_path(camera: &CameraId, frame: FrameRef) -> String {
    match frame {
        FrameRef::Latest => protocol::latest_path(camera.as_str()),
        FrameRef::ByHash(hash) => protocol::by_hash_path(camera.as_str(), &hash.hex()),
    }
}

/// A home member's answer other than 200, 403 or 404 is no attestation to refuse: the owner's
/// budget there (429) and its origin's failure (502, 504) are final, as the origin's own
/// answers would be; anything else (401 after a key rotation on one side, 503 while it drains)
/// is the home's own failure, and the asking member tries the next.
fn peer_status(resp: &pingora::http::ResponseHeader) -> Result<(), OriginError> {
    match resp.status.as_u16() {
        200 | 403 | 404 => Ok(()),
        429 => {
            let secs = (resp.headers.get(http::header::RETRY_AFTER))
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .unwrap_or(1);
            Err(OriginError::Limited {
                retry_after: Duration::from_secs(secs.clamp(1, 60)),
            })
        }
        502 => Err(OriginError::HomeOrigin { timed_out: false }),
        504 => Err(OriginError::HomeOrigin { timed_out: true }),
        status => Err(OriginError::Io(format!("the home node answered {status}"))),
    }
}

/// Attests a complete origin answer for `owner`'s request of `camera`'s `frame`: status, content
/// type, owner, camera, then the body's hash (by-hash fetches) and the signature under one of
/// `signing_keys` (the current key first, then previous ones). `Ok` only if every check passed;
/// the frame then carries the requested owner and camera, and its signature verifies with
/// [`protocol::verify`].
///
/// This is the whole decision [`Origin`] makes on an answer, without the connection: the size
/// and completeness of the body are the transport's (`origin.max_frame_bytes`, `Content-Length`).
pub fn attest(
    status: StatusCode,
    headers: &HeaderMap,
    body: Bytes,
    owner: &OwnerId,
    camera: &CameraId,
    frame: FrameRef,
    signing_keys: &[[u8; 32]],
) -> Result<VerifiedFrame, OriginError> {
    Attestation::read(status, headers, owner, camera)?.verify(body, frame, signing_keys)
}

/// What an origin answer's head claims, read once its status, content type, owner and camera
/// were found acceptable; [`Attestation::verify`] checks the body against it.
#[derive(Debug, Clone)]
pub struct Attestation {
    owner: OwnerId,
    camera: CameraId,
    seq: Option<u64>,
    captured_at_ms: Option<u64>,
    signature: Option<blake3::Hash>,
    max_age: Option<Duration>,
    age: Duration,
    no_store: bool,
    /// The announced `Content-Length`, if it is a number.
    pub content_length: Option<u64>,
}

impl Attestation {
    /// Checks an answer's head: status 200 (404 and 403 are the origin's own answers), content
    /// type, owner and camera; then reads the attestation headers and `Cache-Control`.
    pub fn read(
        status: StatusCode,
        headers: &HeaderMap,
        owner: &OwnerId,
        camera: &CameraId,
    ) -> Result<Attestation, OriginError> {
        use Rejection::*;
        let reject = |r| Err(OriginError::Rejected(r));
        match status.as_u16() {
            200 => {}
            404 => return Err(OriginError::NotFound),
            403 => return Err(OriginError::Forbidden),
            _ => return reject(BadStatus),
        }
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        if !header("content-type").is_some_and(is_jpeg) {
            return reject(BadContentType);
        }
        if header(protocol::FRAME_OWNER) != Some(owner.as_str()) {
            return reject(OwnerMismatch);
        }
        if header(protocol::FRAME_CAMERA) != Some(camera.as_str()) {
            return reject(CameraMismatch);
        }
        let number = |name| header(name).and_then(|v| v.parse::<u64>().ok());
        // Every `Cache-Control` line counts: a `no-store` on the second line is as binding as
        // one on the first.
        let cache_control_lines: Vec<String> = headers
            .get_all("cache-control")
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let (max_age, no_store) = cache_control(&cache_control_lines.join(","));
        Ok(Attestation {
            owner: owner.clone(),
            camera: camera.clone(),
            seq: number(protocol::FRAME_SEQ),
            captured_at_ms: number(protocol::FRAME_CAPTURED_AT),
            signature: header(protocol::FRAME_SIGNATURE)
                .and_then(|v| blake3::Hash::from_hex(v).ok()),
            max_age,
            age: Duration::from_secs(number("age").unwrap_or(0).min(86_400)),
            no_store,
            content_length: number("content-length"),
        })
    }

    /// Checks the complete body: for a by-hash fetch, that it hashes to the requested address;
    /// then that the signature over the camera, seq, capture time and the body's hash verifies
    /// under one of `signing_keys`, tried in order.
    pub fn verify(
        self,
        body: Bytes,
        frame: FrameRef,
        signing_keys: &[[u8; 32]],
    ) -> Result<VerifiedFrame, OriginError> {
        use Rejection::*;
        let reject = |r| Err(OriginError::Rejected(r));
        let hash = ContentHash::of(&body);
        if let FrameRef::ByHash(asked) = frame {
            if hash != asked {
                return reject(HashMismatch);
            }
        }
        let (Some(seq), Some(captured_at_ms), Some(signature)) =
            (self.seq, self.captured_at_ms, self.signature)
        else {
            return reject(BadSignature);
        };
        let (camera, hex) = (self.camera.as_str(), hash.hex());
        let verifies = |key| protocol::verify(key, camera, seq, captured_at_ms, &hex, &signature);
        let Some(by) = signing_keys.iter().position(verifies) else {
            return reject(BadSignature);
        };
        Ok(VerifiedFrame {
            owner: self.owner,
            camera: self.camera,
            hash,
            seq,
            captured_at_ms,
            signature,
            body,
            max_age: self.max_age,
            age: self.age,
            no_store: self.no_store,
            previous_key: by > 0,
        })
    }
}

/// `image/jpeg`, with or without parameters, in any case.
fn is_jpeg(value: &str) -> bool {
    let media = value.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case("image/jpeg")
}

/// `max-age` and `no-store` of a `Cache-Control` value (its lines joined with `,`).
///
/// `max-age` only ever shortens freshness, so doubt errs short: a value that does not parse
/// is 0 (RFC 9111 §4.2.1 has an invalid freshness lifetime make the response stale), and of
/// several `max-age` directives the smallest counts.
fn cache_control(value: &str) -> (Option<Duration>, bool) {
    let mut max_age: Option<Duration> = None;
    let mut no_store = false;
    for directive in value.split(',').map(str::trim) {
        let (name, arg) = directive.split_once('=').unwrap_or((directive, ""));
        let name = name.trim();
        if name.eq_ignore_ascii_case("no-store") {
            no_store = true;
        } else if name.eq_ignore_ascii_case("max-age") {
            let secs = arg.trim().trim_matches('"').parse::<u64>().unwrap_or(0);
            let this = Duration::from_secs(secs);
            max_age = Some(max_age.map_or(this, |m| m.min(this)));
        }
    }
    (max_age, no_store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_directives() {
        assert_eq!(cache_control(""), (None, false));
        assert_eq!(
            cache_control("private, max-age=2"),
            (Some(Duration::from_secs(2)), false)
        );
        assert_eq!(cache_control("No-Store"), (None, true));
        // Unparsable max-age is 0, not absent.
        for value in [
            "max-age=x",
            "max-age=",
            "max-age",
            "max-age=-1",
            "max-age=1.5",
        ] {
            assert_eq!(
                cache_control(value),
                (Some(Duration::ZERO), false),
                "{value}"
            );
        }
        assert_eq!(
            cache_control("max-age=\"3\""),
            (Some(Duration::from_secs(3)), false)
        );
        // Lines joined: the later no-store and the smaller max-age count.
        assert_eq!(
            cache_control("max-age=5,no-store"),
            (Some(Duration::from_secs(5)), true)
        );
        assert_eq!(
            cache_control("max-age=5, private,max-age=2"),
            (Some(Duration::from_secs(2)), false)
        );
    }

    #[test]
    fn jpeg_media_type() {
        assert!(is_jpeg("image/jpeg"));
        assert!(is_jpeg("Image/JPEG; q=1"));
        assert!(!is_jpeg("image/jpegx"));
        assert!(!is_jpeg("text/html"));
    }

    const KEY: [u8; 32] = [7; 32];

    fn ids() -> (OwnerId, CameraId) {
        (
            OwnerId::parse("owner-1").unwrap(),
            CameraId::parse("cam-1").unwrap(),
        )
    }

    /// The head a camera backend sends with `body`, signed with [`KEY`].
    fn signed_head(body: &[u8]) -> HeaderMap {
        let hash = ContentHash::of(body);
        let signature = protocol::sign(&KEY, "cam-1", 42, 1_700_000_000_000, &hash.hex());
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("content-type", "image/jpeg".to_string()),
            (protocol::FRAME_OWNER, "owner-1".to_string()),
            (protocol::FRAME_CAMERA, "cam-1".to_string()),
            (protocol::FRAME_SEQ, "42".to_string()),
            (protocol::FRAME_CAPTURED_AT, "1700000000000".to_string()),
            (protocol::FRAME_SIGNATURE, signature.to_hex().to_string()),
            ("cache-control", "private, max-age=2".to_string()),
        ] {
            headers.insert(name, value.parse().unwrap());
        }
        headers
    }

    fn attest_as(
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        frame: FrameRef,
    ) -> Result<VerifiedFrame, OriginError> {
        let (owner, camera) = ids();
        let status = StatusCode::from_u16(status).unwrap();
        let body = Bytes::copy_from_slice(body);
        attest(status, headers, body, &owner, &camera, frame, &[KEY])
    }

    #[test]
    fn a_signed_answer_is_attested() {
        let body = b"\xff\xd8jpeg\xff\xd9";
        let headers = signed_head(body);
        let frame = attest_as(200, &headers, body, FrameRef::Latest).unwrap();
        assert_eq!(frame.owner.as_str(), "owner-1");
        assert_eq!(frame.camera.as_str(), "cam-1");
        assert_eq!((frame.seq, frame.captured_at_ms), (42, 1_700_000_000_000));
        assert_eq!(frame.hash, ContentHash::of(body));
        assert_eq!(frame.max_age, Some(Duration::from_secs(2)));
        assert!(!frame.no_store);
        let by_hash = FrameRef::ByHash(ContentHash::of(body));
        assert!(attest_as(200, &headers, body, by_hash).is_ok());
    }

    #[test]
    fn each_attestation_failure_has_its_reason() {
        use Rejection::*;
        let body = b"jpeg";
        let rejected = |status, edit: &dyn Fn(&mut HeaderMap), body: &[u8], frame| {
            let mut headers = signed_head(b"jpeg");
            edit(&mut headers);
            match attest_as(status, &headers, body, frame) {
                Err(OriginError::Rejected(r)) => Some(r),
                Err(other) => panic!("{other:?}"),
                Ok(_) => None,
            }
        };
        let set = |name: &'static str, value: &'static str| {
            move |h: &mut HeaderMap| {
                h.insert(name, value.parse().unwrap());
            }
        };
        let latest = FrameRef::Latest;
        assert_eq!(rejected(500, &|_| {}, body, latest), Some(BadStatus));
        assert_eq!(rejected(206, &|_| {}, body, latest), Some(BadStatus));
        let text = set("content-type", "text/html");
        assert_eq!(rejected(200, &text, body, latest), Some(BadContentType));
        let owner = set(protocol::FRAME_OWNER, "owner-2");
        assert_eq!(rejected(200, &owner, body, latest), Some(OwnerMismatch));
        let camera = set(protocol::FRAME_CAMERA, "cam-2");
        assert_eq!(rejected(200, &camera, body, latest), Some(CameraMismatch));
        let seq = set(protocol::FRAME_SEQ, "43");
        assert_eq!(rejected(200, &seq, body, latest), Some(BadSignature));
        let unsigned = |h: &mut HeaderMap| {
            h.remove(protocol::FRAME_SIGNATURE);
        };
        assert_eq!(rejected(200, &unsigned, body, latest), Some(BadSignature));
        assert_eq!(rejected(200, &|_| {}, b"jpeg!", latest), Some(BadSignature));
        let other = FrameRef::ByHash(ContentHash::of(b"other"));
        assert_eq!(rejected(200, &|_| {}, body, other), Some(HashMismatch));
        let headers = signed_head(body);
        assert_eq!(
            attest_as(404, &headers, body, latest).err(),
            Some(OriginError::NotFound)
        );
        assert_eq!(
            attest_as(403, &headers, body, latest).err(),
            Some(OriginError::Forbidden)
        );
    }

    #[test]
    fn outcomes_of_results() {
        assert_eq!(Outcome::of(&Err(OriginError::NotFound)), Outcome::Ok);
        assert_eq!(
            Outcome::of(&Err(OriginError::Rejected(Rejection::Truncated))),
            Outcome::Rejected
        );
        assert_eq!(Outcome::of(&Err(OriginError::Timeout)), Outcome::Timeout);
        assert_eq!(Outcome::of(&Err(OriginError::Unreachable)), Outcome::Error);
    }
}
