//! Renditions in the cache: made once per frame and rendition, kept in the owner's scope.
//!
//! A rendition is found under (owner, camera, by-hash address of the verified frame it was made
//! from, variant), so the identity check of every hit covers it exactly as it covers frames:
//! a rendition is only ever served to the owner and camera of its source. Its own bytes are
//! hashed once when it is made; that hash is its ETag. The source frame is whatever the cache
//! answered for the request (fresh, stale or just fetched), so a latest rendition follows the
//! latest frame with no freshness of its own.
//!
//! Rendering is CPU work: it runs on tokio's blocking threads, at most `render_threads` at
//! once, with a bounded queue behind them; past it a request is refused (`busy`) rather than
//! queued without end. Concurrent requests for the same rendition of the same frame wait for
//! one rendering (a flight, as for origin fetches), which runs in its own task so that no hub
//! going away cancels it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::Semaphore;

use super::flight::{Flight, Join};
use super::key::{Identity, KeyDigest, Route};
use super::store::StoredFrame;
use super::{FlightGuard, FrameCache, Served};
use crate::identity::{CameraId, ContentHash, OwnerId};
use crate::origin::OriginError;
use crate::render;
use crate::variant::Rendition;

/// Renderings waiting for a thread, per thread, before requests are refused.
const QUEUE_PER_THREAD: usize = 32;

/// Why a rendition could not be served.
#[derive(Debug, Clone, Error)]
pub enum RenditionError {
    #[error(transparent)]
    Origin(#[from] OriginError),
    #[error("the frame could not be made into this rendition: {0}")]
    Failed(String),
    #[error("too many renditions are being made; try again shortly")]
    Busy,
}

/// What a rendering ends with.
pub type RenderResult = Result<Arc<StoredFrame>, RenditionError>;

/// The bounded rendering pool: a semaphore over tokio's blocking threads and a queue limit.
pub struct Renderer {
    slots: Arc<Semaphore>,
    /// Renderings admitted and not yet finished (running or waiting for a slot).
    admitted: Arc<AtomicUsize>,
    limit: usize,
}

impl Renderer {
    pub fn new(threads: usize) -> Renderer {
        let threads = threads.max(1);
        Renderer {
            slots: Arc::new(Semaphore::new(threads)),
            admitted: Arc::new(AtomicUsize::new(0)),
            limit: threads * (1 + QUEUE_PER_THREAD),
        }
    }

    /// Makes `rendition` of `source` off the async workers. Returns the bytes and the time the
    /// rendering itself took.
    async fn render(
        &self,
        source: Bytes,
        rendition: Rendition,
    ) -> Result<(Bytes, Duration), RenditionError> {
        if self.admitted.fetch_add(1, Ordering::SeqCst) >= self.limit {
            self.admitted.fetch_sub(1, Ordering::SeqCst);
            return Err(RenditionError::Busy);
        }
        let _admitted = Admitted(Arc::clone(&self.admitted));
        let _slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .expect("invariant: the semaphore is never closed");
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            render::render(&source, &rendition)
                .map(|bytes| (bytes, started.elapsed()))
                .map_err(|e| RenditionError::Failed(e.to_string()))
        })
        .await
        .unwrap_or_else(|e| Err(RenditionError::Failed(format!("rendering stopped: {e}"))))
    }
}

