//! Prints frame sizes and render times, for tuning load tests:
//! `cargo run --release -p camsim --example render`.

use std::time::Instant;

fn main() -> anyhow::Result<()> {
    for (width, height) in [(1280, 720), (640, 480), (320, 240)] {
        let mut sizes = Vec::new();
        let start = Instant::now();
        let runs = 10;
        for seq in 1..=runs {
            let camera = format!("cam-{seq}");
            sizes.push(camsim::frame::render(&camera, seq, width, height, 80)?.len());
        }
        let per_frame = start.elapsed() / runs as u32;
        let (min, max) = (sizes.iter().min(), sizes.iter().max());
        println!(
            "{width}x{height} q80: {:?}..{:?} bytes over 10 cameras, {:.1} ms per frame",
            min.unwrap_or(&0),
            max.unwrap_or(&0),
            per_frame.as_secs_f64() * 1000.0
        );
    }
    Ok(())
}
