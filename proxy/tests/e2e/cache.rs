//! The owner-scoped frame cache, end to end: hits, coalescing, owner isolation, stale-if-error,
//! purge, the byte budget, forced collisions, and cancellation at random points.

use std::io::{Read, Write};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use camsim::Faults;
use framecache::cache::key::Identity;
use framecache::identity::{CameraId, OwnerId};
use framecache::request::FrameRef;

use crate::common::{metric_in, wait_until, Gate, Reply, Stack};

fn status(reply: &Reply) -> &str {
    reply.header("cache-status").unwrap_or("")
}

/// The two privacy alarms in the scrape: key collisions and cross-owner hits.
fn assert_alarms(stack: &Stack, collisions: f64, cross_owner: f64) {
    let scrape = stack.scrape();
    assert_eq!(
        metric_in(&scrape, "framecache_cache_key_collisions_total"),
        collisions
    );
    assert_eq!(
        metric_in(&scrape, "framecache_cache_cross_owner_hits_total"),
        cross_owner
    );
}

/// A stack whose latest frames stay fresh for a minute.
fn long_fresh() -> Stack {
    Stack::with(|c| c.cache.latest_fresh = Duration::from_secs(60), |_| {})
}

/// A hub's cache takes `Age` off `max-age` itself (RFC 9111, 4.2.3): a frame fresh for 60 s and
/// aged a second and a fraction is sent with `max-age` 59 (60 less the fraction, rounded down),
/// not 58 (the age taken off twice).
#[test]
fn an_older_hit_says_its_age_once() {
    let stack = long_fresh();
    stack.get_as("owner-1", &["cam-1"], "/v1/cameras/cam-1/frame");
    std::thread::sleep(Duration::from_millis(1_100));
    let hit = stack.get_as("owner-1", &["cam-1"], "/v1/cameras/cam-1/frame");
    assert_eq!(status(&hit), "framecache; hit");
    let age: u64 = hit.header("age").unwrap().parse().unwrap();
    assert!(age >= 1, "age {age}");
    let cache_control = hit.header("cache-control").unwrap();
    assert!(
        ["private, max-age=59", "private, max-age=60"].contains(&cache_control),
        "{cache_control} with age {age}"
    );
}

