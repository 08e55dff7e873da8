//! The index and the bodies: a concurrent, size-bounded map from key digest to entry.
//!
//! The index is a `DashMap`: a hit is a sharded read and an atomic increment, nothing more.
//! Eviction is S3-FIFO (Yang et al., SOSP 2023) over byte weights: new entries enter a small
//! FIFO queue (a tenth of the budget); those asked for again there move to the main queue, the
//! rest leave and are remembered in a ghost queue, so that a key coming back soon goes straight
//! to main. A frame scanned once cannot push out the frames hubs keep asking for. The queues
//! change only on inserts and removals (misses, purges), under one lock; hits never take it.
//! `cargo bench --bench index` compares it with a plain `DashMap` and a plain LRU.
//!
//! Each entry holds the full identity it was stored under; the digest only finds it.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use prometheus::{IntCounter, IntGauge};

use super::key::{Identity, KeyDigest};
use crate::identity::{CameraId, ContentHash, OwnerId};
use crate::rendition::Variant;
use crate::request::FrameRef;

/// Bytes charged per entry beyond its body: the entry, the map slot, the queue slot and the
/// frame record, as `cargo bench --bench index` measures them (as malloc chunks), rounded up.
pub const ENTRY_OVERHEAD: usize = 384;

/// A hit bumps an entry's frequency up to this.
const MAX_FREQ: u8 = 3;

/// A verified frame, or a rendition of one, as the cache holds it: one allocation of the body,
/// shared by every entry and response that uses it.
#[derive(Debug)]
pub struct StoredFrame {
    /// blake3 of `body`: the ETag.
    pub hash: ContentHash,
    /// For a rendition, the hash of the verified frame it was made from (its address); `None`
    /// for a frame as the origin sent it. Boxed: most frames are not renditions.
    source: Option<Box<ContentHash>>,
    pub seq: u64,
    pub captured_at_ms: u64,
    /// The origin's signature of a frame as it sent it (what a home node hands on to other
    /// members); `None` for a rendition.
    pub signature: Option<blake3::Hash>,
    pub body: Bytes,
    /// The memory the body takes (whole pages when sealed): what the budget is charged.
    footprint: usize,
    /// Entries of the index that hold this frame; its body counts in `stored_bytes` while
    /// there is at least one.
    holders: AtomicU32,
}

impl StoredFrame {
    /// The frame record; whose it is, the entries that hold it say. A large body is moved into
    /// a sealed memory file, from which hub connections send it by reference.
    pub fn new(hash: ContentHash, seq: u64, captured_at_ms: u64, body: Bytes) -> StoredFrame {
        let body = crate::sealed::seal(body);
        StoredFrame {
            hash,
            source: None,
            seq,
            captured_at_ms,
            signature: None,
            footprint: crate::sealed::footprint(&body),
            body,
            holders: AtomicU32::new(0),
        }
    }

    /// The frame with the origin's signature of it.
    pub fn signed(mut self, signature: blake3::Hash) -> StoredFrame {
        self.signature = Some(signature);
        self
    }

    /// A rendition of `source`: its own bytes and hash, the source's seq and capture time.
    pub fn rendition(source: &StoredFrame, hash: ContentHash, body: Bytes) -> StoredFrame {
        StoredFrame {
            source: Some(Box::new(source.hash)),
            ..StoredFrame::new(hash, source.seq, source.captured_at_ms, body)
        }
    }

    /// The content address the frame is found under: its own hash, or for a rendition the
    /// hash of the frame it was made from.
    pub fn address(&self) -> ContentHash {
        self.source.as_deref().copied().unwrap_or(self.hash)
    }

    pub fn is_rendition(&self) -> bool {
        self.source.is_some()
    }
}

/// Which queue an entry is in.
const IN_NONE: u8 = 0;
const IN_SMALL: u8 = 1;
const IN_MAIN: u8 = 2;

