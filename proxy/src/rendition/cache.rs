//! Renditions in the cache: made once per frame and rendition, kept in the owner's scope.
//!
//! A rendition is found under (owner, camera, by-hash address of the verified frame it was made
//! from, variant), so the identity check of every hit covers it exactly as it covers frames:
//! a rendition is only ever served to the owner and camera of its source. Its own bytes are
//! hashed once when it is made; that hash is its ETag. The source frame is whatever the cache
//! answered for the request (fresh, stale or just fetched), so a latest rendition follows the
//! latest frame with no freshness of its own.
//!
//! Concurrent requests for the same rendition of the same frame wait for one rendering (a
//! flight, as for origin fetches), which runs in its own task on the bounded [`Pool`], so that
//! no hub going away cancels it.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::flight::{Flight, Flights, Join};
use crate::cache::key::{Identity, KeyDigest};
use crate::cache::store::StoredFrame;
use crate::cache::{FlightGuard, FrameCache, Served};
use crate::identity::{CameraId, ContentHash, OwnerId};
use crate::request::FrameRef;

use super::render::Pool;
use super::{Made, Rendition, RenditionError};

/// What a rendering ends with.
pub type RenderResult = Result<Arc<StoredFrame>, RenditionError>;

/// The cache's renditions being made: one rendering per rendition of a frame at a time, on a
/// bounded pool.
pub struct Renditions {
    pub(crate) flights: Flights<RenderResult>,
    pool: Pool,
}

impl Renditions {
    /// Renders at most `threads` renditions at once.
    pub fn new(threads: usize) -> Renditions {
        Renditions {
            flights: Flights::default(),
            pool: Pool::new(threads),
        }
    }
}

impl FrameCache {
    /// `rendition` of `source`, a frame the cache served to `owner` for `camera`: from the
    /// cache, or made once.
    pub async fn rendition(
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
            frame: FrameRef::ByHash(source.frame.hash),
            variant: rendition.variant,
        };
        let key = self.store.key(&identity);
        let frame = match self.lookup(&key, &identity) {
            Some(entry) => {
                self.count_rendition(Made::Hit);
                Arc::clone(&entry.frame)
            }
            None => {
                self.join_rendering(key, identity, &source, rendition)
                    .await?
            }
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
            frame: FrameRef::ByHash(address),
            variant: rendition.variant,
        };
        // A peek: choosing is not a use, and must not keep candidates from eviction.
        let entry = self.store.peek(&self.store.key(&identity))?;
        entry.is(&identity).then(|| entry.frame.body.len())
    }

    /// Makes the rendition through its flight: leads it, or waits for it.
    async fn join_rendering(
        self: &Arc<Self>,
        key: KeyDigest,
        identity: Identity,
        source: &Served,
        rendition: Rendition,
    ) -> RenderResult {
        let mut done = match self.renditions.flights.join(key, &identity) {
            Join::Leader(flight) => {
                // Another rendering may have stored it between our lookup and the join.
                if let Some(entry) = self.lookup(&key, &identity) {
                    let frame = Arc::clone(&entry.frame);
                    self.renditions
                        .flights
                        .finish(&key, &flight, Ok(Arc::clone(&frame)));
                    self.count_rendition(Made::Hit);
                    return Ok(frame);
                }
                let done = flight.subscribe();
                self.spawn_rendering(key, identity, source, rendition, flight);
                done
            }
            Join::Waiter(done) => {
                self.count_rendition(Made::Coalesced);
                done
            }
            Join::Collision => {
                self.metrics.cache.key_collisions.inc();
                tracing::error!(
                    "a rendering under the same key digest is under way for another identity"
                );
                // Made for this request alone, and not stored.
                return self
                    .render_and_keep(key, &identity, source, rendition, None)
                    .await;
            }
        };
        // Renderings take milliseconds; one that takes longer than a request may wait for an
        // origin fetch is not waited for.
        let waited = tokio::time::timeout(self.config().coalesce_wait, async {
            done.wait_for(|r| r.is_some()).await.map(|r| r.clone())
        })
        .await;
        match waited {
            Ok(Ok(result)) => result.expect("invariant: waited for Some"),
            Ok(Err(_)) => Err(RenditionError::Failed("the rendering ended".into())),
            Err(_) => Err(RenditionError::Busy),
        }
    }

    fn spawn_rendering(
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
            flights: |cache| &cache.renditions.flights,
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
                .render_and_keep(key, &identity, &source, rendition, Some(purges))
                .await;
            guard.finish(result);
        });
    }

    /// Renders, counts, and stores the rendition under `key` unless the source may not be
    /// stored or a purge happened since `purges_before` (`None`: never store).
    async fn render_and_keep(
        &self,
        key: KeyDigest,
        identity: &Identity,
        source: &Served,
        rendition: Rendition,
        purges_before: Option<u64>,
    ) -> RenderResult {
        let made = self
            .renditions
            .pool
            .render(source.frame.body.clone(), rendition)
            .await;
        let (body, took) = match made {
            Ok(made) => made,
            Err(error) => {
                self.count_rendition(match error {
                    RenditionError::Busy => Made::Busy,
                    _ => Made::Failed,
                });
                tracing::warn!(variant = %rendition.variant, %error, "rendition not made");
                return Err(error);
            }
        };
        self.count_rendition(Made::Rendered);
        self.metrics.rendition.duration.observe(took.as_secs_f64());
        let frame = Arc::new(StoredFrame::rendition(
            &source.frame,
            ContentHash::of(&body),
            body,
        ));
        if let Some(purges) = purges_before.filter(|_| !source.no_store) {
            // Immutable, like every by-hash entry.
            let entry = (key, identity.clone(), Duration::MAX);
            self.keep(&frame, vec![entry], std::time::Instant::now(), purges);
        }
        Ok(frame)
    }

    fn count_rendition(&self, made: Made) {
        self.metrics
            .rendition
            .results
            .with_label_values(&[made.as_str()])
            .inc();
    }
}
