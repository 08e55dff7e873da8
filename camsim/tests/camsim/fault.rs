//! Every fault at rate 1.0, as a client sees it, and counted in the stats.

use std::io;

use camsim::{Fault, Faults};

use crate::client::{Client, End};
use crate::{eventually, get, latest, start, verifies_for};

#[tokio::test]
async fn truncate_sends_half_the_body_under_the_full_length_then_closes() {
    let camsim = start(Faults {
        truncate_rate: 1.0,
        ..Faults::none()
    })
    .await;
    let reply = latest(&camsim, "owner-1", "cam-1").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.end, End::Eof);
    assert!(reply.body.len() < reply.content_length());
    assert!(!reply.body.is_empty());
    assert_eq!(camsim.stats().fault(Fault::Truncate), 1);
    camsim.shutdown().await;
}

#[tokio::test]
async fn reset_breaks_the_connection_mid_body() {
    let camsim = start(Faults {
        reset_rate: 1.0,
        ..Faults::none()
    })
    .await;
    let mut client = Client::connect(camsim.local_addr()).await;
    client
        .send(
            "GET",
            "/cameras/cam-1/frame",
            &[("X-Framecache-Owner", "owner-1")],
            b"",
        )
        .await;
    match client.receive(false).await {
        // Usually the head and part of the body arrive before the reset.
        Ok(reply) => {
            assert_eq!(reply.status, 200);
            assert_eq!(reply.end, End::Reset);
            assert!(reply.body.len() < reply.content_length());
        }
        // The reset may also overtake the head.
        Err(error) => assert_eq!(error.kind(), io::ErrorKind::ConnectionReset),
    }
    assert_eq!(camsim.stats().fault(Fault::Reset), 1);
    camsim.shutdown().await;
}

#[tokio::test]
async fn error_answers_503_and_keeps_the_connection() {
    let camsim = start(Faults {
        error_rate: 1.0,
        ..Faults::none()
    })
    .await;
    let mut client = Client::connect(camsim.local_addr()).await;
    let owner = [("X-Framecache-Owner", "owner-1")];
    for _ in 0..2 {
        let reply = client
            .request("GET", "/cameras/cam-1/frame", &owner, b"")
            .await;
        assert_eq!(reply.status, 503);
        assert!(reply
            .header("Content-Type")
            .unwrap()
            .starts_with("text/plain"));
        assert!(!reply.body.is_empty());
    }
    assert_eq!(camsim.stats().fault(Fault::Error), 2);
    // Refusals come before faults: a 403 stays a 403.
    let refused = client
        .request("GET", "/cameras/cam-3/frame", &owner, b"")
        .await;
    assert_eq!(refused.status, 403);
    assert_eq!(camsim.stats().fault(Fault::Error), 2);
    camsim.shutdown().await;
}

#[tokio::test]
async fn hang_answers_nothing_and_closes_after_hang_ms() {
    let camsim = start(Faults {
        hang_rate: 1.0,
        hang_ms: 50,
        ..Faults::none()
    })
    .await;
    let mut client = Client::connect(camsim.local_addr()).await;
    client
        .send(
            "GET",
            "/cameras/cam-1/frame",
            &[("X-Framecache-Owner", "owner-1")],
            b"",
        )
        .await;
    let error = client.receive(false).await.expect_err("no answer");
    assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    assert_eq!(camsim.stats().fault(Fault::Hang), 1);
    camsim.shutdown().await;
}

#[tokio::test]
async fn hang_ends_when_the_client_gives_up() {
    let camsim = start(Faults {
        hang_rate: 1.0,
        hang_ms: 3_600_000,
        ..Faults::none()
    })
    .await;
    let mut client = Client::connect(camsim.local_addr()).await;
    client
        .send(
            "GET",
            "/cameras/cam-1/frame",
            &[("X-Framecache-Owner", "owner-1")],
            b"",
        )
        .await;
    eventually("the hang began", || camsim.stats().fault(Fault::Hang) == 1).await;
    assert_eq!(camsim.stats().connections_open, 1);
    drop(client);
    eventually("the hung connection closed", || {
        camsim.stats().connections_open == 0
    })
    .await;
    camsim.shutdown().await;
}

#[tokio::test]
async fn wrong_owner_names_another_owner_with_a_valid_signature() {
    let camsim = start(Faults {
        wrong_owner_rate: 1.0,
        ..Faults::none()
    })
    .await;
    let reply = latest(&camsim, "owner-1", "cam-1").await;
    assert_eq!(reply.status, 200);
    let owner = reply.header("X-Frame-Owner").unwrap();
    assert_ne!(owner, "owner-1");
    assert!(
        camsim.topology().owners().iter().any(|o| o == owner),
        "{owner}"
    );
    assert_eq!(reply.header("X-Frame-Camera"), Some("cam-1"));
    assert!(verifies_for(&reply, "cam-1"));
    assert_eq!(camsim.stats().fault(Fault::WrongOwner), 1);
    camsim.shutdown().await;
}

#[tokio::test]
async fn wrong_camera_consistently_describes_another_cameras_frame() {
    let camsim = start(Faults {
        wrong_camera_rate: 1.0,
        ..Faults::none()
    })
    .await;
    let reply = latest(&camsim, "owner-1", "cam-1").await;
    assert_eq!(reply.status, 200);
    let camera = reply.header("X-Frame-Camera").unwrap().to_owned();
    assert_ne!(camera, "cam-1");
    let (marked, seq) = camsim::jpeg::read_watermark(&reply.body).unwrap();
    assert_eq!(marked, camera);
    assert_eq!(reply.header("X-Frame-Seq"), Some(seq.to_string().as_str()));
    assert!(verifies_for(&reply, &camera));
    assert!(!verifies_for(&reply, "cam-1"));
    assert_eq!(camsim.stats().fault(Fault::WrongCamera), 1);
    camsim.shutdown().await;
}

