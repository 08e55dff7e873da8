//! What a simulated camera sees: a street-corner still, deterministic from (camera, seq).
//!
//! Sky and ground gradients with soft cloud and paving texture, a building with windows, a sun
//! and a car that move with the sequence number, a block pattern encoding the sequence number
//! (like a burnt-in timestamp), and sensor noise. The noise level sets the JPEG size: a
//! 1280x720 still at quality 80 weighs about 100 KB.

type Rgb = [i32; 3];

/// Peak sensor noise on luma, in 8-bit steps (triangular distribution).
const LUMA_NOISE: i32 = 9;
/// Peak sensor noise on each colour channel, on top of luma noise.
const CHROMA_NOISE: i32 = 2;

/// RGB pixels, row-major, `width * height * 3` bytes.
pub(crate) fn paint(camera: &str, seq: u64, width: u32, height: u32) -> Vec<u8> {
    let look = Look::of(camera);
    let mut canvas = Canvas::new(width as usize, height as usize);
    canvas.backdrop(&look);
    canvas.sun(&look, seq);
    canvas.building(&look);
    canvas.car(&look, seq);
    canvas.timestamp(seq);
    canvas.into_rgb(frame_seed(camera, seq))
}

/// The per-camera look: palette and layout, from a hash of the camera id.
struct Look {
    sky_top: Rgb,
    sky_low: Rgb,
    ground_far: Rgb,
    ground_near: Rgb,
    wall: Rgb,
    car: Rgb,
    /// Horizon height as a fraction of the picture height.
    horizon: f32,
    /// Building left edge and width, as fractions of the width; height as fraction of the
    /// horizon.
    building: (f32, f32, f32),
    /// Car advance per frame, as a fraction of the width.
    car_speed: f32,
    /// Phase offsets for the moving things, 0..1.
    phase: (f32, f32),
    /// Which windows are lit.
    lit: u64,
}

impl Look {
    fn of(camera: &str) -> Self {
        let hash = blake3::hash(camera.as_bytes());
        let b = hash.as_bytes();
        let unit = |i: usize| f32::from(b[i]) / 255.0;
        let tint = |i: usize, span: i32| i32::from(b[i]) * span / 255 - span / 2;
        Look {
            sky_top: [40 + tint(0, 30), 80 + tint(1, 40), 160 + tint(2, 50)],
            sky_low: [170 + tint(3, 40), 195 + tint(4, 30), 215 + tint(5, 30)],
            ground_far: [110 + tint(6, 40), 115 + tint(7, 40), 95 + tint(8, 40)],
            ground_near: [60 + tint(9, 30), 70 + tint(10, 40), 50 + tint(11, 30)],
            wall: [120 + tint(12, 80), 100 + tint(13, 60), 90 + tint(14, 60)],
            car: [i32::from(b[15]), i32::from(b[16]), i32::from(b[17])],
            horizon: 0.5 + 0.15 * unit(18),
            building: (
                0.05 + 0.45 * unit(19),
                0.2 + 0.2 * unit(20),
                0.5 + 0.4 * unit(21),
            ),
            car_speed: 0.02 + 0.05 * unit(22),
            phase: (unit(23), unit(24)),
            lit: u64::from_le_bytes(b[24..32].try_into().expect("invariant: 8 bytes")),
        }
    }
}

struct Canvas {
    width: usize,
    height: usize,
    /// Working pixels before noise; i32 so drawing never wraps.
    px: Vec<Rgb>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Self {
        Canvas {
            width,
            height,
            px: vec![[0; 3]; width * height],
        }
    }

    fn horizon(&self, look: &Look) -> usize {
        (self.height as f32 * look.horizon) as usize
    }

