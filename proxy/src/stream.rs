//! The MJPEG stream: `multipart/x-mixed-replace`, newest frame wins.
//!
//! Each subscriber loops: every `delivery.stream_interval_ms` it asks the cache for the
//! camera's latest frame (so however many hubs watch, the origin sees one request per fresh
//! window per owner-scoped camera, the cache's coalescing does the rest) and writes it if it is
//! newer than the last one sent. A slow hub holds at most the one frame being written: while
//! that write is blocked, newer frames are simply not fetched, and the next one it gets is the
//! newest (the seqs it missed are counted as skipped). A hub that takes less than 16 KiB per
//! `delivery.write_timeout_ms` is dropped. Each frame goes out in the rendition asked for, or
//! the one chosen for the hub's link as it is when that frame is sent.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use prometheus::IntGauge;

use crate::cache::store::StoredFrame;
use crate::cache::FrameCache;
use crate::delivery::{etag, link, Delivery, HubError};
use crate::limit::Limit;
use crate::metrics::Metrics;
use crate::rendition::choose::ACCEPT_CH;
use crate::rendition::{self, Chosen};
use crate::request::{FrameRef, FrameRequest};

/// The multipart boundary.
pub const BOUNDARY: &str = "framecache-frame";

/// Counts a subscriber for as long as it is connected.
struct Subscribed(IntGauge);

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn header() -> pingora::Result<ResponseHeader> {
    let mut h = ResponseHeader::build_no_case(200, Some(5))?;
    h.insert_header(
        "content-type",
        format!("multipart/x-mixed-replace; boundary={BOUNDARY}"),
    )?;
    h.insert_header("cache-control", "private, no-store")?;
    h.insert_header("x-content-type-options", "nosniff")?;
    h.insert_header("accept-ch", ACCEPT_CH)?;
    // Chunked, so the connection stays reusable should the hub end the stream cleanly.
    h.insert_header("transfer-encoding", "chunked")?;
    Ok(h)
}

/// One part: its headers, then the frame's bytes (shared, not copied), then CRLF.
fn part(frame: &StoredFrame, chosen: Chosen) -> [Bytes; 3] {
    let head = format!(
        "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nETag: {}\r\nX-Frame-Seq: {}\r\nX-Frame-Captured-At: {}\r\nX-Frame-Variant: {}\r\n\r\n",
        frame.body.len(),
        etag(frame),
        frame.seq,
        frame.captured_at_ms,
        chosen.rendition.variant
    );
    [
        Bytes::from(head),
        frame.body.clone(),
        Bytes::from_static(b"\r\n"),
    ]
}

/// One hub watching one camera. Each frame goes out in the rendition asked for, or the one
/// delivery chooses for the hub's link as it is when that frame is sent.
pub struct Subscriber<'a> {
    pub req: &'a FrameRequest,
    pub cache: &'a Arc<FrameCache>,
    pub delivery: &'a Delivery,
    pub metrics: &'a Metrics,
    /// The longest a stream lasts (`limits.stream_max_secs`).
    pub max: Duration,
}

/// Whether a subscriber is still taking bytes: one that has had bytes to take and taken none
/// for the write timeout is dropped, even while the kernel's buffers would still accept
/// writes (a write that blocks has Pingora's own timeout).
struct Taking {
    timeout: Duration,
    acked: u64,
    since: Instant,
}

impl Taking {
    fn new(timeout: Duration) -> Taking {
        Taking {
            timeout,
            acked: 0,
            since: Instant::now(),
        }
    }

    /// The error ending the stream, if the hub has stalled.
    fn check(&mut self, backlog: Option<link::Backlog>) -> Option<Box<pingora::Error>> {
        let backlog = backlog?;
        // A hub that went away while its camera sent nothing new is noticed here, not at a
        // write that never comes: its place among its owner's streams is given back.
        if backlog.closed {
            return Some(pingora::Error::explain(
                pingora::ErrorType::ConnectionClosed,
                "the subscriber closed the connection",
            ));
        }
        if backlog.acked != self.acked || !backlog.outstanding {
            self.acked = backlog.acked;
            self.since = Instant::now();
            return None;
        }
        (self.since.elapsed() >= self.timeout).then(|| {
            pingora::Error::explain(
                pingora::ErrorType::WriteTimedout,
                format!("the subscriber took no bytes for {:?}", self.timeout),
            )
        })
    }
}

/// Why a stream ended.
#[derive(Debug)]
pub enum Ended {
    /// Writing to the hub failed: it went away, or took too little for too long.
    Hub(Box<pingora::Error>),
    /// The stream reached `limits.stream_max_secs` or its token expired; it was closed after a
    /// whole part, with the multipart's closing delimiter.
    Limit(Limit),
    /// The proxy is shutting down (SIGTERM, or an upgrade): closed after a whole part, with the
    /// closing delimiter, within the grace period.
    Shutdown,
    /// The origin refused the camera (403) or has it no more (404): closed with the delimiter.
    Refused,
}