#[tokio::test]
async fn leak_serves_a_strangers_frame_under_the_requested_camera() {
    let camsim = start(Faults {
        leak_rate: 1.0,
        ..Faults::none()
    })
    .await;
    let reply = latest(&camsim, "owner-1", "cam-1").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("Content-Type"), Some("image/jpeg"));
    assert_eq!(reply.header("X-Frame-Owner"), Some("owner-1"));
    assert_eq!(reply.header("X-Frame-Camera"), Some("cam-1"));
    // A verifying client sees a bad signature for the camera it asked for...
    assert!(!verifies_for(&reply, "cam-1"));
    // ...because the frame is a stranger's, signed at capture for that camera.
    let (leaked, seq) = camsim::jpeg::read_watermark(&reply.body).unwrap();
    assert!(!camsim.topology().owns("owner-1", &leaked), "{leaked}");
    assert_eq!(reply.header("X-Frame-Seq"), Some(seq.to_string().as_str()));
    assert!(verifies_for(&reply, &leaked));
    assert_eq!(camsim.stats().fault(Fault::Leak), 1);
    camsim.shutdown().await;
}

#[tokio::test]
async fn bad_signature_is_well_formed_but_invalid() {
    let camsim = start(Faults {
        bad_signature_rate: 1.0,
        ..Faults::none()
    })
    .await;
    let reply = latest(&camsim, "owner-1", "cam-1").await;
    let signature = reply.header("X-Frame-Signature").unwrap();
    assert_eq!(signature.len(), 64);
    assert!(hex::decode(signature).is_ok());
    assert!(!verifies_for(&reply, "cam-1"));
    assert_eq!(
        camsim::jpeg::read_watermark(&reply.body),
        Some(("cam-1".to_owned(), 1))
    );
    assert_eq!(camsim.stats().fault(Fault::BadSignature), 1);
    camsim.shutdown().await;
}

#[tokio::test]
async fn missing_signature_leaves_the_header_out() {
    let camsim = start(Faults {
        missing_signature_rate: 1.0,
        ..Faults::none()
    })
    .await;
    let reply = latest(&camsim, "owner-1", "cam-1").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("X-Frame-Signature"), None);
    assert_eq!(camsim.stats().fault(Fault::MissingSignature), 1);
    camsim.shutdown().await;
}

#[tokio::test]
async fn wrong_content_type_says_html() {
    let camsim = start(Faults {
        wrong_content_type_rate: 1.0,
        ..Faults::none()
    })
    .await;
    let reply = latest(&camsim, "owner-1", "cam-1").await;
    assert!(reply
        .header("Content-Type")
        .unwrap()
        .starts_with("text/html"));
    assert!(verifies_for(&reply, "cam-1"));
    assert_eq!(camsim.stats().fault(Fault::WrongContentType), 1);
    camsim.shutdown().await;
}

#[tokio::test]
async fn wrong_hash_answers_a_by_hash_request_with_another_valid_frame() {
    let camsim = start(Faults::none()).await;
    let old = latest(&camsim, "owner-1", "cam-2").await;
    let old_hash = blake3::hash(&old.body).to_hex().to_string();
    camsim.advance("cam-2");
    camsim.set_faults(Faults {
        wrong_hash_rate: 1.0,
        ..Faults::none()
    });
    let path = format!("/cameras/cam-2/frames/{old_hash}");
    let reply = get(&camsim, "owner-1", &path).await;
    assert_eq!(reply.status, 200);
    assert_ne!(blake3::hash(&reply.body).to_hex().as_str(), old_hash);
    assert_eq!(reply.header("X-Frame-Seq"), Some("2"));
    assert!(verifies_for(&reply, "cam-2"));
    // Latest requests are not by hash: untouched.
    let latest_reply = latest(&camsim, "owner-1", "cam-2").await;
    assert_eq!(latest_reply.body, reply.body);
    assert_eq!(camsim.stats().fault(Fault::WrongHash), 1);
    camsim.shutdown().await;
}

#[tokio::test]
async fn latency_and_throttle_still_deliver_the_whole_frame() {
    let camsim = start(Faults {
        latency_ms: Some((1, 3)),
        bandwidth_bytes_per_sec: Some(4_000_000),
        ..Faults::none()
    })
    .await;
    let reply = latest(&camsim, "owner-1", "cam-1").await;
    assert_eq!((reply.status, reply.end), (200, End::Complete));
    assert!(verifies_for(&reply, "cam-1"));
    let stats = camsim.stats();
    assert_eq!(stats.fault(Fault::Latency), 1);
    assert_eq!(stats.fault(Fault::Throttle), 1);
    assert_eq!(stats.faults_injected.values().sum::<u64>(), 2);
    camsim.shutdown().await;
}

#[tokio::test]
async fn faults_can_change_while_running() {
    let camsim = start(Faults {
        error_rate: 1.0,
        ..Faults::none()
    })
    .await;
    assert_eq!(latest(&camsim, "owner-1", "cam-1").await.status, 503);
    camsim.set_faults(Faults::none());
    assert_eq!(camsim.faults(), Faults::none());
    assert_eq!(latest(&camsim, "owner-1", "cam-1").await.status, 200);
    camsim.shutdown().await;
}
