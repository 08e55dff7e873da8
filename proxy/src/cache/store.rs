//! The index and the bodies: a concurrent, size-bounded map from key digest to entry.
//!
//! moka (TinyLFU admission, LRU eviction, weighted by bytes) is the index and the eviction
//! policy: a frame scanned once cannot push out frames hubs keep asking for. Each entry holds
//! the full identity it was stored under; the digest only finds it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::notification::RemovalCause;
use moka::ops::compute::Op;
use prometheus::{IntCounter, IntGauge};

use super::key::{Identity, KeyDigest};
use crate::identity::{CameraId, ContentHash, OwnerId};

/// Bytes charged per entry beyond its body: the entry, the frame record, moka's node and
/// frequency sketch share, rounded up.
pub const ENTRY_OVERHEAD: usize = 512;

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
    stored_bytes: IntGauge,
}

impl StoredFrame {
    /// Accounts the body in `stored_bytes` for as long as the cache holds the frame.
    pub fn new(
        owner: OwnerId,
        camera: CameraId,
        hash: ContentHash,
        seq: u64,
        captured_at_ms: u64,
        body: Bytes,
        stored_bytes: IntGauge,
    ) -> StoredFrame {
        stored_bytes.add(body.len() as i64);
        StoredFrame {
            owner,
            camera,
            hash,
            seq,
            captured_at_ms,
            body,
            stored_bytes,
        }
    }
}

impl Drop for StoredFrame {
    fn drop(&mut self) {
        self.stored_bytes.sub(self.body.len() as i64);
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
    #[cfg(feature = "fault-injection")]
    pub(super) faults: super::fault::Faults,
}

impl Store {
    pub fn new(max_bytes: u64, entries: IntGauge, evictions: IntCounter) -> Store {
        let listener_entries = entries.clone();
        let map = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &KeyDigest, entry: &Arc<Entry>| {
                (entry.frame.body.len() + ENTRY_OVERHEAD).min(u32::MAX as usize) as u32
            })
            .eviction_listener(move |_key, _entry, cause| {
                listener_entries.dec();
                if cause == RemovalCause::Size {
                    evictions.inc();
                }
            })
            .build();
        Store {
            map,
            entries,
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
