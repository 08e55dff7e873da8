//! Answering a frame request: the owner and camera checks, the frame, and the faults drawn for
//! this request, applied to the answer as it is written.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use framecache_protocol as protocol;
use rand::seq::IndexedRandom;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::fault::{Cut, Fault, Plan, SignatureFault, Swap};
use crate::frame::{Frame, RenderError};
use crate::http::{self, Outcome, Request, Response};
use crate::server::Shared;
use crate::topology::Topology;

/// Serves `GET`/`HEAD /cameras/{camera}/frame` (`hash` none) or `.../frames/{hash}`.
pub(crate) async fn serve_frame(
    shared: &Shared,
    stream: &mut TcpStream,
    request: &Request,
    camera: &str,
    hash: Option<&str>,
) -> io::Result<Outcome> {
    let head_only = request.method == "HEAD";
    let close = !request.keep_alive;
    let reply = Reply { head_only, close };

    let owner = request
        .header(protocol::OWNER)
        .map(str::trim)
        .filter(|o| !o.is_empty());
    let Some(owner) = owner else {
        return reply
            .text(stream, 400, &format!("missing {} header", protocol::OWNER))
            .await;
    };
    if !shared.topology.has_camera(camera) {
        return reply
            .text(stream, 404, &format!("unknown camera {camera}"))
            .await;
    }
    if !shared.topology.owns(owner, camera) {
        return reply
            .text(stream, 403, &format!("{owner} may not read {camera}"))
            .await;
    }
    shared.recorder.frame_request(camera);

    let requested = match hash {
        None => shared.cameras.latest(camera, &shared.recorder).await,
        Some(hash) => match shared.cameras.by_hash(camera, hash) {
            Some(frame) => Ok(frame),
            None => {
                return reply
                    .text(
                        stream,
                        404,
                        &format!("no retained frame of {camera} hashes to {hash}"),
                    )
                    .await
            }
        },
    };
    let plan = Plan::draw(&shared.faults(), hash.is_some(), &mut rand::rng());
    let answer = match requested {
        Ok(frame) => damage(shared, owner, camera, frame, &plan).await,
        Err(e) => Err(e),
    };
    let answer = match answer {
        Ok(answer) => answer,
        Err(error) => {
            tracing::error!(%error, camera, "frame render failed");
            return reply
                .text(stream, 500, &format!("frame render failed: {error}"))
                .await;
        }
    };

    if let Some(duration) = plan.hang {
        shared.recorder.fault(Fault::Hang);
        hang(stream, duration).await;
        return Ok(Outcome::Close);
    }
    if let Some(delay) = plan.latency {
        shared.recorder.fault(Fault::Latency);
        tokio::time::sleep(delay).await;
    }
    if plan.error {
        shared.recorder.fault(Fault::Error);
        return reply.text(stream, 503, "simulated backend error").await;
    }
    for fault in &answer.faults {
        shared.recorder.fault(*fault);
    }

    write_answer(shared, stream, &answer, &plan, &reply).await
}

/// Writes a frame answer as `plan` damages it: cut short, reset, or throttled.
async fn write_answer(
    shared: &Shared,
    stream: &mut TcpStream,
    answer: &Answer,
    plan: &Plan,
    reply: &Reply,
) -> io::Result<Outcome> {
    let close = reply.close;
    let after = if close { Outcome::Close } else { Outcome::Open };
    let head = http::head(200, &answer.headers(shared), answer.frame.body.len(), close);
    stream.write_all(&head).await?;
    if reply.head_only {
        stream.flush().await?;
        return Ok(after);
    }
    let body = &answer.frame.body;
    let sent = match plan.cut {
        Some(_) => &body[..body.len() / 2],
        None => &body[..],
    };
    if plan.bandwidth.is_some() {
        shared.recorder.fault(Fault::Throttle);
    }
    if let Some(cut) = plan.cut {
        shared.recorder.fault(match cut {
            Cut::Reset => Fault::Reset,
            Cut::Truncate => Fault::Truncate,
        });
    }
    http::write_body(stream, sent, plan.bandwidth).await?;
    if plan.cut.is_none() && answer.faults.is_empty() {
        shared
            .recorder
            .frame_served(&answer.owner, &answer.camera, answer.frame.seq);
    }
    match plan.cut {
        // SO_LINGER 0: closing sends RST and drops anything unsent.
        Some(Cut::Reset) => {
            stream.set_zero_linger()?;
            Ok(Outcome::Abort)
        }
        Some(Cut::Truncate) => Ok(Outcome::Close),
        None => Ok(after),
    }
}

/// How plain answers go out on this request.
struct Reply {
    head_only: bool,
    close: bool,
}

impl Reply {
    async fn text(
        &self,
        stream: &mut TcpStream,
        status: u16,
        message: &str,
    ) -> io::Result<Outcome> {
        Response::text(status, message)
            .send(stream, self.head_only, self.close)
            .await?;
        Ok(if self.close {
            Outcome::Close
        } else {
            Outcome::Open
        })
    }
}

/// What goes out for one 200: the frame whose body is sent and what the headers claim.
struct Answer {
    frame: Arc<Frame>,
    owner: String,
    camera: String,
    signature: Option<String>,
    content_type: &'static str,
    /// Faults that changed this answer, counted once it is sent.
    faults: Vec<Fault>,
}

