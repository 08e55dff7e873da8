//! Access links: `?access=` capabilities for clients that cannot send an `Authorization`
//! header (a browser's `<img>`, ffmpeg without options, VLC).
//!
//! A hub with a valid token asks `POST /v1/cameras/{camera}/links` and gets URLs of that
//! camera's latest frame and stream carrying `access=`: the owner and the expiry sealed with
//! ChaCha20-Poly1305 under a key derived from the hub-token secret, the camera bound as
//! associated data, in URL-safe base64. A URL shows neither whose camera it is nor until when;
//! any change to it, or its use on another camera, fails to open. The nonce is a keyed blake3
//! of what is sealed (under a key of its own), so that it never repeats for another plaintext.
//!
//! A link grants what the token granted for that camera, no longer than `auth.link_ttl_secs`
//! nor than the token itself; it is accepted only on those two paths, and a tampered, expired
//! or misplaced one is refused as a bad token is. As with tokens, the owner comes from a
//! verified credential and nowhere else.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};

use crate::auth::AuthError;
use crate::identity::{CameraId, OwnerId};

/// Longest `access` value accepted: the base64 of a nonce, an expiry, an owner id of at most
/// 128 bytes and a tag.
pub const MAX_LEN: usize = (NONCE + 8 + 128 + TAG).div_ceil(3) * 4;

const NONCE: usize = 12;
const TAG: usize = 16;

/// The scheme under which a member forwards a link to a camera's home member, in place of a
/// bearer token: `Authorization: FramecacheLink <access>`.
pub const FORWARD_SCHEME: &str = "FramecacheLink";

/// What a verified link grants: this owner's request, until then (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub owner: OwnerId,
    pub expires_at: u64,
}

/// One secret's keys: the sealing key and the nonce key.
#[derive(Clone)]
struct Keys {
    seal: [u8; 32],
    nonce: [u8; 32],
}

/// The keys links are made and checked with: from the current hub-token secret first, then
/// from the previous ones (a link made before a rotation works until it expires).
#[derive(Clone)]
pub struct AccessKeys {
    keys: Vec<Keys>,
}

impl std::fmt::Debug for AccessKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessKeys({} keys)", self.keys.len())
    }
}

fn derive(secret: &[u8]) -> Keys {
    Keys {
        seal: blake3::derive_key("framecache access link v2 seal", secret),
        nonce: blake3::derive_key("framecache access link v2 nonce", secret),
    }
}

/// The associated data: what the link is for, not carried in it.
fn aad(camera: &CameraId) -> Vec<u8> {
    [
        b"framecache-access-v2\n".as_slice(),
        camera.as_str().as_bytes(),
    ]
    .concat()
}

impl AccessKeys {
    pub fn new(secret: &[u8]) -> AccessKeys {
        AccessKeys {
            keys: vec![derive(secret)],
        }
    }

    /// Also accepts links made under `secret`, after the keys already held.
    pub fn add(&mut self, secret: &[u8]) {
        self.keys.push(derive(secret));
    }

    /// The `access` value for `owner`'s `camera` until `expires_at`.
    pub fn mint(&self, owner: &OwnerId, camera: &CameraId, expires_at: u64) -> String {
        let keys = &self.keys[0];
        let plain = [&expires_at.to_be_bytes()[..], owner.as_str().as_bytes()].concat();
        let aad = aad(camera);
        let mut hasher = blake3::Hasher::new_keyed(&keys.nonce);
        hasher.update(&(aad.len() as u64).to_le_bytes());
        hasher.update(&aad);
        hasher.update(&plain);
        let mut nonce = [0u8; NONCE];
        nonce.copy_from_slice(&hasher.finalize().as_bytes()[..NONCE]);
        let payload = Payload {
            msg: &plain,
            aad: &aad,
        };
        let sealed = ChaCha20Poly1305::new(&keys.seal.into())
            .encrypt(&Nonce::from(nonce), payload)
            .expect("invariant: sealing a short message in memory cannot fail");
        URL_SAFE_NO_PAD.encode([&nonce[..], &sealed].concat())
    }

