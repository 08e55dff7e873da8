//! The owner-scoped, content-addressed frame cache.
//!
//! - [`key`]: an entry's full identity (owner, camera, frame, variant), encoded without
//!   ambiguity and digested with blake3.
//! - [`store`]: the size-bounded index (DashMap + S3-FIFO) from digest to entry; bodies are
//!   shared `Bytes`.
//! - [`flight`]: one origin fetch per key at a time, waiters of the same identity only.
//! - [`absent`]: frames by hash the origin said it does not have, per owner, for a while.
//! - [`handover`]: the entries handed to a new instance in a binary upgrade, checked on arrival.
//!
//! Each owner's origin requests are bounded by a budget (`limits.owner_origin_rps`); an origin
//! 403 evicts that owner's entries of the camera at once.
//!
//! Every hit compares the stored identity with the request's before anything is served. A
//! mismatch is a key collision (same digest, other identity) or a cross-owner hit (other owner):
//! it is counted, logged at error level, evicted, and the request continues as a miss.

pub mod absent;
pub mod flight;
pub mod handover;
pub mod key;
pub mod store;

#[cfg(feature = "fault-injection")]
pub mod fault;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use self::absent::NotFound;
use self::flight::{Flights, Join};
use self::key::{Identity, KeyDigest};
use self::store::{Entry, Store, StoredFrame};
use crate::cluster::Cluster;
use crate::config::{CacheConfig, LimitsConfig};
use crate::identity::{CameraId, OwnerId};
use crate::limit::{Limit, OriginBudget};
use crate::metrics::Metrics;
use crate::origin::{Origin, OriginError};
use crate::rendition::cache::Renditions;
use crate::rendition::Variant;
use crate::request::FrameRef;

/// How a request was answered, for `Cache-Status` and the lookup metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A fresh entry.
    Hit,
    /// A stale latest frame, because the origin failed.
    Stale,
    /// A latest frame just past fresh, served at once while one background fetch refreshes it.
    Revalidating,
    /// This request fetched from the origin.
    Miss { stored: bool },
    /// Another request's fetch answered this one.
    Coalesced { stored: bool },
}

impl Lookup {
    /// One lookup of each `result` label.
    pub const ALL: [Lookup; 4] = [
        Lookup::Hit,
        Lookup::Miss { stored: false },
        Lookup::Stale,
        Lookup::Coalesced { stored: false },
    ];

    /// The `result` label of `framecache_cache_lookups_total`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Stale | Lookup::Revalidating => "stale",
            Lookup::Miss { .. } => "miss",
            Lookup::Coalesced { .. } => "coalesced",
        }
    }

    /// The `Cache-Status` header value (RFC 9211).
    pub fn cache_status(&self) -> &'static str {
        match self {
            Lookup::Hit => "framecache; hit",
            Lookup::Stale => "framecache; hit; detail=stale",
            Lookup::Revalidating => "framecache; hit; detail=revalidating",
            Lookup::Miss { stored: true } => "framecache; fwd=miss; stored",
            Lookup::Miss { stored: false } => "framecache; fwd=miss",
            Lookup::Coalesced { stored: true } => "framecache; fwd=miss; collapsed; stored",
            Lookup::Coalesced { stored: false } => "framecache; fwd=miss; collapsed",
        }
    }
}

/// A frame fetched from the origin, as handed to every request that waited for it.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The owner and camera the origin attested.
    pub owner: OwnerId,
    pub camera: CameraId,
    pub frame: Arc<StoredFrame>,
    /// How old the frame already was when it arrived (a home member's `Age`).
    pub age: Duration,
    pub fresh_for: Duration,
    pub no_store: bool,
    pub stored: bool,
}

/// What the cache answers a request with.
#[derive(Debug, Clone)]
pub struct Served {
    /// The owner the entry was stored for, or the fetch attested: always the request's (a
    /// lookup of another identity is never served), and what a home member answers with.
    pub owner: OwnerId,
    pub frame: Arc<StoredFrame>,
    pub lookup: Lookup,
    pub age: Duration,
    /// The frame's freshness lifetime (not what remains of it: see `age`).
    pub fresh_for: Duration,
    pub no_store: bool,
    /// The purge generation when the request began: what is made from this frame (a
    /// rendition) is not kept if a purge has happened since.
    pub purges: u64,
}

