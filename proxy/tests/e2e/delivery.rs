//! Low-bandwidth delivery: 304 on both frame routes, byte-exact ranges, resumption with
//! If-Range, 416.

use crate::common::{wait_until, Reply, Stack};

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
                // Hints are asked for where they choose: not for a frame by its address.
                let automatic = !path.contains("/frames/");
                let expected = name != "accept-ch" || automatic;
                assert_eq!(whole.header(name).is_some(), expected, "{path} {name}");
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
    let full = get(&stack, "/v1/cameras/cam-2/frame", &[]);
    let body = &full.body;
    let len = body.len();
    assert_eq!(
        full.header("etag"),
        Some(format!("\"{}\"", blake3::hash(body).to_hex()).as_str()),
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
}

/// A cached frame is held in a sealed memory file and leaves by `sendfile`, whole or as the
/// range asked for; small parts and answers without a body send nothing by reference.
///
/// What was sent by reference is counted for the whole process, not per proxy (the counter
/// behind `framecache_sent_by_reference_bytes_total` and `framecache_sealed_bodies` is
/// `framecache::sealed`'s), so this test runs in a process of its own: every byte counted is
/// one of its requests'.
#[test]
fn cached_frames_leave_by_reference() {
    if !crate::common::in_own_process("delivery::cached_frames_leave_by_reference") {
        return;
    }
    let stack = stack();
    let by_reference = || stack.metric("framecache_sent_by_reference_bytes_total") as usize;
    assert_eq!(by_reference(), 0);
    // A write of `n` bytes of a sealed body goes by reference until less than MIN_SEALED is
    // left of it (the kernel may take a `sendfile` in parts); the rest is copied.
    let min_sealed = framecache::sealed::MIN_SEALED;
    let expect = |what: &str, reply: &Reply, n: usize, before: usize| {
        if n < min_sealed {
            assert_eq!(by_reference(), before, "{what}: nothing by reference");
            return before;
        }
        // Counted as `sendfile` returns, which may be a moment after the hub has the bytes.
        wait_until(&format!("{what} is counted"), || {
            by_reference() > before + n - min_sealed
        });
        let after = by_reference();
        assert!(
            after <= before + n,
            "{what}: {} bytes for {n}",
            after - before
        );
        assert_eq!(reply.body.len(), n, "{what}");
        after
    };

    let first = get(&stack, "/v1/cameras/cam-2/frame", &[]);
    assert_eq!(first.status, 200);
    let len = first.body.len();
    assert!(len > 2 * min_sealed, "{len} bytes");
    let mut sent = expect("the miss", &first, len, 0);
    // The body this proxy keeps is in a sealed file: one, shared by the latest and by-hash
    // entries.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cached = runtime
        .block_on(stack.proxy.shared.cache.get(
            &framecache::identity::OwnerId::parse("owner-1").unwrap(),
            &framecache::identity::CameraId::parse("cam-2").unwrap(),
            framecache::request::FrameRef::Latest,
            &framecache::cache::Via::Origin,
        ))
        .unwrap();
    assert_eq!(&cached.frame.body[..], &first.body[..]);
    assert!(framecache::sealed::find(&cached.frame.body).is_some());
    assert_eq!(stack.metric("framecache_sealed_bodies"), 1.0);

    let hit = get(&stack, "/v1/cameras/cam-2/frame", &[]);
    assert_eq!(hit.body, first.body);
    sent = expect("a hit", &hit, len, sent);
    let head = get(
        &stack,
        "/v1/cameras/cam-2/frame",
        &[("Range", "bytes=0-99")],
    );
    assert_eq!(head.status, 206);
    assert_eq!(head.body, first.body[..100]);
    sent = expect("the first 100 bytes", &head, 100, sent);
    let rest = get(
        &stack,
        "/v1/cameras/cam-2/frame",
        &[("Range", "bytes=100-")],
    );
    assert_eq!(rest.status, 206);
    assert_eq!(rest.body, first.body[100..]);
    sent = expect("the rest", &rest, len - 100, sent);
    let etag = first.header("etag").unwrap();
    let not_modified = get(
        &stack,
        "/v1/cameras/cam-2/frame",
        &[("If-None-Match", etag)],
    );
    assert_eq!(not_modified.status, 304);
    sent = expect("a 304", &not_modified, 0, sent);
    let token = stack.token("owner-1", &["cam-2"]);
    let head_only = stack.send(
        "HEAD",
        "/v1/cameras/cam-2/frame",
        &[("Authorization", &format!("Bearer {token}"))],
    );
    assert_eq!(head_only.status, 200);
    expect("a HEAD", &head_only, 0, sent);
    assert_eq!(stack.origin_requests(), 1);
}
