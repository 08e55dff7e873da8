//! Hub tokens: `Authorization: Bearer <JWT>` → a verified [`Grant`].
//!
//! The owner id used anywhere in the proxy comes from [`Grant::owner`], and a grant can only be
//! made here, from a token whose HS256 signature, audience and expiry verified and whose claims
//! follow SPEC's grammar.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::access::{Access, AccessKeys};
use crate::identity::{CameraId, OwnerId};

/// Largest `Authorization` header accepted, in bytes. A token for a few hundred cameras fits.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// Most cameras one token may name.
pub const MAX_CAMERAS: usize = 512;
/// The scheme and separator of the `Authorization` header a minted token travels in.
const BEARER: &str = "Bearer ";

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
    /// Unix seconds after which the token is no longer accepted: its `exp` plus the leeway.
    valid_until: u64,
    /// The token was signed with one of `auth.previous_secret_files`, not `auth.secret_file`.
    previous_key: bool,
}

impl Grant {
    /// The verified owner.
    pub fn owner(&self) -> &OwnerId {
        &self.owner
    }

    /// Unix seconds after which the token is no longer accepted (`exp` plus the leeway): what
    /// it grants ends then, streams included.
    pub fn valid_until(&self) -> u64 {
        self.valid_until
    }

    /// Whether the token was signed with a previous secret (`auth.previous_secret_files`).
    pub fn by_previous_key(&self) -> bool {
        self.previous_key
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
    /// Checked by jsonwebtoken against `auth.audience`, not here.
    aud: Audience,
    exp: u64,
    /// Checked by jsonwebtoken; kept to re-check remembered tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
}

/// RFC 7519 §4.1.3: `aud` is one string or, in the general case, an array of strings. A token
/// whose array contains `auth.audience` is meant for this proxy (among others) and is accepted,
/// as jsonwebtoken's audience check does; an array without it is a wrong audience. Minted
/// tokens carry the single string.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Verifies hub tokens against the current secret (then the previous ones) and the audience.
pub struct TokenVerifier {
    /// The current secret first, then the previous ones, in order.
    keys: Vec<DecodingKey>,
    validation: Validation,
    leeway: u64,
    /// Tokens whose signature, audience and claims verified, by their exact text: a hub sends
    /// the same token on every poll, and a second HMAC and JSON parse would find the same.
    /// Expiry and not-before are checked again on every use.
    verified: DashMap<Box<[u8]>, Verified, foldhash::fast::RandomState>,
    /// Access links, keyed by the same secrets.
    access: AccessKeys,
    /// How long a link lasts at most (`auth.link_ttl_secs`).
    link_ttl: Duration,
}

/// A verified token's grant and validity window.
#[derive(Clone)]
struct Verified {
    grant: Arc<Grant>,
    exp: u64,
    nbf: Option<u64>,
}

/// Verified tokens remembered at most; past it the memory starts over.
const VERIFIED_TOKENS_MAX: usize = 16_384;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
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
            keys: vec![DecodingKey::from_secret(secret)],
            validation,
            leeway: leeway.as_secs(),
            verified: DashMap::default(),
            access: AccessKeys::new(secret),
            link_ttl: Duration::from_secs(300),
        }
    }

    /// Also accepts tokens (and access links) signed with `secrets`, tried in order after the
    /// current one.
    pub fn with_previous<'a>(mut self, secrets: impl IntoIterator<Item = &'a [u8]>) -> Self {
        for secret in secrets {
            self.keys.push(DecodingKey::from_secret(secret));
            self.access.add(secret);
        }
        self
    }

    /// Links last at most `ttl` (`auth.link_ttl_secs`; default 300 s).
    pub fn with_link_ttl(mut self, ttl: Duration) -> Self {
        self.link_ttl = ttl;
        self
    }

    /// A link to `owner`'s `camera` for the holder of a token valid until `valid_until`: until
    /// `auth.link_ttl_secs` from now, or until the token's own end if that comes first. Gives
    /// the `access` value and its expiry.
    pub fn link(&self, owner: &OwnerId, valid_until: u64, camera: &CameraId) -> (String, u64) {
        let expires_at = (unix_now() + self.link_ttl.as_secs()).min(valid_until);
        (self.access.mint(owner, camera, expires_at), expires_at)
    }

    /// Verifies an `access` value for `camera`.
    pub fn verify_access(&self, access: &str, camera: &CameraId) -> Result<Access, AuthError> {
        self.access.verify(access, camera, unix_now())
    }

    /// Verifies the values of the request's `Authorization` headers.
    pub fn verify<'a>(
        &self,
        mut headers: impl Iterator<Item = &'a [u8]>,
    ) -> Result<Arc<Grant>, AuthError> {
        let header = headers.next().ok_or(AuthError::Missing)?;
        if headers.next().is_some() || header.len() > MAX_HEADER_BYTES {
            return Err(AuthError::Malformed);
        }
        let credentials = bearer_credentials(header).ok_or(AuthError::Malformed)?;
        let now = unix_now();
        // Only tokens that passed every check are remembered, so a known one is not scanned
        // again.
        if let Some(known) = self.verified.get(credentials).map(|v| v.clone()) {
            if now > known.exp.saturating_add(self.leeway)
                || known
                    .nbf
                    .is_some_and(|nbf| nbf > now.saturating_add(self.leeway))
            {
                return Err(AuthError::Expired);
            }
            return Ok(known.grant);
        }
        let token = b64token(credentials).ok_or(AuthError::Malformed)?;
        let verified = self.decode(token)?;
        if self.verified.len() >= VERIFIED_TOKENS_MAX {
            self.verified.clear();
        }
        self.verified.insert(credentials.into(), verified.clone());
        Ok(verified.grant)
    }

    /// Full verification: signature (by the current secret, else a previous one), audience,
    /// time, claim grammar.
    fn decode(&self, token: &str) -> Result<Verified, AuthError> {
        let mut keys = self.keys.iter().enumerate();
        let (data, previous_key) = loop {
            let Some((i, key)) = keys.next() else {
                return Err(AuthError::BadSignature);
            };
            match jsonwebtoken::decode::<Claims>(token, key, &self.validation) {
                Ok(data) => break (data, i > 0),
                Err(e) if *e.kind() == ErrorKind::InvalidSignature => continue,
                Err(e) => {
                    return Err(match e.kind() {
                        ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => {
                            AuthError::Expired
                        }
                        ErrorKind::InvalidAudience => AuthError::WrongAudience,
                        _ => AuthError::Malformed,
                    })
                }
            }
        };
        // RFC 7515 §4.1.11: critical extensions the recipient does not understand make the
        // token invalid, and this proxy understands none.
        if data.header.crit.is_some() {
            return Err(AuthError::Malformed);
        }
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
        Ok(Verified {
            grant: Arc::new(Grant {
                owner,
                cameras,
                valid_until: claims.exp.saturating_add(self.leeway),
                previous_key,
            }),
            exp: claims.exp,
            nbf: claims.nbf,
        })
    }
}

