//! Low-bandwidth delivery: 304 on both frame routes, byte-exact ranges, resumption with
//! If-Range, 416.

use crate::common::Stack;

/// Frames of 1280×720 (about 76 KB): large enough to be sealed and sent by reference.
fn stack() -> Stack {
    Stack::with(
        |c| c.cache.latest_fresh = std::time::Duration::from_secs(60),
        |o| (o.width, o.height) = (1280, 720),
    )
}

/// GET `path` as owner-1 (cam-2) with extra headers.
fn get(stack: &Stack, path: &str, extra: &[(&str, &str)]) -> crate::common::Reply {
    let auth = format!("Bearer {}", stack.token("owner-1", &["cam-2"]));
    let mut headers = vec![("Authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    stack.get(path, &headers)
}

#[test]
fn not_modified_on_both_routes() {
    let stack = stack();
    let full = get(&stack, "/v1/cameras/cam-2/frame", &[]);
    assert_eq!(full.status, 200);
    let etag = full.header("etag").unwrap().to_string();
    let by_hash = full.header("content-location").unwrap().to_string();
    for path in ["/v1/cameras/cam-2/frame", by_hash.as_str()] {
        let whole = get(&stack, path, &[]);
        assert_eq!(whole.status, 200);
        for inm in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"nope\", {etag}"),
            "*".into(),
        ] {
            let reply = get(&stack, path, &[("If-None-Match", &inm)]);
            assert_eq!(reply.status, 304, "{path} {inm}");
            assert!(reply.body.is_empty());
            assert_eq!(reply.header("etag"), Some(etag.as_str()));
            assert!(reply.header("cache-control").is_some());
            assert_eq!(reply.header("cache-status"), Some("framecache; hit"));
            assert!(reply.header("age").is_some());
            // RFC 9110 §15.4.5: what a 200 would carry of these, a 304 carries too...
            for name in [
                "content-location",
                "vary",
                "x-frame-seq",
                "x-frame-captured-at",
            ] {
                assert_eq!(reply.header(name), whole.header(name), "{path} {name}");
            }
            // ...and no other metadata of the representation the hub already holds.
            for name in [
                "content-type",
                "content-length",
                "accept-ranges",
                "accept-ch",
                "x-frame-variant",
                "x-content-type-options",
            ] {
                assert!(whole.header(name).is_some(), "{path} {name}");
                assert_eq!(reply.header(name), None, "{path} {name}");
            }
        }
        let reply = get(&stack, path, &[("If-None-Match", "\"something-else\"")]);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, full.body);
    }
    // The camera moved on: the old ETag no longer matches the latest frame.
    stack.camsim.advance("cam-2").unwrap();
    stack.cache().purge(
        &framecache::identity::OwnerId::parse("owner-1").unwrap(),
        None,
    );
    let reply = get(
        &stack,
        "/v1/cameras/cam-2/frame",
        &[("If-None-Match", &etag)],
    );
    assert_eq!(reply.status, 200);
    assert_ne!(reply.header("etag"), Some(etag.as_str()));

    let scrape = stack.scrape();
    let m = |s: &str| crate::common::metric_in(&scrape, s);
    assert_eq!(m(r#"framecache_not_modified_total{route="frame"}"#), 4.0);
    assert_eq!(
        m(r#"framecache_not_modified_total{route="frame_by_hash"}"#),
        4.0
    );
    assert_eq!(
        m(r#"framecache_bytes_saved_total{reason="not_modified"}"#),
        8.0 * full.body.len() as f64
    );
    assert_eq!(
        m(r#"framecache_requests_total{route="frame",status="304"}"#),
        4.0
    );
}

/// JPEG is compressed already: a hub offering gzip or brotli gets the frame's own bytes, whose
/// blake3 is the ETag, with no `Content-Encoding`.
#[test]
fn frames_are_never_content_encoded() {
    let stack = stack();
    for status in ["fwd=miss", "hit"] {
        let reply = get(
            &stack,
            "/v1/cameras/cam-2/frame",
            &[("Accept-Encoding", "gzip, deflate, br, zstd")],
        );
        assert_eq!(reply.status, 200);
        assert!(reply.header("cache-status").unwrap().contains(status));
        assert_eq!(reply.header("content-encoding"), None);
        let etag = format!("\"{}\"", blake3::hash(&reply.body).to_hex());
        assert_eq!(reply.header("etag"), Some(etag.as_str()));
        assert_eq!(
            reply.header("content-length"),
            Some(reply.body.len().to_string().as_str())
        );
    }
}

#[test]
fn ranges_are_byte_exact_and_resume() {
    let stack = stack();
    let by_reference = framecache::sealed::sent_by_reference();
    let full = get(&stack, "/v1/cameras/cam-2/frame", &[]);
    let body = &full.body;
    let len = body.len();
    assert!(
        len >= framecache::sealed::MIN_SEALED,
        "a sealed body: {len} bytes"
    );
    assert_eq!(
        full.header("etag"),
        Some(format!("\"{}\"", blake3::hash(body).to_hex()).as_str()),
        "the bytes sent by reference are the verified frame"
    );
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
    let etag = full.header("etag").unwrap().to_string();
    for (range, start, end) in [
        ("bytes=0-99".to_string(), 0, 99),
        ("bytes=100-".to_string(), 100, len - 1),
        ("bytes=-500".to_string(), len - 500, len - 1),
        (format!("bytes=10-{}", len + 1000), 10, len - 1),
    ] {
        let reply = get(&stack, "/v1/cameras/cam-2/frame", &[("Range", &range)]);
        assert_eq!(reply.status, 206, "{range}");
        assert_eq!(&reply.body[..], &body[start..=end], "{range}");
        assert_eq!(
            reply.header("content-range"),
            Some(format!("bytes {start}-{end}/{len}").as_str())
        );
        assert_eq!(reply.header("etag"), Some(etag.as_str()));
    }
    // A hub that lost the connection after 1000 bytes resumes with If-Range.
    let rest = get(
        &stack,
        "/v1/cameras/cam-2/frame",
        &[("Range", "bytes=1000-"), ("If-Range", &etag)],
    );
    assert_eq!(rest.status, 206);
    let mut joined = body[..1000].to_vec();
    joined.extend_from_slice(&rest.body);
    assert_eq!(&joined, body, "resumed bytes complete the frame");
    // If-Range naming other bytes: the whole (current) frame instead.
    let other = get(
        &stack,
        "/v1/cameras/cam-2/frame",
        &[("Range", "bytes=1000-"), ("If-Range", "\"old\"")],
    );
    assert_eq!(other.status, 200);
    assert_eq!(&other.body, body);
    // Several ranges are answered whole; nonsense ranges are ignored.
    for range in ["bytes=0-1,5-6", "bytes=9-3", "pages=1-2"] {
        let reply = get(&stack, "/v1/cameras/cam-2/frame", &[("Range", range)]);
        assert_eq!(reply.status, 200, "{range}");
        assert_eq!(&reply.body, body);
    }
    // Outside the frame: 416 with the frame's length.
    let reply = get(
        &stack,
        "/v1/cameras/cam-2/frame",
        &[("Range", &format!("bytes={len}-"))],
    );
    assert_eq!(reply.status, 416);
    assert_eq!(
        reply.header("content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    assert_eq!(reply.error_code(), "range_not_satisfiable");

    let scrape = stack.scrape();
    let m = |s: &str| crate::common::metric_in(&scrape, s);
    assert_eq!(
        m(r#"framecache_partial_responses_total{result="partial"}"#),
        5.0
    );
    assert_eq!(
        m(r#"framecache_partial_responses_total{result="ignored"}"#),
        4.0
    );
    assert_eq!(
        m(r#"framecache_partial_responses_total{result="unsatisfiable"}"#),
        1.0
    );
    assert_eq!(
        stack.origin_requests(),
        1,
        "every answer came from the cached frame"
    );
    // The whole frame went out by reference at least five times (200s), the 206s from byte
    // 100 and 1000 on, and the last 500 bytes by copy. The count is the process's: tests
    // running beside this one may add to it, so with sealing broken for this stack alone it
    // could still pass; the hub socket's unit tests count each connection's bytes exactly.
    let sent = framecache::sealed::sent_by_reference() - by_reference;
    assert!(sent >= 5 * len as u64, "{sent} bytes by reference");
    assert!(m("framecache_sent_by_reference_bytes_total") >= sent as f64);
    assert!(m("framecache_sealed_bodies") >= 1.0);
}
