//! Hub request paths → a typed [`HubRequest`], strictly.
//!
//! Paths are matched byte for byte with no normalisation: a percent sign, a `;`, an empty or
//! dot segment, or a query key other than `variant` and `access` is refused here, before
//! authorisation, the cache or the origin see anything. Two different request lines never map
//! to one request, but for the order of the two query keys.
//!
//! The `%` ban is what makes that last sentence true. Pingora does not refuse bytes that are
//! illegal in a request line (a NUL, a space, `"`, `<`, `>`): it percent-encodes them and passes
//! the request on, so `cam 1` arrives here as `cam%201`, the same text a client sending
//! `cam%201` produces. Refusing every `%` keeps those distinct raw lines from collapsing into
//! one path, and so into one cache key.

use http::Method;
use thiserror::Error;

use crate::identity::{CameraId, ContentHash};
use crate::rendition::{Catalogue, Rendition};
use crate::request::{FrameRef, HubRequest, Target};

/// Why a request line was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RouteError {
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("no such resource")]
    NotFound,
    /// The path exists, the method does not; carries the `Allow` value.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
}

/// Parses a request line's method, path and query.
/// `variant=` must name a rendition of `renditions`.
pub fn parse(
    method: &Method,
    path: &str,
    query: Option<&str>,
    renditions: &Catalogue,
) -> Result<HubRequest, RouteError> {
    use RouteError::BadRequest;

    if path.bytes().any(|b| b == b'%') {
        return Err(BadRequest(
            "percent-encoded characters are not allowed in paths",
        ));
    }
    if path.contains(';') {
        return Err(BadRequest("path parameters (;) are not allowed"));
    }
    let rest = path
        .strip_prefix('/')
        .ok_or(BadRequest("path must start with /"))?;
    if rest.is_empty() {
        return Err(RouteError::NotFound);
    }
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(BadRequest("empty path segments (//) are not allowed"));
    }
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return Err(BadRequest("dot segments are not allowed"));
    }

    let (camera, target) = match segments.as_slice() {
        ["v1", "cameras", camera, "frame"] => (*camera, Target::Frame(FrameRef::Latest)),
        ["v1", "cameras", camera, "frames", hash] => {
            let hash = ContentHash::parse(hash)
                .map_err(|_| BadRequest("frame hash must be 64 lowercase hex characters"))?;
            (*camera, Target::Frame(FrameRef::ByHash(hash)))
        }
        ["v1", "cameras", camera, "stream"] => (*camera, Target::Stream),
        ["v1", "cameras", camera, "links"] => (*camera, Target::Links),
        _ => return Err(RouteError::NotFound),
    };
    let camera = CameraId::parse(camera).map_err(|_| BadRequest("camera id is not valid"))?;

    let head = match (target, method) {
        (Target::Links, &Method::POST) | (Target::Stream, &Method::GET) => false,
        (Target::Links, _) => return Err(RouteError::MethodNotAllowed("POST")),
        (Target::Stream, _) => return Err(RouteError::MethodNotAllowed("GET")),
        (_, &Method::GET) => false,
        (_, &Method::HEAD) => true,
        _ => return Err(RouteError::MethodNotAllowed("GET, HEAD")),
    };
    let (rendition, access) = parse_query(query, renditions)?;
    Ok(HubRequest {
        camera,
        target,
        rendition,
        access,
        head,
    })
}