/// The frame cache, in front of the origin.
pub struct FrameCache {
    pub(crate) store: Store,
    flights: Flights,
    /// Replaced whole by a reload that changes `[origin]` (a new connection pool).
    origin: ArcSwap<Origin>,
    pub(crate) metrics: Arc<Metrics>,
    /// Replaced by a reload.
    config: ArcSwap<CacheConfig>,
    /// Bumped by every purge; a fill that saw it change does not keep what it stored.
    purges: Purges,
    /// Renditions being made ([`crate::rendition::cache`]).
    pub(crate) renditions: Renditions,
    /// Origin requests each owner may still cause.
    budget: OriginBudget,
    /// Frames by hash the origin said it does not have, per owner, for `limits.not_found_ttl_ms`.
    not_found: NotFound,
    /// The edge tier this node is a member of: a camera homed elsewhere is asked of its home.
    cluster: Option<Arc<Cluster>>,
}

/// Where a miss may be filled from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The camera's home node, when it is another member, on behalf of a hub whose
    /// `Authorization` header this is (the home verifies it itself); else the origin.
    Hub(Arc<str>),
    /// The origin only: a node alone, or a home answering another member.
    Origin,
}

impl FrameCache {
    pub fn new(config: CacheConfig, origin: Origin, metrics: Arc<Metrics>) -> FrameCache {
        metrics
            .cache
            .max_bytes
            .set(i64::try_from(config.max_bytes).unwrap_or(i64::MAX));
        FrameCache {
            store: Store::new(
                config.max_bytes,
                metrics.cache.entries.clone(),
                metrics.cache.stored_bytes.clone(),
                metrics.cache.evictions.clone(),
            ),
            flights: Flights::default(),
            origin: ArcSwap::from_pointee(origin),
            metrics,
            config: ArcSwap::from_pointee(config),
            purges: Purges::default(),
            renditions: Renditions::new(2),
            budget: OriginBudget::new(LimitsConfig::default().owner_origin_rps),
            not_found: NotFound::new(LimitsConfig::default().not_found_ttl),
            cluster: None,
        }
    }

    /// Makes this cache one member's of the tier `cluster`.
    pub fn with_cluster(mut self, cluster: Arc<Cluster>) -> FrameCache {
        self.cluster = Some(cluster);
        self
    }

    /// Whether misses may be asked of other members: then hub requests pass [`Via::Hub`].
    pub fn clustered(&self) -> bool {
        self.cluster.is_some()
    }

    /// Applies `limits`: each owner's origin request budget, and how long an origin 404 for a
    /// frame by hash is remembered (the defaults of `[limits]` until called).
    pub fn with_limits(mut self, limits: &LimitsConfig) -> FrameCache {
        self.budget = OriginBudget::new(limits.owner_origin_rps);
        self.not_found = NotFound::new(limits.not_found_ttl);
        self
    }

    /// The cache settings in force.
    pub(crate) fn config(&self) -> arc_swap::Guard<Arc<CacheConfig>> {
        self.config.load()
    }

    /// Applies reloaded settings: the cache's (a smaller `max_bytes` evicts down to it at once)
    /// and, when `[origin]` changed, a new origin (addresses, keys, timeouts); fetches under way
    /// finish with the old one.
    pub fn reconfigure(&self, cache: CacheConfig, origin: Option<Origin>) {
        self.metrics
            .cache
            .max_bytes
            .set(i64::try_from(cache.max_bytes).unwrap_or(i64::MAX));
        self.store.set_max_bytes(cache.max_bytes);
        self.config.store(Arc::new(cache));
        if let Some(origin) = origin {
            self.origin.store(Arc::new(origin));
        }
    }

    /// Renders at most `threads` renditions at once (default 2).
    pub fn with_render_threads(mut self, threads: usize) -> FrameCache {
        self.renditions = Renditions::new(threads);
        self
    }

