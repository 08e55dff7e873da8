//! The camera-backend protocol: headers, signatures, watermarks, by-hash, errors, keep-alive.

use std::time::{SystemTime, UNIX_EPOCH};

use camsim::{Config, Faults};

use crate::client::{Client, End};
use crate::{config, get, latest, signature, start, start_with, verifies_for};

#[tokio::test]
async fn latest_frame_carries_the_spec_headers_and_a_valid_signature() {
    let before_start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let camsim = start(Faults::none()).await;
    let reply = latest(&camsim, "owner-1", "cam-1").await;

    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.end, End::Complete);
    assert_eq!(reply.header("Content-Type"), Some("image/jpeg"));
    assert_eq!(reply.content_length(), reply.body.len());
    assert_eq!(reply.header("X-Frame-Owner"), Some("owner-1"));
    assert_eq!(reply.header("X-Frame-Camera"), Some("cam-1"));
    assert_eq!(reply.header("X-Frame-Seq"), Some("1"));
    assert_eq!(reply.header("Cache-Control"), None);
    let captured_at: u64 = reply
        .header("X-Frame-Captured-At")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        captured_at >= before_start,
        "{captured_at} < {before_start}"
    );

    let expected = signature("cam-1", "1", &captured_at.to_string(), &reply.body);
    assert_eq!(reply.header("X-Frame-Signature"), Some(expected.as_str()));

    assert!(reply.body.starts_with(&[0xFF, 0xD8]) && reply.body.ends_with(&[0xFF, 0xD9]));
    assert_eq!(
        camsim::jpeg::read_watermark(&reply.body),
        Some(("cam-1".to_owned(), 1))
    );
    // Loose, and deterministic: 320x240 at quality 80.
    assert!(
        (5_000..=30_000).contains(&reply.body.len()),
        "{}",
        reply.body.len()
    );
    camsim.shutdown().await;
}

#[tokio::test]
async fn a_shared_camera_answers_for_the_owner_it_is_shared_with() {
    let camsim = start(Faults::none()).await;
    // owner-1's first camera is shared with owner-2.
    let reply = latest(&camsim, "owner-2", "cam-1").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("X-Frame-Owner"), Some("owner-2"));
    assert!(verifies_for(&reply, "cam-1"));
    camsim.shutdown().await;
}

#[tokio::test]
async fn frames_are_stable_per_seq_and_advance_moves_them() {
    let camsim = start(Faults::none()).await;
    let first = latest(&camsim, "owner-1", "cam-2").await;
    let again = latest(&camsim, "owner-1", "cam-2").await;
    assert_eq!(first.body, again.body);
    assert_eq!(
        first.header("X-Frame-Captured-At"),
        again.header("X-Frame-Captured-At")
    );
    assert_eq!(
        first.header("X-Frame-Signature"),
        again.header("X-Frame-Signature")
    );

    assert_eq!(camsim.advance("cam-2"), Some(2));
    assert_eq!(camsim.advance("cam-404"), None);
    let second = latest(&camsim, "owner-1", "cam-2").await;
    assert_eq!(second.header("X-Frame-Seq"), Some("2"));
    assert_ne!(second.body, first.body);
    assert!(verifies_for(&second, "cam-2"));
    assert_eq!(
        camsim::jpeg::read_watermark(&second.body),
        Some(("cam-2".to_owned(), 2))
    );
    let at = |r: &crate::client::Reply| -> u64 {
        r.header("X-Frame-Captured-At").unwrap().parse().unwrap()
    };
    assert!(at(&second) >= at(&first));
    // Other cameras did not move.
    assert_eq!(
        latest(&camsim, "owner-1", "cam-1")
            .await
            .header("X-Frame-Seq"),
        Some("1")
    );
    assert_eq!(camsim.stats().frames_rendered, 3);
    camsim.shutdown().await;
}

