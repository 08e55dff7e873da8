//! Renditions: smaller JPEGs of a verified frame for hubs on slow links, in one place.
//!
//! A request's rendition goes through four steps, one module each:
//!
//! 1. **choose** ([`choose`]): the rendition `variant=` asked for, `full` for a content
//!    address, or the proxy's choice from the hub's hints or its measured link.
//! 2. **render** ([`render`]): decode, resize and re-encode, on a bounded pool of blocking
//!    threads.
//! 3. **cache** ([`cache`]): a rendition is kept in the owner's scope under the address of the
//!    frame it was made from, found by the same identity-checked lookup as frames, and made once
//!    however many hubs ask at the same time.
//! 4. **fallback** ([`serve`]): when the proxy chose the rendition itself and it cannot be made
//!    (the pool is busy, the frame does not decode), the full frame instead.
//!
//! This file names renditions: a [`Variant`] is a one-byte handle on a rendition name, so that
//! a cache entry can carry its rendition in a byte and a metric label needs no allocation.
//! Names are interned once, from the configuration, never from a request: a hub asking for
//! `variant=anything` is looked up in the [`Catalogue`] and refused there, so hubs cannot grow
//! the table.

pub mod cache;
pub mod choose;
pub mod render;

use std::sync::{Arc, Mutex, OnceLock};

use thiserror::Error;

use crate::cache::{FrameCache, Served};
use crate::origin::OriginError;
use crate::request::FrameRequest;
use choose::Reason;

/// Renditions a process can name (the configuration allows far fewer per proxy).
const CAPACITY: usize = 256;

static NAMES: [OnceLock<&'static str>; CAPACITY] = [const { OnceLock::new() }; CAPACITY];
static INTERNING: Mutex<()> = Mutex::new(());

/// A rendition name, interned.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Variant(u8);

impl Variant {
    /// The verified frame as the origin sent it.
    pub const FULL: Variant = Variant(0);

    /// The handle of `name`, interning it if it is new; `None` once the table is full.
    pub fn intern(name: &str) -> Option<Variant> {
        if name == "full" {
            return Some(Variant::FULL);
        }
        let _guard = INTERNING.lock().unwrap_or_else(|e| e.into_inner());
        for (i, slot) in NAMES.iter().enumerate().skip(1) {
            match slot.get() {
                Some(known) if *known == name => return Some(Variant(i as u8)),
                Some(_) => {}
                None => {
                    // Leaked once per distinct name per process: the table is bounded.
                    let _ = slot.set(Box::leak(name.to_owned().into_boxed_str()));
                    return Some(Variant(i as u8));
                }
            }
        }
        None
    }

    /// The byte an entry stores.
    pub fn index(self) -> u8 {
        self.0
    }

    /// The variant stored as `index`, if that index was ever handed out.
    pub fn from_index(index: u8) -> Option<Variant> {
        (index == 0 || NAMES[index as usize].get().is_some()).then_some(Variant(index))
    }

    pub fn as_str(self) -> &'static str {
        match self.0 {
            0 => "full",
            i => NAMES[i as usize]
                .get()
                .copied()
                .expect("invariant: a Variant is only made for an interned name"),
        }
    }

    pub fn is_full(self) -> bool {
        self == Variant::FULL
    }
}

impl std::fmt::Debug for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rendition a proxy serves: at most `max_width` pixels wide, re-encoded at `quality`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rendition {
    pub variant: Variant,
    /// 0 for `full`: the original, never re-encoded.
    pub max_width: u32,
    pub quality: u8,
}

impl Rendition {
    pub const FULL: Rendition = Rendition {
        variant: Variant::FULL,
        max_width: 0,
        quality: 0,
    };
}

/// The renditions a proxy serves, smallest first, `full` last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalogue {
    renditions: Vec<Rendition>,
}

/// JPEG quality of a rendition unless configured: libjpeg's own default. The `medium` of a
/// 1280×720 camera frame is 16.4 KB at 75 against 19.5 KB at 80.
pub const DEFAULT_QUALITY: u8 = 75;