    /// A frame for `owner`: from the cache when a fresh entry of exactly this identity exists,
    /// else from the origin (coalesced), else a stale latest frame of the same identity.
    pub async fn get(
        self: &Arc<Self>,
        owner: &OwnerId,
        camera: &CameraId,
        frame: FrameRef,
        via: &Via,
    ) -> Result<Served, OriginError> {
        let purges = self.purges.generation(owner);
        let identity = Identity {
            owner: owner.clone(),
            camera: camera.clone(),
            frame,
            variant: Variant::FULL,
        };
        let key = self.store.key(&identity);
        if let Some(entry) = self.lookup(&key, &identity) {
            let age = entry.age();
            let fresh_for = entry.fresh_for();
            if frame != FrameRef::Latest || age < fresh_for {
                return Ok(served(&entry, Lookup::Hit, age, purges));
            }
            // Never staler than stale-if-error allows, whatever the origin's state.
            let window = self
                .config()
                .stale_while_revalidate
                .min(self.config().stale_if_error);
            if age < fresh_for.saturating_add(window) {
                // Just gone stale: answer now, refresh in the background (once per key).
                if let Join::Leader(flight) = self.flights.join(key, &identity) {
                    self.spawn_fill(key, identity, flight, via.clone());
                }
                return Ok(served(&entry, Lookup::Revalidating, age, purges));
            }
        }
        if self.not_found.remembers(&key, &identity) {
            return Err(OriginError::NotFound);
        }
        match self.fetch(key, &identity, via).await {
            (Ok(fetched), lookup) => Ok(Served {
                owner: fetched.owner,
                frame: fetched.frame,
                lookup,
                age: fetched.age,
                fresh_for: fetched.fresh_for,
                no_store: fetched.no_store,
                purges,
            }),
            // The origin's own "no such frame" or "not yours" is final: never answered with stale.
            (Err(error @ (OriginError::NotFound | OriginError::Forbidden)), _) => Err(error),
            (Err(error), _) => {
                // Looked up again: a purge during the fetch must not be undone by a copy held
                // from before it.
                let stale = self.lookup(&key, &identity).filter(|e| {
                    frame == FrameRef::Latest && e.age() <= self.config().stale_if_error
                });
                match stale {
                    Some(entry) => Ok(served(&entry, Lookup::Stale, entry.age(), purges)),
                    None => Err(error),
                }
            }
        }
    }

    /// The entry under `key`, if its stored identity is exactly `identity`.
    pub(crate) fn lookup(&self, key: &KeyDigest, identity: &Identity) -> Option<Arc<Entry>> {
        let entry = self.store.get(key)?;
        if entry.is(identity) {
            return Some(entry);
        }
        let cross_owner = *entry.owner() != identity.owner;
        let stored = entry.identity();
        if cross_owner {
            self.metrics.cache.cross_owner_hits.inc();
        } else {
            self.metrics.cache.key_collisions.inc();
        }
        tracing::error!(
            cross_owner,
            stored_frame = stored.frame.as_str(),
            requested_frame = identity.frame.as_str(),
            stored_variant = stored.variant.as_str(),
            requested_variant = identity.variant.as_str(),
            "cache entry identity does not match the request: not served, evicted"
        );
        self.store.remove_if_same(key, &entry);
        None
    }

    /// Fetches through the flight of `key`: leads it, waits on it, or (after
    /// `cache.coalesce_wait_ms`, or on a digest collision) fetches alone.
    async fn fetch(
        self: &Arc<Self>,
        key: KeyDigest,
        identity: &Identity,
        via: &Via,
    ) -> (Result<Fetched, OriginError>, Lookup) {
        let (mut done, leader) = match self.flights.join(key, identity) {
            Join::Leader(flight) => {
                let done = flight.subscribe();
                self.spawn_fill(key, identity.clone(), flight, via.clone());
                (done, true)
            }
            Join::Waiter(done) => (done, false),
            Join::Collision => {
                self.metrics.cache.key_collisions.inc();
                tracing::error!(
                    "a fetch under the same key digest is under way for another identity"
                );
                return self.fetch_alone(key, identity, via).await;
            }
        };
        // The leader waits as long as its fetch takes (the fetch has its own timeouts); a waiter
        // waits at most `cache.coalesce_wait_ms`.
        let outcome = if leader {
            Ok(done.wait_for(|r| r.is_some()).await.map(|r| r.clone()))
        } else {
            let waited = done.wait_for(|r| r.is_some());
            tokio::time::timeout(self.config().coalesce_wait, async {
                waited.await.map(|r| r.clone())
            })
            .await
        };
        match outcome {
            Ok(Ok(result)) => {
                let result = result.expect("invariant: waited for Some");
                let stored = result.as_ref().is_ok_and(|f| f.stored);
                let lookup = if leader {
                    Lookup::Miss { stored }
                } else {
                    Lookup::Coalesced { stored }
                };
                // Belt and braces: a shared result is of this identity, or it is not served.
                match result {
                    Ok(f) if f.owner != identity.owner || f.camera != identity.camera => {
                        self.metrics.cache.cross_owner_hits.inc();
                        (
                            Err(OriginError::Io(
                                "coalesced result of another identity".into(),
                            )),
                            lookup,
                        )
                    }
                    other => (other, lookup),
                }
            }
            // The flight ended without a result or took too long: fetch alone.
            _ => self.fetch_alone(key, identity, via).await,
        }
    }

