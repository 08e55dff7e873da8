//! Cache keys: the full identity of an entry, encoded without ambiguity, digested with blake3.
//!
//! Every field is length-prefixed, so no two distinct identities share encoded bytes (Pingora's
//! own `CacheKey` concatenates without a separator, and leaves `user_tag` out of the hash). The
//! digest only finds an entry; the identity stored beside it decides whether it may be served.

use crate::identity::{CameraId, ContentHash, OwnerId};
use crate::variant::Variant;

/// Which route an entry answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// The camera's latest frame.
    Latest,
    /// One frame by its content address.
    ByHash(ContentHash),
}

/// Everything that distinguishes one cache entry from another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub owner: OwnerId,
    pub camera: CameraId,
    pub route: Route,
    pub variant: Variant,
}

/// The lookup key: blake3 of the identity's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest(pub [u8; 32]);

/// Domain separation: a key of this version never equals any other blake3 input.
const TAG: &[u8] = b"framecache-cache-key-v1";

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

impl Identity {
    /// The unambiguous encoding: tag, then each field as a 4-byte big-endian length and its
    /// bytes; the route as a one-byte kind and, for by-hash, the 32-byte address.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TAG.len() + 64 + self.owner.as_str().len());
        field(&mut out, TAG);
        field(&mut out, self.owner.as_str().as_bytes());
        field(&mut out, self.camera.as_str().as_bytes());
        match self.route {
            Route::Latest => field(&mut out, &[0]),
            Route::ByHash(hash) => {
                let mut route = [0u8; 33];
                route[0] = 1;
                route[1..].copy_from_slice(hash.as_bytes());
                field(&mut out, &route);
            }
        }
        field(&mut out, self.variant.as_str().as_bytes());
        out
    }

    /// The key digest.
    pub fn digest(&self) -> KeyDigest {
        KeyDigest(*blake3::hash(&self.encode()).as_bytes())
    }

    /// The same camera and variant, another route.
    pub fn with_route(&self, route: Route) -> Identity {
        Identity {
            route,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id_strategy() -> impl Strategy<Value = Identity> {
        let id = "[A-Za-z0-9._-]{1,12}";
        (
            id,
            id,
            proptest::option::of(any::<[u8; 32]>()),
            prop::sample::select(vec!["full", "medium", "thumb", "a", "ab"])
                .prop_map(|v| Variant::intern(v).unwrap()),
        )
            .prop_map(|(owner, camera, hash, variant)| Identity {
                owner: OwnerId::parse(&owner).unwrap(),
                camera: CameraId::parse(&camera).unwrap(),
                route: match hash {
                    Some(h) => Route::ByHash(ContentHash::parse(&hex::encode(h)).unwrap()),
                    None => Route::Latest,
                },
                variant,
            })
    }

    proptest! {
        /// Distinct identities never share an encoding (so never a digest, short of a blake3
        /// collision).
        #[test]
        fn encoding_is_injective(a in id_strategy(), b in id_strategy()) {
            prop_assert_eq!(a == b, a.encode() == b.encode());
        }

        /// Moving characters between neighbouring fields changes the key.
        #[test]
        fn field_boundaries_matter(owner in "[a-z]{2,10}", camera in "[a-z]{2,10}", split in 1usize..9) {
            let joined = format!("{owner}{camera}");
            let split = split.min(joined.len() - 1);
            let a = Identity {
                owner: OwnerId::parse(&owner).unwrap(),
                camera: CameraId::parse(&camera).unwrap(),
                route: Route::Latest,
                variant: Variant::FULL,
            };
            let b = Identity {
                owner: OwnerId::parse(&joined[..split]).unwrap(),
                camera: CameraId::parse(&joined[split..]).unwrap(),
                ..a.clone()
            };
            prop_assert_eq!(a == b, a.digest() == b.digest());
        }
    }

    #[test]
    fn latest_and_by_hash_differ() {
        let a = Identity {
            owner: OwnerId::parse("o").unwrap(),
            camera: CameraId::parse("c").unwrap(),
            route: Route::Latest,
            variant: Variant::FULL,
        };
        let b = a.with_route(Route::ByHash(ContentHash::of(b"")));
        assert_ne!(a.digest(), b.digest());
    }
}
