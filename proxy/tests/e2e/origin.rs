//! Every origin misbehaviour gets its status, serves nothing of the bad answer, and is counted
//! by reason.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use camsim::Faults;
use framecache::identity::OwnerId;

use crate::common::{raw_body, signed_frame, stack_on, Answer, RawOrigin, Stack};

fn rejected(stack: &Stack, reason: &str) -> f64 {
    stack.metric(&format!(
        r#"framecache_origin_rejections_total{{reason="{reason}"}}"#
    ))
}

/// Asks owner-1's cam-2 (not shared) with `faults` set; returns the reply.
fn ask_with(stack: &Stack, faults: Faults, path: &str) -> crate::common::Reply {
    stack.set_faults(faults);
    let reply = stack.get_as("owner-1", &["cam-2"], path);
    stack.set_faults(Faults::default());
    reply
}

#[test]
fn each_rejection_has_its_reason_and_serves_nothing() {
    let stack = Stack::with(
        |c| c.origin.response_timeout = Duration::from_millis(3000),
        |_| {},
    );
    let latest = "/v1/cameras/cam-2/frame";
    let cases: Vec<(&str, Faults, u16, Option<&str>)> = vec![
        (
            "wrong owner",
            Faults {
                wrong_owner_rate: 1.0,
                ..Faults::default()
            },
            502,
            Some("owner_mismatch"),
        ),
        (
            "wrong camera",
            Faults {
                wrong_camera_rate: 1.0,
                ..Faults::default()
            },
            502,
            Some("camera_mismatch"),
        ),
        (
            "leaked frame",
            Faults {
                leak_rate: 1.0,
                ..Faults::default()
            },
            502,
            Some("bad_signature"),
        ),
        (
            "bad signature",
            Faults {
                bad_signature_rate: 1.0,
                ..Faults::default()
            },
            502,
            Some("bad_signature"),
        ),
        (
            "missing signature",
            Faults {
                missing_signature_rate: 1.0,
                ..Faults::default()
            },
            502,
            Some("bad_signature"),
        ),
        (
            "content type",
            Faults {
                wrong_content_type_rate: 1.0,
                ..Faults::default()
            },
            502,
            Some("bad_content_type"),
        ),
        (
            "5xx",
            Faults {
                error_rate: 1.0,
                ..Faults::default()
            },
            502,
            Some("bad_status"),
        ),
        (
            "truncated",
            Faults {
                truncate_rate: 1.0,
                ..Faults::default()
            },
            502,
            Some("truncated"),
        ),
        (
            "reset mid-body",
            Faults {
                reset_rate: 1.0,
                ..Faults::default()
            },
            502,
            Some("truncated"),
        ),
    ];
    for (name, faults, status, reason) in cases {
        let before = reason.map(|r| rejected(&stack, r));
        let reply = ask_with(&stack, faults, latest);
        assert_eq!(reply.status, status, "{name}: {}", reply.text());
        assert_eq!(reply.error_code(), "bad_gateway", "{name}");
        assert!(
            camsim::jpeg::read_watermark(&reply.body).is_none(),
            "{name}: no frame bytes are served"
        );
        if let (Some(reason), Some(before)) = (reason, before) {
            assert_eq!(rejected(&stack, reason), before + 1.0, "{name}: {reason}");
        }
    }
    assert_eq!(
        stack.metric(r#"framecache_origin_requests_total{outcome="rejected"}"#),
        9.0
    );
    // A clean answer still passes afterwards.
    let reply = stack.get_as("owner-1", &["cam-2"], latest);
    assert_eq!(reply.status, 200);
}

#[test]
fn by_hash_body_must_hash_to_the_address() {
    let stack = Stack::start();
    let first = stack.get_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
    let location = first.header("content-location").unwrap().to_string();
    stack.camsim.advance("cam-2").unwrap();
    // Forget the cached copy, so the by-hash request goes to the origin.
    stack
        .proxy
        .shared
        .cache
        .purge(&OwnerId::parse("owner-1").unwrap(), None);
    let reply = ask_with(
        &stack,
        Faults {
            wrong_hash_rate: 1.0,
            ..Faults::default()
        },
        &location,
    );
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(rejected(&stack, "hash_mismatch"), 1.0);
}

#[test]
fn oversized_frames_are_refused() {
    let stack = Stack::with(|c| c.origin.max_frame_bytes = 1000, |_| {});
    let reply = stack.get_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
    assert_eq!(reply.status, 502);
    assert_eq!(rejected(&stack, "too_large"), 1.0);
}

#[test]
fn a_hanging_origin_times_out_with_504() {
    let stack = Stack::with(
        |c| c.origin.response_timeout = Duration::from_millis(300),
        |_| {},
    );
    let reply = ask_with(
        &stack,
        Faults {
            hang_rate: 1.0,
            hang_ms: 5_000,
            ..Faults::default()
        },
        "/v1/cameras/cam-2/frame",
    );
    assert_eq!(reply.status, 504);
    assert_eq!(reply.error_code(), "origin_timeout");
    assert_eq!(
        stack.metric(r#"framecache_origin_requests_total{outcome="timeout"}"#),
        1.0
    );
    // A slow body counts against the same whole-response deadline.
    let reply = ask_with(
        &stack,
        Faults {
            bandwidth_bytes_per_sec: Some(2_000),
            ..Faults::default()
        },
        "/v1/cameras/cam-2/frame",
    );
    assert_eq!(reply.status, 504);
}

#[test]
fn an_unreachable_origin_is_503_and_a_second_address_is_tried() {
    // Nothing listens on the first address: a port bound then released.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let stack = Stack::with(|c| c.origin.addresses.insert(0, dead), |_| {});
    for _ in 0..2 {
        // Whichever address rotation starts from, the live one answers.
        let reply = stack.get_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let stack = Stack::with(|c| c.origin.addresses = vec![dead], |_| {});
    let reply = stack.get_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
    assert_eq!(reply.status, 503);
    assert_eq!(reply.error_code(), "origin_unavailable");
    assert_eq!(
        stack.metric(r#"framecache_origin_requests_total{outcome="error"}"#),
        1.0
    );
}

#[test]
fn origin_404_and_403_pass_through() {
    let stack = Stack::start();
    // cam-9 does not exist at the backend, though the token names it.
    let reply = stack.get_as("owner-1", &["cam-9"], "/v1/cameras/cam-9/frame");
    assert_eq!(reply.status, 404);
    // owner-1's token names cam-3, which the backend does not share with owner-1.
    let reply = stack.get_as("owner-1", &["cam-3"], "/v1/cameras/cam-3/frame");
    assert_eq!(reply.status, 403);
}

#[test]
fn a_signature_made_with_another_key_is_refused() {
    let stack = Stack::with(|_| {}, |o| o.signing_key = [7; 32]);
    let reply = stack.get_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
    assert_eq!(reply.status, 502);
    assert_eq!(rejected(&stack, "bad_signature"), 1.0);
}

#[test]
fn informational_answers_are_read_past() {
    let origin = RawOrigin::start(16, |seen| {
        let informational: String = match seen.camera.as_str() {
            "cam-1" => "HTTP/1.1 100 Continue\r\n\r\n\
                        HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
                .into(),
            "cam-8" => "HTTP/1.1 103 Early Hints\r\n\r\n".repeat(8),
            "cam-9" => "HTTP/1.1 103 Early Hints\r\n\r\n".repeat(9),
            "cam-101" => "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n".into(),
            _ => String::new(),
        };
        let mut bytes = informational.into_bytes();
        bytes.extend(signed_frame(seen, ""));
        Answer::Send(bytes)
    });
    let stack = stack_on(&origin);
    for camera in ["cam-1", "cam-8"] {
        let reply = stack.get_as("owner-1", &[camera], &format!("/v1/cameras/{camera}/frame"));
        assert_eq!(reply.status, 200, "{camera}: {}", reply.text());
        assert_eq!(reply.body, raw_body(camera), "{camera}");
        assert_eq!(reply.header("x-frame-seq"), Some("7"), "{camera}");
    }
    // More informational answers than the bound, or a 101, are a bad status.
    for camera in ["cam-9", "cam-101"] {
        let reply = stack.get_as("owner-1", &[camera], &format!("/v1/cameras/{camera}/frame"));
        assert_eq!(reply.status, 502, "{camera}: {}", reply.text());
    }
    assert_eq!(rejected(&stack, "bad_status"), 2.0);
    // The connection that carried informational answers was fit to be used again.
    let reply = stack.get_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[test]
fn a_pooled_connection_the_origin_closed_is_replaced() {
    // The origin closes a kept-alive connection while it idles in the pool: the next request
    // goes out on a new one.
    let origin = RawOrigin::start(16, |seen| Answer::SendAndClose(signed_frame(seen, "")));
    let stack = stack_on(&origin);
    for camera in ["cam-1", "cam-2"] {
        let reply = stack.get_as("owner-1", &[camera], &format!("/v1/cameras/{camera}/frame"));
        assert_eq!(reply.status, 200, "{camera}: {}", reply.text());
    }
    assert_eq!(origin.connections(), 2);
    assert_eq!(origin.requests(), 2);

    // The harder case: the origin gives up on idle connections just as they are used again,
    // so a pooled connection looks alive until a request is sent on it. Five of them sit in
    // the pool; the next request must not try them one after another, but retry once on a
    // new connection.
    const POOLED: usize = 5;
    let waiting = Arc::new((Mutex::new(0usize), Condvar::new()));
    let gate = waiting.clone();
    let origin = RawOrigin::start(16, move |seen| {
        if seen.nth > 0 {
            return Answer::Close;
        }
        if seen.connection < POOLED {
            // Hold the first answers until all five connections are open.
            let (count, all_here) = &*gate;
            let mut count = count.lock().unwrap();
            *count += 1;
            all_here.notify_all();
            let _ = all_here
                .wait_timeout_while(count, Duration::from_secs(10), |n| *n < POOLED)
                .unwrap();
        }
        Answer::Send(signed_frame(seen, ""))
    });
    let stack = stack_on(&origin);
    let cameras: Vec<String> = (1..=POOLED + 1).map(|i| format!("cam-{i}")).collect();
    let headers: Vec<String> = cameras
        .iter()
        .map(|camera| format!("Bearer {}", stack.token("owner-1", &[camera])))
        .collect();
    let get = |i: usize| {
        let raw = format!(
            "GET /v1/cameras/{}/frame HTTP/1.1\r\nHost: hub.test\r\nConnection: close\r\n\
             Authorization: {}\r\n\r\n",
            cameras[i], headers[i]
        );
        crate::common::exchange(stack.proxy.hub_addr, raw.as_bytes(), false)
    };
    std::thread::scope(|scope| {
        let replies: Vec<_> = (0..POOLED).map(|i| scope.spawn(move || get(i))).collect();
        for reply in replies {
            let reply = reply.join().unwrap();
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
    });
    assert_eq!(origin.connections(), POOLED);
    let reply = get(POOLED);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.body, raw_body(&cameras[POOLED]));
    // One dead pooled connection tried, then one new connection.
    assert_eq!(origin.connections(), POOLED + 1);
    assert_eq!(origin.requests(), POOLED + 2);
    assert_eq!(
        stack.metric(r#"framecache_origin_requests_total{outcome="ok"}"#),
        (POOLED + 1) as f64
    );
}

#[test]
fn a_failed_reconnect_moves_on_to_the_next_address() {
    // The first address answers once on its only connection, then drops that connection when
    // it is used again and refuses new ones (a backend going away).
    let dying = RawOrigin::start(1, |seen| match seen.nth {
        0 => Answer::Send(signed_frame(seen, "")),
        _ => Answer::Close,
    });
    let addr = dying.addr;
    let stack = Stack::with(|c| c.origin.addresses.insert(0, addr), |_| {});
    // Rotation: the first fetch goes to the dying origin, the second to camsim, the third to
    // the dying origin's pooled connection again.
    let reply = stack.get_as("owner-1", &["cam-1"], "/v1/cameras/cam-1/frame");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.body, raw_body("cam-1"));
    let reply = stack.get_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = stack.get_as("owner-2", &["cam-3"], "/v1/cameras/cam-3/frame");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        camsim::jpeg::read_watermark(&reply.body).unwrap().0,
        "cam-3",
        "camsim answered"
    );
    assert_eq!(dying.connections(), 1);
    assert_eq!(dying.requests(), 2);
}

#[test]
fn cache_control_is_read_from_every_line() {
    let origin = RawOrigin::start(16, |seen| {
        let extra = match seen.camera.as_str() {
            "cam-1" => "Cache-Control: max-age=5\r\nCache-Control: no-store\r\n",
            _ => "Cache-Control: max-age=soon\r\n",
        };
        Answer::Send(signed_frame(seen, extra))
    });
    let addr = origin.addr;
    // Long enough that only the origin's directives can explain a short freshness.
    let stack = Stack::with(
        |c| {
            c.origin.addresses = vec![addr];
            c.cache.latest_fresh = Duration::from_secs(60);
            // Every stale request waits for the origin here.
            c.cache.stale_while_revalidate = Duration::ZERO;
        },
        |_| {},
    );
    // A no-store on the second line is not stored, however the first line reads.
    for _ in 0..2 {
        let reply = stack.get_as("owner-1", &["cam-1"], "/v1/cameras/cam-1/frame");
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("cache-control"), Some("private, no-store"));
        assert_eq!(reply.header("cache-status"), Some("framecache; fwd=miss"));
    }
    assert_eq!(origin.requests(), 2);
    // An unparsable max-age is 0: stored, but never fresh.
    for _ in 0..2 {
        let reply = stack.get_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("cache-control"), Some("private, max-age=0"));
        assert_eq!(
            reply.header("cache-status"),
            Some("framecache; fwd=miss; stored")
        );
    }
    assert_eq!(origin.requests(), 4);
}

/// A stack whose only origin answers owner-2's requests for cam-1 (a camera shared with it)
/// with the status the test sets: 200 (a signed frame), 403 (the share revoked), 404 (the camera
/// removed), or 503 (a failure stale-if-error covers). Every request asks the origin; a failure
/// may be answered with a copy up to a minute old.
fn switchable_origin() -> (Stack, RawOrigin, Arc<Mutex<u16>>) {
    let answer = Arc::new(Mutex::new(200));
    let answers = answer.clone();
    let origin = RawOrigin::start(64, move |seen| {
        let status = *answers.lock().unwrap();
        Answer::Send(match status {
            200 => signed_frame(seen, ""),
            403 => b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".to_vec(),
            404 => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
            _ => b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".to_vec(),
        })
    });
    let addr = origin.addr;
    let stack = Stack::with(
        |c| {
            c.origin.addresses = vec![addr];
            c.cache.latest_fresh = Duration::ZERO;
            c.cache.stale_while_revalidate = Duration::ZERO;
            c.cache.stale_if_error = Duration::from_secs(60);
        },
        |_| {},
    );
    (stack, origin, answer)
}

/// owner-2's request for cam-1, the origin answering with `status`.
fn ask_switched(stack: &Stack, answer: &Mutex<u16>, status: u16) -> crate::common::Reply {
    *answer.lock().unwrap() = status;
    stack.get_as("owner-2", &["cam-1"], "/v1/cameras/cam-1/frame")
}

#[test]
fn origin_403_and_404_are_final_and_never_answered_stale() {
    let (stack, _origin, answer) = switchable_origin();
    let frame = ask_switched(&stack, &answer, 200);
    assert_eq!(frame.status, 200, "{}", frame.text());
    assert_eq!(frame.body, raw_body("cam-1"));
    // The copy is there: an origin failure is answered with it.
    let stale = ask_switched(&stack, &answer, 503);
    assert_eq!(stale.status, 200);
    assert_eq!(
        stale.header("cache-status"),
        Some("framecache; hit; detail=stale")
    );
    // The origin's "not yours" and "no such camera" are passed on, never the copy.
    for (status, code) in [(403, "forbidden"), (404, "not_found")] {
        let reply = ask_switched(&stack, &answer, status);
        assert_eq!(reply.status, status, "{:?}", reply.header("cache-status"));
        assert_eq!(reply.error_code(), code);
    }
    assert_eq!(
        stack.metric(r#"framecache_cache_lookups_total{result="stale"}"#),
        1.0
    );
}

/// A share revoked (403) or a camera removed (404) at the origin ends the owner's cached copy
/// at once: the next origin failure within `cache.stale_if_error_secs` is not answered with
/// it.
#[test]
fn after_a_403_or_404_an_origin_failure_is_not_answered_with_the_copy() {
    let (stack, _origin, answer) = switchable_origin();
    for status in [403, 404] {
        assert_eq!(ask_switched(&stack, &answer, 200).status, 200);
        assert_eq!(ask_switched(&stack, &answer, status).status, status);
        let after = ask_switched(&stack, &answer, 503);
        assert_eq!(
            after.status,
            502,
            "after {status}: {:?}",
            after.header("cache-status")
        );
    }
}