    /// One origin fetch for this request only, outside any flight.
    async fn fetch_alone(
        &self,
        key: KeyDigest,
        identity: &Identity,
        via: &Via,
    ) -> (Result<Fetched, OriginError>, Lookup) {
        let purges = self.purges.generation(&identity.owner);
        let result = self.fill(key, identity, purges, via).await;
        let stored = result.as_ref().is_ok_and(|f| f.stored);
        (result, Lookup::Miss { stored })
    }

    /// Runs a flight's fill in its own task, so that no hub's disconnect cancels it; its result
    /// goes to every waiter.
    fn spawn_fill(
        self: &Arc<Self>,
        key: KeyDigest,
        identity: Identity,
        flight: Arc<flight::Flight>,
        via: Via,
    ) {
        // Read now, when the flight starts: a purge from here on keeps its result out.
        let purges = self.purges.generation(&identity.owner);
        // Built before the task, so that a task dropped unpolled (at shutdown) still releases
        // the flight's waiters.
        let mut guard = FlightGuard {
            cache: Arc::clone(self),
            flights: |cache| &cache.flights,
            key,
            flight: Some(flight),
            abandoned: || Err(OriginError::Io("the fetch ended without an answer".into())),
        };
        tokio::spawn(async move {
            let result = guard.cache.fill(key, &identity, purges, &via).await;
            guard.finish(result);
        });
    }

    /// One fetch, from the camera's home node or the origin, recorded in the peer or origin
    /// metrics, and stored unless the origin said `no-store` or a purge happened meanwhile.
    async fn fill(
        &self,
        key: KeyDigest,
        identity: &Identity,
        purges_before: u64,
        via: &Via,
    ) -> Result<Fetched, OriginError> {
        let origin = self.origin.load_full();
        let (result, attempt) = match (&self.cluster, via) {
            (Some(cluster), Via::Hub(authorization)) => {
                let budget = || self.take_budget(&identity.owner);
                cluster
                    .fetch(&origin, identity, authorization, budget)
                    .await
            }
            _ => match self.take_budget(&identity.owner) {
                Ok(()) => {
                    let (owner, camera) = (&identity.owner, &identity.camera);
                    let (result, attempt) = origin.fetch(owner, camera, identity.frame).await;
                    (result, Some(attempt))
                }
                Err(limited) => (Err(limited), None),
            },
        };
        if let Some(attempt) = &attempt {
            self.metrics.record_origin(attempt);
            if let Some(reason) = attempt.rejection {
                tracing::warn!(reason = reason.as_str(), camera = %identity.camera, "origin answer rejected");
            }
        }
        match &result {
            Err(OriginError::NotFound) if matches!(identity.frame, FrameRef::ByHash(_)) => {
                self.not_found.remember(key, identity.clone());
            }
            // The backend no longer shares this camera with this owner, or has no such camera:
            // what is cached of it for them is not served again, stale or fresh.
            Err(OriginError::Forbidden | OriginError::NotFound) => {
                let revoked = self.remove(&identity.owner, Some(&identity.camera));
                tracing::info!(camera = %identity.camera, revoked, "origin refused the camera: entries evicted");
            }
            _ => {}
        }
        let v = result?;
        if v.previous_key {
            self.metrics.origin.previous_key_uses.inc();
        }
        let latest_fresh = self.config().latest_fresh;
        let fresh_for = v.max_age.map_or(latest_fresh, |m| m.min(latest_fresh));
        let no_store = v.no_store;
        let frame = StoredFrame::new(v.hash, v.seq, v.captured_at_ms, v.body);
        let frame = Arc::new(frame.signed(v.signature));
        // A home member's copy comes with its age: kept as old as it is.
        let stored_at = std::time::Instant::now()
            .checked_sub(v.age)
            .unwrap_or_else(std::time::Instant::now);
        let fill = (key, identity, &frame, fresh_for);
        let stored = !no_store && self.store_fill(fill, stored_at, purges_before);
        Ok(Fetched {
            owner: v.owner,
            camera: v.camera,
            frame,
            age: v.age,
            fresh_for,
            no_store,
            stored,
        })
    }

