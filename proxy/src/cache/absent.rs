//! Frames the origin said it does not have: an origin 404 for a frame by hash, remembered per
//! owner for `limits.not_found_ttl_ms`, so that a hub asking again and again for a hash that
//! does not exist costs the camera backend one request, not one per ask.
//!
//! Keyed like cache entries, by the digest of the full identity, and the identity is compared
//! on every look-up as it is for entries: one owner's 404 is never another's. At most
//! [`MAX_ENTRIES`] are kept; past it expired ones are swept (at most once a second) and, while
//! none has expired, new ones are not remembered. Each one costs its owner an origin request
//! from their budget, so no owner can fill it quickly.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::key::{Identity, KeyDigest};

/// Absent frames remembered at most.
pub const MAX_ENTRIES: usize = 65_536;

/// Frames by hash the origin does not have, per owner.
pub struct NotFound {
    ttl: Duration,
    entries: DashMap<KeyDigest, (Identity, Instant)>,
    last_sweep: Mutex<Option<Instant>>,
}

impl NotFound {
    /// Remembers each 404 for `ttl` (zero: never).
    pub fn new(ttl: Duration) -> NotFound {
        NotFound {
            ttl,
            entries: DashMap::new(),
            last_sweep: Mutex::new(None),
        }
    }

    /// Whether the origin said, less than the TTL ago, that it has no frame of `identity`.
    pub fn remembers(&self, key: &KeyDigest, identity: &Identity) -> bool {
        self.entries
            .get(key)
            .is_some_and(|e| e.0 == *identity && e.1.elapsed() < self.ttl)
    }

    /// Remembers that the origin has no frame of `identity`.
    pub fn remember(&self, key: KeyDigest, identity: Identity) {
        if self.ttl.is_zero() {
            return;
        }
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(&key) {
            self.sweep();
            if self.entries.len() >= MAX_ENTRIES {
                return;
            }
        }
        self.entries.insert(key, (identity, Instant::now()));
    }

    /// Forgets the entries whose identity matches (a purge).
    pub fn forget(&self, matches: impl Fn(&Identity) -> bool) {
        self.entries.retain(|_, (identity, _)| !matches(identity));
    }

    /// Drops the expired entries, at most once a second.
    fn sweep(&self) {
        let mut last = self.last_sweep.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
            return;
        }
        *last = Some(Instant::now());
        self.entries.retain(|_, (_, at)| at.elapsed() < self.ttl);
    }

    /// Absent frames remembered now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{CameraId, ContentHash, OwnerId};
    use crate::rendition::Variant;
    use crate::request::FrameRef;

    fn absent(owner: &str) -> Identity {
        Identity {
            owner: OwnerId::parse(owner).unwrap(),
            camera: CameraId::parse("cam-1").unwrap(),
            frame: FrameRef::ByHash(ContentHash::of(b"gone")),
            variant: Variant::FULL,
        }
    }

    #[test]
    fn a_404_is_remembered_for_its_owner_only_and_expires() {
        let memory = NotFound::new(Duration::from_millis(50));
        let (alice, bob) = (absent("alice"), absent("bob"));
        memory.remember(alice.digest(), alice.clone());
        assert!(memory.remembers(&alice.digest(), &alice));
        assert!(!memory.remembers(&bob.digest(), &bob));
        // Found under alice's digest, but of another identity: not remembered for bob.
        assert!(!memory.remembers(&alice.digest(), &bob));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!memory.remembers(&alice.digest(), &alice));
    }

    #[test]
    fn a_zero_ttl_remembers_nothing_and_purges_forget() {
        let never = NotFound::new(Duration::ZERO);
        let alice = absent("alice");
        never.remember(alice.digest(), alice.clone());
        assert!(never.is_empty());
        let memory = NotFound::new(Duration::from_secs(60));
        memory.remember(alice.digest(), alice.clone());
        memory.forget(|i| i.owner.as_str() == "alice");
        assert_eq!(memory.len(), 0);
    }
}
