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
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use prometheus::{IntCounter, IntGauge};

use super::key::{Identity, KeyDigest};
use crate::identity::{CameraId, ContentHash, OwnerId};

/// Bytes charged per entry beyond its body: the entry, the map slot, the queue slot and the
/// frame record, as `cargo bench --bench index` measures them (as malloc chunks), rounded up.
pub const ENTRY_OVERHEAD: usize = 512;

/// A hit bumps an entry's frequency up to this.
const MAX_FREQ: u8 = 3;

/// A verified frame as the cache holds it: one allocation of the body, shared by every entry
/// and response that uses it.
#[derive(Debug)]
pub struct StoredFrame {
    pub owner: OwnerId,
    pub camera: CameraId,
    pub hash: ContentHash,
    pub seq: u64,
    pub captured_at_ms: u64,
    pub body: Bytes,
    /// Entries of the index that hold this frame; its body counts in `stored_bytes` while
    /// there is at least one.
    holders: AtomicUsize,
}

impl StoredFrame {
    pub fn new(
        owner: OwnerId,
        camera: CameraId,
        hash: ContentHash,
        seq: u64,
        captured_at_ms: u64,
        body: Bytes,
    ) -> StoredFrame {
        StoredFrame {
            owner,
            camera,
            hash,
            seq,
            captured_at_ms,
            body,
            holders: AtomicUsize::new(0),
        }
    }
}

/// Which queue an entry is in.
const IN_NONE: u8 = 0;
const IN_SMALL: u8 = 1;
const IN_MAIN: u8 = 2;

/// One cache entry.
#[derive(Debug)]
pub struct Entry {
    /// The identity the entry was stored under; compared in full on every hit.
    pub identity: Identity,
    pub frame: Arc<StoredFrame>,
    pub stored_at: Instant,
    /// How long the entry is fresh (latest frames); by-hash entries are immutable.
    pub fresh_for: Duration,
    /// Hits since it entered its queue, capped at [`MAX_FREQ`].
    freq: AtomicU8,
    /// `IN_SMALL`, `IN_MAIN`, or `IN_NONE` once it left the index (changed under the lock).
    queue: AtomicU8,
}

impl Entry {
    pub fn new(
        identity: Identity,
        frame: Arc<StoredFrame>,
        stored_at: Instant,
        fresh_for: Duration,
    ) -> Entry {
        Entry {
            identity,
            frame,
            stored_at,
            fresh_for,
            freq: AtomicU8::new(0),
            queue: AtomicU8::new(IN_NONE),
        }
    }

    pub fn age(&self) -> Duration {
        self.stored_at.elapsed()
    }

    /// Bytes charged against the budget.
    pub fn weight(&self) -> u64 {
        (self.frame.body.len() + ENTRY_OVERHEAD) as u64
    }
}

/// The S3-FIFO queues. Queue slots are weak: an entry removed from the index is dropped at
/// once, and its slot is skipped when it reaches the front.
#[derive(Default)]
struct Queues {
    small: VecDeque<(KeyDigest, Weak<Entry>)>,
    main: VecDeque<(KeyDigest, Weak<Entry>)>,
    ghost: VecDeque<KeyDigest>,
    ghost_set: HashSet<KeyDigest>,
    small_bytes: u64,
    main_bytes: u64,
}

impl Queues {
    fn total(&self) -> u64 {
        self.small_bytes + self.main_bytes
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
    map: DashMap<KeyDigest, Arc<Entry>>,
    queues: Mutex<Queues>,
    max_bytes: u64,
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
            map: DashMap::new(),
            queues: Mutex::new(Queues::default()),
            max_bytes,
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
    /// within budget again. An entry larger than the whole budget is not kept.
    pub fn insert(&self, key: KeyDigest, entry: Entry) {
        let entry = Arc::new(entry);
        let weight = entry.weight();
        let mut q = self.lock();
        if weight > self.max_bytes {
            return;
        }
        if let Some(old) = self.map.insert(key, Arc::clone(&entry)) {
            self.forget(&mut q, &old);
        }
        let frame = &entry.frame;
        if frame.holders.fetch_add(1, Ordering::AcqRel) == 0 {
            self.stored_bytes.add(frame.body.len() as i64);
        }
        self.entries.inc();
        if q.ghost_set.remove(&key) {
            entry.queue.store(IN_MAIN, Ordering::Relaxed);
            q.main.push_back((key, Arc::downgrade(&entry)));
            q.main_bytes += weight;
        } else {
            entry.queue.store(IN_SMALL, Ordering::Relaxed);
            q.small.push_back((key, Arc::downgrade(&entry)));
            q.small_bytes += weight;
        }
        while q.total() > self.max_bytes {
            if !self.evict_one(&mut q) {
                break;
            }
        }
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
        loop {
            let from_small = q.small_bytes > self.max_bytes / 10 || q.main.is_empty();
            let slot = if from_small {
                q.small.pop_front()
            } else {
                q.main.pop_front()
            };
            let Some((key, weak)) = slot else {
                return false;
            };
            let Some(entry) = weak.upgrade() else {
                continue;
            };
            let queue = entry.queue.load(Ordering::Relaxed);
            if queue == IN_NONE {
                continue;
            }
            let weight = entry.weight();
            let freq = entry.freq.load(Ordering::Relaxed);
            if queue == IN_SMALL && freq > 1 {
                // Asked for again while new: promote.
                q.small_bytes -= weight;
                q.main_bytes += weight;
                entry.freq.store(0, Ordering::Relaxed);
                entry.queue.store(IN_MAIN, Ordering::Relaxed);
                q.main.push_back((key, weak));
                continue;
            }
            if queue == IN_MAIN && freq > 0 {
                // Still in use: another round in main.
                entry.freq.store(freq - 1, Ordering::Relaxed);
                q.main.push_back((key, weak));
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
        }
    }

    /// Removes every entry whose identity matches; returns how many.
    pub fn purge(&self, matches: impl Fn(&Identity) -> bool) -> usize {
        let mut q = self.lock();
        let doomed: Vec<(KeyDigest, Arc<Entry>)> = self
            .map
            .iter()
            .filter(|e| matches(&e.value().identity))
            .map(|e| (*e.key(), Arc::clone(e.value())))
            .collect();
        let mut purged = 0;
        for (key, entry) in doomed {
            if let Some((_, removed)) = self.map.remove_if(&key, |_, e| Arc::ptr_eq(e, &entry)) {
                self.forget(&mut q, &removed);
                purged += 1;
            }
        }
        purged
    }

    /// Entries and weighted bytes.
    pub fn usage(&self) -> (u64, u64) {
        let q = self.lock();
        (self.map.len() as u64, q.total())
    }
}
