//! Every token failure gets its status, its `WWW-Authenticate`, and its metric; none reaches the
//! origin.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

use crate::common::{Stack, HUB_SECRET};

fn signed(claims: serde_json::Value, secret: &[u8]) -> String {
    encode(
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

fn claims(sub: &str, cams: &[&str], aud: &str, exp: u64) -> serde_json::Value {
    serde_json::json!({"sub": sub, "cams": cams, "aud": aud, "exp": exp})
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
            "oversized",
            Some(bearer("a".repeat(9000))),
            401,
            "malformed",
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
        9.0
    );
}

#[test]
fn owner_comes_from_the_token_never_from_headers_or_query() {
    let stack = Stack::start();
    let token = stack.token("owner-2", &["cam-3"]);
    let auth = format!("Bearer {token}");
    // A forged owner header is not passed on; the origin sees owner-2 and serves owner-2's cam-3.
    let reply = stack.get(
        "/v1/cameras/cam-3/frame",
        &[("Authorization", &auth), ("X-Framecache-Owner", "owner-3")],
    );
    assert_eq!(reply.status, 200);
    assert_eq!(
        camsim::jpeg::read_watermark(&reply.body).unwrap().0,
        "cam-3"
    );
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
