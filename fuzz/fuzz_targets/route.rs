//! Route parsing: `route::parse` on any method, path and query.
//!
//! Input: one byte for the method (`G` GET, `H` HEAD, `P` POST, `U` PUT, `D` DELETE, `O`
//! OPTIONS, anything else an extension method), then the request target, split at its first
//! `?` into path and query as Pingora hands them over.
//!
//! Invariants: it never panics; an accepted request line is the canonical line of the request
//! it gives (so no `%`, `;`, `//` or dot segment, and two different lines never give one
//! request; the one exception is an empty query, which is no query), and that line parses
//! back to the same request.

#![no_main]

use std::sync::OnceLock;

use framecache::rendition::Catalogue;
use framecache::request::{FrameRef, HubRequest, Target};
use framecache::route;
use http::Method;
use libfuzzer_sys::fuzz_target;

fn catalogue() -> &'static Catalogue {
    static CATALOGUE: OnceLock<Catalogue> = OnceLock::new();
    CATALOGUE.get_or_init(Catalogue::built_in)
}

fn method(byte: u8) -> Method {
    match byte {
        b'G' => Method::GET,
        b'H' => Method::HEAD,
        b'P' => Method::POST,
        b'U' => Method::PUT,
        b'D' => Method::DELETE,
        b'O' => Method::OPTIONS,
        other => Method::from_bytes(&[other]).unwrap_or(Method::PATCH),
    }
}

/// The one request line (path, query) that names `req`.
fn canonical(req: &HubRequest) -> (String, Option<String>) {
    let camera = &req.camera;
    let path = match req.target {
        Target::Frame(FrameRef::Latest) => format!("/v1/cameras/{camera}/frame"),
        Target::Frame(FrameRef::ByHash(hash)) => format!("/v1/cameras/{camera}/frames/{hash}"),
        Target::Stream => format!("/v1/cameras/{camera}/stream"),
        Target::Links => format!("/v1/cameras/{camera}/links"),
    };
    let variant = req.rendition.map(|r| format!("variant={}", r.variant));
    let access = req.access.as_ref().map(|a| format!("access={a}"));
    let pairs: Vec<String> = variant.into_iter().chain(access).collect();
    (path, (!pairs.is_empty()).then(|| pairs.join("&")))
}

/// A query's pairs in order of their keys: `variant` and `access` may come in either order.
fn sorted(query: Option<&str>) -> Vec<&str> {
    let mut pairs: Vec<&str> = query.map_or(Vec::new(), |q| q.split('&').collect());
    pairs.sort_unstable();
    pairs
}

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let method = method(m);
    let target = String::from_utf8_lossy(rest);
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (&*target, None),
    };
    let Ok(req) = route::parse(&method, path, query, catalogue()) else {
        return;
    };

    assert!(!path.contains('%') && !path.contains(';') && !path.contains("//"));
    assert!(!path.split('/').any(|s| s == "." || s == ".."), "{path:?}");
    match req.target {
        Target::Links => assert_eq!(method, Method::POST),
        _ => assert!(method == Method::GET || method == Method::HEAD, "{method}"),
    }
    assert_eq!(req.head, method == Method::HEAD);
    assert!(!(req.head && req.target == Target::Stream));

    let (canonical_path, canonical_query) = canonical(&req);
    assert_eq!(path, canonical_path, "{req:?}");
    assert_eq!(
        sorted(query.filter(|q| !q.is_empty())),
        sorted(canonical_query.as_deref()),
        "{req:?}"
    );
    let again = route::parse(
        &method,
        &canonical_path,
        canonical_query.as_deref(),
        catalogue(),
    );
    assert_eq!(again.as_ref(), Ok(&req));
});
