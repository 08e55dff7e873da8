//! Identity newtypes: who owns a frame, which camera took it, which bytes it is.
//!
//! A bare `String` owner is how mix-ups happen, so every identity crosses module boundaries as
//! one of these types, and each can only be built through a parser that enforces SPEC's grammar.

use std::fmt;
use std::sync::Arc;

use thiserror::Error;

/// Longest owner id SPEC allows (`sub` claim).
pub const OWNER_ID_MAX: usize = 128;
/// Longest camera id SPEC allows (`cams` entries and path segments).
pub const CAMERA_ID_MAX: usize = 64;

/// An identifier that does not follow SPEC's grammar.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdError {
    #[error("must be 1 to {max} characters of [A-Za-z0-9._-], got {len} characters")]
    Length { max: usize, len: usize },
    #[error("must be 1 to {max} characters of [A-Za-z0-9._-], found a character outside that set")]
    Charset { max: usize },
    #[error("must be 64 lowercase hex characters (blake3)")]
    Hash,
}

fn check_id(text: &str, max: usize) -> Result<(), IdError> {
    if text.is_empty() || text.len() > max {
        return Err(IdError::Length {
            max,
            len: text.chars().count(),
        });
    }
    let ok = text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(IdError::Charset { max })
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Parses an id, enforcing SPEC's grammar.
            pub fn parse(text: &str) -> Result<Self, IdError> {
                check_id(text, $max)?;
                Ok(Self(Arc::from(text)))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }
    };
}

id_type!(
    /// The owner a request is made for. Comes only from a verified hub token.
    OwnerId,
    OWNER_ID_MAX
);
id_type!(
    /// A camera, as named in tokens, paths and the origin protocol.
    CameraId,
    CAMERA_ID_MAX
);

/// The content address of a frame: blake3 of its exact bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    /// Hashes a body.
    pub fn of(body: &[u8]) -> Self {
        Self(*blake3::hash(body).as_bytes())
    }

    /// Parses 64 lowercase hex characters. Uppercase is refused so that one frame has exactly
    /// one address.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        if text.len() != 64
            || !text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(IdError::Hash);
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| IdError::Hash)?;
        Ok(Self(bytes))
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, as used in paths, ETags and signatures.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }

    /// The same hex on the stack (blake3's encoder), for the hit path.
    pub fn hex(&self) -> impl std::ops::Deref<Target = str> {
        blake3::Hash::from_bytes(self.0).to_hex()
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_grammar() {
        assert!(OwnerId::parse("owner-1").is_ok());
        assert!(OwnerId::parse("a.b_c-D9").is_ok());
        assert!(OwnerId::parse(&"o".repeat(128)).is_ok());
        assert_eq!(
            OwnerId::parse(&"o".repeat(129)),
            Err(IdError::Length { max: 128, len: 129 })
        );
        assert!(OwnerId::parse("").is_err());
        for bad in ["a/b", "a b", "a%2f", "ä", "a\0", "a:b", "a;b"] {
            assert!(OwnerId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn camera_grammar() {
        assert!(CameraId::parse(&"c".repeat(64)).is_ok());
        assert!(CameraId::parse(&"c".repeat(65)).is_err());
    }

    #[test]
    fn hash_round_trip_and_strictness() {
        let h = ContentHash::of(b"frame");
        assert_eq!(ContentHash::parse(&h.to_hex()), Ok(h));
        assert_eq!(h.to_hex(), blake3::hash(b"frame").to_hex().as_str());
        assert!(ContentHash::parse(&h.to_hex().to_uppercase()).is_err());
        assert!(ContentHash::parse(&h.to_hex()[..63]).is_err());
        assert!(ContentHash::parse(&"g".repeat(64)).is_err());
    }
}
