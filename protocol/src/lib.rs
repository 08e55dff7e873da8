//! The camera-backend protocol, as both sides speak it: the proxy (`framecache`) asks, a camera
//! backend (`camsim`, or a vendor's) answers. One definition of each header name and of the
//! frame attestation, so the two sides cannot drift apart.
//!
//! A backend answers `GET /cameras/{camera}/frame` (latest) or
//! `GET /cameras/{camera}/frames/{hash}` (by content address), asked for the owner in
//! [`OWNER`], with the frame's JPEG bytes and the attestation headers below. The attestation is
//! made where the frame is captured: `blake3::keyed_hash(signing_key, message)` over
//! [`signed_message`], which binds the bytes (by their blake3 hash) to their camera, sequence
//! number and capture time.

/// Request header: the verified owner a request is made for.
pub const OWNER: &str = "x-framecache-owner";
/// Answer header: the owner the frame was fetched for; must equal [`OWNER`].
pub const FRAME_OWNER: &str = "x-frame-owner";
/// Answer header: the camera that captured the frame.
pub const FRAME_CAMERA: &str = "x-frame-camera";
/// Answer header: the frame's sequence number, decimal.
pub const FRAME_SEQ: &str = "x-frame-seq";
/// Answer header: the capture time, milliseconds since the epoch, decimal.
pub const FRAME_CAPTURED_AT: &str = "x-frame-captured-at";
/// Answer header: 64 hex characters, the keyed blake3 hash of [`signed_message`].
pub const FRAME_SIGNATURE: &str = "x-frame-signature";

/// The path of a camera's latest frame.
pub fn latest_path(camera: &str) -> String {
    format!("/cameras/{camera}/frame")
}

/// The path of one frame of a camera by its content address (64 lowercase hex characters).
pub fn by_hash_path(camera: &str, hash_hex: &str) -> String {
    format!("/cameras/{camera}/frames/{hash_hex}")
}

/// The text that is signed for a frame, `body_hash_hex` being blake3 of its bytes in lowercase
/// hex: `framecache-frame-v1\n{camera}\n{seq}\n{captured_at_ms}\n{body_hash_hex}`, with no
/// trailing newline.
pub fn signed_message(camera: &str, seq: u64, captured_at_ms: u64, body_hash_hex: &str) -> String {
    format!("framecache-frame-v1\n{camera}\n{seq}\n{captured_at_ms}\n{body_hash_hex}")
}

/// The attestation of a frame whose bytes hash to `body_hash_hex`.
pub fn sign(
    key: &[u8; 32],
    camera: &str,
    seq: u64,
    captured_at_ms: u64,
    body_hash_hex: &str,
) -> blake3::Hash {
    let message = signed_message(camera, seq, captured_at_ms, body_hash_hex);
    blake3::keyed_hash(key, message.as_bytes())
}

/// Whether `signature` attests the frame under `key`; compared in constant time.
pub fn verify(
    key: &[u8; 32],
    camera: &str,
    seq: u64,
    captured_at_ms: u64,
    body_hash_hex: &str,
    signature: &blake3::Hash,
) -> bool {
    // blake3::Hash's equality is constant-time.
    sign(key, camera, seq, captured_at_ms, body_hash_hex) == *signature
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_is_exact() {
        assert_eq!(
            signed_message("cam-1", 7, 1700000000123, "ab"),
            "framecache-frame-v1\ncam-1\n7\n1700000000123\nab"
        );
    }

    #[test]
    fn a_signature_binds_every_field() {
        let key = [7u8; 32];
        let hash = blake3::hash(b"jpeg").to_hex();
        let signature = sign(&key, "cam-1", 5, 1_700_000_000_000, &hash);
        let checks = |key: &[u8; 32], camera, seq, ms, hash: &str| {
            verify(key, camera, seq, ms, hash, &signature)
        };
        let other = blake3::hash(b"jpeg!").to_hex();
        assert!(checks(&key, "cam-1", 5, 1_700_000_000_000, &hash));
        assert!(!checks(&[8u8; 32], "cam-1", 5, 1_700_000_000_000, &hash));
        assert!(!checks(&key, "cam-2", 5, 1_700_000_000_000, &hash));
        assert!(!checks(&key, "cam-1", 6, 1_700_000_000_000, &hash));
        assert!(!checks(&key, "cam-1", 5, 1_700_000_000_001, &hash));
        assert!(!checks(&key, "cam-1", 5, 1_700_000_000_000, &other));
    }

    #[test]
    fn paths() {
        assert_eq!(latest_path("cam-1"), "/cameras/cam-1/frame");
        assert_eq!(by_hash_path("cam-1", "ab"), "/cameras/cam-1/frames/ab");
    }
}
