//! Every origin misbehaviour gets its status, serves nothing of the bad answer, and is counted
//! by reason.

use std::time::Duration;

use camsim::Faults;
use framecache::identity::OwnerId;

use crate::common::Stack;

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