    /// Sky and ground gradients; soft clouds in the sky, paving joints on the ground.
    fn backdrop(&mut self, look: &Look) {
        let horizon = self.horizon(look).max(1);
        let (w, h) = (self.width, self.height);
        // Separable cloud texture: a few waves along each axis, multiplied.
        let wave = |n: usize, freqs: [f32; 3], phase: f32| -> Vec<f32> {
            (0..n)
                .map(|i| {
                    let t = i as f32 / n as f32 * std::f32::consts::TAU;
                    freqs
                        .iter()
                        .enumerate()
                        .map(|(k, f)| (t * f + phase * (k as f32 + 1.0) * 5.0).sin())
                        .sum::<f32>()
                        / 3.0
                })
                .collect()
        };
        let cols = wave(w, [2.0, 5.0, 11.0], look.phase.0);
        let rows = wave(horizon, [1.5, 4.0, 9.0], look.phase.1);
        let joint = (h / 24).max(2);
        for (y, row) in self.px.chunks_mut(w).enumerate() {
            if let Some(wave) = rows.get(y) {
                let t = y as f32 / horizon as f32;
                let base = lerp(look.sky_top, look.sky_low, t);
                for (p, col) in row.iter_mut().zip(&cols) {
                    let cloud = (col * wave * 40.0) as i32;
                    let c = cloud.max(0);
                    *p = [base[0] + c, base[1] + c, base[2] + c / 2];
                }
            } else {
                let t = (y - horizon) as f32 / (h - horizon).max(1) as f32;
                let base = lerp(look.ground_far, look.ground_near, t);
                // Paving joints get wider apart towards the viewer.
                let spacing = joint + (t * joint as f32 * 3.0) as usize;
                let row_joint = (y - horizon) % spacing == 0;
                for (x, p) in row.iter_mut().enumerate() {
                    let col_joint = (x + y / 3) % (spacing * 3) == 0;
                    *p = if row_joint || col_joint {
                        [base[0] - 25, base[1] - 25, base[2] - 25]
                    } else {
                        base
                    };
                }
            }
        }
    }

    /// A building standing on the horizon, with a grid of windows, some lit.
    fn building(&mut self, look: &Look) {
        let (w, horizon) = (self.width as f32, self.horizon(look) as f32);
        let (left, width, height) = look.building;
        let x0 = (w * left) as i64;
        let x1 = (w * (left + width)) as i64;
        let y0 = (horizon * (1.0 - height)) as i64;
        let y1 = horizon as i64;
        self.fill_rect(x0, y0, x1, y1, look.wall);
        let pane = ((x1 - x0) / 10).max(2);
        let mut bit = 0;
        let mut y = y0 + pane;
        while y + pane < y1 {
            let mut x = x0 + pane;
            while x + pane < x1 {
                let lit = (look.lit >> (bit % 64)) & 1 == 1;
                let glass = if lit { [230, 210, 140] } else { [40, 50, 65] };
                self.fill_rect(x, y, x + pane, y + pane * 3 / 2, glass);
                x += pane * 2;
                bit += 1;
            }
            y += pane * 5 / 2;
        }
    }

    /// A sun crossing the sky, one step per frame.
    fn sun(&mut self, look: &Look, seq: u64) {
        let (w, horizon) = (self.width as i64, self.horizon(look) as i64);
        let r = (self.height as i64 / 14).max(2);
        let span = w + 2 * r;
        let step = (span / 97).max(1);
        let cx = position(look.phase.0, seq, step, span) - r;
        let cy = horizon / 4 + r;
        self.fill_circle(cx, cy, r, [255, 236, 170]);
    }

    /// A car driving along the street, wrapping around.
    fn car(&mut self, look: &Look, seq: u64) {
        let (w, h) = (self.width as i64, self.height as i64);
        let horizon = self.horizon(look) as i64;
        let car_w = (w / 6).max(4);
        let car_h = car_w * 2 / 5;
        let span = w + car_w;
        let step = (span as f32 * look.car_speed) as i64;
        let x = position(look.phase.1, seq, step.max(1), span) - car_w;
        let bottom = horizon + (h - horizon) * 3 / 4;
        let top = bottom - car_h;
        self.fill_rect(x, top + car_h / 3, x + car_w, bottom, look.car);
        self.fill_rect(
            x + car_w / 5,
            top,
            x + car_w * 4 / 5,
            top + car_h / 3,
            look.car,
        );
        self.fill_rect(
            x + car_w / 4,
            top + car_h / 12,
            x + car_w * 3 / 4,
            top + car_h / 3,
            [90, 120, 150],
        );
        let wheel = car_h / 4;
        for wx in [x + car_w / 5, x + car_w * 4 / 5] {
            self.fill_circle(wx, bottom, wheel, [20, 20, 20]);
        }
    }