#[tokio::test]
async fn frames_are_found_by_hash_while_retained() {
    let camsim = start_with(Config {
        retain_frames: 2,
        ..config()
    })
    .await;
    let one = latest(&camsim, "owner-3", "cam-5").await;
    let one_hash = blake3::hash(&one.body).to_hex().to_string();
    camsim.advance("cam-5");
    latest(&camsim, "owner-3", "cam-5").await;

    let by_hash = get(
        &camsim,
        "owner-3",
        &format!("/cameras/cam-5/frames/{one_hash}"),
    )
    .await;
    assert_eq!(by_hash.status, 200);
    assert_eq!(by_hash.body, one.body);
    assert_eq!(by_hash.header("X-Frame-Seq"), Some("1"));
    assert_eq!(
        by_hash.header("X-Frame-Signature"),
        one.header("X-Frame-Signature")
    );

    // The hash is not another camera's, even for an owner that may read both.
    let elsewhere = get(
        &camsim,
        "owner-3",
        &format!("/cameras/cam-6/frames/{one_hash}"),
    )
    .await;
    assert_eq!(elsewhere.status, 404);
    let unknown = get(
        &camsim,
        "owner-3",
        &format!("/cameras/cam-5/frames/{}", "0".repeat(64)),
    )
    .await;
    assert_eq!(unknown.status, 404);
    let malformed = get(&camsim, "owner-3", "/cameras/cam-5/frames/ABC").await;
    assert_eq!(malformed.status, 400);

    // Two newer frames push the first one out.
    camsim.advance("cam-5");
    latest(&camsim, "owner-3", "cam-5").await;
    let gone = get(
        &camsim,
        "owner-3",
        &format!("/cameras/cam-5/frames/{one_hash}"),
    )
    .await;
    assert_eq!(gone.status, 404);
    camsim.shutdown().await;
}

#[tokio::test]
async fn requests_are_refused_with_the_right_status() {
    let camsim = start(Faults::none()).await;
    let mut client = Client::connect(camsim.local_addr()).await;

    let no_owner = client
        .request("GET", "/cameras/cam-1/frame", &[], b"")
        .await;
    assert_eq!(no_owner.status, 400);
    assert!(
        no_owner.text().contains(framecache_protocol::OWNER),
        "{}",
        no_owner.text()
    );

    let owner = [("X-Framecache-Owner", "owner-2")];
    let not_theirs = client
        .request("GET", "/cameras/cam-2/frame", &owner, b"")
        .await;
    assert_eq!(not_theirs.status, 403);
    let stranger = client
        .request(
            "GET",
            "/cameras/cam-1/frame",
            &[("X-Framecache-Owner", "owner-77")],
            b"",
        )
        .await;
    assert_eq!(stranger.status, 403);
    let unknown_camera = client
        .request("GET", "/cameras/cam-99/frame", &owner, b"")
        .await;
    assert_eq!(unknown_camera.status, 404);
    let unknown_path = client
        .request("GET", "/cameras/cam-1/frame/", &owner, b"")
        .await;
    assert_eq!(unknown_path.status, 404);
    let dot_segment = client
        .request("GET", "/cameras/cam-1/../cam-3/frame", &owner, b"")
        .await;
    assert_eq!(dot_segment.status, 404);
    let wrong_method = client
        .request("DELETE", "/cameras/cam-1/frame", &owner, b"")
        .await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("Allow"), Some("GET, HEAD"));
    // All on one kept-alive connection, and nothing counted as a frame request.
    assert_eq!(camsim.stats().frame_requests_for("cam-1"), 0);
    assert_eq!(camsim.stats().connections_accepted, 1);

    client.send_raw(b"GARBAGE\r\n\r\n").await;
    let garbage = client.receive(false).await.expect("a 400");
    assert_eq!(garbage.status, 400);
    assert_eq!(garbage.header("Connection"), Some("close"));
    client
        .closed()
        .await
        .expect("closed after a malformed request");

    let mut client = Client::connect(camsim.local_addr()).await;
    let huge = format!(
        "GET /stats HTTP/1.1\r\nX-Filler: {}\r\n\r\n",
        "x".repeat(20 * 1024)
    );
    client.send_raw(huge.as_bytes()).await;
    assert_eq!(client.receive(false).await.expect("a 431").status, 431);
    camsim.shutdown().await;
}

