//! The control endpoints and the handle.

use std::collections::BTreeMap;

use camsim::{Fault, Faults, Stats};

use crate::client::Client;
use crate::{latest, start};

#[tokio::test]
async fn faults_round_trip_through_the_control_endpoint() {
    let camsim = start(Faults::none()).await;
    let mut client = Client::connect(camsim.local_addr()).await;

    let current: Faults = client
        .request("GET", "/control/faults", &[], b"")
        .await
        .json();
    assert_eq!(current, Faults::none());

    let wanted = Faults {
        latency_ms: Some((10, 20)),
        leak_rate: 0.25,
        hang_ms: 100,
        ..Faults::none()
    };
    let body = serde_json::to_vec(&wanted).unwrap();
    let put = client.request("PUT", "/control/faults", &[], &body).await;
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!(put.json::<Faults>(), wanted);
    assert_eq!(camsim.faults(), wanted);
    let read_back: Faults = client
        .request("GET", "/control/faults", &[], b"")
        .await
        .json();
    assert_eq!(read_back, wanted);

    // Keys left out take their defaults.
    let partial = client
        .request("PUT", "/control/faults", &[], br#"{"error_rate": 1.0}"#)
        .await;
    assert_eq!(partial.status, 200);
    assert_eq!(
        camsim.faults(),
        Faults {
            error_rate: 1.0,
            ..Faults::none()
        }
    );
    camsim.shutdown().await;
}

#[tokio::test]
async fn bad_fault_settings_are_refused_with_a_message() {
    let camsim = start(Faults::none()).await;
    let mut client = Client::connect(camsim.local_addr()).await;
    let cases: [(&[u8], &str); 4] = [
        (b"{not json", "invalid faults json"),
        (br#"{"leak": 1.0}"#, "unknown field"),
        (br#"{"leak_rate": 1.5}"#, "leak_rate: must be within 0..=1"),
        (
            br#"{"latency_ms": [9, 1]}"#,
            "latency_ms: min must be <= max",
        ),
    ];
    for (body, message) in cases {
        let reply = client.request("PUT", "/control/faults", &[], body).await;
        assert_eq!(reply.status, 400);
        assert!(reply.text().contains(message), "{}", reply.text());
    }
    assert_eq!(camsim.faults(), Faults::none());
    let too_big = vec![b' '; 65 * 1024];
    let reply = client
        .request("PUT", "/control/faults", &[], &too_big)
        .await;
    assert_eq!(reply.status, 413);
    camsim.shutdown().await;
}

#[tokio::test]
async fn advance_moves_a_camera_to_its_next_frame() {
    let camsim = start(Faults::none()).await;
    let mut client = Client::connect(camsim.local_addr()).await;
    let reply = client
        .request("POST", "/control/advance?camera=cam-4", &[], b"")
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json::<serde_json::Value>(),
        serde_json::json!({"seq": 2})
    );
    assert_eq!(camsim.advance("cam-4"), Some(3));
    let frame = latest(&camsim, "owner-2", "cam-4").await;
    assert_eq!(frame.header("X-Frame-Seq"), Some("3"));

    let unknown = client
        .request("POST", "/control/advance?camera=cam-40", &[], b"")
        .await;
    assert_eq!(unknown.status, 404);
    let missing = client.request("POST", "/control/advance", &[], b"").await;
    assert_eq!(missing.status, 400);
    camsim.shutdown().await;
}

#[tokio::test]
async fn stats_count_requests_frames_and_faults() {
    let camsim = start(Faults::none()).await;
    latest(&camsim, "owner-1", "cam-1").await;
    latest(&camsim, "owner-2", "cam-1").await;
    latest(&camsim, "owner-1", "cam-2").await;
    latest(&camsim, "owner-1", "cam-3").await; // 403: not a frame request
    camsim.set_faults(Faults {
        missing_signature_rate: 1.0,
        ..Faults::none()
    });
    latest(&camsim, "owner-1", "cam-1").await;

    let mut client = Client::connect(camsim.local_addr()).await;
    let stats: Stats = client.request("GET", "/stats", &[], b"").await.json();
    assert_eq!(stats.requests_total, 6);
    assert_eq!(stats.frame_requests_for("cam-1"), 3);
    assert_eq!(stats.frame_requests_for("cam-2"), 1);
    assert_eq!(stats.frame_requests_for("cam-3"), 0);
    assert_eq!(stats.frames_rendered, 2);
    assert_eq!(stats.fault(Fault::MissingSignature), 1);
    assert_eq!(stats.faults_injected.len(), Fault::ALL.len());
    assert_eq!(stats.connections_accepted, 6);
    // owner-1's second cam-1 frame went out damaged; owner-2 is another owner.
    assert_eq!(stats.frames_served_again, 0);
    // The handle sees the same numbers (plus nothing new).
    assert_eq!(camsim.stats().requests_total, 6);
    camsim.shutdown().await;
}

#[tokio::test]
async fn a_whole_frame_sent_again_to_the_same_owner_is_counted() {
    let camsim = start(Faults::none()).await;
    latest(&camsim, "owner-1", "cam-1").await;
    latest(&camsim, "owner-2", "cam-1").await;
    assert_eq!(camsim.stats().frames_served_again, 0);
    latest(&camsim, "owner-1", "cam-1").await;
    assert_eq!(camsim.stats().frames_served_again, 1);
    // A truncated answer is not a frame the owner has: sending it again is no repeat.
    camsim.advance("cam-1");
    camsim.set_faults(Faults {
        truncate_rate: 1.0,
        ..Faults::none()
    });
    latest(&camsim, "owner-1", "cam-1").await;
    camsim.set_faults(Faults::none());
    latest(&camsim, "owner-1", "cam-1").await;
    assert_eq!(camsim.stats().frames_served_again, 1);
    camsim.shutdown().await;
}

#[tokio::test]
async fn topology_lists_the_cameras_each_owner_reads() {
    let camsim = start(Faults::none()).await;
    let mut client = Client::connect(camsim.local_addr()).await;
    let reply = client.request("GET", "/topology", &[], b"").await;
    let topology: BTreeMap<String, Vec<String>> = reply.json();
    let expected: BTreeMap<String, Vec<String>> = [
        ("owner-1", ["cam-1", "cam-2", "cam-5"]),
        ("owner-2", ["cam-1", "cam-3", "cam-4"]),
        ("owner-3", ["cam-3", "cam-5", "cam-6"]),
    ]
    .into_iter()
    .map(|(o, cams)| (o.to_owned(), cams.map(str::to_owned).to_vec()))
    .collect();
    assert_eq!(topology, expected);
    assert_eq!(camsim.topology().cameras_of("owner-2"), expected["owner-2"]);
    camsim.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_connections_and_stops_listening() {
    let camsim = start(Faults::none()).await;
    let addr = camsim.local_addr();
    let mut idle = Client::connect(addr).await;
    let reply = idle.request("GET", "/stats", &[], b"").await;
    assert_eq!(reply.status, 200);
    camsim.shutdown().await;
    idle.closed().await.ok();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