/// The credentials of `Bearer <credentials>`: the scheme is case-insensitive (RFC 7235); the
/// spaces after it are not part of them. Whether they are a token, `b64token` says.
pub fn bearer_credentials(header: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = header.split_at_checked(b"bearer ".len())?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let start = rest.iter().position(|&b| b != b' ')?;
    Some(&rest[start..])
}

/// `credentials` as text if they are RFC 6750's b64token.
fn b64token(credentials: &[u8]) -> Option<&str> {
    let allowed = |b: &u8| {
        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
    };
    // All ASCII once checked, so the conversion cannot fail.
    credentials
        .iter()
        .all(allowed)
        .then(|| std::str::from_utf8(credentials).ok())
        .flatten()
}

/// Errors minting a token.
#[derive(Debug, Error)]
pub enum MintError {
    #[error("owner id {0}")]
    Owner(crate::identity::IdError),
    #[error("camera id {0}")]
    Camera(crate::identity::IdError),
    #[error("a token names at most {max} cameras, got {0}", max = MAX_CAMERAS)]
    TooManyCameras(usize),
    #[error("a ttl of {0} seconds puts the expiry beyond any representable time")]
    Ttl(u64),
    #[error(
        "the token's Authorization header would be {0} bytes, more than the {max} accepted",
        max = MAX_HEADER_BYTES
    )]
    TooLong(usize),
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