/// One cache entry, kept small: the index holds one per (identity, frame).
///
/// Its identity is stored in parts: the owner and camera (shared allocations with the frame
/// record), the frame reference (latest, or by the address of its frame: the frame's own hash, or for a
/// rendition the hash of the frame it was made from),
/// and the rendition. [`Entry::identity`] puts them back together; [`Entry::is`] compares them
/// with a request's without building anything.
#[derive(Debug)]
pub struct Entry {
    /// The key the index holds it under (set on insertion), so that a queue slot needs only a
    /// weak pointer.
    key: KeyDigest,
    owner: OwnerId,
    camera: CameraId,
    pub frame: Arc<StoredFrame>,
    /// Milliseconds since [`epoch`] when stored.
    stored_ms: u64,
    /// How long the entry is fresh, in ms; [`IMMUTABLE`] for by-hash entries.
    fresh_ms: u32,
    /// [`Variant::index`].
    variant: u8,
    latest: bool,
    /// Hits since it entered its queue, capped at [`MAX_FREQ`].
    freq: AtomicU8,
    /// `IN_SMALL`, `IN_MAIN`, or `IN_NONE` once it left the index (changed under the lock).
    queue: AtomicU8,
}

/// `fresh_ms` of an entry that never goes stale.
const IMMUTABLE: u32 = u32::MAX;

/// The instant entry times count from.
/// The instant entry times count from: an hour before the first use, so that an entry taken
/// over from the previous process (an upgrade) keeps its age.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)
    })
}

impl Entry {
    /// An entry for `identity`. A by-hash identity must name `frame`'s address, and only a
    /// rendition is stored under a variant other than `full`.
    pub fn new(
        identity: Identity,
        frame: Arc<StoredFrame>,
        stored_at: Instant,
        fresh_for: Duration,
    ) -> Entry {
        let latest = match identity.frame {
            FrameRef::Latest => true,
            FrameRef::ByHash(hash) => {
                assert_eq!(
                    hash,
                    frame.address(),
                    "invariant: a by-hash entry holds its own frame"
                );
                false
            }
        };
        assert_eq!(
            identity.variant.is_full(),
            !frame.is_rendition(),
            "invariant: renditions are stored under their variant, frames under full"
        );
        Entry {
            key: KeyDigest([0; 32]),
            owner: identity.owner,
            camera: identity.camera,
            frame,
            stored_ms: stored_at.saturating_duration_since(epoch()).as_millis() as u64,
            fresh_ms: if latest {
                fresh_for.as_millis().min(IMMUTABLE as u128 - 1) as u32
            } else {
                IMMUTABLE
            },
            variant: identity.variant.index(),
            latest,
            freq: AtomicU8::new(0),
            queue: AtomicU8::new(IN_NONE),
        }
    }

    /// The identity the entry was stored under.
    pub fn identity(&self) -> Identity {
        Identity {
            owner: self.owner.clone(),
            camera: self.camera.clone(),
            frame: if self.latest {
                FrameRef::Latest
            } else {
                FrameRef::ByHash(self.frame.address())
            },
            variant: Variant::from_index(self.variant)
                .expect("invariant: entries store interned variants"),
        }
    }

    /// Whether the entry was stored under exactly `identity`.
    pub fn is(&self, identity: &Identity) -> bool {
        self.owner == identity.owner
            && self.camera == identity.camera
            && self.variant == identity.variant.index()
            && match identity.frame {
                FrameRef::Latest => self.latest,
                FrameRef::ByHash(hash) => !self.latest && self.frame.address() == hash,
            }
    }

    pub fn owner(&self) -> &OwnerId {
        &self.owner
    }

    pub fn stored_at(&self) -> Instant {
        epoch() + Duration::from_millis(self.stored_ms)
    }

    pub fn age(&self) -> Duration {
        self.stored_at().elapsed()
    }

    /// How long the entry is fresh after it was stored; `Duration::MAX` for by-hash entries.
    pub fn fresh_for(&self) -> Duration {
        if self.fresh_ms == IMMUTABLE {
            Duration::MAX
        } else {
            Duration::from_millis(self.fresh_ms.into())
        }
    }

    /// Bytes charged against the budget: the body's memory and the entry's.
    pub fn weight(&self) -> u64 {
        (self.frame.footprint + ENTRY_OVERHEAD) as u64
    }
}

/// The S3-FIFO queues. Queue slots are weak: an entry removed from the index is dropped at
/// once, and its slot is skipped when it reaches the front.
#[derive(Default)]
struct Queues {
    small: VecDeque<Weak<Entry>>,
    main: VecDeque<Weak<Entry>>,
    ghost: VecDeque<KeyDigest>,
    ghost_set: HashSet<KeyDigest>,
    small_bytes: u64,
    main_bytes: u64,
    /// Slots whose entry left the index by replacement, purge or removal (eviction pops its
    /// own slot). Compacted away once they outnumber the live entries.
    dead: usize,
}

