//! Renditions: a smaller JPEG made at the edge from a verified full frame.
//!
//! Decoding uses the JPEG's own DCT scaling (jpeg-decoder decodes at 1/2, 1/4 or 1/8 size by
//! running a smaller inverse DCT), so a 1080p frame meant for a 320-pixel thumbnail is never
//! decoded at full size; fast_image_resize (SIMD) then takes it to the exact width, and
//! jpeg-encoder writes a fresh baseline JPEG. Nothing of the original's metadata (EXIF,
//! comments) is copied: the output holds only pixels. `cargo bench --bench render` measures
//! milliseconds per frame on one core.
//!
//! This is CPU work: [`Pool`] runs it on tokio's blocking threads, at most `render_threads` at
//! once, with a bounded queue behind them; past it a request is refused (`busy`) rather than
//! queued without end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use jpeg_decoder::{Decoder, PixelFormat};
use jpeg_encoder::{ColorType, Encoder};
use thiserror::Error;
use tokio::sync::Semaphore;

use super::{Rendition, RenditionError};

/// Why a rendition could not be made.
#[derive(Debug, Error)]
pub enum RenderError {
    #[error("the frame is not a decodable JPEG: {0}")]
    Decode(String),
    #[error("the frame's pixel format is not supported")]
    PixelFormat,
    #[error("resizing failed: {0}")]
    Resize(String),
    #[error("encoding failed: {0}")]
    Encode(String),
}

/// A decoded picture.
struct Pixels {
    width: u32,
    height: u32,
    /// RGB24 or L8, row by row.
    data: Vec<u8>,
    gray: bool,
}

/// Largest source picture rendered, in pixels (6000×4000): decoding holds coefficients for the
/// whole picture, whatever the output size, so a signed but absurd frame header must not
/// decide how much memory a rendering takes.
pub const MAX_SOURCE_PIXELS: u64 = 24_000_000;

/// Decodes `jpeg`, using DCT scaling to land at or above `width` pixels wide (when smaller
/// than the original).
fn decode(jpeg: &[u8], width: u32) -> Result<Pixels, RenderError> {
    let mut decoder = Decoder::new(jpeg);
    decoder.set_max_decoding_buffer_size(MAX_SOURCE_PIXELS as usize * 3);
    decoder
        .read_info()
        .map_err(|e| RenderError::Decode(e.to_string()))?;
    let info = decoder
        .info()
        .ok_or_else(|| RenderError::Decode("no frame header".into()))?;
    let pixels = u64::from(info.width) * u64::from(info.height);
    if pixels > MAX_SOURCE_PIXELS {
        return Err(RenderError::Decode(format!(
            "{}×{} is larger than {MAX_SOURCE_PIXELS} pixels",
            info.width, info.height
        )));
    }
    if width > 0 && width < u32::from(info.width) {
        let height = (u64::from(info.height) * u64::from(width) / u64::from(info.width)).max(1);
        decoder
            .scale(width as u16, height.min(u64::from(u16::MAX)) as u16)
            .map_err(|e| RenderError::Decode(e.to_string()))?;
    }
    let data = decoder
        .decode()
        .map_err(|e| RenderError::Decode(e.to_string()))?;
    let info = decoder
        .info()
        .ok_or_else(|| RenderError::Decode("no frame header".into()))?;
    let gray = match info.pixel_format {
        PixelFormat::RGB24 => false,
        PixelFormat::L8 => true,
        _ => return Err(RenderError::PixelFormat),
    };
    Ok(Pixels {
        width: info.width.into(),
        height: info.height.into(),
        data,
        gray,
    })
}

