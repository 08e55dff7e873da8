//! JPEG encoding with a watermark comment, and reading the watermark back.
//!
//! The watermark is a COM segment (0xFFFE) holding `framecache-sim camera={camera} seq={seq}`,
//! so a client can tell which frame it really received whatever the headers say. The encoder
//! has no comment API, so the segment is spliced in after the JFIF APP0 segment (right after
//! SOI when there is none; JFIF wants APP0 first).

use jpeg_encoder::{ColorType, Encoder, EncodingError};

const SOI: [u8; 2] = [0xFF, 0xD8];
const COM: u8 = 0xFE;
const APP0: u8 = 0xE0;
const SOS: u8 = 0xDA;
const EOI: u8 = 0xD9;
const PREFIX: &str = "framecache-sim camera=";

/// Why a picture could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("jpeg encoder failed: {0}")]
    Encoder(#[from] EncodingError),
    #[error("picture {width}x{height} is too large for jpeg")]
    TooLarge { width: u32, height: u32 },
    #[error("comment of {0} bytes does not fit a jpeg segment")]
    CommentTooLong(usize),
}

/// The watermark text of a frame.
pub fn watermark(camera: &str, seq: u64) -> String {
    format!("{PREFIX}{camera} seq={seq}")
}

/// Encodes RGB pixels as a baseline JPEG carrying `comment` in a COM segment.
pub fn encode(
    rgb: &[u8],
    width: u32,
    height: u32,
    quality: u8,
    comment: &str,
) -> Result<Vec<u8>, EncodeError> {
    let too_large = || EncodeError::TooLarge { width, height };
    let w = u16::try_from(width).map_err(|_| too_large())?;
    let h = u16::try_from(height).map_err(|_| too_large())?;
    let segment_len =
        u16::try_from(comment.len() + 2).map_err(|_| EncodeError::CommentTooLong(comment.len()))?;
    let mut plain = Vec::with_capacity(rgb.len() / 8);
    Encoder::new(&mut plain, quality).encode(rgb, w, h, ColorType::Rgb)?;

    let at = after_app0(&plain).unwrap_or(SOI.len());
    let mut out = Vec::with_capacity(plain.len() + comment.len() + 4);
    out.extend_from_slice(&plain[..at]);
    out.extend_from_slice(&[0xFF, COM]);
    out.extend_from_slice(&segment_len.to_be_bytes());
    out.extend_from_slice(comment.as_bytes());
    out.extend_from_slice(&plain[at..]);
    Ok(out)
}

/// The offset just past an APP0 segment that directly follows SOI.
fn after_app0(jpeg: &[u8]) -> Option<usize> {
    if !jpeg.starts_with(&SOI) || jpeg.get(2..4)? != [0xFF, APP0] {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([*jpeg.get(4)?, *jpeg.get(5)?]));
    let end = 4 + len;
    (end <= jpeg.len()).then_some(end)
}

/// Reads the watermark `(camera, seq)` from the COM segments before the image data; `None` if
/// absent or garbled.
pub fn read_watermark(jpeg: &[u8]) -> Option<(String, u64)> {
    if !jpeg.starts_with(&SOI) {
        return None;
    }
    let mut i = SOI.len();
    loop {
        if *jpeg.get(i)? != 0xFF {
            return None;
        }
        // Markers may be padded with fill bytes (0xFF).
        while *jpeg.get(i)? == 0xFF {
            i += 1;
        }
        let marker = jpeg[i];
        i += 1;
        match marker {
            SOS | EOI => return None,
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([*jpeg.get(i)?, *jpeg.get(i + 1)?]));
        let data = jpeg.get(i + 2..i + len.max(2))?;
        if marker == COM {
            if let Some(found) = parse_watermark(data) {
                return Some(found);
            }
        }
        i += len.max(2);
    }
}

fn parse_watermark(data: &[u8]) -> Option<(String, u64)> {
    let text = std::str::from_utf8(data).ok()?.strip_prefix(PREFIX)?;
    let (camera, seq) = text.rsplit_once(" seq=")?;
    let camera_ok = !camera.is_empty() && !camera.contains(char::is_whitespace);
    let seq_ok = !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit());
    if !(camera_ok && seq_ok) {
        return None;
    }
    Some((camera.to_owned(), seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grey(width: u32, height: u32) -> Vec<u8> {
        vec![128; (width * height * 3) as usize]
    }

    #[test]
    fn watermark_round_trips() {
        let jpeg = encode(&grey(32, 16), 32, 16, 80, &watermark("cam-3", 42)).unwrap();
        assert!(jpeg.starts_with(&SOI));
        assert!(jpeg.ends_with(&[0xFF, EOI]));
        assert_eq!(read_watermark(&jpeg), Some(("cam-3".to_owned(), 42)));
        // The comment follows the JFIF APP0 segment.
        assert_eq!(&jpeg[2..4], &[0xFF, APP0]);
    }

    #[test]
    fn missing_or_garbled_watermarks_read_as_none() {
        let comments = [
            "hello",
            "framecache-sim camera= seq=1",
            "framecache-sim camera=cam-1 seq=",
            "framecache-sim camera=cam-1 seq=12x",
            "framecache-sim camera=cam 1 seq=3",
        ];
        for comment in comments {
            let jpeg = encode(&grey(16, 16), 16, 16, 80, comment).unwrap();
            assert_eq!(read_watermark(&jpeg), None, "{comment}");
        }
        assert_eq!(read_watermark(b""), None);
        assert_eq!(read_watermark(b"<html>"), None);
        assert_eq!(read_watermark(&[0xFF, 0xD8, 0xFF, COM, 0x00]), None);
        assert_eq!(
            read_watermark(&[0xFF, 0xD8, 0xFF, COM, 0xFF, 0xFF, b'x']),
            None
        );
    }

    #[test]
    fn oversized_pictures_are_refused() {
        assert!(matches!(
            encode(&[], 70_000, 1, 80, "x"),
            Err(EncodeError::TooLarge { .. })
        ));
    }
}