impl Queues {
    fn total(&self) -> u64 {
        self.small_bytes + self.main_bytes
    }

    /// Drops dead slots when there are more of them than live entries (plus some slack), so
    /// that an index whose entries are replaced in place, and so never evicts, stays bounded.
    fn compact(&mut self, live: usize) {
        if self.dead <= live + 1024 {
            return;
        }
        let alive = |w: &Weak<Entry>| {
            w.upgrade()
                .is_some_and(|e| e.queue.load(Ordering::Relaxed) != IN_NONE)
        };
        self.small.retain(alive);
        self.main.retain(alive);
        self.dead = 0;
    }

    fn remember(&mut self, key: KeyDigest, limit: usize) {
        if self.ghost_set.insert(key) {
            self.ghost.push_back(key);
        }
        while self.ghost.len() > limit {
            if let Some(old) = self.ghost.pop_front() {
                self.ghost_set.remove(&old);
            }
        }
    }
}

/// The size-bounded index.
pub struct Store {
    /// Keys are blake3 digests already; foldhash is the cheapest keyed way to spread them.
    map: DashMap<KeyDigest, Arc<Entry>, foldhash::fast::RandomState>,
    queues: Mutex<Queues>,
    /// The budget, replaceable by a reload ([`Store::set_max_bytes`]).
    max_bytes: AtomicU64,
    entries: IntGauge,
    stored_bytes: IntGauge,
    evictions: IntCounter,
    #[cfg(feature = "fault-injection")]
    pub(super) faults: super::fault::Faults,
}

impl Store {
    /// An index of at most `max_bytes`, weighing each entry's body and overhead. Bodies are
    /// counted in `stored_bytes` once, however many entries share them, from the insertion of
    /// the first entry to the removal (eviction, purge, replacement) of the last.
    pub fn new(
        max_bytes: u64,
        entries: IntGauge,
        stored_bytes: IntGauge,
        evictions: IntCounter,
    ) -> Store {
        Store {
            map: DashMap::default(),
            queues: Mutex::new(Queues::default()),
            max_bytes: AtomicU64::new(max_bytes),
            entries,
            stored_bytes,
            evictions,
            #[cfg(feature = "fault-injection")]
            faults: Default::default(),
        }
    }

    /// The key an identity is stored under.
    pub fn key(&self, identity: &Identity) -> KeyDigest {
        #[allow(unused_mut)]
        let mut key = identity.digest();
        #[cfg(feature = "fault-injection")]
        self.faults.truncate(&mut key);
        key
    }

    /// The entry under `key`, without counting it as a use.
    pub fn peek(&self, key: &KeyDigest) -> Option<Arc<Entry>> {
        Some(Arc::clone(self.map.get(key)?.value()))
    }

    /// The entry under `key`; counts as a use for eviction.
    pub fn get(&self, key: &KeyDigest) -> Option<Arc<Entry>> {
        let entry = Arc::clone(self.map.get(key)?.value());
        let freq = entry.freq.load(Ordering::Relaxed);
        if freq < MAX_FREQ {
            // A lost update under a race only costs a little frequency.
            entry.freq.store(freq + 1, Ordering::Relaxed);
        }
        Some(entry)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        // The queues hold no invariant a panic elsewhere could break halfway.
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `entry` under `key` (replacing what was there), then evicts until the index is
    /// within budget again. Returns false, keeping nothing, for an entry larger than the whole
    /// budget.
    pub fn insert(&self, key: KeyDigest, mut entry: Entry) -> bool {
        entry.key = key;
        let entry = Arc::new(entry);
        let weight = entry.weight();
        let mut q = self.lock();
        if weight > self.budget() {
            return false;
        }
        if let Some(old) = self.map.insert(key, Arc::clone(&entry)) {
            self.forget(&mut q, &old);
            q.dead += 1;
        }
        let frame = &entry.frame;
        if frame.holders.fetch_add(1, Ordering::AcqRel) == 0 {
            self.stored_bytes.add(frame.body.len() as i64);
        }
        self.entries.inc();
        if q.ghost_set.remove(&key) {
            entry.queue.store(IN_MAIN, Ordering::Relaxed);
            q.main.push_back(Arc::downgrade(&entry));
            q.main_bytes += weight;
        } else {
            entry.queue.store(IN_SMALL, Ordering::Relaxed);
            q.small.push_back(Arc::downgrade(&entry));
            q.small_bytes += weight;
        }
        self.evict_to_budget(&mut q);
        true
    }

    fn budget(&self) -> u64 {
        self.max_bytes.load(Ordering::Relaxed)
    }

    /// A new budget; a smaller one evicts down to it at once.
    pub fn set_max_bytes(&self, max_bytes: u64) {
        let mut q = self.lock();
        self.max_bytes.store(max_bytes, Ordering::Relaxed);
        self.evict_to_budget(&mut q);
    }

    fn evict_to_budget(&self, q: &mut Queues) {
        while q.total() > self.budget() {
            if !self.evict_one(q) {
                break;
            }
        }
        q.compact(self.map.len());
    }

    /// Accounts an entry that left the index (its queue slot is skipped later).
    fn forget(&self, q: &mut Queues, entry: &Arc<Entry>) {
        let weight = entry.weight();
        match entry.queue.swap(IN_NONE, Ordering::Relaxed) {
            IN_SMALL => q.small_bytes -= weight,
            IN_MAIN => q.main_bytes -= weight,
            _ => return,
        }
        self.entries.dec();
        let frame = &entry.frame;
        if frame.holders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.stored_bytes.sub(frame.body.len() as i64);
        }
    }