#[test]
fn hit_after_miss_without_an_origin_request() {
    let stack = long_fresh();
    let first = stack.get_as("owner-1", &["cam-1"], "/v1/cameras/cam-1/frame");
    assert_eq!(status(&first), "framecache; fwd=miss; stored");
    let second = stack.get_as("owner-1", &["cam-1"], "/v1/cameras/cam-1/frame");
    assert_eq!(second.status, 200);
    assert_eq!(status(&second), "framecache; hit");
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("etag"), first.header("etag"));
    let cache_control = second.header("cache-control").unwrap();
    assert!(
        ["private, max-age=59", "private, max-age=60"].contains(&cache_control),
        "{cache_control}"
    );
    // The by-hash entry shares the body.
    let by_hash = stack.get_as(
        "owner-1",
        &["cam-1"],
        first.header("content-location").unwrap(),
    );
    assert_eq!(status(&by_hash), "framecache; hit");
    assert_eq!(by_hash.body, first.body);
    assert_eq!(stack.origin_requests_for("cam-1"), 1);

    let scrape = stack.scrape();
    assert_eq!(
        metric_in(&scrape, r#"framecache_cache_lookups_total{result="hit"}"#),
        2.0
    );
    assert_eq!(
        metric_in(&scrape, r#"framecache_cache_lookups_total{result="miss"}"#),
        1.0
    );
    assert_eq!(metric_in(&scrape, "framecache_cache_entries"), 2.0);
    assert_eq!(
        metric_in(&scrape, "framecache_cache_stored_bytes"),
        first.body.len() as f64,
        "one body, shared by the latest and by-hash entries"
    );
}

/// A stack whose origin requests wait at a gate (closed) until the test opens it; latest
/// frames stay fresh for a minute, and a request waits for another's fetch as long as the test
/// holds it.
fn gated() -> (Stack, Gate) {
    Stack::gated(
        |c| {
            c.cache.latest_fresh = Duration::from_secs(60);
            c.cache.coalesce_wait = Duration::from_secs(60);
        },
        |_| {},
    )
}

#[test]
fn concurrent_cold_requests_make_one_origin_request() {
    let (stack, gate) = gated();
    // 200 requests sent while the first one's fetch is held at the origin.
    let sent: Vec<_> = (0..200)
        .map(|_| stack.send_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame"))
        .collect();
    wait_until("the fetch is at the origin", || gate.held() > 0);
    gate.open();
    let replies: Vec<Reply> = sent.into_iter().map(|s| s.reply(false)).collect();
    let first = &replies[0].body;
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(&reply.body, first, "one body for all");
    }
    assert_eq!(gate.seen().len(), 1, "exactly one origin request");
    assert_eq!(stack.origin_requests_for("cam-2"), 1);
    let answered =
        |cache_status: &str| replies.iter().filter(|r| status(r) == cache_status).count() as f64;
    let scrape = stack.scrape();
    let lookups = |r: &str| {
        metric_in(
            &scrape,
            &format!(r#"framecache_cache_lookups_total{{result="{r}"}}"#),
        )
    };
    assert_eq!(lookups("miss"), 1.0);
    assert_eq!(answered("framecache; fwd=miss; stored"), 1.0);
    // Those the proxy had read while the fetch was held waited for it; any it read after
    // were hits.
    assert_eq!(
        lookups("coalesced"),
        answered("framecache; fwd=miss; collapsed; stored")
    );
    assert_eq!(lookups("hit"), answered("framecache; hit"));
    assert_eq!(lookups("coalesced") + lookups("hit"), 199.0);
    assert!(lookups("coalesced") > 0.0);
}

#[test]
fn owners_sharing_a_camera_never_share_entries_or_fetches() {
    let (stack, gate) = gated();
    // cam-1 is owner-1's, shared with owner-2: requests of both, sent while the first
    // fetch is held at the origin.
    let sent: Vec<_> = (0..20)
        .map(|i| {
            let owner = if i % 2 == 0 { "owner-1" } else { "owner-2" };
            stack.send_as(owner, &["cam-1"], "/v1/cameras/cam-1/frame")
        })
        .collect();
    // Each owner's fetch reaches the origin while the other's is held there: neither waits
    // for the other's.
    wait_until("two fetches are at the origin", || gate.held() >= 2);
    let owners: Vec<String> = gate.seen().into_iter().map(|(owner, _)| owner).collect();
    assert_eq!(owners, ["owner-1", "owner-2"]);
    gate.open();
    for sent in sent {
        let reply = sent.reply(false);
        assert_eq!(reply.status, 200);
        assert_eq!(
            camsim::jpeg::read_watermark(&reply.body).unwrap().0,
            "cam-1"
        );
    }
    assert_eq!(gate.seen().len(), 2, "one fetch per owner");
    // Each owner now hits its own entry.
    for owner in ["owner-1", "owner-2"] {
        let reply = stack.get_as(owner, &["cam-1"], "/v1/cameras/cam-1/frame");
        assert_eq!(status(&reply), "framecache; hit");
    }
    assert_eq!(stack.origin_requests_for("cam-1"), 2);
    assert_eq!(
        stack.cache().usage().0,
        4,
        "latest and by-hash entries for each owner"
    );
}

#[test]
fn a_token_naming_another_owners_camera_never_gets_the_cached_copy() {
    let stack = long_fresh();
    let own = stack.get_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
    assert_eq!(own.status, 200);
    // owner-3's token (wrongly) names cam-2; the cache holds owner-1's copy, which owner-3
    // must never see: the request goes to the origin under owner-3, which refuses it.
    let other = stack.get_as("owner-3", &["cam-2"], "/v1/cameras/cam-2/frame");
    assert_eq!(other.status, 403);
    let by_hash = stack.get_as(
        "owner-3",
        &["cam-2"],
        own.header("content-location").unwrap(),
    );
    assert_eq!(
        by_hash.status, 403,
        "the backend refuses owner-3 this frame"
    );
    assert_eq!(stack.metric("framecache_cache_cross_owner_hits_total"), 0.0);
}

#[test]
fn stale_if_error_on_5xx_rejection_and_hang() {
    let stack = Stack::with(
        |c| {
            // Always revalidate, so every request asks the origin.
            c.cache.latest_fresh = Duration::ZERO;
            c.cache.stale_while_revalidate = Duration::ZERO;
            c.origin.response_timeout = Duration::from_millis(300);
        },
        |_| {},
    );
    let fresh = stack.get_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
    assert_eq!(fresh.status, 200);
    for faults in [
        Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
        Faults {
            leak_rate: 1.0,
            ..Faults::default()
        },
        Faults {
            hang_rate: 1.0,
            hang_ms: 2_000,
            ..Faults::default()
        },
    ] {
        stack.set_faults(faults.clone());
        let reply = stack.get_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
        assert_eq!(reply.status, 200, "{faults:?}: {}", reply.text());
        assert_eq!(
            status(&reply),
            "framecache; hit; detail=stale",
            "{faults:?}"
        );
        assert_eq!(reply.body, fresh.body);
        assert!(reply.header("age").is_some());
        assert_eq!(reply.header("cache-control"), Some("private, max-age=0"));
        // Another owner has no stale copy of its own: it gets the error.
        let other = stack.get_as("owner-2", &["cam-1"], "/v1/cameras/cam-1/frame");
        assert!(other.status >= 500, "{faults:?}: {}", other.status);
    }
    stack.set_faults(Faults::default());
    assert_eq!(
        stack.metric(r#"framecache_cache_lookups_total{result="stale"}"#),
        3.0
    );
}

#[test]
fn a_latest_frame_older_than_stale_if_error_is_not_served_stale() {
    let window = Duration::from_millis(200);
    let stack = Stack::with(
        |c| {
            c.cache.latest_fresh = Duration::ZERO;
            c.cache.stale_while_revalidate = Duration::ZERO;
            c.cache.stale_if_error = window;
            c.origin.response_timeout = Duration::from_millis(300);
        },
        |_| {},
    );
    let fresh = stack.get_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
    assert_eq!(fresh.status, 200);
    // Time passes (as much as it takes): the cached frame grows older than the window.
    thread::sleep(2 * window);
    assert_eq!(
        stack.metric("framecache_cache_entries"),
        2.0,
        "the frame is still cached"
    );
    for (faults, code) in [
        (
            Faults {
                error_rate: 1.0,
                ..Faults::default()
            },
            502,
        ),
        (
            Faults {
                // Until the proxy gives up and closes the connection.
                hang_rate: 1.0,
                hang_ms: 60_000,
                ..Faults::default()
            },
            504,
        ),
    ] {
        stack.set_faults(faults.clone());
        let reply = stack.get_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
        assert_eq!(reply.status, code, "{faults:?}: {:?}", status(&reply));
        assert!(
            camsim::jpeg::read_watermark(&reply.body).is_none(),
            "{faults:?}: no frame bytes"
        );
    }
    assert_eq!(
        stack.metric(r#"framecache_cache_lookups_total{result="stale"}"#),
        0.0
    );
}

#[test]
fn purge_removes_entries_at_once() {
    let stack = long_fresh();
    for camera in ["cam-1", "cam-2"] {
        let path = format!("/v1/cameras/{camera}/frame");
        assert_eq!(stack.get_as("owner-1", &[camera], &path).status, 200);
    }
    assert_eq!(
        stack
            .get_as("owner-2", &["cam-1"], "/v1/cameras/cam-1/frame")
            .status,
        200
    );

    let reply = stack.admin(
        "POST",
        "/admin/purge",
        r#"{"owner": "owner-1", "camera": "cam-1"}"#,
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["purged"], 2, "latest and by-hash");
    let cam1 = stack.get_as("owner-1", &["cam-1"], "/v1/cameras/cam-1/frame");
    assert_eq!(status(&cam1), "framecache; fwd=miss; stored");
    let cam2 = stack.get_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
    assert_eq!(status(&cam2), "framecache; hit");
    let other = stack.get_as("owner-2", &["cam-1"], "/v1/cameras/cam-1/frame");
    assert_eq!(
        status(&other),
        "framecache; hit",
        "another owner's entries stay"
    );

    let reply = stack.admin("POST", "/admin/purge", r#"{"owner": "owner-1"}"#, None);
    assert_eq!(reply.json()["purged"], 4);
    let cam2 = stack.get_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
    assert_eq!(status(&cam2), "framecache; fwd=miss; stored");

    // Bad requests lose nothing.
    for (body, token, code) in [
        (
            r#"{"owner": "owner-2"}"#,
            Some("wrong-token-wrong-token"),
            401,
        ),
        ("not json", None, 400),
        (r#"{"owner": "owner/2"}"#, None, 400),
        (r#"{"owner": "owner-2", "extra": 1}"#, None, 400),
        (r#"{"camera": "cam-1"}"#, None, 400),
    ] {
        let reply = stack.admin("POST", "/admin/purge", body, token);
        assert_eq!(reply.status, code, "{body}: {}", reply.text());
    }
    assert_eq!(stack.admin("GET", "/admin/purge", "", None).status, 405);
    let other = stack.get_as("owner-2", &["cam-1"], "/v1/cameras/cam-1/frame");
    assert_eq!(status(&other), "framecache; hit");
}

/// `POST /admin/purge` with exactly these `Authorization` header lines (each ending in CRLF).
fn purge_with(stack: &Stack, authorization: &str, body: &str) -> Reply {
    let raw = format!(
        "POST /admin/purge HTTP/1.1\r\nHost: admin\r\n{authorization}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    crate::common::exchange(stack.proxy.admin_addr, raw.as_bytes(), false)
}

#[test]
fn a_purge_needs_exactly_one_admin_bearer_token() {
    let stack = long_fresh();
    assert_eq!(
        stack
            .get_as("owner-1", &["cam-1"], "/v1/cameras/cam-1/frame")
            .status,
        200
    );
    let token = std::str::from_utf8(crate::common::ADMIN_TOKEN).unwrap();
    let right = format!("Authorization: Bearer {token}\r\n");
    let wrong = "Authorization: Bearer not-the-admin-token\r\n";
    let body = r#"{"owner": "owner-1"}"#;
    for (name, authorization) in [
        ("no header", String::new()),
        ("the token twice", format!("{right}{right}")),
        ("another, then the token", format!("{wrong}{right}")),
        ("the token, then another", format!("{right}{wrong}")),
    ] {
        let reply = purge_with(&stack, &authorization, body);
        assert_eq!(reply.status, 401, "{name}: {}", reply.text());
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{name}");
        assert_eq!(reply.error_code(), "invalid_token", "{name}");
    }
    // Nothing was purged.
    let cached = stack.get_as("owner-1", &["cam-1"], "/v1/cameras/cam-1/frame");
    assert_eq!(status(&cached), "framecache; hit");
    assert_eq!(stack.metric("framecache_cache_purges_total"), 0.0);
    // The same request with the token once is carried out.
    let reply = purge_with(&stack, &right, body);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["purged"], 2);
}

/// A bad purge body is refused in the proxy's words, never with what the client sent; the
/// bearer scheme is case-insensitive, as on the hub listener.
#[test]
fn a_bad_purge_body_is_not_echoed() {
    let stack = long_fresh();
    let token = std::str::from_utf8(crate::common::ADMIN_TOKEN).unwrap();
    let right = format!("Authorization: bearer {token}\r\n");
    for body in [
        r#"{"owner": "owner-1", "<script>sneaky</script>": 1}"#,
        r#"{"owner": "owner-1" <script>sneaky</script>"#,
    ] {
        let reply = purge_with(&stack, &right, body);
        assert_eq!(reply.status, 400, "{body}: {}", reply.text());
        assert_eq!(reply.error_code(), "bad_request");
        assert!(!reply.text().contains("sneaky"), "{}", reply.text());
    }
    let reply = purge_with(&stack, &right, r#"{"owner": "owner-1"}"#);
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[test]
fn a_fill_in_flight_when_purge_arrives_does_not_land() {
    let (stack, gate) = gated();
    let waiting = stack.send_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
    // The fill is at the origin, held there, when the purge arrives.
    wait_until("the fill is at the origin", || gate.held() == 1);
    let reply = stack.admin("POST", "/admin/purge", r#"{"owner": "owner-1"}"#, None);
    assert_eq!(reply.status, 200);
    gate.open();
    let served = waiting.reply(false);
    assert_eq!(served.status, 200);
    assert_eq!(
        status(&served),
        "framecache; fwd=miss",
        "served, not stored"
    );
    let next = stack.get_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
    assert_eq!(status(&next), "framecache; fwd=miss; stored");
    assert_eq!(stack.origin_requests_for("cam-2"), 2);
}

#[test]
fn a_purged_copy_is_never_served_stale_when_the_origin_fails() {
    let (stack, gate) = Stack::gated(
        |c| {
            // Every request asks the origin; a failure may be answered with a copy a minute old.
            c.cache.latest_fresh = Duration::ZERO;
            c.cache.stale_while_revalidate = Duration::ZERO;
            c.cache.stale_if_error = Duration::from_secs(60);
        },
        |_| {},
    );
    gate.open();
    for camera in ["cam-1", "cam-2"] {
        let path = format!("/v1/cameras/{camera}/frame");
        assert_eq!(stack.get_as("owner-1", &[camera], &path).status, 200);
    }
    stack.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    // A copy that was not purged is what stale-if-error serves.
    let kept = stack.get_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
    assert_eq!(status(&kept), "framecache; hit; detail=stale");
    // A purge before the request: the origin fails, and there is nothing to serve.
    let reply = stack.admin(
        "POST",
        "/admin/purge",
        r#"{"owner": "owner-1", "camera": "cam-1"}"#,
        None,
    );
    assert_eq!(reply.json()["purged"], 2);
    let purged = stack.get_as("owner-1", &["cam-1"], "/v1/cameras/cam-1/frame");
    assert_eq!(purged.status, 502, "{:?}", status(&purged));
    assert!(camsim::jpeg::read_watermark(&purged.body).is_none());
    // A purge while the request's fetch is under way, after the request found the copy: the
    // origin fails, and the copy the request found is not served either.
    gate.close();
    let waiting = stack.send_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
    wait_until("the fetch is at the origin", || gate.held() == 1);
    let reply = stack.admin(
        "POST",
        "/admin/purge",
        r#"{"owner": "owner-1", "camera": "cam-2"}"#,
        None,
    );
    assert_eq!(reply.json()["purged"], 2);
    gate.open();
    let purged = waiting.reply(false);
    assert_eq!(purged.status, 502, "{:?}", status(&purged));
    assert!(camsim::jpeg::read_watermark(&purged.body).is_none());
    assert_eq!(
        stack.metric(r#"framecache_cache_lookups_total{result="stale"}"#),
        1.0
    );
}

#[test]
fn requests_after_a_purge_never_join_a_fetch_begun_before_it() {
    let (stack, gate) = gated();
    let before = stack.send_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
    wait_until("the first fetch is at the origin", || gate.held() == 1);
    let reply = stack.admin("POST", "/admin/purge", r#"{"owner": "owner-1"}"#, None);
    assert_eq!(reply.status, 200);
    // The same request after the purge makes a fetch of its own.
    let after = stack.send_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
    wait_until("the second fetch is at the origin", || gate.held() == 2);
    gate.open();
    let before = before.reply(false);
    assert_eq!(before.status, 200);
    assert_eq!(
        status(&before),
        "framecache; fwd=miss",
        "served, not stored"
    );
    let after = after.reply(false);
    assert_eq!(after.status, 200);
    assert_eq!(status(&after), "framecache; fwd=miss; stored");
    assert_eq!(gate.seen().len(), 2);
    let next = stack.get_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
    assert_eq!(status(&next), "framecache; hit");
    assert_eq!(next.body, after.body);
}

#[test]
fn eviction_keeps_stored_bytes_within_budget() {
    let budget = 150_000u64;
    let stack = Stack::with(
        |c| {
            c.cache.max_bytes = budget;
            c.cache.latest_fresh = Duration::ZERO;
            c.cache.stale_while_revalidate = Duration::ZERO;
            c.origin.max_frame_bytes = 100_000;
        },
        |_| {},
    );
    let pairs = [
        ("owner-1", "cam-1"),
        ("owner-1", "cam-2"),
        ("owner-2", "cam-3"),
        ("owner-2", "cam-4"),
    ];
    for round in 0..30 {
        for (owner, camera) in pairs {
            stack.camsim.advance(camera).unwrap();
            let reply = stack.get_as(owner, &[camera], &format!("/v1/cameras/{camera}/frame"));
            assert_eq!(reply.status, 200);
        }
        let scrape = stack.scrape();
        let stored = metric_in(&scrape, "framecache_cache_stored_bytes");
        assert!(
            stored <= budget as f64,
            "round {round}: {stored} > {budget}"
        );
    }
    let (_, weighted) = stack.cache().usage();
    assert!(weighted <= budget, "{weighted} > {budget}");
    assert!(stack.metric("framecache_cache_evictions_total") > 0.0);
}

#[test]
fn forced_key_collisions_are_detected_counted_and_never_served() {
    let stack = long_fresh();
    // Every key digest is now all zeros: every identity collides with every other.
    stack.cache().truncate_digests(0);
    let cases = [
        ("owner-1", "cam-1"),
        ("owner-1", "cam-2"),
        ("owner-2", "cam-1"),
        ("owner-1", "cam-1"),
        ("owner-2", "cam-3"),
    ];
    for (owner, camera) in cases {
        let reply = stack.get_as(owner, &[camera], &format!("/v1/cameras/{camera}/frame"));
        assert_eq!(reply.status, 200);
        assert_eq!(
            camsim::jpeg::read_watermark(&reply.body).unwrap().0,
            camera,
            "{owner} asked for {camera}"
        );
        assert_ne!(
            status(&reply),
            "framecache; hit",
            "{owner}/{camera}: a collision is never a hit"
        );
    }
    // Each request after the first found the previous identity under the shared key: once the
    // same owner (a key collision), three times another owner (a cross-owner hit).
    assert_alarms(&stack, 1.0, 3.0);
}

#[test]
fn concurrent_fetches_under_a_colliding_digest_stay_apart() {
    let (stack, gate) = gated();
    // Every key digest is now all zeros: every identity collides with every other.
    stack.cache().truncate_digests(0);
    let first = stack.send_as("owner-1", &["cam-1"], "/v1/cameras/cam-1/frame");
    wait_until("the first fetch is at the origin", || gate.held() == 1);
    // While it is held there, requests of other identities under the same digest: another
    // owner of the same camera, another camera of the same owner, another owner's camera.
    let others = [
        ("owner-2", "cam-1"),
        ("owner-1", "cam-2"),
        ("owner-2", "cam-3"),
    ];
    let sent: Vec<_> = others
        .iter()
        .map(|(owner, camera)| {
            stack.send_as(owner, &[camera], &format!("/v1/cameras/{camera}/frame"))
        })
        .collect();
    // None joins the fetch under way: each fetches on its own.
    wait_until("four fetches are at the origin", || gate.held() == 4);
    gate.open();
    let replies = std::iter::once((("owner-1", "cam-1"), first))
        .chain(others.into_iter().zip(sent))
        .map(|(who, sent)| (who, sent.reply(false)));
    for ((owner, camera), reply) in replies {
        assert_eq!(reply.status, 200, "{owner}/{camera}: {}", reply.text());
        assert_eq!(
            camsim::jpeg::read_watermark(&reply.body).unwrap().0,
            camera,
            "{owner} asked for {camera}"
        );
    }
    let seen = gate.seen();
    let fetched: Vec<(&str, &str)> = seen.iter().map(|(o, c)| (o.as_str(), c.as_str())).collect();
    assert_eq!(
        fetched,
        [
            ("owner-1", "cam-1"),
            ("owner-1", "cam-2"),
            ("owner-2", "cam-1"),
            ("owner-2", "cam-3")
        ]
    );
    // Each of the three found the first one's fetch under its digest: a collision each.
    assert_alarms(&stack, 3.0, 0.0);
}

#[test]
fn a_corrupted_index_entry_of_another_owner_is_detected_and_never_served() {
    let stack = long_fresh();
    let own = stack.get_as("owner-1", &["cam-1"], "/v1/cameras/cam-1/frame");
    assert_eq!(own.status, 200);
    let identity = |owner: &str| Identity {
        owner: OwnerId::parse(owner).unwrap(),
        camera: CameraId::parse("cam-1").unwrap(),
        frame: FrameRef::Latest,
        variant: framecache::rendition::Variant::FULL,
    };
    // owner-1's entry, filed under owner-2's key: the incident's shape.
    assert!(stack
        .cache()
        .corrupt_index(&identity("owner-1"), &identity("owner-2")));
    stack.camsim.advance("cam-1").unwrap();
    let reply = stack.get_as("owner-2", &["cam-1"], "/v1/cameras/cam-1/frame");
    assert_eq!(reply.status, 200);
    assert_eq!(status(&reply), "framecache; fwd=miss; stored");
    assert_ne!(
        reply.body, own.body,
        "owner-1's copy is not served to owner-2"
    );
    assert_eq!(stack.metric("framecache_cache_cross_owner_hits_total"), 1.0);
    // The corrupted entry is gone; owner-2 now hits its own.
    let again = stack.get_as("owner-2", &["cam-1"], "/v1/cameras/cam-1/frame");
    assert_eq!(status(&again), "framecache; hit");
    assert_eq!(again.body, reply.body);
}

/// One request that may be abandoned: returns None when the client walked away.
fn maybe_abandon(
    stack: &Stack,
    owner: &str,
    camera: &str,
    abandon_after: Option<Duration>,
) -> Option<Reply> {
    let token = stack.token(owner, &[camera]);
    let raw = format!(
        "GET /v1/cameras/{camera}/frame HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    match abandon_after {
        None => Some(crate::common::exchange(
            stack.proxy.hub_addr,
            raw.as_bytes(),
            false,
        )),
        Some(after) => {
            let mut conn = std::net::TcpStream::connect(stack.proxy.hub_addr).unwrap();
            conn.write_all(raw.as_bytes()).unwrap();
            conn.set_read_timeout(Some(after.max(Duration::from_millis(1))))
                .unwrap();
            let mut some = [0u8; 4096];
            let _ = conn.read(&mut some);
            None
        }
    }
}

#[test]
fn cancellation_at_random_points_never_yields_a_wrong_or_partial_frame() {
    use rand::{Rng, SeedableRng};
    let stack = Arc::new(Stack::with(
        |c| {
            c.cache.latest_fresh = Duration::from_millis(20);
            c.cache.coalesce_wait = Duration::from_millis(200);
            c.server.threads = 2;
        },
        |o| o.fps = 50.0,
    ));
    stack.set_faults(Faults {
        latency_ms: Some((0, 30)),
        ..Faults::default()
    });
    let pairs = [
        ("owner-1", "cam-1"),
        ("owner-2", "cam-1"),
        ("owner-1", "cam-2"),
        ("owner-2", "cam-3"),
        ("owner-3", "cam-5"),
    ];
    let workers: Vec<_> = (0..8u64)
        .map(|w| {
            let stack = Arc::clone(&stack);
            thread::spawn(move || {
                // Seeded: a failure reproduces.
                let mut rng = rand::rngs::StdRng::seed_from_u64(w);
                let mut checked = 0;
                for _ in 0..40 {
                    let (owner, camera) = pairs[rng.random_range(0..pairs.len())];
                    let abandon = rng
                        .random_bool(1.0 / 3.0)
                        .then(|| Duration::from_millis(rng.random_range(0..40)));
                    if let Some(reply) = maybe_abandon(&stack, owner, camera, abandon) {
                        assert_eq!(reply.status, 200, "{owner}/{camera}: {}", reply.text());
                        let (seen, _) =
                            camsim::jpeg::read_watermark(&reply.body).expect("a whole JPEG");
                        assert_eq!(seen, camera);
                        let etag = format!("\"{}\"", blake3::hash(&reply.body).to_hex());
                        assert_eq!(reply.header("etag"), Some(etag.as_str()), "complete body");
                        checked += 1;
                    }
                }
                checked
            })
        })
        .collect();
    let checked: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(checked > 100, "only {checked} complete answers checked");
    // No fetch is left stranded once the origin has answered.
    stack.set_faults(Faults::default());
    crate::common::wait_until("no flight is left", || stack.cache().flights() == 0);
    assert_alarms(&stack, 0.0, 0.0);
}

#[test]
fn a_just_stale_frame_is_served_at_once_while_one_fetch_refreshes_it() {
    let (stack, gate) = Stack::gated(
        |c| {
            c.cache.latest_fresh = Duration::ZERO;
            c.cache.stale_while_revalidate = Duration::from_secs(60);
        },
        |_| {},
    );
    gate.open();
    let first = stack.get_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
    assert_eq!(status(&first), "framecache; fwd=miss; stored");
    stack.camsim.advance("cam-2").unwrap();
    // The refresh is held at the origin: the hubs do not wait for it.
    gate.close();
    for _ in 0..10 {
        let reply = stack.get_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
        assert_eq!(reply.status, 200);
        assert_eq!(status(&reply), "framecache; hit; detail=revalidating");
        assert_eq!(reply.header("cache-control"), Some("private, max-age=0"));
        assert_eq!(reply.body, first.body, "the cached frame, at once");
    }
    // One background fetch for all of them, then the new frame is what hubs get.
    assert_eq!(gate.held(), 1);
    gate.open();
    crate::common::wait_until("the refresh has landed", || {
        stack.cache().flights() == 0 && stack.origin_requests_for("cam-2") == 2
    });
    assert_eq!(gate.seen().len(), 2);
    let next = stack.get_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
    assert_ne!(next.body, first.body);
    let (_, seq) = camsim::jpeg::read_watermark(&next.body).unwrap();
    assert_eq!(
        seq,
        camsim::jpeg::read_watermark(&first.body).unwrap().1 + 1
    );
    assert_eq!(
        stack.metric(r#"framecache_cache_lookups_total{result="stale"}"#),
        11.0
    );
}
