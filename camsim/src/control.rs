//! The control endpoints: faults, advancing a camera, stats and topology.
//!
//! They share the frame listener and take no credentials: camsim is a test fixture that listens
//! on loopback.

use serde::Serialize;

use crate::fault::Faults;
use crate::http::Response;
use crate::server::Shared;

/// `GET /control/faults`: the faults in force.
pub(crate) fn get_faults(shared: &Shared) -> Response {
    Response::json(200, &shared.faults())
}

/// `PUT /control/faults`: replaces the faults; answers with the new settings.
pub(crate) fn put_faults(shared: &Shared, body: &[u8]) -> Response {
    let faults: Faults = match serde_json::from_slice(body) {
        Ok(faults) => faults,
        Err(e) => return Response::text(400, &format!("invalid faults json: {e}")),
    };
    let problems = faults.problems();
    if !problems.is_empty() {
        return Response::text(400, &format!("invalid faults: {}", problems.join("; ")));
    }
    tracing::info!(?faults, "faults replaced");
    shared.set_faults(faults.clone());
    Response::json(200, &faults)
}

/// `POST /control/advance?camera=ID`: the camera's next frame, now.
pub(crate) fn advance(shared: &Shared, camera: &str) -> Response {
    #[derive(Serialize)]
    struct Advanced {
        seq: u64,
    }
    match shared.cameras.advance(camera) {
        Some(seq) => Response::json(200, &Advanced { seq }),
        None => Response::text(404, &format!("unknown camera {camera}")),
    }
}

/// `GET /stats`.
pub(crate) fn stats(shared: &Shared) -> Response {
    Response::json(200, &shared.recorder.snapshot())
}

/// `GET /topology`: `{owner: [cameras]}`.
pub(crate) fn topology(shared: &Shared) -> Response {
    Response::json(200, &shared.topology)
}
