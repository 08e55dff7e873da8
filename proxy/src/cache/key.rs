//! Cache keys: the full identity of an entry (owner, camera, frame, variant), encoded without ambiguity, digested with blake3.
//!
//! Every field is length-prefixed, so no two distinct identities share encoded bytes (Pingora's
//! own `CacheKey` concatenates without a separator, and leaves `user_tag` out of the hash). The
//! digest only finds an entry; the identity stored beside it decides whether it may be served.

use crate::identity::{CameraId, OwnerId};
use crate::rendition::Variant;
use crate::request::FrameRef;

/// Everything that distinguishes one cache entry from another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub owner: OwnerId,
    pub camera: CameraId,
    pub frame: FrameRef,
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
    /// bytes; the frame reference as a one-byte kind and, for by-hash, the 32-byte address.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TAG.len() + 64 + self.owner.as_str().len());
        field(&mut out, TAG);
        field(&mut out, self.owner.as_str().as_bytes());
        field(&mut out, self.camera.as_str().as_bytes());
        match self.frame {
            FrameRef::Latest => field(&mut out, &[0]),
            FrameRef::ByHash(hash) => {
                let mut frame = [0u8; 33];
                frame[0] = 1;
                frame[1..].copy_from_slice(hash.as_bytes());
                field(&mut out, &frame);
            }
        }
        field(&mut out, self.variant.as_str().as_bytes());
        out
    }

    /// The key digest.
    pub fn digest(&self) -> KeyDigest {
        KeyDigest(*blake3::hash(&self.encode()).as_bytes())
    }

    /// The same camera and variant, another frame.
    pub fn with_frame(&self, frame: FrameRef) -> Identity {
        Identity {
            frame,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::ContentHash;
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
                frame: match hash {
                    Some(h) => FrameRef::ByHash(ContentHash::parse(&hex::encode(h)).unwrap()),
                    None => FrameRef::Latest,
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
                frame: FrameRef::Latest,
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
            frame: FrameRef::Latest,
            variant: Variant::FULL,
        };
        let b = a.with_frame(FrameRef::ByHash(ContentHash::of(b"")));
        assert_ne!(a.digest(), b.digest());
    }
}
