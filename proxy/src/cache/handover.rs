//! The cache across a binary upgrade: the running instance hands its entries to the new one,
//! so an upgrade is not a cold start against the camera backends.
//!
//! The old instance listens on `server.upgrade_sock` + `.cache` for as long as it runs
//! ([`crate::upgrade`]: each end speaks only to a process of the proxy's own user). The new one,
//! once it holds the listening sockets, asks it for a snapshot: every entry's identity, age and
//! freshness, and each body once (a latest and a by-hash entry share theirs). A body is kept only
//! if its blake3 is still the hash it was stored under (and, for a frame as the origin sent it,
//! its by-hash address); no body longer than `origin.max_frame_bytes`, and no more than the
//! cache's budget, is read; entries of renditions the new configuration does not serve are
//! dropped. What does not check out is dropped, never served, and counted. The owners and
//! cameras are the old instance's word: the frames' signatures are not kept with them.
//!
//! Wire format: a 4-byte big-endian length and the JSON index, then the bodies' bytes in the
//! order the index lists them. Bodies are copied (a 256 MiB cache crosses a local socket in a
//! fraction of a second).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::key::Identity;
use super::store::{Entry, StoredFrame};
use super::FrameCache;
use crate::identity::{CameraId, ContentHash, OwnerId};
use crate::rendition::Catalogue;
use crate::request::FrameRef;

/// Largest index accepted (bytes of JSON): far above what a full cache of small entries needs.
const MAX_INDEX: usize = 256 << 20;

/// The index of a handed-over cache.
#[derive(Debug, Serialize, Deserialize)]
struct Snapshot {
    /// When the ages were read, ms since the epoch: the time the handover took is added to
    /// them, so no entry arrives younger than it is.
    taken_at_ms: u64,
    bodies: Vec<Body>,
    entries: Vec<Record>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Body {
    /// blake3 of the bytes, hex.
    hash: String,
    /// For a rendition, the hash of its source frame, hex.
    source: Option<String>,
    seq: u64,
    captured_at_ms: u64,
    /// The origin's signature of a frame (not of a rendition), hex.
    #[serde(default)]
    signature: Option<String>,
    len: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    owner: String,
    camera: String,
    /// `None` for the latest frame, else the frame's content address, hex.
    by_hash: Option<String>,
    variant: String,
    /// Index into `bodies`.
    body: usize,
    age_ms: u64,
    /// `None` for an entry that never goes stale.
    fresh_ms: Option<u64>,
}

/// What taking a snapshot over did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TakenOver {
    pub entries: usize,
    pub dropped: usize,
}

impl FrameCache {
    /// Writes every entry of the cache to `out`.
    pub fn hand_over(&self, out: &mut impl Write) -> io::Result<usize> {
        let mut bodies: Vec<Arc<StoredFrame>> = Vec::new();
        let mut ids: HashMap<*const StoredFrame, usize> = HashMap::new();
        let mut entries = Vec::new();
        for entry in self.store.entries() {
            let id = *ids.entry(Arc::as_ptr(&entry.frame)).or_insert_with(|| {
                bodies.push(Arc::clone(&entry.frame));
                bodies.len() - 1
            });
            entries.push(record(&entry, id));
        }
        let snapshot = Snapshot {
            taken_at_ms: unix_ms(),
            bodies: bodies.iter().map(|f| body(f)).collect(),
            entries,
        };
        let index = serde_json::to_vec(&snapshot).map_err(io::Error::other)?;
        out.write_all(&(index.len() as u32).to_be_bytes())?;
        out.write_all(&index)?;
        for frame in &bodies {
            out.write_all(&frame.body)?;
        }
        out.flush()?;
        Ok(snapshot.entries.len())
    }

