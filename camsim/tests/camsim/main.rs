//! camsim over real HTTP: started on 127.0.0.1:0, spoken to with a raw client.

mod cli;
mod client;
mod control;
mod fault;
mod protocol;

use std::time::Duration;

use camsim::{Config, Faults, Handle};
use client::{Client, Reply, PATIENCE};

pub const KEY: [u8; 32] = [0x5a; 32];

/// A frozen camsim (fps 0) with small frames and the given faults; 3 owners x 2 cameras.
pub async fn start(faults: Faults) -> Handle {
    start_with(Config { faults, ..config() }).await
}

pub fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        signing_key: KEY,
        owners: 3,
        cameras_per_owner: 2,
        width: 320,
        height: 240,
        fps: 0.0,
        ..Config::default()
    }
}

pub async fn start_with(config: Config) -> Handle {
    camsim::start(config).await.expect("camsim starts")
}

/// `GET` a frame path for `owner` on a fresh connection.
pub async fn get(camsim: &Handle, owner: &str, path: &str) -> Reply {
    let mut client = Client::connect(camsim.local_addr()).await;
    client
        .request("GET", path, &[("X-Framecache-Owner", owner)], b"")
        .await
}

pub async fn latest(camsim: &Handle, owner: &str, camera: &str) -> Reply {
    get(camsim, owner, &format!("/cameras/{camera}/frame")).await
}

/// The SPEC's signature, computed here independently of camsim.
pub fn signature(camera: &str, seq: &str, captured_at: &str, body: &[u8]) -> String {
    let message = format!(
        "framecache-frame-v1\n{camera}\n{seq}\n{captured_at}\n{}",
        blake3::hash(body).to_hex()
    );
    hex::encode(blake3::keyed_hash(&KEY, message.as_bytes()).as_bytes())
}

/// Whether the reply's signature is valid for `camera` with the reply's seq and captured-at.
pub fn verifies_for(reply: &Reply, camera: &str) -> bool {
    let (Some(seq), Some(at), Some(sig)) = (
        reply.header("X-Frame-Seq"),
        reply.header("X-Frame-Captured-At"),
        reply.header("X-Frame-Signature"),
    ) else {
        return false;
    };
    signature(camera, seq, at, &reply.body) == sig
}

/// Polls `condition` until it holds; fails the test after [`PATIENCE`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let step = Duration::from_millis(5);
    for _ in 0..(PATIENCE.as_millis() / step.as_millis()) {
        if condition() {
            return;
        }
        tokio::time::sleep(step).await;
    }
    panic!("{what}: not reached within {PATIENCE:?}");
}