/// Releases a queue place when a rendering ends, however it ends.
struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FrameCache {
    /// `rendition` of `source`, a frame the cache served to `owner` for `camera`.
    pub async fn rendition_of(
        self: &Arc<Self>,
        owner: &OwnerId,
        camera: &CameraId,
        source: Served,
        rendition: Rendition,
    ) -> Result<Served, RenditionError> {
        if rendition.variant.is_full() {
            return Ok(source);
        }
        let identity = Identity {
            owner: owner.clone(),
            camera: camera.clone(),
            route: Route::ByHash(source.frame.hash),
            variant: rendition.variant,
        };
        let key = self.store.key(&identity);
        let frame = match self.lookup(&key, &identity) {
            Some(entry) => {
                self.count_rendition("hit");
                Arc::clone(&entry.frame)
            }
            None => self.render(key, identity, &source, rendition).await?,
        };
        // A camera that sends the same bytes again under a new seq: the rendition made for the
        // earlier seq carries this one's seq and capture time (the body is shared).
        let frame = if frame.seq == source.frame.seq
            && frame.captured_at_ms == source.frame.captured_at_ms
        {
            frame
        } else {
            Arc::new(StoredFrame::rendition(
                &source.frame,
                frame.hash,
                frame.body.clone(),
            ))
        };
        Ok(Served { frame, ..source })
    }

    /// The size of the cached `rendition` of the frame at `address`, if there is one.
    pub fn cached_rendition_len(
        &self,
        owner: &OwnerId,
        camera: &CameraId,
        address: ContentHash,
        rendition: Rendition,
    ) -> Option<usize> {
        let identity = Identity {
            owner: owner.clone(),
            camera: camera.clone(),
            route: Route::ByHash(address),
            variant: rendition.variant,
        };
        // A peek: choosing is not a use, and must not keep candidates from eviction.
        let entry = self.store.peek(&self.store.key(&identity))?;
        entry.is(&identity).then(|| entry.frame.body.len())
    }

    /// Makes the rendition through its flight: leads it, or waits for it.
    async fn render(
        self: &Arc<Self>,
        key: KeyDigest,
        identity: Identity,
        source: &Served,
        rendition: Rendition,
    ) -> RenderResult {
        let mut done = match self.renders.join(key, &identity) {
            Join::Leader(flight) => {
                // Another rendering may have stored it between our lookup and the join.
                if let Some(entry) = self.lookup(&key, &identity) {
                    let frame = Arc::clone(&entry.frame);
                    self.renders.finish(&key, &flight, Ok(Arc::clone(&frame)));
                    self.count_rendition("hit");
                    return Ok(frame);
                }
                let done = flight.subscribe();
                self.spawn_render(key, identity, source, rendition, flight);
                done
            }
            Join::Waiter(done) => {
                self.count_rendition("coalesced");
                done
            }
            Join::Collision => {
                self.metrics.cache_key_collisions.inc();
                tracing::error!(
                    "a rendering under the same key digest is under way for another identity"
                );
                // Made for this request alone, and not stored.
                return self.make(key, &identity, source, rendition, None).await;
            }
        };
        // Renderings take milliseconds; one that takes longer than a request may wait for an
        // origin fetch is not waited for.
        let waited = tokio::time::timeout(self.config.coalesce_wait, async {
            done.wait_for(|r| r.is_some()).await.map(|r| r.clone())
        })
        .await;
        match waited {
            Ok(Ok(result)) => result.expect("invariant: waited for Some"),
            Ok(Err(_)) => Err(RenditionError::Failed("the rendering ended".into())),
            Err(_) => Err(RenditionError::Busy),
        }
    }

    fn spawn_render(
        self: &Arc<Self>,
        key: KeyDigest,
        identity: Identity,
        source: &Served,
        rendition: Rendition,
        flight: Arc<Flight<RenderResult>>,
    ) {
        // The generation the source frame was served under: a purge since then keeps the
        // rendition out of the cache.
        let purges = source.purges;
        let mut guard = FlightGuard {
            cache: Arc::clone(self),
            flights: |cache| &cache.renders,
            key,
            flight: Some(flight),
            abandoned: || {
                Err(RenditionError::Failed(
                    "the rendering ended without an answer".into(),
                ))
            },
        };
        let source = source.clone();
        tokio::spawn(async move {
            let result = guard
                .cache
                .make(key, &identity, &source, rendition, Some(purges))
                .await;
            guard.finish(result);
        });
    }

    /// Renders, counts, and stores the rendition under `key` unless the source may not be
    /// stored or a purge happened since `purges_before` (`None`: never store).
    async fn make(
        &self,
        key: KeyDigest,
        identity: &Identity,
        source: &Served,
        rendition: Rendition,
        purges_before: Option<u64>,
    ) -> RenderResult {
        let made = self
            .renderer
            .render(source.frame.body.clone(), rendition)
            .await;
        let (body, took) = match made {
            Ok(made) => made,
            Err(error) => {
                self.count_rendition(match error {
                    RenditionError::Busy => "busy",
                    _ => "failed",
                });
                tracing::warn!(variant = %rendition.variant, %error, "rendition not made");
                return Err(error);
            }
        };
        self.count_rendition("rendered");
        self.metrics.render_duration.observe(took.as_secs_f64());
        let frame = Arc::new(StoredFrame::rendition(
            &source.frame,
            ContentHash::of(&body),
            body,
        ));
        if let Some(purges) = purges_before.filter(|_| !source.no_store) {
            // Immutable, like every by-hash entry.
            let entry = (key, identity.clone(), Duration::MAX);
            self.keep(&frame, vec![entry], purges);
        }
        Ok(frame)
    }

    fn count_rendition(&self, result: &str) {
        self.metrics.renditions.with_label_values(&[result]).inc();
    }
}