#[tokio::test]
async fn a_connection_serves_several_requests_until_the_client_says_close() {
    let camsim = start(Faults::none()).await;
    let mut client = Client::connect(camsim.local_addr()).await;
    let owner = [("X-Framecache-Owner", "owner-1")];

    let head = client
        .request("HEAD", "/cameras/cam-1/frame", &owner, b"")
        .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let first = client
        .request("GET", "/cameras/cam-1/frame", &owner, b"")
        .await;
    assert_eq!(first.content_length(), head.content_length());
    assert_eq!(
        first.header("X-Frame-Signature"),
        head.header("X-Frame-Signature")
    );
    let second = client
        .request("GET", "/cameras/cam-2/frame", &owner, b"")
        .await;
    assert_eq!((second.status, second.end), (200, End::Complete));

    let last = client
        .request(
            "GET",
            "/cameras/cam-1/frame",
            &[("X-Framecache-Owner", "owner-1"), ("Connection", "close")],
            b"",
        )
        .await;
    assert_eq!(last.status, 200);
    assert_eq!(last.header("Connection"), Some("close"));
    client.closed().await.expect("closed cleanly");

    let stats = camsim.stats();
    assert_eq!(stats.connections_accepted, 1);
    assert_eq!(stats.requests_total, 4);
    assert_eq!(stats.frame_requests_for("cam-1"), 3);
    assert_eq!(stats.frame_requests_for("cam-2"), 1);
    camsim.shutdown().await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let camsim = start(Faults::none()).await;
    let mut client = Client::connect(camsim.local_addr()).await;
    client
        .send_raw(b"GET /topology HTTP/1.1\r\n\r\nGET /control/faults HTTP/1.1\r\n\r\n")
        .await;
    let topology = client.receive(false).await.unwrap();
    assert!(topology.text().contains("owner-1"));
    let faults: Faults = client.receive(false).await.unwrap().json();
    assert_eq!(faults, Faults::none());
    camsim.shutdown().await;
}

#[tokio::test]
async fn cache_control_is_sent_when_configured() {
    let camsim = start_with(Config {
        cache_control: Some("max-age=1".to_owned()),
        ..config()
    })
    .await;
    let reply = latest(&camsim, "owner-1", "cam-1").await;
    assert_eq!(reply.header("Cache-Control"), Some("max-age=1"));
    camsim.shutdown().await;
}

#[tokio::test]
async fn a_ticking_camera_reports_when_its_frame_was_captured() {
    // Fast clock: the seq is whatever it is when asked, but seq and captured-at agree with the
    // signature and the watermark.
    let camsim = start_with(Config {
        fps: 50.0,
        ..config()
    })
    .await;
    let reply = latest(&camsim, "owner-1", "cam-1").await;
    let seq: u64 = reply.header("X-Frame-Seq").unwrap().parse().unwrap();
    assert!(seq >= 1);
    assert!(verifies_for(&reply, "cam-1"));
    assert_eq!(
        camsim::jpeg::read_watermark(&reply.body),
        Some(("cam-1".to_owned(), seq))
    );
    camsim.shutdown().await;
}

#[tokio::test]
async fn full_size_frames_weigh_like_camera_stills() {
    let camsim = start_with(Config {
        width: 1280,
        height: 720,
        ..config()
    })
    .await;
    let reply = latest(&camsim, "owner-1", "cam-1").await;
    assert_eq!(reply.end, End::Complete);
    assert!(
        (60_000..=150_000).contains(&reply.body.len()),
        "{}",
        reply.body.len()
    );
    camsim.shutdown().await;
}
