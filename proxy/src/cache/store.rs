//! The index and the bodies: a concurrent, size-bounded map from key digest to entry.
//!
//! moka (TinyLFU admission, LRU eviction, weighted by bytes) is the index and the eviction
//! policy: a frame scanned once cannot push out frames hubs keep asking for. Each entry holds
//! the full identity it was stored under; the digest only finds it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::notification::RemovalCause;
use moka::ops::compute::Op;
use prometheus::{IntCounter, IntGauge};

use super::key::{Identity, KeyDigest};
use crate::identity::{CameraId, ContentHash, OwnerId};

/// Bytes charged per entry beyond its body: the entry, the frame record and moka's own
/// structures. `cargo bench --bench index` measures about 745 bytes as malloc chunks; rounded up.
pub const ENTRY_OVERHEAD: usize = 768;

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

/// One cache entry.
#[derive(Debug)]
pub struct Entry {
    /// The identity the entry was stored under; compared in full on every hit.
    pub identity: Identity,
    pub frame: Arc<StoredFrame>,
    pub stored_at: Instant,
    /// How long the entry is fresh (latest frames); by-hash entries are immutable.
    pub fresh_for: Duration,
}

impl Entry {
    pub fn age(&self) -> Duration {
        self.stored_at.elapsed()
    }
}

/// The size-bounded index.
pub struct Store {
    map: moka::sync::Cache<KeyDigest, Arc<Entry>>,
    entries: IntGauge,
    stored_bytes: IntGauge,
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
        let listener_entries = entries.clone();
        let listener_bytes = stored_bytes.clone();
        let map = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &KeyDigest, entry: &Arc<Entry>| {
                (entry.frame.body.len() + ENTRY_OVERHEAD).min(u32::MAX as usize) as u32
            })
            .eviction_listener(move |_key, entry: Arc<Entry>, cause| {
                listener_entries.dec();
                let frame = &entry.frame;
                if frame.holders.fetch_sub(1, Ordering::AcqRel) == 1 {
                    listener_bytes.sub(frame.body.len() as i64);
                }
                if cause == RemovalCause::Size {
                    evictions.inc();
                }
            })
            .build();
        Store {
            map,
            entries,
            stored_bytes,
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

    pub fn get(&self, key: &KeyDigest) -> Option<Arc<Entry>> {
        self.map.get(key)
    }

    pub fn insert(&self, key: KeyDigest, entry: Entry) {
        self.entries.inc();
        let frame = &entry.frame;
        if frame.holders.fetch_add(1, Ordering::AcqRel) == 0 {
            self.stored_bytes.add(frame.body.len() as i64);
        }
        self.map.insert(key, Arc::new(entry));
        // Apply evictions now, so stored bytes never stay above the budget.
        self.map.run_pending_tasks();
    }

    /// Removes `key` if it still holds `entry` (not a newer one stored meanwhile).
    pub fn remove_if_same(&self, key: &KeyDigest, entry: &Arc<Entry>) {
        self.map
            .entry(*key)
            .and_compute_with(|current| match current {
                Some(current) if Arc::ptr_eq(current.value(), entry) => Op::Remove,
                _ => Op::Nop,
            });
    }

    /// Removes every entry whose identity matches; returns how many.
    pub fn purge(&self, matches: impl Fn(&Identity) -> bool) -> usize {
        let doomed: Vec<KeyDigest> = self
            .map
            .iter()
            .filter(|(_, entry)| matches(&entry.identity))
            .map(|(key, _)| *key)
            .collect();
        let mut purged = 0;
        for key in doomed {
            if self.map.remove(&key).is_some() {
                purged += 1;
            }
        }
        self.map.run_pending_tasks();
        purged
    }

    /// Entries and weighted bytes, after pending maintenance.
    pub fn usage(&self) -> (u64, u64) {
        self.map.run_pending_tasks();
        (self.map.entry_count(), self.map.weighted_size())
    }
}
