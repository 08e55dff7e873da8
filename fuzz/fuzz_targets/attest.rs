//! Origin answer attestation: `origin::attest` on any answer.
//!
//! Input: a first line `OWNER CAMERA FRAME`, the request (FRAME: `latest`, `by-hash` for the
//! body's own address, or 64 hex characters), then the answer as a camera backend sends it: a
//! status line, headers, an empty line, the body. A signature value of `sign`, or
//! `sign CAMERA SEQ CAPTURED_AT`, is replaced by a real signature with the development key over
//! the body's hash and those values (by default the answer's own headers), so that mutated
//! answers still reach the signature check and beyond.
//!
//! Invariants: it never panics; an answer is accepted exactly when an independent reading of
//! SPEC's checks accepts it; an accepted frame carries the requested owner and camera, its body
//! and that body's hash, and its signature verifies with `framecache_protocol::verify`; 404
//! and 403 are the origin's own answers, other statuses are refused as such.

#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use framecache::identity::{CameraId, ContentHash, OwnerId};
use framecache::origin::{self, OriginError, Rejection};
use framecache::request::FrameRef;
use framecache_fuzz::{first, head_and_body, headers};
use framecache_protocol as protocol;
use http::header::HeaderValue;
use http::{HeaderMap, StatusCode};
use libfuzzer_sys::fuzz_target;

/// The development signing key, which camsim's answers in the seed corpus are signed with.
fn key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        let text = include_str!("../../config/dev/frame-signing.key");
        framecache::config::parse_signing_key(text).expect("the development key parses")
    })
}

/// Replaces a `sign …` signature value with a real signature.
fn sign(headers: &mut HeaderMap, body_hash: &ContentHash) {
    let Some(value) = first(headers, protocol::FRAME_SIGNATURE) else {
        return;
    };
    let mut words = value.split(' ');
    if words.next() != Some("sign") {
        return;
    }
    let claimed = |name| first(headers, name).unwrap_or_default();
    let camera = words.next().unwrap_or(claimed(protocol::FRAME_CAMERA));
    let number =
        |word: Option<&str>, name| word.unwrap_or(claimed(name)).parse::<u64>().unwrap_or(0);
    let seq = number(words.next(), protocol::FRAME_SEQ);
    let captured_at = number(words.next(), protocol::FRAME_CAPTURED_AT);
    let signature = protocol::sign(key(), camera, seq, captured_at, &body_hash.hex());
    let value = HeaderValue::from_str(signature.to_hex().as_str()).expect("hex is a value");
    headers.insert(protocol::FRAME_SIGNATURE, value);
}

/// SPEC's checks, read independently of the proxy's code: whether the answer is acceptable.
fn acceptable(
    status: StatusCode,
    headers: &HeaderMap,
    hash: &ContentHash,
    owner: &OwnerId,
    camera: &CameraId,
    frame: FrameRef,
) -> bool {
    let media_type = first(headers, "content-type").map(|v| {
        v.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    let number = |name| first(headers, name).and_then(|v| v.parse::<u64>().ok());
    let signature =
        first(headers, protocol::FRAME_SIGNATURE).and_then(|v| blake3::Hash::from_hex(v).ok());
    let (Some(seq), Some(captured_at), Some(signature)) = (
        number(protocol::FRAME_SEQ),
        number(protocol::FRAME_CAPTURED_AT),
        signature,
    ) else {
        return false;
    };
    status == StatusCode::OK
        && media_type.as_deref() == Some("image/jpeg")
        && first(headers, protocol::FRAME_OWNER) == Some(owner.as_str())
        && first(headers, protocol::FRAME_CAMERA) == Some(camera.as_str())
        && (frame == FrameRef::Latest || frame == FrameRef::ByHash(*hash))
        && protocol::verify(
            key(),
            camera.as_str(),
            seq,
            captured_at,
            &hash.hex(),
            &signature,
        )
}

fuzz_target!(|data: &[u8]| {
    let (lines, body) = head_and_body(data);
    let [request, status_line, lines @ ..] = lines.as_slice() else {
        return;
    };
    let body = Bytes::copy_from_slice(body);
    let hash = ContentHash::of(&body);
    let request = String::from_utf8_lossy(request);
    let [owner, camera, frame] = request.split(' ').collect::<Vec<_>>()[..] else {
        return;
    };
    let (Ok(owner), Ok(camera)) = (OwnerId::parse(owner), CameraId::parse(camera)) else {
        return;
    };
    let frame = match frame {
        "latest" => FrameRef::Latest,
        "by-hash" => FrameRef::ByHash(hash),
        hex => match ContentHash::parse(hex) {
            Ok(asked) => FrameRef::ByHash(asked),
            Err(_) => return,
        },
    };
    // `HTTP/1.1 200 OK`, or the code alone.
    let mut words = status_line.split(|&b| b == b' ');
    let code = match words.next() {
        Some(version) if version.starts_with(b"HTTP/") => words.next().unwrap_or_default(),
        Some(code) => code,
        None => return,
    };
    let Ok(status) = StatusCode::from_bytes(code) else {
        return;
    };
    let mut headers = headers(lines.iter().copied());
    sign(&mut headers, &hash);

    let result = origin::attest(
        status,
        &headers,
        body.clone(),
        &owner,
        &camera,
        frame,
        std::slice::from_ref(key()),
    );

    let expected = acceptable(status, &headers, &hash, &owner, &camera, frame);
    assert_eq!(
        result.is_ok(),
        expected,
        "{result:?} for {status} {headers:?}"
    );
    match result {
        Ok(verified) => {
            assert_eq!(verified.owner, owner);
            assert_eq!(verified.camera, camera);
            assert_eq!((&verified.body, verified.hash), (&body, hash));
            let signature = first(&headers, protocol::FRAME_SIGNATURE)
                .and_then(|v| blake3::Hash::from_hex(v).ok())
                .expect("an accepted frame is signed");
            let (seq, at) = (verified.seq, verified.captured_at_ms);
            assert!(protocol::verify(
                key(),
                camera.as_str(),
                seq,
                at,
                &hash.hex(),
                &signature
            ));
            if headers.get("cache-control").is_none() {
                assert_eq!((verified.max_age, verified.no_store), (None, false));
            }
        }
        Err(OriginError::NotFound) => assert_eq!(status, StatusCode::NOT_FOUND),
        Err(OriginError::Forbidden) => assert_eq!(status, StatusCode::FORBIDDEN),
        Err(OriginError::Rejected(Rejection::BadStatus)) => assert_ne!(status, StatusCode::OK),
        Err(OriginError::Rejected(
            Rejection::BadContentType
            | Rejection::OwnerMismatch
            | Rejection::CameraMismatch
            | Rejection::HashMismatch
            | Rejection::BadSignature,
        )) => assert_eq!(status, StatusCode::OK),
        Err(other) => panic!("not an attestation outcome: {other:?}"),
    }
});