/// The query: nothing, or `variant=NAME` and `access=VALUE`, each at most once.
fn parse_query(
    query: Option<&str>,
    renditions: &Catalogue,
) -> Result<(Option<Rendition>, Option<String>), RouteError> {
    use RouteError::BadRequest;

    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return Ok((None, None));
    };
    if query.bytes().any(|b| b == b'%' || b == b'+') {
        return Err(BadRequest(
            "encoded characters are not allowed in the query",
        ));
    }
    let (mut variant, mut access) = (None, None);
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "variant" if variant.is_some() => {
                return Err(BadRequest("variant given more than once"))
            }
            "variant" => {
                let found = renditions.find(value);
                variant = Some(found.ok_or(BadRequest("unknown variant"))?);
            }
            "access" if access.is_some() => return Err(BadRequest("access given more than once")),
            "access" if value.is_empty() => return Err(BadRequest("access needs a value")),
            // Checked (and refused as a bad token when wrong) at authorisation.
            "access" => access = Some(value.to_string()),
            _ => {
                return Err(BadRequest(
                    "unknown query parameter; only variant and access are allowed",
                ))
            }
        }
    }
    Ok((variant, access))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::RouteLabel;

    fn get(path: &str) -> Result<HubRequest, RouteError> {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        parse(&Method::GET, path, query, &Catalogue::built_in())
    }

    #[test]
    fn the_three_routes() {
        let r = get("/v1/cameras/cam-1/frame").unwrap();
        assert_eq!(r.camera.as_str(), "cam-1");
        assert_eq!(r.target, Target::Frame(FrameRef::Latest));
        assert_eq!(r.target.label(), RouteLabel::Frame);
        let hash = ContentHash::of(b"x");
        let r = get(&format!("/v1/cameras/cam-1/frames/{hash}")).unwrap();
        assert_eq!(r.target, Target::Frame(FrameRef::ByHash(hash)));
        let r = get("/v1/cameras/cam-1/stream?variant=full").unwrap();
        assert_eq!(r.target, Target::Stream);
        assert_eq!(r.rendition, Some(Rendition::FULL));
        let r = get("/v1/cameras/cam-1/frame?variant=thumb").unwrap();
        assert_eq!(r.rendition.unwrap().variant.as_str(), "thumb");
        let r = parse(
            &Method::HEAD,
            "/v1/cameras/cam-1/frame",
            None,
            &Catalogue::built_in(),
        )
        .unwrap();
        assert!(r.head);
    }

    #[test]
    fn links_and_access() {
        let post = |path: &str| parse(&Method::POST, path, None, &Catalogue::built_in());
        assert_eq!(
            post("/v1/cameras/cam-1/links").unwrap().target,
            Target::Links
        );
        assert_eq!(
            get("/v1/cameras/cam-1/links"),
            Err(RouteError::MethodNotAllowed("POST"))
        );
        let r = get("/v1/cameras/cam-1/frame?variant=thumb&access=1.ab.o").unwrap();
        assert_eq!(r.access.as_deref(), Some("1.ab.o"));
        let swapped = get("/v1/cameras/cam-1/frame?access=1.ab.o&variant=thumb").unwrap();
        assert_eq!(r, swapped);
        for bad in [
            "/v1/cameras/cam-1/frame?access",
            "/v1/cameras/cam-1/frame?access=",
            "/v1/cameras/cam-1/frame?access=a&access=a",
            "/v1/cameras/cam-1/frame?access=a&x=1",
        ] {
            assert!(matches!(get(bad), Err(RouteError::BadRequest(_))), "{bad}");
        }
    }

    #[test]
    fn hostile_paths_are_refused() {
        let hash = ContentHash::of(b"x");
        let bad = [
            "/v1/cameras/cam-1%2Fframe".to_string(),
            "/v1/cameras/cam%2D1/frame".to_string(),
            "/v1/cameras/cam-1/./frame".to_string(),
            "/v1/cameras/../cameras/cam-1/frame".to_string(),
            "/v1/cameras/cam-1/frames/..".to_string(),
            "/v1//cameras/cam-1/frame".to_string(),
            "/v1/cameras/cam-1/frame/".to_string(),
            "/v1/cameras/cam-1;owner=x/frame".to_string(),
            "/v1/cameras/cam-1/frame;x".to_string(),
            format!("/v1/cameras/{}/frame", "c".repeat(65)),
            "/v1/cameras/cam\u{0}1/frame".to_string(),
            format!("/v1/cameras/cam-1/frames/{}", hash.to_hex().to_uppercase()),
            format!("/v1/cameras/cam-1/frames/{}", &hash.to_hex()[1..]),
            "/v1/cameras/cam-1/frame?owner=owner-2".to_string(),
            "/v1/cameras/cam-1/frame?variant=full&variant=full".to_string(),
            "/v1/cameras/cam-1/frame?variant=huge".to_string(),
            "/v1/cameras/cam-1/frame?variant=ful%6C".to_string(),
            "/v1/cameras/cam-1/frame?variant".to_string(),
        ];
        for path in bad {
            assert!(
                matches!(get(&path), Err(RouteError::BadRequest(_))),
                "{path:?} → {:?}",
                get(&path)
            );
        }
        for path in [
            "/",
            "/v1/cameras",
            "/v1/cameras/cam-1",
            "/v1/cameras/cam-1/frames",
            "/v1/cameras/cam-1/frame/extra",
            "/V1/cameras/cam-1/frame",
            "/v2/cameras/cam-1/frame",
        ] {
            assert_eq!(get(path), Err(RouteError::NotFound), "{path:?}");
        }
    }

    #[test]
    fn methods() {
        for m in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
            assert_eq!(
                parse(&m, "/v1/cameras/cam-1/frame", None, &Catalogue::built_in()),
                Err(RouteError::MethodNotAllowed("GET, HEAD"))
            );
        }
        assert_eq!(
            parse(
                &Method::HEAD,
                "/v1/cameras/cam-1/stream",
                None,
                &Catalogue::built_in()
            ),
            Err(RouteError::MethodNotAllowed("GET"))
        );
        // Unknown paths are 404 whatever the method.
        assert_eq!(
            parse(&Method::POST, "/nope", None, &Catalogue::built_in()),
            Err(RouteError::NotFound)
        );
    }

    #[test]
    fn empty_query_is_no_query() {
        assert_eq!(get("/v1/cameras/cam-1/frame?").unwrap().rendition, None);
    }
}