    /// Evicts one entry by S3-FIFO; false when nothing is left to evict.
    fn evict_one(&self, q: &mut Queues) -> bool {
        // Hits raise frequencies without the lock; past this many second chances, the entry at
        // the front goes whatever its frequency, so eviction always ends.
        let mut chances = 2 * (q.small.len() + q.main.len()) + 16;
        loop {
            let from_small = q.small_bytes > self.budget() / 10 || q.main.is_empty();
            let slot = if from_small {
                q.small.pop_front()
            } else {
                q.main.pop_front()
            };
            let Some(weak) = slot else {
                return false;
            };
            let Some(entry) = weak.upgrade() else {
                q.dead = q.dead.saturating_sub(1);
                continue;
            };
            let key = entry.key;
            let queue = entry.queue.load(Ordering::Relaxed);
            if queue == IN_NONE {
                q.dead = q.dead.saturating_sub(1);
                continue;
            }
            let weight = entry.weight();
            chances = chances.saturating_sub(1);
            let freq = if chances == 0 {
                0
            } else {
                entry.freq.load(Ordering::Relaxed)
            };
            if queue == IN_SMALL && freq > 1 && chances > 0 {
                // Asked for again while new: promote.
                q.small_bytes -= weight;
                q.main_bytes += weight;
                entry.freq.store(0, Ordering::Relaxed);
                entry.queue.store(IN_MAIN, Ordering::Relaxed);
                q.main.push_back(weak);
                continue;
            }
            if queue == IN_MAIN && freq > 0 {
                // Still in use: another round in main.
                entry.freq.store(freq - 1, Ordering::Relaxed);
                q.main.push_back(weak);
                continue;
            }
            self.map.remove_if(&key, |_, e| Arc::ptr_eq(e, &entry));
            self.forget(q, &entry);
            self.evictions.inc();
            if queue == IN_SMALL {
                let limit = self.map.len().max(1024);
                q.remember(key, limit);
            }
            return true;
        }
    }

    /// Removes `key` if it still holds `entry` (not a newer one stored meanwhile).
    pub fn remove_if_same(&self, key: &KeyDigest, entry: &Arc<Entry>) {
        let mut q = self.lock();
        if let Some((_, removed)) = self.map.remove_if(key, |_, e| Arc::ptr_eq(e, entry)) {
            self.forget(&mut q, &removed);
            q.dead += 1;
            q.compact(self.map.len());
        }
    }

    /// Removes every entry whose identity matches; returns how many.
    pub fn purge(&self, matches: impl Fn(&Identity) -> bool) -> usize {
        let mut q = self.lock();
        let doomed: Vec<(KeyDigest, Arc<Entry>)> = self
            .map
            .iter()
            .filter(|e| matches(&e.value().identity()))
            .map(|e| (*e.key(), Arc::clone(e.value())))
            .collect();
        let mut purged = 0;
        for (key, entry) in doomed {
            if let Some((_, removed)) = self.map.remove_if(&key, |_, e| Arc::ptr_eq(e, &entry)) {
                self.forget(&mut q, &removed);
                q.dead += 1;
                purged += 1;
            }
        }
        q.compact(self.map.len());
        purged
    }