    /// Takes one origin request from `owner`'s budget, or says how long to wait.
    fn take_budget(&self, owner: &OwnerId) -> Result<(), OriginError> {
        self.budget.take(owner).map_err(|retry_after| {
            self.metrics.record_limited(Limit::OwnerOriginRps);
            OriginError::Limited { retry_after }
        })
    }

    /// Stores the by-hash entry and, for a latest fetch, the latest entry; both share the body.
    /// Returns whether they were kept.
    fn store_fill(
        &self,
        (key, identity, frame, fresh_for): (KeyDigest, &Identity, &Arc<StoredFrame>, Duration),
        stored_at: std::time::Instant,
        purges_before: u64,
    ) -> bool {
        let by_hash = identity.with_frame(FrameRef::ByHash(frame.hash));
        let mut entries = vec![(self.store.key(&by_hash), by_hash, Duration::MAX)];
        if identity.frame == FrameRef::Latest {
            entries.push((key, identity.clone(), fresh_for));
        }
        self.keep(frame, entries, stored_at, purges_before)
    }

    /// Stores `frame` under each (key, identity, freshness) of `entries`, as of `stored_at`,
    /// unless a purge has happened since `purges_before`. Returns whether all were kept.
    pub(crate) fn keep(
        &self,
        frame: &Arc<StoredFrame>,
        entries: Vec<(KeyDigest, Identity, Duration)>,
        stored_at: std::time::Instant,
        purges_before: u64,
    ) -> bool {
        // One owner's entries (a frame's latest and by-hash entries, or a rendition).
        let Some(owner) = entries
            .first()
            .map(|(_, identity, _)| identity.owner.clone())
        else {
            return true;
        };
        let owner = &owner;
        if self.purges.generation(owner) != purges_before {
            return false;
        }
        let now = stored_at;
        let mut keys = Vec::with_capacity(entries.len());
        let mut kept = true;
        for (key, identity, fresh_for) in entries {
            let entry = Entry::new(identity, Arc::clone(frame), now, fresh_for);
            kept &= self.store.insert(key, entry);
            keys.push(key);
        }
        // A purge that began while we stored: it may not have seen our entries; take them back.
        if self.purges.generation(owner) != purges_before {
            for key in keys {
                if let Some(entry) = self.store.get(&key) {
                    if Arc::ptr_eq(&entry.frame, frame) {
                        self.store.remove_if_same(&key, &entry);
                    }
                }
            }
            return false;
        }
        kept
    }

    /// Removes every entry of `owner` (of one camera when given), stale copies included, and
    /// keeps fills already under way from storing. Returns the number of entries removed.
    pub fn purge(&self, owner: &OwnerId, camera: Option<&CameraId>) -> usize {
        let purged = self.remove(owner, camera);
        self.metrics.cache.purges.inc();
        self.metrics.cache.purged_entries.inc_by(purged as u64);
        purged
    }

    /// What [`FrameCache::purge`] does, uncounted: also how an origin's 403 revokes an owner's
    /// entries of a camera.
    fn remove(&self, owner: &OwnerId, camera: Option<&CameraId>) -> usize {
        self.purges.bump(owner);
        let matches = |identity: &Identity| {
            identity.owner == *owner && camera.is_none_or(|c| identity.camera == *c)
        };
        // Requests from now on start their own fetch rather than join one begun before.
        self.flights.retire(matches);
        self.renditions.flights.retire(matches);
        self.not_found.forget(matches);
        self.store.purge(matches)
    }

