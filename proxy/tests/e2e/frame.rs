//! A frame reaches the hub whole, with SPEC's headers.

use crate::common::Stack;

#[test]
fn latest_frame_reaches_the_hub_with_its_headers() {
    let stack = Stack::start();
    let reply = stack.get_as("owner-1", &["cam-1"], "/v1/cameras/cam-1/frame");
    assert_eq!(reply.status, 200, "{}", reply.text());

    let (camera, seq) = camsim::jpeg::read_watermark(&reply.body).expect("a watermark");
    assert_eq!(camera, "cam-1");
    let hash = blake3::hash(&reply.body).to_hex().to_string();
    assert_eq!(reply.header("etag"), Some(format!("\"{hash}\"").as_str()));
    assert_eq!(reply.header("content-type"), Some("image/jpeg"));
    assert_eq!(reply.header("cache-control"), Some("private, max-age=1"));
    assert_eq!(
        reply.header("cache-status"),
        Some("framecache; fwd=miss; stored")
    );
    assert_eq!(reply.header("age"), Some("0"));
    assert_eq!(
        reply.header("content-location"),
        Some(format!("/v1/cameras/cam-1/frames/{hash}").as_str())
    );
    assert_eq!(reply.header("x-frame-seq"), Some(seq.to_string().as_str()));
    let captured: u64 = reply
        .header("x-frame-captured-at")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        captured > 1_600_000_000_000,
        "ms since the epoch: {captured}"
    );
    assert_eq!(
        reply.header("content-length"),
        Some(reply.body.len().to_string().as_str())
    );

    let scrape = stack.scrape();
    assert_eq!(
        crate::common::metric_in(
            &scrape,
            r#"framecache_requests_total{route="frame",status="200"}"#
        ),
        1.0
    );
    assert_eq!(
        crate::common::metric_in(&scrape, r#"framecache_origin_requests_total{outcome="ok"}"#),
        1.0
    );
    assert_eq!(
        crate::common::metric_in(
            &scrape,
            r#"framecache_response_bytes_total{variant="full"}"#
        ),
        reply.body.len() as f64
    );
    assert_eq!(
        crate::common::metric_in(
            &scrape,
            r#"framecache_request_duration_seconds_count{route="frame"}"#
        ),
        1.0
    );
}

#[test]
fn frame_by_hash_and_head() {
    let stack = Stack::start();
    let latest = stack.get_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
    assert_eq!(latest.status, 200);
    let location = latest.header("content-location").unwrap().to_string();

    let by_hash = stack.get_as("owner-1", &["cam-2"], &location);
    assert_eq!(by_hash.status, 200, "{}", by_hash.text());
    assert_eq!(by_hash.body, latest.body);
    assert_eq!(
        by_hash.header("cache-control"),
        Some("private, max-age=31536000, immutable")
    );
    assert_eq!(by_hash.header("content-location"), None);

    let token = stack.token("owner-1", &["cam-2"]);
    let head = stack.send(
        "HEAD",
        "/v1/cameras/cam-2/frame",
        &[("Authorization", &format!("Bearer {token}"))],
    );
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("etag"), latest.header("etag"));
    assert_eq!(
        head.header("content-length"),
        Some(latest.body.len().to_string().as_str())
    );

    // A hash the camera never produced: the origin says 404, and so does the proxy.
    let unknown = format!(
        "/v1/cameras/cam-2/frames/{}",
        blake3::hash(b"nothing").to_hex()
    );
    let reply = stack.get_as("owner-1", &["cam-2"], &unknown);
    assert_eq!(reply.status, 404);
    assert_eq!(reply.error_code(), "not_found");
}

#[test]
fn owners_sharing_a_camera_each_get_it_under_their_own_name() {
    let stack = Stack::start();
    // cam-1 belongs to owner-1 and is shared with owner-2.
    for owner in ["owner-1", "owner-2"] {
        let reply = stack.get_as(owner, &["cam-1"], "/v1/cameras/cam-1/frame");
        assert_eq!(reply.status, 200);
        assert_eq!(
            camsim::jpeg::read_watermark(&reply.body).unwrap().0,
            "cam-1"
        );
    }
    // owner-3 holds a token naming cam-1, but the backend does not share it with them.
    let reply = stack.get_as("owner-3", &["cam-1"], "/v1/cameras/cam-1/frame");
    assert_eq!(reply.status, 403);
    assert_eq!(reply.error_code(), "forbidden");
    assert_eq!(stack.origin_requests(), 3, "one origin request each");
}

#[test]
fn readiness_and_health() {
    let stack = Stack::start();
    let get = |path: &str| {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        crate::common::exchange(stack.proxy.admin_addr, raw.as_bytes(), false)
    };
    assert_eq!(get("/healthz").status, 200);
    // Readiness follows the server reaching its running phase; poll a bounded number of times.
    crate::common::wait_until("/readyz answers 200", || get("/readyz").status == 200);
    assert_eq!(get("/nope").status, 404);
    let raw = "POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let reply = crate::common::exchange(stack.proxy.admin_addr, raw.as_bytes(), false);
    assert_eq!(reply.status, 405);
}

#[test]
fn one_connection_serves_many_requests() {
    use std::io::{Read, Write};
    let stack = Stack::start();
    let token = stack.token("owner-1", &["cam-1"]);
    let mut conn = std::net::TcpStream::connect(stack.proxy.hub_addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    for _ in 0..3 {
        write!(
            conn,
            "GET /v1/cameras/cam-1/frame HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .unwrap();
        // Read the head, then exactly Content-Length bytes.
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            conn.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap();
        let mut body = vec![0u8; len];
        conn.read_exact(&mut body).unwrap();
        assert_eq!(camsim::jpeg::read_watermark(&body).unwrap().0, "cam-1");
    }
    // The proxy kept its origin connection alive too.
    assert_eq!(stack.camsim.stats().connections_accepted, 1);
}