impl Subscriber<'_> {
    /// When the stream must end, and by which limit: its maximum duration from `started`, or
    /// the moment its token stops being accepted, whichever comes first.
    fn end(&self, started: Instant) -> (Instant, Limit) {
        let by_max = started + self.max;
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let left = Duration::from_secs(self.req.valid_until).saturating_sub(now_unix);
        let by_token = Instant::now() + left;
        if by_token < by_max {
            (by_token, Limit::TokenExpired)
        } else {
            (by_max, Limit::StreamMax)
        }
    }

    /// The latest frame in the rendition chosen for it, and that choice; `None` when its seq
    /// is `sent` (the frame the hub already has).
    async fn latest(
        &self,
        session: &Session,
        sent: Option<u64>,
    ) -> Result<Option<(Arc<StoredFrame>, Chosen)>, HubError> {
        let req = self.req;
        let source = self
            .cache
            .get(&req.owner, &req.camera, FrameRef::Latest, &req.via)
            .await?;
        if Some(source.frame.seq) == sent {
            return Ok(None);
        }
        let chosen = self
            .delivery
            .choose(session, req, self.cache, &source.frame);
        let (served, chosen) = rendition::serve(self.cache, req, source, chosen).await?;
        Ok(Some((served.frame, chosen)))
    }

    /// Serves the stream until the hub goes away or stalls, or a limit ends it. Returns the body
    /// bytes sent and why the stream ended; an `Err` (only before the first byte) is the answer
    /// to give instead.
    pub async fn serve(&self, session: &mut Session) -> Result<(usize, Ended), HubError> {
        let (config, metrics) = (self.delivery.config(), self.metrics);
        let (end, limit) = self.end(Instant::now());
        // The first frame decides the answer: no frame, no stream.
        let (mut frame, mut chosen) = self
            .latest(session, None)
            .await?
            .expect("invariant: with no seq sent, the latest frame is always new");
        let Ok(header) = header() else {
            return Err(HubError::new(
                500,
                "internal",
                "cannot build the stream header",
            ));
        };
        if let Err(e) = session.write_response_header(Box::new(header), false).await {
            return Ok((0, Ended::Hub(e)));
        }
        metrics.stream.subscribers.inc();
        let _subscribed = Subscribed(metrics.stream.subscribers.clone());
        let mut sent = 0;
        let mut last_seq: Option<u64> = None;
        let mut next = tokio::time::Instant::now();
        let mut taking = Taking::new(config.write_timeout);
        loop {
            // The kernel still holds unsent bytes of an earlier frame: a newer frame waits for
            // the next tick rather than queue behind them (newest frame wins, and what one
            // subscriber holds of the host's TCP memory stays about a frame).
            let backlog = link::backlog(session);
            if let Some(stalled) = taking.check(backlog) {
                return Ok((sent, Ended::Hub(stalled)));
            }
            let held = backlog.is_some_and(|b| b.unsent > 0);
            if last_seq != Some(frame.seq) && !held {
                if let Some(previous) = last_seq {
                    let missed = frame.seq.saturating_sub(previous).saturating_sub(1);
                    metrics.stream.frames_skipped.inc_by(missed);
                }
                for bytes in part(&frame, chosen) {
                    let len = bytes.len();
                    // The hub went away or took too little for too long (the session's minimum
                    // send rate): the stream ends.
                    if let Err(e) = session.write_response_body(Some(bytes), false).await {
                        return Ok((sent, Ended::Hub(e)));
                    }
                    sent += len;
                }
                metrics.stream.frames_sent.inc();
                metrics.record_frame_sent(chosen, frame.body.len());
                last_seq = Some(frame.seq);
            }
            // A hub slower than the interval does not build up a backlog of ticks.
            next = (next + config.stream_interval).max(tokio::time::Instant::now());
            let shutting_down = session.is_process_shutting_down();
            if next >= end.into() || shutting_down {
                if !shutting_down {
                    tokio::time::sleep_until(end.into()).await;
                }
                let closing = Bytes::from(format!("--{BOUNDARY}--\r\n"));
                let ended = match session.write_response_body(Some(closing), true).await {
                    Ok(()) if shutting_down => Ended::Shutdown,
                    Ok(()) => Ended::Limit(limit),
                    Err(e) => Ended::Hub(e),
                };
                return Ok((sent, ended));
            }
            tokio::time::sleep_until(next).await;
            // An origin hiccup keeps the last frame on screen; the next tick tries again. The
            // origin's 403 or 404 (the camera unshared or gone) ends the stream.
            match self.latest(session, Some(frame.seq)).await {
                Ok(Some(newer)) => (frame, chosen) = newer,
                Err(refused) if matches!(refused.status, 403 | 404) => {
                    let closing = Bytes::from(format!("--{BOUNDARY}--\r\n"));
                    let ended = match session.write_response_body(Some(closing), true).await {
                        Ok(()) => Ended::Refused,
                        Err(e) => Ended::Hub(e),
                    };
                    return Ok((sent, ended));
                }
                _ => {}
            }
        }
    }
}
