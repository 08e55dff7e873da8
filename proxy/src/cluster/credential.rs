//! Peer credentials: how a member proves to another that a request comes from the tier.
//!
//! `x-framecache-peer: {node} {unix seconds} {mac}`, the MAC being keyed blake3 (a keyed hash
//! built to be a MAC) under a key derived from `cluster.peer_key_file`, over the node's name,
//! the method, the path, the hub's `Authorization` header and the time, each length-prefixed.
//! A credential is good for [`WINDOW_SECS`] either side of the receiver's clock, for that one
//! request of that one hub token: it cannot be moved to another path or another hub's token.
//! It only says "a member asks"; the owner still comes from the hub token, which the home
//! verifies itself.

use subtle::ConstantTimeEq;
use thiserror::Error;

/// The request header that carries a peer credential.
pub const HEADER: &str = "x-framecache-peer";

/// How far a credential's time may be from the receiver's clock.
pub const WINDOW_SECS: u64 = 30;

/// Why a peer credential was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CredentialError {
    #[error("no peer credential, or more than one")]
    Missing,
    #[error("the peer credential is malformed")]
    Malformed,
    #[error("the peer credential is too old or from the future")]
    Expired,
    #[error("the peer credential does not verify")]
    BadMac,
}

/// The key of peer credentials, derived from the shared secret.
#[derive(Clone)]
pub struct PeerKey([u8; 32]);

impl std::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerKey(..)")
    }
}

/// What a credential is made for.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The hub's `Authorization` header value, as forwarded.
    pub authorization: &'a [u8],
}

impl PeerKey {
    pub fn new(secret: &[u8]) -> PeerKey {
        PeerKey(blake3::derive_key("framecache peer credential v1", secret))
    }

    /// The credential of `node` for `request` at `unix_secs`.
    pub fn sign(&self, node: &str, request: &Request, unix_secs: u64) -> String {
        let mac = self.mac(node, request, unix_secs);
        format!("{node} {unix_secs} {}", mac.to_hex())
    }

    /// Checks a credential header value for `request` at `now` (unix seconds); gives the name
    /// of the member that made it.
    pub fn check<'v>(
        &self,
        value: &'v [u8],
        request: &Request,
        now: u64,
    ) -> Result<&'v str, CredentialError> {
        let text = std::str::from_utf8(value).map_err(|_| CredentialError::Malformed)?;
        let mut parts = text.split(' ');
        let (Some(node), Some(at), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CredentialError::Malformed);
        };
        let at: u64 = at.parse().map_err(|_| CredentialError::Malformed)?;
        let mac = blake3::Hash::from_hex(mac).map_err(|_| CredentialError::Malformed)?;
        if node.is_empty() || node.len() > 63 {
            return Err(CredentialError::Malformed);
        }
        if at.abs_diff(now) > WINDOW_SECS {
            return Err(CredentialError::Expired);
        }
        let expected = self.mac(node, request, at);
        if bool::from(expected.as_bytes().ct_eq(mac.as_bytes())) {
            Ok(node)
        } else {
            Err(CredentialError::BadMac)
        }
    }

    fn mac(&self, node: &str, request: &Request, unix_secs: u64) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        let at = unix_secs.to_string();
        let fields: [&[u8]; 6] = [
            b"framecache-peer-v1",
            node.as_bytes(),
            request.method.as_bytes(),
            request.path.as_bytes(),
            request.authorization,
            at.as_bytes(),
        ];
        for field in fields {
            hasher.update(&(field.len() as u64).to_le_bytes());
            hasher.update(field);
        }
        hasher.finalize()
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: Request = Request {
        method: "GET",
        path: "/cameras/cam-1/frame",
        authorization: b"Bearer abc",
    };

    #[test]
    fn a_credential_verifies_for_its_request_only() {
        let key = PeerKey::new(b"a shared secret of at least 32 bytes!!");
        let value = key.sign("edge-a", &REQUEST, 1_000);
        assert_eq!(key.check(value.as_bytes(), &REQUEST, 1_010), Ok("edge-a"));
        let others = [
            Request {
                method: "HEAD",
                ..REQUEST
            },
            Request {
                path: "/cameras/cam-2/frame",
                ..REQUEST
            },
            Request {
                authorization: b"Bearer abd",
                ..REQUEST
            },
        ];
        for other in &others {
            assert_eq!(
                key.check(value.as_bytes(), other, 1_000),
                Err(CredentialError::BadMac)
            );
        }
        let other_key = PeerKey::new(b"another shared secret of 32 bytes or more");
        assert_eq!(
            other_key.check(value.as_bytes(), &REQUEST, 1_000),
            Err(CredentialError::BadMac)
        );
        // The name is bound too.
        let renamed = value.replacen("edge-a", "edge-b", 1);
        assert_eq!(
            key.check(renamed.as_bytes(), &REQUEST, 1_000),
            Err(CredentialError::BadMac)
        );
    }

    #[test]
    fn a_credential_is_good_for_its_window_only() {
        let key = PeerKey::new(&[7; 32]);
        let value = key.sign("edge-a", &REQUEST, 1_000);
        assert!(key
            .check(value.as_bytes(), &REQUEST, 1_000 + WINDOW_SECS)
            .is_ok());
        assert!(key
            .check(value.as_bytes(), &REQUEST, 1_000 - WINDOW_SECS)
            .is_ok());
        for now in [1_000 + WINDOW_SECS + 1, 1_000 - WINDOW_SECS - 1] {
            assert_eq!(
                key.check(value.as_bytes(), &REQUEST, now),
                Err(CredentialError::Expired)
            );
        }
    }

    #[test]
    fn malformed_credentials_are_refused() {
        let key = PeerKey::new(&[7; 32]);
        let mac = "0".repeat(64);
        for bad in [
            String::new(),
            "edge-a".into(),
            "edge-a 1000".into(),
            format!("edge-a x {mac}"),
            format!("edge-a 1000 {mac} extra"),
            format!("edge-a  1000 {mac}"),
            "edge-a 1000 zz".into(),
            format!(" 1000 {mac}"),
        ] {
            assert_eq!(
                key.check(bad.as_bytes(), &REQUEST, 1_000),
                Err(CredentialError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            key.check(b"\xff\xfe", &REQUEST, 1_000),
            Err(CredentialError::Malformed)
        );
    }
}