/// Built in, without configuration: `medium` ≤ 640 px wide, `thumb` ≤ 320 px wide.
pub const BUILT_IN: [(&str, u32, u8); 2] = [
    ("medium", 640, DEFAULT_QUALITY),
    ("thumb", 320, DEFAULT_QUALITY),
];

impl Catalogue {
    /// The catalogue of `full` plus `renditions` (distinct names, none of them `full`).
    pub fn new(renditions: impl IntoIterator<Item = Rendition>) -> Catalogue {
        let mut renditions: Vec<Rendition> = renditions
            .into_iter()
            .filter(|r| !r.variant.is_full())
            .collect();
        renditions.sort_by_key(|r| (r.max_width, r.quality, r.variant.as_str()));
        renditions.push(Rendition::FULL);
        Catalogue { renditions }
    }

    /// `full`, `medium` and `thumb`.
    pub fn built_in() -> Catalogue {
        Catalogue::new(BUILT_IN.iter().map(|(name, max_width, quality)| Rendition {
            variant: Variant::intern(name).expect("invariant: built-in names fit the table"),
            max_width: *max_width,
            quality: *quality,
        }))
    }

    /// The rendition called `name`.
    pub fn find(&self, name: &str) -> Option<Rendition> {
        self.renditions
            .iter()
            .find(|r| r.variant.as_str() == name)
            .copied()
    }

    /// Smallest first, `full` last.
    pub fn all(&self) -> &[Rendition] {
        &self.renditions
    }

    pub fn smallest(&self) -> Rendition {
        self.renditions[0]
    }
}

/// Which rendition a response carries, and why.
#[derive(Debug, Clone, Copy)]
pub struct Chosen {
    pub rendition: Rendition,
    pub reason: Reason,
}

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

/// How a rendition was had: the `result` label of `framecache_renditions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    /// Found in the cache.
    Hit,
    /// Rendered for this request.
    Rendered,
    /// Another request's rendering answered this one.
    Coalesced,
    /// The frame could not be rendered.
    Failed,
    /// The pool was full.
    Busy,
}

impl Made {
    pub const ALL: [Made; 5] = [
        Made::Hit,
        Made::Rendered,
        Made::Coalesced,
        Made::Failed,
        Made::Busy,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Made::Hit => "hit",
            Made::Rendered => "rendered",
            Made::Coalesced => "coalesced",
            Made::Failed => "failed",
            Made::Busy => "busy",
        }
    }
}

/// `chosen` of `source`, a frame the cache served for `req`; when the proxy chose the rendition
/// itself and it cannot be made (the pool is busy, the frame does not decode), the source frame
/// instead: a hub that asked for nothing in particular gets a frame rather than an error.
pub async fn serve(
    cache: &Arc<FrameCache>,
    req: &FrameRequest,
    source: Served,
    chosen: Chosen,
) -> Result<(Served, Chosen), RenditionError> {
    let fallback = (chosen.reason != Reason::Requested).then(|| source.clone());
    match cache
        .rendition(&req.owner, &req.camera, source, chosen.rendition)
        .await
    {
        Ok(served) => Ok((served, chosen)),
        Err(error) => match fallback {
            Some(source) => {
                tracing::debug!(%error, "chosen rendition not available: full frame instead");
                let full = Chosen {
                    rendition: Rendition::FULL,
                    ..chosen
                };
                Ok((source, full))
            }
            None => Err(error),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable() {
        let a = Variant::intern("interning-test").unwrap();
        assert_eq!(Variant::intern("interning-test"), Some(a));
        assert_eq!(a.as_str(), "interning-test");
        assert_eq!(Variant::from_index(a.index()), Some(a));
        assert_eq!(Variant::intern("full"), Some(Variant::FULL));
        assert_ne!(Variant::intern("interning-other"), Some(a));
    }

    #[test]
    fn built_in_catalogue_is_ordered_smallest_first() {
        let c = Catalogue::built_in();
        let names: Vec<_> = c.all().iter().map(|r| r.variant.as_str()).collect();
        assert_eq!(names, ["thumb", "medium", "full"]);
        assert_eq!(c.smallest().variant.as_str(), "thumb");
        assert_eq!(c.find("medium").unwrap().max_width, 640);
        assert!(c.find("huge").is_none());
    }
}
