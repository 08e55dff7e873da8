//! Rendition cost: milliseconds per frame on one core, 720p and 1080p camera stills to
//! `medium` (640 px) and `thumb` (320 px), with the shipped DCT-scaled decode and, for
//! comparison, a full-size decode followed by the same resize.
//!
//! `cargo bench -p framecache --bench render`

use std::hint::black_box;
use std::time::{Duration, Instant};

use framecache::rendition::render::render_with;
use framecache::rendition::Rendition;

/// Median ms per call of `f` over rounds of about 0.4 s after a warm-up.
fn ms_per(mut f: impl FnMut()) -> f64 {
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(200) {
        f();
    }
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let (start, mut n) = (Instant::now(), 0u32);
        while start.elapsed() < Duration::from_millis(400) {
            f();
            n += 1;
        }
        rounds.push(start.elapsed().as_secs_f64() * 1000.0 / f64::from(n));
    }
    rounds.sort_by(f64::total_cmp);
    rounds[2]
}

fn main() {
    println!("rendition ms per frame, one core (median of 5 rounds)");
    println!(
        "{:<26} {:>10} {:>14} {:>18} {:>12}",
        "source → rendition", "out bytes", "DCT-scaled ms", "full decode ms", "speed-up"
    );
    for (label, width, height) in [("720p", 1280, 720), ("1080p", 1920, 1080)] {
        let full = camsim::frame::render("cam-1", 1, width, height, 80).expect("a frame");
        for (name, max_width, quality) in framecache::rendition::BUILT_IN {
            let rendition = Rendition {
                max_width,
                quality,
                ..Rendition::FULL
            };
            let out = render_with(&full, &rendition, true).expect("renders");
            let scaled = ms_per(|| {
                black_box(render_with(black_box(&full), &rendition, true).unwrap());
            });
            let unscaled = ms_per(|| {
                black_box(render_with(black_box(&full), &rendition, false).unwrap());
            });
            println!(
                "{:<26} {:>10} {:>14.2} {:>18.2} {:>11.1}×",
                format!("{label} ({} KB) → {name}", full.len() / 1000),
                out.len(),
                scaled,
                unscaled,
                unscaled / scaled
            );
        }
    }
}
