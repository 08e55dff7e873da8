//! The MJPEG stream: `multipart/x-mixed-replace`, newest frame wins.
//!
//! Each subscriber loops: every `delivery.stream_interval_ms` it asks the cache for the
//! camera's latest frame (so however many hubs watch, the origin sees one request per fresh
//! window per owner-scoped camera, the cache's coalescing does the rest) and writes it if it is
//! newer than the last one sent. A slow hub holds at most the one frame being written: while
//! that write is blocked, newer frames are simply not fetched, and the next one it gets is the
//! newest (the seqs it missed are counted as skipped). A hub that accepts nothing for
//! `delivery.write_timeout_ms` is dropped.

use std::sync::Arc;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use prometheus::IntGauge;

use crate::cache::key::Route;
use crate::cache::store::StoredFrame;
use crate::cache::FrameCache;
use crate::config::DeliveryConfig;
use crate::delivery::{etag, HubError};
use crate::identity::{CameraId, OwnerId};
use crate::metrics::Metrics;

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
    let mut h = ResponseHeader::build(200, Some(4))?;
    h.insert_header(
        "content-type",
        format!("multipart/x-mixed-replace; boundary={BOUNDARY}"),
    )?;
    h.insert_header("cache-control", "private, no-store")?;
    h.insert_header("x-content-type-options", "nosniff")?;
    // Chunked, so the connection stays reusable should the hub end the stream cleanly.
    h.insert_header("transfer-encoding", "chunked")?;
    Ok(h)
}

/// One part: its headers, then the frame's bytes (shared, not copied), then CRLF.
fn part(frame: &StoredFrame) -> [Bytes; 3] {
    let head = format!(
        "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nETag: {}\r\nX-Frame-Seq: {}\r\nX-Frame-Captured-At: {}\r\n\r\n",
        frame.body.len(),
        etag(frame),
        frame.seq,
        frame.captured_at_ms
    );
    [
        Bytes::from(head),
        frame.body.clone(),
        Bytes::from_static(b"\r\n"),
    ]
}

/// Serves the stream of `camera` to `owner` until the hub goes away or stalls. Returns the
/// body bytes sent; an `Err` (only before the first byte) is the answer to give instead.
pub async fn serve(
    session: &mut Session,
    cache: &Arc<FrameCache>,
    owner: &OwnerId,
    camera: &CameraId,
    config: &DeliveryConfig,
    metrics: &Metrics,
) -> Result<usize, HubError> {
    // The first frame decides the answer: no frame, no stream.
    let mut frame = cache.get(owner, camera, Route::Latest).await?.frame;
    session.set_write_timeout(Some(config.write_timeout));
    let Ok(header) = header() else {
        return Err(HubError::new(
            500,
            "internal",
            "cannot build the stream header",
        ));
    };
    if session
        .write_response_header(Box::new(header), false)
        .await
        .is_err()
    {
        return Ok(0);
    }
    metrics.stream_subscribers.inc();
    let _subscribed = Subscribed(metrics.stream_subscribers.clone());
    let mut sent = 0;
    let mut last_seq: Option<u64> = None;
    let mut next = tokio::time::Instant::now();
    loop {
        if last_seq != Some(frame.seq) {
            if let Some(previous) = last_seq {
                let missed = frame.seq.saturating_sub(previous).saturating_sub(1);
                metrics.stream_frames_skipped.inc_by(missed);
            }
            for bytes in part(&frame) {
                sent += bytes.len();
                // The hub went away or stalled past the write timeout: the stream ends.
                if session
                    .write_response_body(Some(bytes), false)
                    .await
                    .is_err()
                {
                    return Ok(sent);
                }
            }
            metrics.stream_frames_sent.inc();
            last_seq = Some(frame.seq);
        }
        // A hub slower than the interval does not build up a backlog of ticks.
        next = (next + config.stream_interval).max(tokio::time::Instant::now());
        tokio::time::sleep_until(next).await;
        // An origin hiccup keeps the last frame on screen; the next tick tries again.
        if let Ok(served) = cache.get(owner, camera, Route::Latest).await {
            frame = served.frame;
        }
    }
}
