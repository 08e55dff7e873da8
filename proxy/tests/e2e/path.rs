//! Hostile paths and methods never reach the origin, and never become a lookup under another key.

use crate::common::Stack;

#[test]
fn hostile_paths_never_reach_the_origin() {
    let stack = Stack::start();
    let token = stack.token("owner-1", &["cam-1", "cam-2"]);
    let auth = format!("Bearer {token}");
    let hash = blake3::hash(b"x").to_hex().to_string();
    let cases: Vec<(String, u16)> = vec![
        ("/v1/cameras/cam-1%2Fframe".into(), 400),
        ("/v1/cameras/cam-1%2fframe".into(), 400),
        ("/v1/cameras/%63am-1/frame".into(), 400),
        ("/v1/cameras/cam-1/./frame".into(), 400),
        ("/v1/cameras/cam-2/../cam-1/frame".into(), 400),
        ("/v1/cameras/../../cameras/cam-1/frame".into(), 400),
        ("/v1//cameras/cam-1/frame".into(), 400),
        ("//v1/cameras/cam-1/frame".into(), 400),
        ("/v1/cameras/cam-1//frame".into(), 400),
        ("/v1/cameras/cam-1/frame/".into(), 400),
        ("/v1/cameras/cam-1;owner=owner-2/frame".into(), 400),
        ("/v1/cameras/cam-1/frame;jsessionid=1".into(), 400),
        (
            "/v1/cameras/cam-1/frame?variant=full&owner=owner-2".into(),
            400,
        ),
        ("/v1/cameras/cam-1/frame?cb=123".into(), 400),
        ("/v1/cameras/cam-1/frame?variant=gigantic".into(), 400),
        ("/v1/cameras/cam-1/frame%00".into(), 400),
        (format!("/v1/cameras/{}/frame", "c".repeat(65)), 400),
        (
            format!("/v1/cameras/cam-1/frames/{}", hash.to_uppercase()),
            400,
        ),
        (format!("/v1/cameras/cam-1/frames/{hash}0"), 400),
        ("/v1/cameras/cam-1/frames/not-a-hash".into(), 400),
        ("/v1/cameras/cam-1".into(), 404),
        ("/v1/cameras/cam-1/frame/extra".into(), 404),
        ("/v1/cameras/cam-1/FRAME".into(), 404),
        ("/cameras/cam-1/frame".into(), 404),
        ("/".into(), 404),
    ];
    for (path, status) in &cases {
        let reply = stack.get(path, &[("Authorization", &auth)]);
        assert_eq!(reply.status, *status, "{path}: {}", reply.text());
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "{path}"
        );
    }
    // Bytes not allowed in a request line (a raw NUL, a space) are refused with the head, before
    // Pingora would percent-encode them (`cam%00-1`, `cam%201`) and hand the request on; the
    // route's `%` ban stays behind it, so the raw line and its encoded twin cannot share a key.
    for raw in [
        "GET /v1/cameras/cam\0-1/frame HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        "GET /v1/cameras/cam 1/frame HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    ] {
        let raw = raw.replace("Host: h", &format!("Host: h\r\nAuthorization: {auth}"));
        let reply = crate::common::exchange(stack.proxy.hub_addr, raw.as_bytes(), false);
        assert_eq!(reply.status, 400, "{raw:?}");
        assert_eq!(reply.error_code(), "bad_request", "{raw:?}");
        assert_eq!(reply.header("server"), None, "{raw:?}");
    }
    assert_eq!(stack.origin_requests(), 0);
    let other = stack.metric(r#"framecache_requests_total{route="other",status="400"}"#)
        + stack.metric(r#"framecache_requests_total{route="other",status="404"}"#);
    // The two raw requests were counted with the rest.
    assert_eq!(other, cases.len() as f64 + 2.0, "every refusal is counted");
}

#[test]
fn other_methods_get_405_with_allow() {
    let stack = Stack::start();
    let token = stack.token("owner-1", &["cam-1"]);
    let auth = format!("Bearer {token}");
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let reply = stack.send(
            method,
            "/v1/cameras/cam-1/frame",
            &[("Authorization", &auth), ("Content-Length", "0")],
        );
        assert_eq!(reply.status, 405, "{method}");
        assert_eq!(reply.header("allow"), Some("GET, HEAD"));
        assert_eq!(reply.error_code(), "method_not_allowed");
    }
    let reply = stack.send(
        "HEAD",
        "/v1/cameras/cam-1/stream",
        &[("Authorization", &auth)],
    );
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET"));
    assert_eq!(stack.origin_requests(), 0);
}
