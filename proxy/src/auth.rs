//! Hub tokens: `Authorization: Bearer <JWT>` → a verified [`Grant`].
//!
//! The owner id used anywhere in the proxy comes from [`Grant::owner`], and a grant can only be
//! made here, from a token whose HS256 signature, audience and expiry verified and whose claims
//! follow SPEC's grammar.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::identity::{CameraId, OwnerId};

/// Largest `Authorization` header accepted, in bytes. A token for a few hundred cameras fits.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// Most cameras one token may name.
pub const MAX_CAMERAS: usize = 512;

/// Why a request was not authorised. The labels are SPEC's `reason` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AuthError {
    #[error("no bearer token was sent")]
    Missing,
    #[error("the bearer token is malformed")]
    Malformed,
    #[error("the token has expired")]
    Expired,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token is for another audience")]
    WrongAudience,
    #[error("the token does not grant this camera")]
    CameraNotGranted,
}

impl AuthError {
    /// Every reason, for metric initialisation.
    pub const ALL: [AuthError; 6] = [
        AuthError::Missing,
        AuthError::Malformed,
        AuthError::Expired,
        AuthError::BadSignature,
        AuthError::WrongAudience,
        AuthError::CameraNotGranted,
    ];

    /// The metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::Expired => "expired",
            AuthError::BadSignature => "bad_signature",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::CameraNotGranted => "camera_not_granted",
        }
    }
}

/// What a verified token allows: one owner, some cameras.
#[derive(Debug, Clone)]
pub struct Grant {
    owner: OwnerId,
    cameras: HashSet<CameraId>,
}

impl Grant {
    /// The verified owner.
    pub fn owner(&self) -> &OwnerId {
        &self.owner
    }

    /// Checks that the token grants `camera`.
    pub fn camera(&self, camera: &CameraId) -> Result<(), AuthError> {
        if self.cameras.contains(camera) {
            Ok(())
        } else {
            Err(AuthError::CameraNotGranted)
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    cams: Vec<String>,
    aud: String,
    exp: u64,
}

/// Verifies hub tokens against one secret and audience.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    pub fn new(secret: &[u8], audience: &str, leeway: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        validation.leeway = leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        TokenVerifier {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Verifies the values of the request's `Authorization` headers.
    pub fn verify<'a>(
        &self,
        mut headers: impl Iterator<Item = &'a [u8]>,
    ) -> Result<Grant, AuthError> {
        let header = headers.next().ok_or(AuthError::Missing)?;
        if headers.next().is_some() || header.len() > MAX_HEADER_BYTES {
            return Err(AuthError::Malformed);
        }
        let token = bearer_token(header).ok_or(AuthError::Malformed)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                _ => AuthError::Malformed,
            },
        )?;
        let claims = data.claims;
        let owner = OwnerId::parse(&claims.sub).map_err(|_| AuthError::Malformed)?;
        if claims.cams.len() > MAX_CAMERAS {
            return Err(AuthError::Malformed);
        }
        let cameras = claims
            .cams
            .iter()
            .map(|c| CameraId::parse(c))
            .collect::<Result<HashSet<_>, _>>()
            .map_err(|_| AuthError::Malformed)?;
        Ok(Grant { owner, cameras })
    }
}

/// The token of `Bearer <token>`: the scheme is case-insensitive (RFC 7235), the token is
/// RFC 6750's b64token.
fn bearer_token(header: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(header).ok()?;
    let (scheme, rest) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_start_matches(' ');
    let b64token = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
    (!token.is_empty() && token.chars().all(b64token)).then_some(token)
}