    /// Entries and weighted bytes.
    pub fn usage(&self) -> (u64, u64) {
        self.store.usage()
    }

    /// Flights under way.
    pub fn flights(&self) -> usize {
        self.flights.len()
    }
}

/// Purges (and revocations) so far, per owner: a fill stores nothing if its owner's entries
/// were purged while it ran. Per owner, so that one owner's purges never keep another's fresh
/// frame out (which would leave the older one to be served stale).
#[derive(Default)]
struct Purges(dashmap::DashMap<OwnerId, u64>);

impl Purges {
    fn generation(&self, owner: &OwnerId) -> u64 {
        self.0.get(owner).map_or(0, |n| *n)
    }

    fn bump(&self, owner: &OwnerId) {
        *self.0.entry(owner.clone()).or_insert(0) += 1;
    }
}

/// Finishes a flight of the cache (an origin fetch or a rendering) with its result, or, if the
/// task running it ends without one (a panic, or a task dropped at shutdown), with the
/// `abandoned` error, so that its waiters never wait on it for ever. Built before the task is
/// spawned.
pub(crate) struct FlightGuard<R: Clone> {
    pub(crate) cache: Arc<FrameCache>,
    /// Which of the cache's flight maps the flight is in.
    pub(crate) flights: fn(&FrameCache) -> &Flights<R>,
    pub(crate) key: KeyDigest,
    /// Taken when the flight is finished.
    pub(crate) flight: Option<Arc<flight::Flight<R>>>,
    pub(crate) abandoned: fn() -> R,
}

impl<R: Clone> FlightGuard<R> {
    pub(crate) fn finish(&mut self, result: R) {
        if let Some(flight) = self.flight.take() {
            (self.flights)(&self.cache).finish(&self.key, &flight, result);
        }
    }
}

impl<R: Clone> Drop for FlightGuard<R> {
    fn drop(&mut self) {
        let abandoned = (self.abandoned)();
        self.finish(abandoned);
    }
}

