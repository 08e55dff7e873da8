//! Every token failure gets its status, its `WWW-Authenticate`, and its metric; none reaches the
//! origin.

use std::time::{SystemTime, UNIX_EPOCH};

use framecache::auth::{MAX_CAMERAS, MAX_HEADER_BYTES};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

use crate::common::{Stack, HUB_SECRET};

fn signed(claims: serde_json::Value, secret: &[u8]) -> String {
    signed_with(Algorithm::HS256, claims, secret)
}

fn signed_with(alg: Algorithm, claims: serde_json::Value, secret: &[u8]) -> String {
    encode(
        &Header::new(alg),
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

fn claims(sub: &str, cams: &[&str], aud: &str, exp: u64) -> serde_json::Value {
    serde_json::json!({"sub": sub, "cams": cams, "aud": aud, "exp": exp})
}

/// Signed owner-1 tokens naming `cam-1` and 64-character camera ids: the longest whose
/// `Authorization` header fits `MAX_HEADER_BYTES`, and the same with one id more.
fn tokens_around_the_header_limit() -> (String, String) {
    let exp = now() + 600;
    let token = |n: usize| {
        let cams: Vec<String> = std::iter::once("cam-1".to_string())
            .chain((0..n).map(|i| format!("{i:0>64}")))
            .collect();
        assert!(cams.len() <= MAX_CAMERAS, "the size decides, not the count");
        signed(
            serde_json::json!({"sub": "owner-1", "cams": cams, "aud": "framecache", "exp": exp}),
            HUB_SECRET,
        )
    };
    let fits = |t: &String| format!("Bearer {t}").len() <= MAX_HEADER_BYTES;
    let n = (1..).find(|n| !fits(&token(*n))).unwrap();
    let (under, over) = (token(n - 1), token(n));
    assert!(format!("Bearer {under}").len() > MAX_HEADER_BYTES - 100);
    (under, over)
}

#[test]
fn each_token_failure_has_its_status_and_reason() {
    let stack = Stack::start();
    let later = now() + 600;
    let bearer = |t: String| format!("Bearer {t}");
    let cases: Vec<(&str, Option<String>, u16, &str)> = vec![
        ("missing", None, 401, "missing"),
        (
            "malformed",
            Some(bearer("abc.def".into())),
            401,
            "malformed",
        ),
        (
            "basic scheme",
            Some("Basic b3duZXItMTpwdw==".into()),
            401,
            "malformed",
        ),
        (
            "expired",
            Some(bearer(signed(
                claims("owner-1", &["cam-1"], "framecache", now() - 3600),
                HUB_SECRET,
            ))),
            401,
            "expired",
        ),
        (
            "wrong audience",
            Some(bearer(signed(
                claims("owner-1", &["cam-1"], "other", later),
                HUB_SECRET,
            ))),
            401,
            "wrong_audience",
        ),
        (
            "bad signature",
            Some(bearer(signed(
                claims("owner-1", &["cam-1"], "framecache", later),
                b"not-the-hub-secret-not-the-hub-secret!!",
            ))),
            401,
            "bad_signature",
        ),
        (
            "oversized junk",
            Some(bearer("a".repeat(9000))),
            401,
            "malformed",
        ),
        (
            "signed, just over the header limit",
            Some(bearer(tokens_around_the_header_limit().1)),
            401,
            "malformed",
        ),
        (
            "HS512 with the hub secret",
            Some(bearer(signed_with(
                Algorithm::HS512,
                claims("owner-1", &["cam-1"], "framecache", later),
                HUB_SECRET,
            ))),
            401,
            "malformed",
        ),
        (
            // Not yet valid counts with the expired ones: the token is outside its lifetime.
            "not before, beyond the leeway",
            Some(bearer(signed(
                serde_json::json!({"sub": "owner-1", "cams": ["cam-1"], "aud": "framecache", "exp": later, "nbf": now() + 300}),
                HUB_SECRET,
            ))),
            401,
            "expired",
        ),
        (
            "audience array without ours",
            Some(bearer(signed(
                serde_json::json!({"sub": "owner-1", "cams": ["cam-1"], "aud": ["other"], "exp": later}),
                HUB_SECRET,
            ))),
            401,
            "wrong_audience",
        ),
        (
            "bad owner grammar",
            Some(bearer(signed(
                claims("owner/1", &["cam-1"], "framecache", later),
                HUB_SECRET,
            ))),
            401,
            "malformed",
        ),
        (
            "bad camera grammar",
            Some(bearer(signed(
                claims("owner-1", &["cam 1"], "framecache", later),
                HUB_SECRET,
            ))),
            401,
            "malformed",
        ),
        (
            "camera not granted",
            Some(bearer(signed(
                claims("owner-1", &["cam-2"], "framecache", later),
                HUB_SECRET,
            ))),
            403,
            "camera_not_granted",
        ),
    ];
    let refused_401 = cases.iter().filter(|c| c.2 == 401).count();
    for (name, auth, status, reason) in cases {
        let series = format!(r#"framecache_auth_failures_total{{reason="{reason}"}}"#);
        let before = stack.metric(&series);
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let reply = stack.get("/v1/cameras/cam-1/frame", &headers);
        assert_eq!(reply.status, status, "{name}: {}", reply.text());
        if status == 401 {
            assert_eq!(
                reply.header("www-authenticate"),
                Some(r#"Bearer error="invalid_token""#),
                "{name}"
            );
            assert_eq!(reply.error_code(), "invalid_token", "{name}");
        } else {
            assert_eq!(reply.error_code(), "forbidden", "{name}");
        }
        assert_eq!(stack.metric(&series), before + 1.0, "{name}: {series}");
    }
    assert_eq!(
        stack.origin_requests(),
        0,
        "no refused request reached the origin"
    );
    assert_eq!(
        stack.metric(r#"framecache_requests_total{route="frame",status="401"}"#),
        refused_401 as f64
    );
}

#[test]
fn tokens_that_fit_are_accepted() {
    let stack = Stack::start();
    let later = now() + 600;
    let cases = [
        (
            "signed, just under the header limit",
            tokens_around_the_header_limit().0,
        ),
        (
            // RFC 7519 §4.1.3: `aud` may be an array; one that names this proxy is accepted.
            "audience array with ours",
            signed(
                serde_json::json!({"sub": "owner-1", "cams": ["cam-1"], "aud": ["other", "framecache"], "exp": later}),
                HUB_SECRET,
            ),
        ),
        (
            "not before, within the leeway",
            signed(
                serde_json::json!({"sub": "owner-1", "cams": ["cam-1"], "aud": "framecache", "exp": later, "nbf": now() + 10}),
                HUB_SECRET,
            ),
        ),
    ];
    for (name, token) in cases {
        let reply = stack.get(
            "/v1/cameras/cam-1/frame",
            &[("Authorization", &format!("Bearer {token}"))],
        );
        assert_eq!(reply.status, 200, "{name}: {}", reply.text());
        assert_eq!(
            camsim::jpeg::read_watermark(&reply.body).unwrap().0,
            "cam-1",
            "{name}"
        );
    }
}

#[test]
fn owner_comes_from_the_token_never_from_headers_or_query() {
    let stack = Stack::start();
    let token = stack.token("owner-2", &["cam-3"]);
    let auth = format!("Bearer {token}");
    // The backend refuses cam-3 to owner-1 (403). Had the forged owner header reached it, in
    // place of or beside the verified one, the answer would be that 403.
    let reply = stack.get(
        "/v1/cameras/cam-3/frame",
        &[("Authorization", &auth), ("X-Framecache-Owner", "owner-1")],
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        camsim::jpeg::read_watermark(&reply.body).unwrap().0,
        "cam-3"
    );
    // The backend saw one request, and it passed its owner check (owner-2 reads cam-3).
    let stats = stack.camsim.stats();
    assert_eq!(stats.requests_total, 1);
    assert_eq!(stats.frame_requests_for("cam-3"), 1);
    let reply = stack.get(
        "/v1/cameras/cam-3/frame?owner=owner-3",
        &[("Authorization", &auth)],
    );
    assert_eq!(reply.status, 400);
    // Two Authorization headers are ambiguous: refused.
    let other = format!("Bearer {}", stack.token("owner-3", &["cam-3"]));
    let reply = stack.get(
        "/v1/cameras/cam-3/frame",
        &[("Authorization", &auth), ("Authorization", &other)],
    );
    assert_eq!(reply.status, 401);
}
