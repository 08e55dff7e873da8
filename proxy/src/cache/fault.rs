//! Test-only faults in the cache's own machinery, behind the `fault-injection` feature, which
//! release builds never enable: shortened digests that collide, and a corrupted index that
//! files one owner's entry under another owner's key. They exist to prove that the identity
//! check on every hit catches both.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::key::{Identity, KeyDigest};
use super::store::Entry;
use super::FrameCache;

/// Fault settings of one cache.
#[derive(Debug)]
pub struct Faults {
    /// Digest bytes kept (32: all of them).
    digest_bytes: AtomicUsize,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            digest_bytes: AtomicUsize::new(32),
        }
    }
}

impl Faults {
    pub fn truncate(&self, key: &mut KeyDigest) {
        let keep = self.digest_bytes.load(Ordering::Relaxed).min(32);
        key.0[keep..].fill(0);
    }
}

impl FrameCache {
    /// Keeps only the first `bytes` of every key digest from now on: 0 makes every key equal,
    /// 32 restores full digests.
    pub fn truncate_digests(&self, bytes: usize) {
        self.store
            .faults
            .digest_bytes
            .store(bytes, Ordering::Relaxed);
    }

    /// Files the entry stored under `from` again under the key of `to`, as a corrupted index
    /// would. Returns false when `from` has no entry.
    pub fn corrupt_index(&self, from: &Identity, to: &Identity) -> bool {
        let Some(entry) = self.store.get(&self.store.key(from)) else {
            return false;
        };
        let copy = Entry::new(
            entry.identity(),
            Arc::clone(&entry.frame),
            entry.stored_at(),
            entry.fresh_for(),
        );
        self.store.insert(self.store.key(to), copy);
        true
    }
}