    /// Every entry, at this moment.
    pub fn entries(&self) -> Vec<Arc<Entry>> {
        self.map.iter().map(|e| Arc::clone(e.value())).collect()
    }

    /// Entries and weighted bytes.
    pub fn usage(&self) -> (u64, u64) {
        let q = self.lock();
        (self.map.len() as u64, q.total())
    }

    /// Queue slots held, live and dead: bounded by about twice the entries.
    pub fn slots(&self) -> usize {
        let q = self.lock();
        q.small.len() + q.main.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn store(max_bytes: u64) -> Store {
        Store::new(
            max_bytes,
            IntGauge::new("entries", "test").unwrap(),
            IntGauge::new("stored_bytes", "test").unwrap(),
            IntCounter::new("evictions", "test").unwrap(),
        )
    }

    fn identity(owner: u8, camera: u8, by_hash: Option<ContentHash>) -> Identity {
        Identity {
            owner: OwnerId::parse(&format!("owner-{owner}")).unwrap(),
            camera: CameraId::parse(&format!("cam-{camera}")).unwrap(),
            frame: by_hash.map_or(FrameRef::Latest, FrameRef::ByHash),
            variant: Variant::FULL,
        }
    }

    fn frame(n: u32, size: usize) -> Arc<StoredFrame> {
        let body = Bytes::from(vec![n as u8; size]);
        Arc::new(StoredFrame::new(
            ContentHash::of(&n.to_le_bytes()),
            n.into(),
            0,
            body,
        ))
    }

    /// The gauges agree with what the index holds: entries, and each distinct body once.
    fn check_gauges(store: &Store) {
        let mut bodies = std::collections::HashMap::new();
        for e in store.map.iter() {
            bodies.insert(Arc::as_ptr(&e.value().frame), e.value().frame.body.len());
        }
        assert_eq!(store.entries.get(), store.map.len() as i64);
        assert_eq!(
            store.stored_bytes.get(),
            bodies.values().sum::<usize>() as i64
        );
    }

    #[test]
    fn entries_replaced_in_place_leave_no_slots_behind() {
        let store = store(1 << 30);
        // A camera whose frame never changes: the same keys replaced over and over, so the
        // budget is never reached and nothing is evicted.
        for round in 0..20_000u32 {
            let f = frame(round % 3, 10);
            for id in [identity(1, 1, None), identity(1, 1, Some(f.hash))] {
                let key = store.key(&id);
                assert!(store.insert(
                    key,
                    Entry::new(id, Arc::clone(&f), Instant::now(), Duration::ZERO)
                ));
            }
        }
        assert!(
            store.slots() <= 2 * store.map.len() + 2 * 1024 + 4,
            "{} slots",
            store.slots()
        );
        check_gauges(&store);
    }

    #[test]
    fn an_entry_larger_than_the_budget_is_not_kept() {
        let store = store(1000);
        let id = identity(1, 1, None);
        let key = store.key(&id);
        assert!(!store.insert(
            key,
            Entry::new(id, frame(1, 2000), Instant::now(), Duration::ZERO)
        ));
        assert!(store.get(&key).is_none());
        check_gauges(&store);
    }

    proptest! {
        /// Inserts, replacements, removals and purges in any order keep the gauges exact and
        /// the weighted bytes within the budget.
        #[test]
        fn gauges_stay_exact(ops in proptest::collection::vec((0u8..4, 0u8..3, 0u8..3, 0u32..6, 1usize..30_000), 1..120)) {
            let budget = 60_000;
            let store = store(budget);
            for (op, owner, camera, n, size) in ops {
                let f = frame(n, size);
                let id = identity(owner, camera, (n % 2 == 0).then_some(f.hash));
                let key = store.key(&id);
                match op {
                    0 | 1 => {
                        store.insert(key, Entry::new(id, f, Instant::now(), Duration::from_secs(1)));
                    }
                    2 => {
                        if let Some(e) = store.get(&key) {
                            store.remove_if_same(&key, &e);
                        }
                    }
                    _ => {
                        store.purge(|i| i.owner == id.owner);
                    }
                }
                check_gauges(&store);
                prop_assert!(store.usage().1 <= budget);
            }
        }
    }
}