fn served(entry: &Entry, lookup: Lookup, age: Duration, purges: u64) -> Served {
    Served {
        owner: entry.owner().clone(),
        frame: Arc::clone(&entry.frame),
        lookup,
        age,
        fresh_for: entry.fresh_for(),
        no_store: false,
        purges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::identity::ContentHash;
    use bytes::Bytes;
    use proptest::prelude::*;

    /// A cache whose origin is never asked (nothing listens there).
    fn cache(max_bytes: u64) -> FrameCache {
        let mut config = Config::local(
            "127.0.0.1:9".parse().unwrap(),
            &[b'k'; 32],
            &[b'a'; 16],
            [0; 32],
        );
        config.cache.max_bytes = max_bytes;
        config.cache.latest_fresh = Duration::from_secs(60);
        FrameCache::new(
            config.cache.clone(),
            Origin::new(&config.origin),
            Arc::new(Metrics::new()),
        )
    }

    fn identity(owner: u8, camera: u8, latest: bool) -> Identity {
        let camera_id = CameraId::parse(&format!("cam-{camera}")).unwrap();
        Identity {
            owner: OwnerId::parse(&format!("owner-{owner}")).unwrap(),
            frame: if latest {
                FrameRef::Latest
            } else {
                FrameRef::ByHash(ContentHash::of(camera_id.as_str().as_bytes()))
            },
            camera: camera_id,
            variant: Variant::FULL,
        }
    }

    /// Stores a frame for `id` as a fill would (body names its owner and camera).
    fn fill(cache: &FrameCache, id: &Identity, size: usize) {
        let mut body = format!("{}/{}:", id.owner, id.camera).into_bytes();
        body.resize(size.max(body.len()), b'.');
        let hash = match id.frame {
            FrameRef::ByHash(hash) => hash,
            FrameRef::Latest => ContentHash::of(id.camera.as_str().as_bytes()),
        };
        let frame = Arc::new(StoredFrame::new(hash, 1, 1, Bytes::from(body)));
        let key = cache.store.key(id);
        cache.store_fill(
            (key, id, &frame, Duration::from_secs(60)),
            std::time::Instant::now(),
            cache.purges.generation(&id.owner),
        );
    }

    /// A cache handed over (an upgrade) arrives whole, each entry under its own identity with
    /// its age; a body whose bytes changed on the way is dropped, not served.
    #[test]
    fn a_handed_over_cache_arrives_whole_and_checked() {
        use crate::rendition::Catalogue;
        let old = cache(1 << 30);
        let mut ids = Vec::new();
        for o in 0..3u8 {
            let latest = identity(o, o, true);
            let mut body = format!("{}/{}:", latest.owner, latest.camera).into_bytes();
            body.resize(20_000, b'.');
            let hash = ContentHash::of(&body);
            let frame = Arc::new(StoredFrame::new(hash, 7, 1, Bytes::from(body)));
            let purges = old.purges.generation(&latest.owner);
            let key = old.store.key(&latest);
            let fill = (key, &latest, &frame, Duration::from_secs(60));
            assert!(old.store_fill(fill, std::time::Instant::now(), purges));
            ids.push(latest.with_frame(FrameRef::ByHash(hash)));
            ids.push(latest);
        }
        let mut wire = Vec::new();
        let handed = old.hand_over(&mut wire).unwrap();
        assert_eq!(handed, old.usage().0 as usize);

        let new = cache(1 << 30);
        let taken = new
            .take_over(&mut wire.as_slice(), &Catalogue::built_in(), 1 << 20)
            .unwrap();
        assert_eq!(taken.entries, handed);
        assert_eq!(taken.dropped, 0);
        for id in &ids {
            let entry = new.lookup(&new.store.key(id), id).expect("taken over");
            let was = old.lookup(&old.store.key(id), id).unwrap();
            assert_eq!(entry.frame.body, was.frame.body);
            assert_eq!(entry.frame.hash, was.frame.hash);
            // Its age carried over, the handover's own time included: never younger.
            assert!(entry.age() + Duration::from_millis(2) >= was.age());
            assert!(entry.age() < was.age() + Duration::from_secs(5));
        }

        // One byte of the last body flipped on the way: its entries are dropped.
        let last = wire.len() - 1;
        wire[last] ^= 1;
        let again = cache(1 << 30);
        let taken = again
            .take_over(&mut wire.as_slice(), &Catalogue::built_in(), 1 << 20)
            .unwrap();
        assert!(taken.dropped >= 1, "{taken:?}");
        assert_eq!(taken.entries + taken.dropped, handed);
        assert_eq!(
            again
                .metrics
                .cache
                .handover
                .with_label_values(&["dropped"])
                .get(),
            taken.dropped as u64
        );
    }

    proptest! {
        /// Whatever was stored, under whatever colliding keys, a lookup returns only an entry of
        /// exactly the requested identity, and every mismatch is counted.
        #[test]
        fn one_owner_never_reads_anothers_entry(
            ops in proptest::collection::vec((0u8..3, 0u8..3, any::<bool>(), any::<bool>()), 1..60),
            digest_bytes in 0usize..3,
        ) {
            let cache = cache(1 << 30);
            #[cfg(feature = "fault-injection")]
            cache.truncate_digests(digest_bytes);
            let _ = digest_bytes;
            for (owner, camera, latest, write) in ops {
                let id = identity(owner, camera, latest);
                if write {
                    fill(&cache, &id, 64);
                } else if let Some(entry) = cache.lookup(&cache.store.key(&id), &id) {
                    prop_assert_eq!(&entry.identity(), &id);
                    prop_assert_eq!(entry.owner(), &id.owner);
                    let prefix = format!("{}/{}:", id.owner, id.camera);
                    prop_assert!(entry.frame.body.starts_with(prefix.as_bytes()));
                }
            }
        }

        /// However many frames of whatever sizes are stored, the index stays within its budget,
        /// and the stored-bytes gauge never exceeds it.
        #[test]
        fn store_stays_within_budget(sizes in proptest::collection::vec(1usize..40_000, 1..80)) {
            let budget = 100_000;
            let cache = cache(budget);
            for (i, size) in sizes.into_iter().enumerate() {
                let id = identity((i % 3) as u8, (i % 200) as u8, i % 2 == 0);
                fill(&cache, &id, size);
                let (_, weighted) = cache.usage();
                prop_assert!(weighted <= budget, "{} > {}", weighted, budget);
                prop_assert!(cache.metrics.cache.stored_bytes.get() <= budget as i64);
            }
        }
    }
}
