//! Renditions: their names, interned, and the catalogue a proxy serves.
//!
//! A [`Variant`] is a one-byte handle on a rendition name, so that a cache entry can carry its
//! rendition in a byte and a metric label needs no allocation. Names are interned once, from
//! the configuration, never from a request: a hub asking for `variant=anything` is looked up in
//! the [`Catalogue`] and refused there, so hubs cannot grow the table.

use std::sync::{Mutex, OnceLock};

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