/// Resizes to exactly `width` wide (height by aspect ratio) when the picture is wider.
fn fit(pixels: Pixels, width: u32) -> Result<Pixels, RenderError> {
    if width == 0 || pixels.width <= width {
        return Ok(pixels);
    }
    let height = ((u64::from(pixels.height) * u64::from(width)) / u64::from(pixels.width)).max(1);
    let pixel_type = if pixels.gray {
        PixelType::U8
    } else {
        PixelType::U8x3
    };
    let src = Image::from_vec_u8(pixels.width, pixels.height, pixels.data, pixel_type)
        .map_err(|e| RenderError::Resize(e.to_string()))?;
    let mut dst = Image::new(width, height as u32, pixel_type);
    Resizer::new()
        .resize(
            &src,
            &mut dst,
            &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
        )
        .map_err(|e| RenderError::Resize(e.to_string()))?;
    Ok(Pixels {
        width,
        height: height as u32,
        data: dst.into_vec(),
        gray: pixels.gray,
    })
}

/// The width and height a JPEG declares in its frame header, read without decoding anything:
/// the marker segments are walked up to the first start-of-frame.
pub fn dimensions(jpeg: &[u8]) -> Option<(u32, u32)> {
    if jpeg.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut at = 2;
    loop {
        // Fill bytes (0xFF) may precede a marker.
        while *jpeg.get(at)? == 0xFF && *jpeg.get(at + 1)? == 0xFF {
            at += 1;
        }
        if *jpeg.get(at)? != 0xFF {
            return None;
        }
        let marker = *jpeg.get(at + 1)?;
        let len = usize::from(u16::from_be_bytes([*jpeg.get(at + 2)?, *jpeg.get(at + 3)?]));
        let is_sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_sof {
            let segment = jpeg.get(at + 4..at + 2 + len)?;
            let height = u16::from_be_bytes([*segment.get(1)?, *segment.get(2)?]);
            let width = u16::from_be_bytes([*segment.get(3)?, *segment.get(4)?]);
            return (width > 0 && height > 0).then_some((width.into(), height.into()));
        }
        if marker == 0xDA || len < 2 {
            return None;
        }
        at += 2 + len;
    }
}

/// Makes `rendition` of the JPEG `full`.
pub fn render(full: &[u8], rendition: &Rendition) -> Result<Bytes, RenderError> {
    render_with(full, rendition, true)
}

/// [`render`], optionally without DCT scaling (decoding at full size), for comparison.
pub fn render_with(
    full: &[u8],
    rendition: &Rendition,
    dct_scaling: bool,
) -> Result<Bytes, RenderError> {
    let decode_width = if dct_scaling { rendition.max_width } else { 0 };
    let pixels = fit(decode(full, decode_width)?, rendition.max_width)?;
    let too_big = |_| RenderError::Encode("picture larger than 65535 pixels".into());
    let (w, h) = (
        u16::try_from(pixels.width).map_err(too_big)?,
        u16::try_from(pixels.height).map_err(too_big)?,
    );
    let mut out = Vec::with_capacity(pixels.data.len() / 8);
    let color = if pixels.gray {
        ColorType::Luma
    } else {
        ColorType::Rgb
    };
    Encoder::new(&mut out, rendition.quality)
        .encode(&pixels.data, w, h, color)
        .map_err(|e| RenderError::Encode(e.to_string()))?;
    Ok(Bytes::from(out))
}

/// Renderings waiting for a thread, per thread, before requests are refused.
const QUEUE_PER_THREAD: usize = 32;

/// The bounded rendering pool: a semaphore over tokio's blocking threads and a queue limit.
pub struct Pool {
    slots: Arc<Semaphore>,
    /// Renderings admitted and not yet finished (running or waiting for a slot).
    admitted: Arc<AtomicUsize>,
    limit: usize,
}

impl Pool {
    pub fn new(threads: usize) -> Pool {
        let threads = threads.max(1);
        Pool {
            slots: Arc::new(Semaphore::new(threads)),
            admitted: Arc::new(AtomicUsize::new(0)),
            limit: threads * (1 + QUEUE_PER_THREAD),
        }
    }