    /// Takes over the entries `input` holds, those that check out; renditions only those
    /// `catalogue` (the configuration now) serves.
    pub fn take_over(
        &self,
        input: &mut impl Read,
        catalogue: &Catalogue,
        max_body: usize,
    ) -> io::Result<TakenOver> {
        let mut len = [0u8; 4];
        input.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_INDEX {
            return Err(io::Error::other("handover index too large"));
        }
        let mut index = vec![0u8; len];
        input.read_exact(&mut index)?;
        let snapshot: Snapshot = serde_json::from_slice(&index).map_err(io::Error::other)?;
        let budget = self.config().max_bytes;
        let total: u64 = snapshot.bodies.iter().map(|b| b.len as u64).sum();
        if total > budget || snapshot.bodies.iter().any(|b| b.len > max_body) {
            return Err(io::Error::other(
                "handover bodies larger than this cache takes",
            ));
        }
        let mut frames: Vec<Option<Arc<StoredFrame>>> = Vec::with_capacity(snapshot.bodies.len());
        for body in &snapshot.bodies {
            let mut bytes = vec![0u8; body.len];
            input.read_exact(&mut bytes)?;
            frames.push(verified(body, Bytes::from(bytes)).map(Arc::new));
        }
        let mut taken = TakenOver::default();
        // On the way since the ages were read (one host, one clock).
        let on_the_way = Duration::from_millis(unix_ms().saturating_sub(snapshot.taken_at_ms));
        let now = Instant::now()
            .checked_sub(on_the_way)
            .unwrap_or_else(Instant::now);
        for record in snapshot.entries {
            let kept = frames
                .get(record.body)
                .and_then(Option::as_ref)
                .and_then(|frame| self.restore(&record, frame, catalogue, now))
                .is_some();
            if kept {
                taken.entries += 1;
            } else {
                taken.dropped += 1;
            }
        }
        self.metrics.record_handover(taken.entries, taken.dropped);
        Ok(taken)
    }

    /// Stores one handed-over entry if it checks out against its frame.
    fn restore(
        &self,
        record: &Record,
        frame: &Arc<StoredFrame>,
        catalogue: &Catalogue,
        now: Instant,
    ) -> Option<()> {
        let identity = Identity {
            owner: OwnerId::parse(&record.owner).ok()?,
            camera: CameraId::parse(&record.camera).ok()?,
            frame: match &record.by_hash {
                None => FrameRef::Latest,
                Some(hex) => FrameRef::ByHash(ContentHash::parse(hex).ok()?),
            },
            variant: catalogue.find(&record.variant)?.variant,
        };
        // A by-hash entry holds the frame at its address; a rendition is never a latest entry.
        match identity.frame {
            FrameRef::ByHash(address) if address != frame.address() => return None,
            FrameRef::Latest if frame.is_rendition() || !identity.variant.is_full() => return None,
            _ => {}
        }
        if frame.is_rendition() == identity.variant.is_full() {
            return None;
        }
        let stored_at = now.checked_sub(Duration::from_millis(record.age_ms))?;
        let fresh_for = record.fresh_ms.map_or(Duration::MAX, Duration::from_millis);
        let key = self.store.key(&identity);
        let entry = Entry::new(identity, Arc::clone(frame), stored_at, fresh_for);
        self.store.insert(key, entry).then_some(())
    }
}

fn record(entry: &Entry, body: usize) -> Record {
    let identity = entry.identity();
    let fresh = entry.fresh_for();
    Record {
        owner: identity.owner.as_str().to_string(),
        camera: identity.camera.as_str().to_string(),
        by_hash: match identity.frame {
            FrameRef::Latest => None,
            FrameRef::ByHash(hash) => Some(hash.to_hex()),
        },
        variant: identity.variant.as_str().to_string(),
        body,
        age_ms: entry.age().as_millis() as u64,
        fresh_ms: (fresh != Duration::MAX).then_some(fresh.as_millis() as u64),
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn body(frame: &StoredFrame) -> Body {
    Body {
        hash: frame.hash.to_hex(),
        source: frame.is_rendition().then(|| frame.address().to_hex()),
        seq: frame.seq,
        captured_at_ms: frame.captured_at_ms,
        signature: frame.signature.map(|s| s.to_hex().to_string()),
        len: frame.body.len(),
    }
}

/// The frame of `body` if its bytes still hash to the hash it was stored under.
fn verified(body: &Body, bytes: Bytes) -> Option<StoredFrame> {
    let hash = ContentHash::parse(&body.hash).ok()?;
    if ContentHash::of(&bytes) != hash {
        return None;
    }
    match &body.source {
        None => {
            let frame = StoredFrame::new(hash, body.seq, body.captured_at_ms, bytes);
            let signature = body.signature.as_deref().map(blake3::Hash::from_hex);
            Some(match signature {
                Some(Ok(signature)) => frame.signed(signature),
                _ => frame,
            })
        }
        Some(source) => {
            // The source frame stands in by its address, seq and capture time only.
            let source = ContentHash::parse(source).ok()?;
            let of = StoredFrame::new(source, body.seq, body.captured_at_ms, Bytes::new());
            Some(StoredFrame::rendition(&of, hash, bytes))
        }
    }
}