/// Mints a hub token (for operators, the demo and tests). Refuses what [`TokenVerifier`] would
/// refuse: bad ids, too many cameras, a token too long for the `Authorization` header.
pub fn mint(
    secret: &[u8],
    audience: &str,
    owner: &str,
    cameras: &[String],
    ttl: Duration,
) -> Result<String, MintError> {
    OwnerId::parse(owner).map_err(MintError::Owner)?;
    if cameras.len() > MAX_CAMERAS {
        return Err(MintError::TooManyCameras(cameras.len()));
    }
    for camera in cameras {
        CameraId::parse(camera).map_err(MintError::Camera)?;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let exp = now
        .checked_add(ttl)
        .ok_or(MintError::Ttl(ttl.as_secs()))?
        .as_secs();
    let claims = Claims {
        sub: owner.to_string(),
        cams: cameras.to_vec(),
        aud: Audience::One(audience.to_string()),
        exp,
        nbf: None,
    };
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| MintError::Sign(e.to_string()))?;
    let header_len = BEARER.len() + token.len();
    if header_len > MAX_HEADER_BYTES {
        return Err(MintError::TooLong(header_len));
    }
    Ok(token)
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

    fn verify(value: &[u8]) -> Result<Arc<Grant>, AuthError> {
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

    #[test]
    fn mint_refuses_an_expiry_beyond_representable_time() {
        for ttl in [Duration::from_secs(u64::MAX), Duration::MAX] {
            assert!(
                matches!(
                    mint(SECRET, "framecache", "owner-1", &[], ttl),
                    Err(MintError::Ttl(_))
                ),
                "{ttl:?}"
            );
        }
        // A long but representable one is fine, and verifies.
        let token = mint(
            SECRET,
            "framecache",
            "owner-1",
            &["cam-1".into()],
            Duration::from_secs(100 * 365 * 86_400),
        )
        .unwrap();
        assert!(verify(&header(&token)).is_ok());
    }

    /// `cam-1`, then `n` camera ids of 64 characters each (the longest SPEC allows).
    fn long_cameras(n: usize) -> Vec<String> {
        std::iter::once("cam-1".to_string())
            .chain((0..n).map(|i| format!("{i:0>64}")))
            .collect()
    }

    #[test]
    fn signed_tokens_just_over_the_header_limit_are_malformed() {
        let exp = now() + 60;
        let token = |cams: &[String]| {
            raw_token(
                serde_json::json!({"sub": "owner-1", "cams": cams, "aud": "framecache", "exp": exp}),
                SECRET,
            )
        };
        let n = (1..)
            .find(|n| header(&token(&long_cameras(*n))).len() > MAX_HEADER_BYTES)
            .unwrap();
        let (under, over) = (long_cameras(n - 1), long_cameras(n));
        let (under_token, over_token) = (token(&under), token(&over));
        // One camera id apart: within about 90 bytes of the limit on either side, and well
        // within MAX_CAMERAS, so the size is what decides.
        assert!(header(&under_token).len() > MAX_HEADER_BYTES - 100);
        assert!(over.len() < MAX_CAMERAS);
        let grant = verify(&header(&under_token)).unwrap();
        assert!(grant.camera(&CameraId::parse("cam-1").unwrap()).is_ok());
        assert_eq!(
            verify(&header(&over_token)).err(),
            Some(AuthError::Malformed)
        );
        // mint refuses exactly what verify would.
        let ttl = Duration::from_secs(60);
        let minted = mint(SECRET, "framecache", "owner-1", &under, ttl).unwrap();
        assert!(verify(&header(&minted)).is_ok());
        assert!(matches!(
            mint(SECRET, "framecache", "owner-1", &over, ttl),
            Err(MintError::TooLong(len)) if len > MAX_HEADER_BYTES
        ));
    }

    #[test]
    fn more_than_max_cameras_is_refused_by_verify_and_mint() {
        let cams: Vec<String> = (0..=MAX_CAMERAS).map(|i| format!("c{i}")).collect();
        let token = raw_token(
            serde_json::json!({"sub": "owner-1", "cams": cams, "aud": "framecache", "exp": now() + 60}),
            SECRET,
        );
        // Short ids: the count decides, not the size.
        assert!(header(&token).len() <= MAX_HEADER_BYTES);
        assert_eq!(verify(&header(&token)).err(), Some(AuthError::Malformed));
        let ttl = Duration::from_secs(60);
        assert!(matches!(
            mint(SECRET, "framecache", "owner-1", &cams, ttl),
            Err(MintError::TooManyCameras(513))
        ));
        let minted = mint(SECRET, "framecache", "owner-1", &cams[..MAX_CAMERAS], ttl).unwrap();
        assert!(verify(&header(&minted)).is_ok());
    }

    #[test]
    fn audience_may_be_an_array_that_contains_ours() {
        let with_aud = |aud: serde_json::Value| {
            raw_token(
                serde_json::json!({"sub": "owner-1", "cams": ["cam-1"], "aud": aud, "exp": now() + 60}),
                SECRET,
            )
        };
        assert!(verify(&header(&with_aud(serde_json::json!([
            "other",
            "framecache"
        ]))))
        .is_ok());
        for aud in [
            serde_json::json!(["other"]),
            serde_json::json!([]),
            serde_json::json!("Framecache"),
        ] {
            assert_eq!(
                verify(&header(&with_aud(aud.clone()))).err(),
                Some(AuthError::WrongAudience),
                "{aud}"
            );
        }
        for aud in [serde_json::json!([1]), serde_json::json!(7)] {
            assert_eq!(
                verify(&header(&with_aud(aud.clone()))).err(),
                Some(AuthError::Malformed),
                "{aud}"
            );
        }
    }

    #[test]
    fn not_before_in_the_future_is_refused_beyond_the_leeway() {
        let with_nbf = |nbf: u64| {
            raw_token(
                serde_json::json!({"sub": "owner-1", "cams": ["cam-1"], "aud": "framecache", "exp": now() + 3600, "nbf": nbf}),
                SECRET,
            )
        };
        assert_eq!(
            verify(&header(&with_nbf(now() + 600))).err(),
            Some(AuthError::Expired)
        );
        assert!(verify(&header(&with_nbf(now() + 10))).is_ok());
    }

    #[test]
    fn other_algorithms_with_the_same_secret_are_refused() {
        let claims = serde_json::json!({"sub": "owner-1", "cams": ["cam-1"], "aud": "framecache", "exp": now() + 60});
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let token = jsonwebtoken::encode(
                &Header::new(alg),
                &claims,
                &EncodingKey::from_secret(SECRET),
            )
            .unwrap();
            assert_eq!(
                verify(&header(&token)).err(),
                Some(AuthError::Malformed),
                "{alg:?}"
            );
        }
    }

    #[test]
    fn remembered_tokens_are_rechecked_for_expiry() {
        let v = TokenVerifier::new(SECRET, "framecache", Duration::from_secs(0));
        let token = mint(
            SECRET,
            "framecache",
            "owner-1",
            &["cam-1".into()],
            Duration::from_secs(60),
        )
        .unwrap();
        let header = format!("Bearer {token}");
        assert!(v.verify(std::iter::once(header.as_bytes())).is_ok());
        assert_eq!(v.verified.len(), 1, "remembered");
        // The same token text, now past its expiry: refused without a new decode.
        v.verified.get_mut(token.as_bytes()).unwrap().exp = unix_now() - 1;
        assert_eq!(
            v.verify(std::iter::once(header.as_bytes())).err(),
            Some(AuthError::Expired)
        );
        // A token differing in one signature character is verified afresh (and fails). The
        // character is inside the signature, not its last, whose low bits are padding.
        let mut forged = token.clone().into_bytes();
        let at = forged.len() - 10;
        forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
        let forged = format!("Bearer {}", String::from_utf8(forged).unwrap());
        assert_eq!(
            v.verify(std::iter::once(forged.as_bytes())).err(),
            Some(AuthError::BadSignature)
        );
    }
    #[test]
    fn previous_secrets_are_accepted_in_order_and_told_apart() {
        const NEW: &[u8] = b"the-new-secret-the-new-secret-the-new!";
        let cams = vec!["cam-1".to_string()];
        let ttl = Duration::from_secs(60);
        let old = mint(SECRET, "framecache", "owner-1", &cams, ttl).unwrap();
        let new = mint(NEW, "framecache", "owner-1", &cams, ttl).unwrap();
        let rotating =
            TokenVerifier::new(NEW, "framecache", Duration::ZERO).with_previous([SECRET]);
        let grant = rotating.verify(std::iter::once(&header(&old)[..])).unwrap();
        assert!(grant.by_previous_key());
        assert_eq!(grant.owner().as_str(), "owner-1");
        let grant = rotating.verify(std::iter::once(&header(&new)[..])).unwrap();
        assert!(!grant.by_previous_key());
        // Once the old secret is dropped, its tokens are badly signed.
        let rotated = TokenVerifier::new(NEW, "framecache", Duration::ZERO);
        assert_eq!(
            rotated.verify(std::iter::once(&header(&old)[..])).err(),
            Some(AuthError::BadSignature)
        );
        // An expired token of the old secret is expired, not badly signed.
        let expired = raw_token(
            serde_json::json!({"sub": "owner-1", "cams": ["cam-1"], "aud": "framecache", "exp": now() - 100}),
            SECRET,
        );
        assert_eq!(
            rotating
                .verify(std::iter::once(&header(&expired)[..]))
                .err(),
            Some(AuthError::Expired)
        );
    }
}
