//! A captured frame: JPEG bytes plus the attestation made at capture.
//!
//! The signature is made as the camera-backend protocol says ([`framecache_protocol::sign`]).

use bytes::Bytes;

use crate::jpeg::{self, EncodeError};
use crate::scene;

/// One captured frame of one camera, signed for that camera.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub camera: String,
    pub seq: u64,
    /// Capture time, ms since the epoch.
    pub captured_at_ms: u64,
    /// The JPEG bytes.
    pub body: Bytes,
    /// blake3 of `body`, 64 lowercase hex chars: the frame's content address.
    pub hash: String,
    /// `X-Frame-Signature`: 64 lowercase hex chars.
    pub signature: String,
}

/// Why a frame could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("render task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("unknown camera")]
    UnknownCamera,
}

/// The `X-Frame-Signature` value for a frame.
pub fn sign(key: &[u8; 32], camera: &str, seq: u64, captured_at_ms: u64, body: &[u8]) -> String {
    let body_hash = blake3::hash(body).to_hex();
    framecache_protocol::sign(key, camera, seq, captured_at_ms, body_hash.as_str())
        .to_hex()
        .to_string()
}

/// The JPEG bytes of (camera, seq): the same arguments always give the same bytes.
pub fn render(
    camera: &str,
    seq: u64,
    width: u32,
    height: u32,
    quality: u8,
) -> Result<Vec<u8>, EncodeError> {
    let rgb = scene::paint(camera, seq, width, height);
    jpeg::encode(&rgb, width, height, quality, &jpeg::watermark(camera, seq))
}

/// How frames are captured: picture settings and the signing key.
#[derive(Clone, Copy)]
pub(crate) struct Capture {
    pub key: [u8; 32],
    pub width: u32,
    pub height: u32,
    pub quality: u8,
}

impl Capture {
    /// Renders and signs (camera, seq) as captured at `captured_at_ms`. CPU-bound.
    pub fn frame(&self, camera: &str, seq: u64, captured_at_ms: u64) -> Result<Frame, EncodeError> {
        let body = render(camera, seq, self.width, self.height, self.quality)?;
        let hash = blake3::hash(&body).to_hex().to_string();
        let signature = sign(&self.key, camera, seq, captured_at_ms, &body);
        Ok(Frame {
            camera: camera.to_owned(),
            seq,
            captured_at_ms,
            body: Bytes::from(body),
            hash,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_follows_the_spec_formula() {
        let key = [7u8; 32];
        let body = b"jpeg bytes";
        let message = format!(
            "framecache-frame-v1\ncam-1\n5\n1700000000000\n{}",
            blake3::hash(body).to_hex()
        );
        let expected = hex::encode(blake3::keyed_hash(&key, message.as_bytes()).as_bytes());
        assert_eq!(sign(&key, "cam-1", 5, 1_700_000_000_000, body), expected);
    }

    #[test]
    fn frames_are_deterministic_and_watermarked() {
        let capture = Capture {
            key: [1; 32],
            width: 96,
            height: 64,
            quality: 80,
        };
        let a = capture.frame("cam-2", 3, 10).unwrap();
        let b = capture.frame("cam-2", 3, 10).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.hash, blake3::hash(&a.body).to_hex().as_str());
        assert_eq!(jpeg::read_watermark(&a.body), Some(("cam-2".to_owned(), 3)));
        assert_ne!(capture.frame("cam-2", 4, 10).unwrap().hash, a.hash);
    }

    /// Sizes are deterministic, so a loose range is stable.
    #[test]
    fn frame_sizes_suit_a_camera_still() {
        let hd = render("cam-1", 1, 1280, 720, 80).unwrap().len();
        assert!((60_000..=150_000).contains(&hd), "1280x720: {hd} bytes");
        let vga = render("cam-1", 1, 640, 480, 80).unwrap().len();
        assert!((20_000..=50_000).contains(&vga), "640x480: {vga} bytes");
    }
}