/// Errors minting a token.
#[derive(Debug, Error)]
pub enum MintError {
    #[error("owner id {0}")]
    Owner(crate::identity::IdError),
    #[error("camera id {0}")]
    Camera(crate::identity::IdError),
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

/// Mints a hub token (for operators, the demo and tests).
pub fn mint(
    secret: &[u8],
    audience: &str,
    owner: &str,
    cameras: &[String],
    ttl: Duration,
) -> Result<String, MintError> {
    OwnerId::parse(owner).map_err(MintError::Owner)?;
    for camera in cameras {
        CameraId::parse(camera).map_err(MintError::Camera)?;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let claims = Claims {
        sub: owner.to_string(),
        cams: cameras.to_vec(),
        aud: audience.to_string(),
        exp: (now + ttl).as_secs(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| MintError::Sign(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";

    fn verifier() -> TokenVerifier {
        TokenVerifier::new(SECRET, "framecache", Duration::from_secs(30))
    }

    fn header(token: &str) -> Vec<u8> {
        format!("Bearer {token}").into_bytes()
    }

    fn verify(value: &[u8]) -> Result<Grant, AuthError> {
        verifier().verify(std::iter::once(value))
    }

    fn raw_token(claims: serde_json::Value, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn valid_token_grants_its_cameras_only() {
        let token = mint(
            SECRET,
            "framecache",
            "owner-1",
            &["cam-1".into(), "cam-2".into()],
            Duration::from_secs(60),
        )
        .unwrap();
        let grant = verify(&header(&token)).unwrap();
        assert_eq!(grant.owner().as_str(), "owner-1");
        assert!(grant.camera(&CameraId::parse("cam-2").unwrap()).is_ok());
        assert_eq!(
            grant.camera(&CameraId::parse("cam-3").unwrap()),
            Err(AuthError::CameraNotGranted)
        );
        // The scheme is case-insensitive.
        assert!(verify(format!("bearer {token}").as_bytes()).is_ok());
    }

    #[test]
    fn each_failure_has_its_reason() {
        let good = |exp: u64, aud: &str| {
            raw_token(
                serde_json::json!({"sub": "owner-1", "cams": ["cam-1"], "aud": aud, "exp": exp}),
                SECRET,
            )
        };
        assert_eq!(
            verifier().verify(std::iter::empty()).err(),
            Some(AuthError::Missing)
        );
        assert_eq!(
            verify(&header(&good(now() - 3600, "framecache"))).err(),
            Some(AuthError::Expired)
        );
        // Within the leeway, an expired token still passes.
        assert!(verify(&header(&good(now() - 10, "framecache"))).is_ok());
        assert_eq!(
            verify(&header(&good(now() + 60, "elsewhere"))).err(),
            Some(AuthError::WrongAudience)
        );
        let forged = raw_token(
            serde_json::json!({"sub": "owner-1", "cams": ["cam-1"], "aud": "framecache", "exp": now() + 60}),
            b"another-secret-another-secret-another",
        );
        assert_eq!(
            verify(&header(&forged)).err(),
            Some(AuthError::BadSignature)
        );
        for malformed in [
            b"Bearer".to_vec(),
            b"Bearer ".to_vec(),
            b"Basic dXNlcjpwYXNz".to_vec(),
            b"Bearer not.a.jwt".to_vec(),
            b"Bearer a b".to_vec(),
            b"Bearer \xff\xfe".to_vec(),
            header(&"a".repeat(MAX_HEADER_BYTES)),
        ] {
            assert_eq!(
                verify(&malformed).err(),
                Some(AuthError::Malformed),
                "{:?}",
                String::from_utf8_lossy(&malformed)
            );
        }
        let two = [b"Bearer x".as_slice(), b"Bearer y".as_slice()];
        assert_eq!(
            verifier().verify(two.into_iter()).err(),
            Some(AuthError::Malformed)
        );
    }

    #[test]
    fn claims_must_follow_the_grammar() {
        for claims in [
            serde_json::json!({"sub": "owner/1", "cams": ["cam-1"], "aud": "framecache", "exp": now() + 60}),
            serde_json::json!({"sub": "", "cams": ["cam-1"], "aud": "framecache", "exp": now() + 60}),
            serde_json::json!({"sub": "owner-1", "cams": ["cam 1"], "aud": "framecache", "exp": now() + 60}),
            serde_json::json!({"sub": "owner-1", "cams": ["c".repeat(65)], "aud": "framecache", "exp": now() + 60}),
            serde_json::json!({"sub": "owner-1", "cams": "cam-1", "aud": "framecache", "exp": now() + 60}),
            serde_json::json!({"sub": "owner-1", "cams": ["cam-1"], "aud": "framecache"}),
            serde_json::json!({"cams": ["cam-1"], "aud": "framecache", "exp": now() + 60}),
        ] {
            let token = raw_token(claims.clone(), SECRET);
            assert_eq!(
                verify(&header(&token)).err(),
                Some(AuthError::Malformed),
                "{claims}"
            );
        }
    }

    #[test]
    fn alg_none_is_refused() {
        // {"alg":"none","typ":"JWT"} . {"sub":"owner-1",...} . (empty signature)
        let claims = serde_json::json!({"sub": "owner-1", "cams": ["cam-1"], "aud": "framecache", "exp": now() + 60});
        use base64::Engine;
        let encode = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let token = format!(
            "{}.{}.",
            encode(br#"{"alg":"none","typ":"JWT"}"#),
            encode(claims.to_string().as_bytes())
        );
        assert_eq!(verify(&header(&token)).err(), Some(AuthError::Malformed));
    }

    #[test]
    fn mint_refuses_bad_ids() {
        assert!(mint(SECRET, "a", "owner 1", &[], Duration::from_secs(1)).is_err());
        assert!(mint(SECRET, "a", "o", &["c/1".into()], Duration::from_secs(1)).is_err());
    }
}