impl Answer {
    fn headers(&self, shared: &Shared) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("Content-Type", self.content_type.to_owned()),
            (protocol::FRAME_OWNER, self.owner.clone()),
            (protocol::FRAME_CAMERA, self.camera.clone()),
            (protocol::FRAME_SEQ, self.frame.seq.to_string()),
            (
                protocol::FRAME_CAPTURED_AT,
                self.frame.captured_at_ms.to_string(),
            ),
        ];
        if let Some(signature) = &self.signature {
            headers.push((protocol::FRAME_SIGNATURE, signature.clone()));
        }
        if let Some(value) = &shared.cache_control {
            headers.push(("Cache-Control", value.clone()));
        }
        headers
    }
}

/// Applies the content faults of `plan` to the honest answer for `requested`.
async fn damage(
    shared: &Shared,
    owner: &str,
    camera: &str,
    requested: Arc<Frame>,
    plan: &Plan,
) -> Result<Answer, RenderError> {
    let mut answer = Answer {
        owner: owner.to_owned(),
        camera: camera.to_owned(),
        signature: Some(requested.signature.clone()),
        content_type: "image/jpeg",
        frame: requested,
        faults: Vec::new(),
    };
    if plan.hang.is_some() || plan.error {
        return Ok(answer);
    }
    if plan.wrong_hash {
        let hash = answer.frame.hash.clone();
        if let Some(other) = shared
            .cameras
            .other_than(camera, &hash, &shared.recorder)
            .await?
        {
            answer.signature = Some(other.signature.clone());
            answer.frame = other;
            answer.faults.push(Fault::WrongHash);
        }
    }
    if let Some(swap) = plan.swap {
        let other_camera = other_camera(&shared.topology, owner, camera, &mut rand::rng());
        if let Some(other_camera) = other_camera {
            let other = shared
                .cameras
                .latest(&other_camera, &shared.recorder)
                .await?;
            answer.signature = Some(other.signature.clone());
            match swap {
                Swap::WrongCamera => {
                    answer.camera = other.camera.clone();
                    answer.faults.push(Fault::WrongCamera);
                }
                Swap::Leak => answer.faults.push(Fault::Leak),
            }
            answer.frame = other;
        }
    }
    if plan.wrong_owner {
        answer.owner = other_owner(&shared.topology, owner, &mut rand::rng());
        answer.faults.push(Fault::WrongOwner);
    }
    match plan.signature {
        Some(SignatureFault::Missing) => {
            answer.signature = None;
            answer.faults.push(Fault::MissingSignature);
        }
        Some(SignatureFault::Bad) => {
            answer.signature = answer.signature.as_deref().map(corrupt);
            answer.faults.push(Fault::BadSignature);
        }
        None => {}
    }
    if plan.wrong_content_type {
        answer.content_type = "text/html; charset=utf-8";
        answer.faults.push(Fault::WrongContentType);
    }
    Ok(answer)
}

/// Another camera to mix up with `camera`: preferably a stranger's (one `owner` may not read),
/// as in the incident; otherwise any other camera.
fn other_camera(
    topology: &Topology,
    owner: &str,
    camera: &str,
    rng: &mut impl Rng,
) -> Option<String> {
    let cameras = topology.cameras();
    let strangers: Vec<&String> = cameras
        .iter()
        .filter(|c| !topology.owns(owner, c))
        .collect();
    let others: Vec<&String> = cameras.iter().filter(|c| *c != camera).collect();
    let pool = if strangers.is_empty() {
        others
    } else {
        strangers
    };
    pool.choose(rng).map(|c| (*c).clone())
}

/// Another owner than `owner`; `owner-0` (nobody) when there is no other.
fn other_owner(topology: &Topology, owner: &str, rng: &mut impl Rng) -> String {
    let owners = topology.owners();
    let others: Vec<&String> = owners.iter().filter(|o| *o != owner).collect();
    others
        .choose(rng)
        .map(|o| (*o).clone())
        .unwrap_or_else(|| "owner-0".to_owned())
}

/// The same signature with its first hex digit changed: still well-formed, never valid.
fn corrupt(signature: &str) -> String {
    let mut chars = signature.chars();
    let first = match chars.next() {
        Some('0') => '1',
        Some(_) => '0',
        None => return "0".repeat(64),
    };
    std::iter::once(first).chain(chars).collect()
}

/// Holds the connection without answering, until the client closes or `duration` passes.
async fn hang(stream: &mut TcpStream, duration: Duration) {
    let mut sink = [0u8; 1024];
    let until_closed = async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(duration, until_closed).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupted_signatures_differ_but_stay_hex() {
        let good = "0f".repeat(32);
        let bad = corrupt(&good);
        assert_ne!(bad, good);
        assert_eq!(bad.len(), 64);
        assert!(hex::decode(&bad).is_ok());
        assert_ne!(corrupt(&"a".repeat(64)), "a".repeat(64));
    }

    #[test]
    fn mix_ups_prefer_strangers() {
        let topology = Topology::new(3, 2);
        for _ in 0..50 {
            let other = other_camera(&topology, "owner-1", "cam-1", &mut rand::rng()).unwrap();
            assert!(!topology.owns("owner-1", &other), "{other}");
            assert_ne!(
                other_owner(&topology, "owner-1", &mut rand::rng()),
                "owner-1"
            );
        }
        // With one owner everything is its own: any other camera will do.
        let alone = Topology::new(1, 2);
        assert_eq!(
            other_camera(&alone, "owner-1", "cam-1", &mut rand::rng()).as_deref(),
            Some("cam-2")
        );
        assert_eq!(other_owner(&alone, "owner-1", &mut rand::rng()), "owner-0");
        assert_eq!(
            other_camera(&Topology::new(1, 1), "owner-1", "cam-1", &mut rand::rng()),
            None
        );
    }
}