    /// [`render`]s `rendition` of `source` off the async workers. Returns the bytes and the
    /// time the rendering itself took.
    pub async fn render(
        &self,
        source: Bytes,
        rendition: Rendition,
    ) -> Result<(Bytes, Duration), RenditionError> {
        if self.admitted.fetch_add(1, Ordering::SeqCst) >= self.limit {
            self.admitted.fetch_sub(1, Ordering::SeqCst);
            return Err(RenditionError::Busy);
        }
        let _admitted = Admitted(Arc::clone(&self.admitted));
        let _slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .expect("invariant: the semaphore is never closed");
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            render(&source, &rendition)
                .map(|bytes| (bytes, started.elapsed()))
                .map_err(|e| RenditionError::Failed(e.to_string()))
        })
        .await
        .unwrap_or_else(|e| Err(RenditionError::Failed(format!("rendering stopped: {e}"))))
    }
}

/// Releases a queue place when a rendering ends, however it ends.
struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A camsim frame of the given size (with its watermark comment).
    fn frame(width: u32, height: u32) -> Vec<u8> {
        camsim::frame::render("cam-1", 7, width, height, 80).unwrap()
    }

    fn dims(jpeg: &[u8]) -> (u32, u32) {
        let mut d = Decoder::new(jpeg);
        d.read_info().unwrap();
        let info = d.info().unwrap();
        (info.width.into(), info.height.into())
    }

    fn rendition(max_width: u32) -> Rendition {
        Rendition {
            max_width,
            quality: 75,
            ..Rendition::FULL
        }
    }

    #[test]
    fn dimensions_are_read_from_the_frame_header() {
        assert_eq!(dimensions(&frame(1280, 720)), Some((1280, 720)));
        let thumb = render(&frame(640, 480), &rendition(320)).unwrap();
        assert_eq!(dimensions(&thumb), Some((320, 240)));
        for bad in [
            &b""[..],
            b"\xFF\xD8",
            b"not a jpeg",
            &[0xFF, 0xD8, 0xFF, 0xC0, 0, 2][..],
        ] {
            assert_eq!(dimensions(bad), None);
        }
        let mut truncated = frame(320, 240);
        truncated.truncate(40);
        let _ = dimensions(&truncated);
    }

    #[test]
    fn thumbnails_fit_their_width_and_keep_the_aspect() {
        let full = frame(1280, 720);
        for width in [640, 320, 200] {
            let out = render(&full, &rendition(width)).unwrap();
            assert_eq!(dims(&out), (width, width * 720 / 1280));
            assert!(out.len() < full.len());
        }
        // Never enlarged.
        let small = frame(320, 240);
        assert_eq!(dims(&render(&small, &rendition(640)).unwrap()), (320, 240));
        assert_eq!(dims(&render(&full, &rendition(0)).unwrap()), (1280, 720));
    }

    #[test]
    fn metadata_is_not_copied() {
        let full = frame(640, 480);
        assert!(camsim::jpeg::read_watermark(&full).is_some());
        let out = render(&full, &rendition(320)).unwrap();
        assert!(camsim::jpeg::read_watermark(&out).is_none());
        assert!(!out.windows(14).any(|w| w == b"framecache-sim"));
    }

    #[test]
    fn absurd_frame_headers_are_refused_before_decoding() {
        let mut jpeg = frame(320, 240);
        // Patch the start-of-frame header to declare 30000 × 30000 pixels.
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        jpeg[sof + 5..sof + 9].copy_from_slice(&[0x75, 0x30, 0x75, 0x30]);
        assert_eq!(dimensions(&jpeg), Some((30_000, 30_000)));
        let error = render(&jpeg, &rendition(320)).unwrap_err().to_string();
        assert!(error.contains("larger than"), "{error}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [&b""[..], b"not a jpeg", &[0xFF, 0xD8, 0xFF][..]] {
            assert!(render(bad, &rendition(320)).is_err());
        }
        let mut truncated = frame(320, 240);
        truncated.truncate(truncated.len() / 3);
        let _ = render(&truncated, &rendition(160));
    }
}
