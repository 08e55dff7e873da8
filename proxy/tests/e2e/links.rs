//! Access links (`POST /v1/cameras/{camera}/links` → `?access=`): for one owner's one camera,
//! on its latest frame and stream only, no longer than the token or `auth.link_ttl_secs`, and
//! refused as a bad token when tampered, expired or misplaced.

use std::io::{Read, Write};
use std::time::Duration;

use crate::common::{Reply, Stack};

/// Asks for links to `camera` as `owner` (token for `cameras`).
fn links(stack: &Stack, owner: &str, cameras: &[&str], camera: &str) -> Reply {
    let token = stack.token(owner, cameras);
    stack.send(
        "POST",
        &format!("/v1/cameras/{camera}/links"),
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("Content-Length", "0"),
        ],
    )
}

fn access_of(url: &str) -> String {
    url.split_once("?access=").unwrap().1.to_string()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_link_serves_its_camera_without_a_header() {
    let stack = Stack::start();
    let reply = links(&stack, "owner-1", &["cam-1", "cam-2"], "cam-1");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let body = reply.json();
    let (frame, stream) = (
        body["frame"].as_str().unwrap(),
        body["stream"].as_str().unwrap(),
    );
    assert!(
        frame.starts_with("/v1/cameras/cam-1/frame?access="),
        "{frame}"
    );
    assert!(
        stream.starts_with("/v1/cameras/cam-1/stream?access="),
        "{stream}"
    );
    let expires_at = body["expires_at"].as_u64().unwrap();
    assert!(
        (now() + 295..=now() + 300).contains(&expires_at),
        "{expires_at}"
    );

    let by_link = stack.get(frame, &[]);
    assert_eq!(by_link.status, 200);
    let by_token = stack.get_as("owner-1", &["cam-1"], "/v1/cameras/cam-1/frame");
    assert_eq!(by_link.body, by_token.body);
    assert_eq!(
        stack.origin_requests_for("cam-1"),
        1,
        "one owner, one frame"
    );
    // With a rendition too.
    let thumb = stack.get(&format!("{frame}&variant=thumb"), &[]);
    assert_eq!(thumb.status, 200);
    assert_eq!(thumb.header("x-frame-variant"), Some("thumb"));

    // The stream: its first part arrives.
    let mut conn = std::net::TcpStream::connect(stack.proxy.hub_addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(conn, "GET {stream} HTTP/1.1\r\nHost: hub.test\r\n\r\n").unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    while !String::from_utf8_lossy(&seen).contains("Content-Type: image/jpeg") {
        let n = conn.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "the stream ended: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"));
}

#[test]
fn tampered_misplaced_or_expired_links_are_refused_as_bad_tokens() {
    let stack = Stack::with(|c| c.auth.link_ttl = Duration::from_secs(2), |_| {});
    let body = links(&stack, "owner-1", &["cam-1", "cam-2"], "cam-1").json();
    let access = access_of(body["frame"].as_str().unwrap());
    // Good for a moment (checked first, while surely within its two seconds).
    let good = stack.get(&format!("/v1/cameras/cam-1/frame?access={access}"), &[]);
    assert_eq!(good.status, 200);
    let refused = |path: String, headers: &[(&str, &str)], status: u16| {
        let reply = stack.get(&path, headers);
        assert_eq!(reply.status, status, "{path}: {}", reply.text());
        reply
    };
    // One character changed, anywhere.
    for i in [0, access.len() / 2, access.len() - 1] {
        let mut bytes = access.clone().into_bytes();
        bytes[i] = if bytes[i] == b'1' { b'2' } else { b'1' };
        let tampered = String::from_utf8(bytes).unwrap();
        refused(
            format!("/v1/cameras/cam-1/frame?access={tampered}"),
            &[],
            401,
        );
    }
    // Another camera of the same owner, a frame by hash, the links route itself.
    refused(format!("/v1/cameras/cam-2/frame?access={access}"), &[], 401);
    let hash = "ab".repeat(32);
    refused(
        format!("/v1/cameras/cam-1/frames/{hash}?access={access}"),
        &[],
        401,
    );
    let post = stack.send(
        "POST",
        &format!("/v1/cameras/cam-1/links?access={access}"),
        &[("Content-Length", "0")],
    );
    assert_eq!(post.status, 401, "a link makes no links");
    // Another query key, the key twice, a link and a token at once.
    refused(
        format!("/v1/cameras/cam-1/frame?access={access}&x=1"),
        &[],
        400,
    );
    refused(
        format!("/v1/cameras/cam-1/frame?access={access}&access={access}"),
        &[],
        400,
    );
    let token = format!("Bearer {}", stack.token("owner-1", &["cam-1"]));
    refused(
        format!("/v1/cameras/cam-1/frame?access={access}"),
        &[("Authorization", &token)],
        400,
    );
    let bad = stack.metric(r#"framecache_auth_failures_total{reason="bad_signature"}"#);
    let malformed = stack.metric(r#"framecache_auth_failures_total{reason="malformed"}"#);
    // Each refusal counted once: a changed character breaks the seal (bad_signature) or, at
    // the very end, the base64 itself (malformed); misplaced links are malformed requests.
    assert_eq!(bad + malformed, 6.0);
    assert!(bad >= 3.0, "{bad}");
    // Past auth.link_ttl_secs.
    std::thread::sleep(Duration::from_millis(3100));
    let expired = refused(format!("/v1/cameras/cam-1/frame?access={access}"), &[], 401);
    assert_eq!(expired.error_code(), "invalid_token");
    assert_eq!(
        stack.metric(r#"framecache_auth_failures_total{reason="expired"}"#),
        1.0
    );
}

#[test]
fn a_link_is_asked_with_a_token_that_grants_the_camera_and_ends_with_it() {
    let stack = Stack::start();
    assert_eq!(links(&stack, "owner-1", &["cam-1"], "cam-2").status, 403);
    let none = stack.send(
        "POST",
        "/v1/cameras/cam-1/links",
        &[("Content-Length", "0")],
    );
    assert_eq!(none.status, 401);
    let get = stack.get_as("owner-1", &["cam-1"], "/v1/cameras/cam-1/links");
    assert_eq!((get.status, get.header("allow")), (405, Some("POST")));
    // A token with a minute left gives a link with no more than that (and the leeway).
    let token = framecache::auth::mint(
        crate::common::HUB_SECRET,
        "framecache",
        "owner-1",
        &["cam-1".to_string()],
        Duration::from_secs(60),
    )
    .unwrap();
    let reply = stack.send(
        "POST",
        "/v1/cameras/cam-1/links",
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("Content-Length", "0"),
        ],
    );
    let expires_at = reply.json()["expires_at"].as_u64().unwrap();
    assert!(expires_at <= now() + 60 + 30, "{expires_at}");
}
