//! Access links: `?access=` capabilities for clients that cannot send an `Authorization`
//! header (a browser's `<img>`, ffmpeg without options, VLC).
//!
//! A hub with a valid token asks `POST /v1/cameras/{camera}/links` and gets URLs of that
//! camera's latest frame and stream carrying `access={expires_at}.{mac}.{owner}`: the MAC is
//! keyed blake3, under a key derived from the hub-token secret, over the owner, the camera and
//! the expiry (each length-prefixed). It grants what the token granted for that camera, no
//! longer than `auth.link_ttl_secs` nor than the token itself; it is accepted only on those two
//! paths, and a tampered, expired or misplaced one is refused as a bad token is. The owner it
//! names counts only because the MAC covers it: as with tokens, the owner comes from a verified
//! credential and nowhere else.

use subtle::ConstantTimeEq;

use crate::auth::AuthError;
use crate::identity::{CameraId, OwnerId};

/// Longest `access` value accepted: an expiry, 64 hex characters and an owner id.
pub const MAX_LEN: usize = 20 + 1 + 64 + 1 + 128;

/// The scheme under which a member forwards a link to a camera's home member, in place of a
/// bearer token: `Authorization: FramecacheLink <access>`.
pub const FORWARD_SCHEME: &str = "FramecacheLink";

/// What a verified link grants: this owner's request, until then (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub owner: OwnerId,
    pub expires_at: u64,
}

/// The keys links are made and checked with: from the current hub-token secret first, then
/// from the previous ones (a link made before a rotation works until it expires).
#[derive(Clone)]
pub struct AccessKeys {
    keys: Vec<[u8; 32]>,
}

impl std::fmt::Debug for AccessKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessKeys({} keys)", self.keys.len())
    }
}

fn derive(secret: &[u8]) -> [u8; 32] {
    blake3::derive_key("framecache access link v1", secret)
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
        let mac = mac(&self.keys[0], owner.as_str(), camera.as_str(), expires_at);
        format!("{expires_at}.{}.{}", mac.to_hex(), owner.as_str())
    }

    /// Checks `access` for `camera` at `now`.
    pub fn verify(&self, access: &str, camera: &CameraId, now: u64) -> Result<Access, AuthError> {
        if access.len() > MAX_LEN {
            return Err(AuthError::Malformed);
        }
        let mut parts = access.splitn(3, '.');
        let (Some(expires_at), Some(given), Some(owner)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let expires_text = expires_at;
        let expires_at: u64 = expires_at.parse().map_err(|_| AuthError::Malformed)?;
        let given_text = given;
        let given = blake3::Hash::from_hex(given).map_err(|_| AuthError::Malformed)?;
        // One spelling only, the one minted: no leading zeros, lowercase hex.
        if expires_at.to_string() != expires_text || given.to_hex().as_str() != given_text {
            return Err(AuthError::Malformed);
        }
        let owner = OwnerId::parse(owner).map_err(|_| AuthError::Malformed)?;
        let verifies = |key: &[u8; 32]| {
            let expected = mac(key, owner.as_str(), camera.as_str(), expires_at);
            bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
        };
        if !self.keys.iter().any(verifies) {
            return Err(AuthError::BadSignature);
        }
        if now > expires_at {
            return Err(AuthError::Expired);
        }
        Ok(Access { owner, expires_at })
    }
}

fn mac(key: &[u8; 32], owner: &str, camera: &str, expires_at: u64) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new_keyed(key);
    let expires_at = expires_at.to_string();
    let fields: [&[u8]; 4] = [
        b"framecache-access-v1",
        owner.as_bytes(),
        camera.as_bytes(),
        expires_at.as_bytes(),
    ];
    for field in fields {
        hasher.update(&(field.len() as u64).to_le_bytes());
        hasher.update(field);
    }
    hasher.finalize()
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
    fn a_link_is_for_its_owner_camera_and_time() {
        let keys = AccessKeys::new(b"hub-token-secret-of-at-least-32-bytes");
        let (owner, camera, other) = ids();
        let access = keys.mint(&owner, &camera, 1_000);
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
        // Another owner, a later expiry or one changed character: the MAC no longer verifies.
        let renamed = access.replace("owner.1", "owner.2");
        let later = access.replacen("1000", "9000", 1);
        assert_eq!(
            keys.verify(&renamed, &camera, 0),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            keys.verify(&later, &camera, 0),
            Err(AuthError::BadSignature)
        );
        for i in 0..access.len() {
            let mut bytes = access.clone().into_bytes();
            bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
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
        let (_, camera, _) = ids();
        let mac = "0".repeat(64);
        for bad in [
            String::new(),
            "1000".into(),
            format!("1000.{mac}"),
            format!("x.{mac}.owner"),
            format!("1000.{}.owner", "0".repeat(63)),
            format!("1000.{mac}.own er"),
            format!("1000.{mac}.{}", "o".repeat(200)),
            format!("01000.{mac}.owner"),
            format!("+1000.{mac}.owner"),
            format!("1000.{}.owner", "A".repeat(64)),
        ] {
            assert_eq!(
                keys.verify(&bad, &camera, 0),
                Err(AuthError::Malformed),
                "{bad}"
            );
        }
    }
}