    /// The sequence number as 32 black/white blocks in two rows, top left, like a burnt-in
    /// timestamp.
    fn timestamp(&mut self, seq: u64) {
        let s = (self.height as i64 / 90).max(2);
        let (x0, y0) = (s, s);
        self.fill_rect(
            x0 - s / 2,
            y0 - s / 2,
            x0 + 16 * s + s / 2,
            y0 + 2 * s + s / 2,
            [0; 3],
        );
        for bit in 0..32 {
            let on = (seq >> bit) & 1 == 1;
            let (col, row) = (bit % 16, bit / 16);
            let x = x0 + col * s;
            let y = y0 + row * s;
            let c = if on { [255; 3] } else { [30; 3] };
            self.fill_rect(x, y, x + s - 1, y + s - 1, c);
        }
    }

    /// Fills `[x0, x1) x [y0, y1)`, clipped to the canvas.
    fn fill_rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb) {
        let (w, h) = (self.width as i64, self.height as i64);
        let (x0, x1) = (x0.clamp(0, w) as usize, x1.clamp(0, w) as usize);
        let (y0, y1) = (y0.clamp(0, h) as usize, y1.clamp(0, h) as usize);
        for y in y0..y1 {
            for p in &mut self.px[y * self.width + x0..y * self.width + x1.max(x0)] {
                *p = c;
            }
        }
    }

    /// Fills a disc, clipped to the canvas.
    fn fill_circle(&mut self, cx: i64, cy: i64, r: i64, c: Rgb) {
        for dy in -r..=r {
            let half = ((r * r - dy * dy) as f64).sqrt() as i64;
            self.fill_rect(cx - half, cy + dy, cx + half + 1, cy + dy + 1, c);
        }
    }

    /// Adds sensor noise and clamps to 8-bit RGB.
    fn into_rgb(self, seed: u64) -> Vec<u8> {
        let mut noise = SplitMix(seed);
        let mut out = Vec::with_capacity(self.px.len() * 3);
        for p in &self.px {
            let r = noise.next().to_le_bytes().map(i32::from);
            let luma = (r[0] + r[1] - 255) * LUMA_NOISE / 255;
            for (ch, v) in p.iter().enumerate() {
                let chroma = (r[2 + ch] - 128) * CHROMA_NOISE / 128;
                out.push((v + luma + chroma).clamp(0, 255) as u8);
            }
        }
        out
    }
}

/// Where something moving `step` per frame along a loop of `span` is at `seq`.
fn position(phase: f32, seq: u64, step: i64, span: i64) -> i64 {
    let span = span.max(1) as u64;
    let start = (phase * span as f32) as u64;
    let moved = (seq % span) * (step.max(0) as u64 % span);
    ((start + moved) % span) as i64
}

fn lerp(a: Rgb, b: Rgb, t: f32) -> Rgb {
    let mix = |i: usize| a[i] + ((b[i] - a[i]) as f32 * t) as i32;
    [mix(0), mix(1), mix(2)]
}

fn frame_seed(camera: &str, seq: u64) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(camera.as_bytes());
    hasher.update(&seq.to_le_bytes());
    let hash = hasher.finalize();
    u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("invariant: 8 bytes"))
}

/// SplitMix64: a tiny seeded generator, so pictures stay identical across library versions.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_camera_and_seq_paint_the_same_pixels() {
        assert_eq!(paint("cam-1", 7, 64, 48), paint("cam-1", 7, 64, 48));
        assert_ne!(paint("cam-1", 7, 64, 48), paint("cam-1", 8, 64, 48));
        assert_ne!(paint("cam-1", 7, 64, 48), paint("cam-2", 7, 64, 48));
    }

    #[test]
    fn tiny_and_odd_sizes_do_not_panic() {
        for (w, h) in [(1, 1), (16, 16), (17, 5), (3, 200)] {
            assert_eq!(paint("cam-9", u64::MAX, w, h).len(), (w * h * 3) as usize);
        }
    }
}
