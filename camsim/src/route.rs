//! Method and path to a typed route. Paths match exactly; nothing is decoded or normalised.
//!
//! | method, path | route |
//! |---|---|
//! | `GET`/`HEAD /cameras/{camera}/frame` | latest frame |
//! | `GET`/`HEAD /cameras/{camera}/frames/{hash}` | frame by content address |
//! | `GET /control/faults`, `PUT /control/faults` | read or replace the faults (JSON) |
//! | `POST /control/advance?camera=ID` | next frame now, answers `{"seq": N}` |
//! | `GET /stats` | counters (JSON) |
//! | `GET /topology` | `{owner: [cameras]}` (JSON) |

/// A recognised request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Frame {
        camera: String,
        /// `None` for the latest frame.
        hash: Option<String>,
    },
    GetFaults,
    PutFaults,
    Advance {
        camera: String,
    },
    Stats,
    Topology,
}

/// Why a request matches no route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RouteError {
    #[error("no such resource")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("{0}")]
    BadRequest(String),
}

/// Maps method, path and query to a route. HEAD is accepted wherever GET is.
pub(crate) fn route(method: &str, path: &str, query: Option<&str>) -> Result<Route, RouteError> {
    let segments: Vec<&str> = path
        .strip_prefix('/')
        .ok_or(RouteError::NotFound)?
        .split('/')
        .collect();
    let (route, allow) = match segments.as_slice() {
        ["cameras", camera, "frame"] if !camera.is_empty() => (
            Route::Frame {
                camera: (*camera).to_owned(),
                hash: None,
            },
            "GET, HEAD",
        ),
        ["cameras", camera, "frames", hash] if !camera.is_empty() => {
            if hash.len() != 64 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(RouteError::BadRequest(
                    "hash must be 64 lowercase hex chars".to_owned(),
                ));
            }
            (
                Route::Frame {
                    camera: (*camera).to_owned(),
                    hash: Some((*hash).to_owned()),
                },
                "GET, HEAD",
            )
        }
        ["control", "faults"] if method == "PUT" => (Route::PutFaults, "GET, HEAD, PUT"),
        ["control", "faults"] => (Route::GetFaults, "GET, HEAD, PUT"),
        ["control", "advance"] => {
            if method != "POST" {
                return Err(RouteError::MethodNotAllowed { allow: "POST" });
            }
            let camera = query
                .and_then(|q| q.strip_prefix("camera="))
                .filter(|c| !c.is_empty() && !c.contains(['&', '=']))
                .ok_or_else(|| RouteError::BadRequest("expected the query camera=ID".to_owned()))?;
            return Ok(Route::Advance {
                camera: camera.to_owned(),
            });
        }
        ["stats"] => (Route::Stats, "GET, HEAD"),
        ["topology"] => (Route::Topology, "GET, HEAD"),
        _ => return Err(RouteError::NotFound),
    };
    if !matches!(method, "GET" | "HEAD") && route != Route::PutFaults {
        return Err(RouteError::MethodNotAllowed { allow });
    }
    if query.is_some() {
        return Err(RouteError::BadRequest(format!(
            "unexpected query string on {path}"
        )));
    }
    Ok(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn frame_routes() {
        assert_eq!(
            route("GET", "/cameras/cam-1/frame", None),
            Ok(Route::Frame {
                camera: "cam-1".to_owned(),
                hash: None
            })
        );
        assert_eq!(
            route("HEAD", &format!("/cameras/cam-1/frames/{HASH}"), None),
            Ok(Route::Frame {
                camera: "cam-1".to_owned(),
                hash: Some(HASH.to_owned())
            })
        );
        let upper = format!("/cameras/cam-1/frames/{}", HASH.to_uppercase());
        assert!(matches!(
            route("GET", &upper, None),
            Err(RouteError::BadRequest(_))
        ));
        assert_eq!(
            route("POST", "/cameras/cam-1/frame", None),
            Err(RouteError::MethodNotAllowed { allow: "GET, HEAD" })
        );
    }

    #[test]
    fn paths_match_exactly() {
        for path in [
            "/cameras/cam-1/frame/",
            "//cameras/cam-1/frame",
            "/cameras//frame",
            "/cameras/cam-1/./frame",
            "/cameras/cam-1/frames",
            "cameras/cam-1/frame",
            "/",
        ] {
            assert_eq!(
                route("GET", path, None),
                Err(RouteError::NotFound),
                "{path}"
            );
        }
        assert!(matches!(
            route("GET", "/cameras/cam-1/frame", Some("x=1")),
            Err(RouteError::BadRequest(_))
        ));
    }

    #[test]
    fn control_routes() {
        assert_eq!(route("GET", "/control/faults", None), Ok(Route::GetFaults));
        assert_eq!(route("PUT", "/control/faults", None), Ok(Route::PutFaults));
        assert_eq!(
            route("DELETE", "/control/faults", None),
            Err(RouteError::MethodNotAllowed {
                allow: "GET, HEAD, PUT"
            })
        );
        assert_eq!(
            route("POST", "/control/advance", Some("camera=cam-2")),
            Ok(Route::Advance {
                camera: "cam-2".to_owned()
            })
        );
        assert!(matches!(
            route("POST", "/control/advance", Some("camera=cam-2&x=1")),
            Err(RouteError::BadRequest(_))
        ));
        assert!(matches!(
            route("GET", "/control/advance", Some("camera=cam-2")),
            Err(RouteError::MethodNotAllowed { .. })
        ));
        assert_eq!(route("GET", "/stats", None), Ok(Route::Stats));
        assert_eq!(route("GET", "/topology", None), Ok(Route::Topology));
    }
}