    /// Checks `access` for `camera` at `now`.
    pub fn verify(&self, access: &str, camera: &CameraId, now: u64) -> Result<Access, AuthError> {
        if access.len() > MAX_LEN {
            return Err(AuthError::Malformed);
        }
        // The engine refuses padding and non-zero trailing bits: one spelling per value.
        let bytes = URL_SAFE_NO_PAD
            .decode(access)
            .map_err(|_| AuthError::Malformed)?;
        if bytes.len() < NONCE + 8 + 1 + TAG {
            return Err(AuthError::Malformed);
        }
        let (nonce, sealed) = bytes.split_at(NONCE);
        let nonce = Nonce::from(<[u8; NONCE]>::try_from(nonce).expect("invariant: split at NONCE"));
        let aad = aad(camera);
        let open = |keys: &Keys| {
            let payload = Payload {
                msg: sealed,
                aad: &aad,
            };
            let cipher = ChaCha20Poly1305::new(&keys.seal.into());
            cipher.decrypt(&nonce, payload).ok()
        };
        let plain = self
            .keys
            .iter()
            .find_map(open)
            .ok_or(AuthError::BadSignature)?;
        let (expires_at, owner) = plain.split_at(8);
        let expires_at = u64::from_be_bytes(expires_at.try_into().expect("invariant: 8 bytes"));
        let owner = std::str::from_utf8(owner)
            .ok()
            .and_then(|o| OwnerId::parse(o).ok())
            .ok_or(AuthError::Malformed)?;
        if now > expires_at {
            return Err(AuthError::Expired);
        }
        Ok(Access { owner, expires_at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (OwnerId, CameraId, CameraId) {
        (
            OwnerId::parse("owner.1").unwrap(),
            CameraId::parse("cam-1").unwrap(),
            CameraId::parse("cam-2").unwrap(),
        )
    }

    #[test]
    fn a_link_is_for_its_owner_camera_and_time_and_shows_neither() {
        let keys = AccessKeys::new(b"hub-token-secret-of-at-least-32-bytes");
        let (owner, camera, other) = ids();
        let access = keys.mint(&owner, &camera, 1_000);
        assert!(!access.contains("owner"), "{access}");
        assert!(access
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)));
        let granted = keys.verify(&access, &camera, 1_000).unwrap();
        assert_eq!(
            granted,
            Access {
                owner: owner.clone(),
                expires_at: 1_000
            }
        );
        assert_eq!(
            keys.verify(&access, &other, 1_000),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            keys.verify(&access, &camera, 1_001),
            Err(AuthError::Expired)
        );
        // The same link for the same grant; another expiry, another link.
        assert_eq!(keys.mint(&owner, &camera, 1_000), access);
        assert_ne!(keys.mint(&owner, &camera, 1_001), access);
        for i in 0..access.len() {
            let mut bytes = access.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            assert!(keys.verify(&tampered, &camera, 0).is_err(), "{tampered}");
        }
    }

    #[test]
    fn links_of_a_previous_secret_verify_and_others_do_not() {
        let (owner, camera, _) = ids();
        let old = AccessKeys::new(b"the-previous-secret-of-32-bytes-or-more");
        let mut rotated = AccessKeys::new(b"the-current-secret-of-32-bytes-or-more!");
        let access = old.mint(&owner, &camera, 1_000);
        assert_eq!(
            rotated.verify(&access, &camera, 0),
            Err(AuthError::BadSignature)
        );
        rotated.add(b"the-previous-secret-of-32-bytes-or-more");
        assert!(rotated.verify(&access, &camera, 0).is_ok());
    }

    #[test]
    fn malformed_links_are_refused() {
        let keys = AccessKeys::new(&[1; 32]);
        let (owner, camera, _) = ids();
        let good = keys.mint(&owner, &camera, 1_000);
        for bad in [
            String::new(),
            "AAAA".into(),
            format!("{good}="),
            format!("{good}A"),
            format!("+{}", &good[1..]),
            "A".repeat(MAX_LEN + 4),
        ] {
            let refused = keys.verify(&bad, &camera, 0);
            assert!(
                matches!(refused, Err(AuthError::Malformed | AuthError::BadSignature)),
                "{bad}"
            );
        }
        assert_eq!(keys.verify("AAAA", &camera, 0), Err(AuthError::Malformed));
    }
}
