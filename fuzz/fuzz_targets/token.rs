//! Hub token parsing and verification: `TokenVerifier::verify` on `Authorization` values.
//!
//! Input: a mode byte, then
//! - `R` (and any other byte): raw `Authorization` values, one per line (none when empty);
//! - `M`: a token minted with `auth::mint` for an owner, cameras and audience that three bytes
//!   pick, then edited: 4 bytes per edit (kind, position low and high byte, a byte);
//! - `S`: two tokens of different owners, spliced: a byte picks, for each of the three parts
//!   (header, claims, signature), which token it comes from; then edits as for `M`.
//!
//! Invariants: it never panics; an accepted value's claims (decoded independently) are exactly
//! the grant's owner and cameras, with our audience; an edited or spliced token is accepted
//! only if it is, byte for byte, a token that was minted, and then grants that token's owner
//! and cameras, never another's; a minted token for our audience, unedited, is accepted.
//! One verifier serves every input, so its memory of verified tokens is exercised too.

#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use framecache::auth::{self, Grant, TokenVerifier};
use framecache::identity::CameraId;
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"framecache-fuzz-hub-token-secret-0123456789";
const AUDIENCE: &str = "framecache";
const OWNERS: [&str; 4] = ["owner-1", "owner-2", "o", "Owner_9.x-y"];
const CAMERAS: [&str; 5] = ["cam-1", "cam-2", "front-door", "c", "CAM-1"];
const AUDIENCES: [&str; 2] = [AUDIENCE, "elsewhere"];

fn verifier() -> &'static TokenVerifier {
    static VERIFIER: OnceLock<TokenVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| TokenVerifier::new(SECRET, AUDIENCE, Duration::from_secs(30)))
}

/// A token's owner, cameras and audience.
#[derive(Debug, Clone, PartialEq)]
struct Minted {
    token: String,
    owner: String,
    cameras: Vec<String>,
    audience: &'static str,
}

fn mint(owner: u8, cameras: u8, audience: u8) -> Minted {
    let owner = OWNERS[owner as usize % OWNERS.len()].to_string();
    let cameras: Vec<String> = (0..CAMERAS.len())
        .filter(|i| cameras & (1 << i) != 0)
        .map(|i| CAMERAS[i].to_string())
        .collect();
    let audience = AUDIENCES[audience as usize % AUDIENCES.len()];
    let ttl = Duration::from_secs(3600);
    let token = auth::mint(SECRET, audience, &owner, &cameras, ttl).expect("ids are valid");
    Minted {
        token,
        owner,
        cameras,
        audience,
    }
}

/// Applies 4-byte edits to `value`.
fn edit(value: &mut Vec<u8>, edits: &[u8]) {
    for e in edits.chunks_exact(4) {
        let at = usize::from(u16::from_le_bytes([e[1], e[2]]));
        let byte = e[3];
        match e[0] % 5 {
            0 if at < value.len() => value[at] = byte,
            1 => value.insert(at.min(value.len()), byte),
            2 if at < value.len() => {
                value.remove(at);
            }
            3 => value.truncate(at),
            4 if at < value.len() => value[at] ^= 1 << (byte % 8),
            _ => {}
        }
    }
}

/// The grant holds exactly `owner` and `cameras` (of those this target can name).
fn assert_grants(grant: &Grant, owner: &str, cameras: &[String]) {
    assert_eq!(grant.owner().as_str(), owner);
    for camera in cameras {
        let id = CameraId::parse(camera).expect("granted cameras are valid ids");
        assert!(grant.camera(&id).is_ok(), "{camera} not granted");
    }
    for camera in CAMERAS.iter().filter(|c| !cameras.iter().any(|g| g == *c)) {
        let id = CameraId::parse(camera).expect("valid id");
        assert!(grant.camera(&id).is_err(), "{camera} granted");
    }
}

/// The claims of an accepted `Authorization` value, decoded without the verifier.
fn assert_matches_claims(value: &[u8], grant: &Grant) {
    let credentials = auth::bearer_credentials(value).expect("accepted values are Bearer");
    let text = std::str::from_utf8(credentials).expect("accepted tokens are text");
    let parts: Vec<&str> = text.split('.').collect();
    assert_eq!(parts.len(), 3, "{text}");
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1])
        .expect("accepted claims are base64url");
    let claims: serde_json::Value = serde_json::from_slice(&claims).expect("claims are JSON");
    let owner = claims["sub"].as_str().expect("sub is a string");
    let cameras: Vec<String> = claims["cams"]
        .as_array()
        .expect("cams is an array")
        .iter()
        .map(|c| c.as_str().expect("camera ids are strings").to_string())
        .collect();
    let audience_ok = match &claims["aud"] {
        serde_json::Value::String(aud) => aud == AUDIENCE,
        serde_json::Value::Array(auds) => auds.iter().any(|a| a == AUDIENCE),
        other => panic!("aud {other}"),
    };
    assert!(audience_ok, "{claims}");
    assert_grants(grant, owner, &cameras);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (minted, value): (Vec<Minted>, Vec<u8>) = match mode {
        b'M' => {
            let [owner, cameras, audience, edits @ ..] = rest else {
                return;
            };
            let minted = mint(*owner, *cameras, *audience);
            let mut value = format!("Bearer {}", minted.token).into_bytes();
            edit(&mut value, edits);
            (vec![minted], value)
        }
        b'S' => {
            let [owner, cameras, audience, parts, edits @ ..] = rest else {
                return;
            };
            let a = mint(*owner, *cameras, *audience);
            let b = mint(owner.wrapping_add(1), !*cameras, *audience);
            let (pa, pb): (Vec<&str>, Vec<&str>) =
                (a.token.split('.').collect(), b.token.split('.').collect());
            let spliced: Vec<&str> = (0..3)
                .map(|i| if parts & (1 << i) == 0 { pa[i] } else { pb[i] })
                .collect();
            let mut value = format!("Bearer {}", spliced.join(".")).into_bytes();
            edit(&mut value, edits);
            (vec![a, b], value)
        }
        _ => {
            let values: Vec<&[u8]> = if rest.is_empty() {
                Vec::new()
            } else {
                rest.split(|&b| b == b'\n').take(4).collect()
            };
            if let Ok(grant) = verifier().verify(values.iter().copied()) {
                assert_eq!(values.len(), 1);
                assert_matches_claims(values[0], &grant);
            }
            return;
        }
    };

    let result = verifier().verify(std::iter::once(value.as_slice()));
    let credentials = auth::bearer_credentials(&value);
    let same = minted
        .iter()
        .find(|m| credentials == Some(m.token.as_bytes()));
    match (&result, same) {
        (Ok(grant), Some(m)) => {
            assert_eq!(
                m.audience, AUDIENCE,
                "a token for another audience accepted"
            );
            assert_grants(grant, &m.owner, &m.cameras);
            assert_matches_claims(&value, grant);
        }
        (Ok(grant), None) => panic!(
            "an edited token was accepted for {:?}: {:?}",
            grant.owner(),
            String::from_utf8_lossy(&value)
        ),
        (Err(error), Some(m)) if m.audience == AUDIENCE => {
            panic!("a minted token was refused: {error}")
        }
        (Err(_), _) => {}
    }
});
