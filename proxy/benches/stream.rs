//! MJPEG fan-out: 500 subscribers on 50 cameras, half of them slow; origin requests per minute
//! and the proxy's CPU time.
//!
//! `cargo bench -p framecache --bench stream [-- SECONDS SUBSCRIBERS]`
//!
//! Cameras capture one frame a second and streams look for a newer frame every second. Fast
//! subscribers read as fast as frames come; slow ones read 4 KB every 100 ms (40 KB/s, below
//! the ~94 KB/s a 1280×720 stream at 1 fps needs), so they fall behind and skip frames.

mod load;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// CPU seconds used so far by this process's threads whose name starts with `prefix`.
fn cpu_seconds(prefix: &str) -> f64 {
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            if !comm.starts_with(prefix) {
                return None;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            // Fields after the command name (which is in parentheses): utime is 14th, stime 15th.
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split(' ').collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks_per_sec)
        })
        .sum()
}

fn main() {
    let arg = load::arg;
    let (seconds, subscribers) = (arg(0, 20.0), arg(1, 500.0) as usize);

    let stack = load::Stack::start(
        |o| {
            o.owners = 25;
            o.cameras_per_owner = 2;
            o.fps = 1.0;
        },
        |c| {
            c.delivery.stream_interval = Duration::from_secs(1);
            c.delivery.write_timeout = Duration::from_secs(30);
        },
    );
    let runtime = &stack.runtime;
    let hub_addr = stack.proxy.hub_addr;
    // Render every camera's current frame once before measuring.
    for camera in 1..=50 {
        let owner = format!("owner-{}", (camera - 1) / 2 + 1);
        let request = stack.hub_request(&owner, &format!("cam-{camera}"));
        runtime.block_on(load::round(hub_addr, vec![request], 0.01));
    }

    let origin_before = stack.backend.stats().requests_total;
    let cpu_before = cpu_seconds("framecache hub");
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..subscribers)
        .map(|i| {
            let camera = i % 50 + 1;
            let owner = format!("owner-{}", (camera - 1) / 2 + 1);
            let token = stack.token(&owner, &format!("cam-{camera}"));
            let slow = i % 2 == 1;
            runtime.spawn(async move {
                // Hubs tune in at different moments over the first second.
                tokio::time::sleep(Duration::from_millis((i as u64 * 7919) % 1000)).await;
                let mut conn = TcpStream::connect(hub_addr).await.expect("connect");
                let request = format!(
                    "GET /v1/cameras/cam-{camera}/stream HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {token}\r\n\r\n"
                );
                conn.write_all(request.as_bytes()).await.expect("write");
                let mut buf = vec![0u8; if slow { 4096 } else { 256 * 1024 }];
                let mut bytes = 0usize;
                while Instant::now() < deadline {
                    match tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(n)) => bytes += n,
                        Err(_) => {}
                    }
                    if slow {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                (slow, bytes)
            })
        })
        .collect();
    let (mut fast_bytes, mut slow_bytes) = (0usize, 0usize);
    for task in tasks {
        let (slow, bytes) = runtime.block_on(task).expect("subscriber");
        if slow {
            slow_bytes += bytes;
        } else {
            fast_bytes += bytes;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds("framecache hub") - cpu_before;
    let origin = stack.backend.stats().requests_total - origin_before;
    let metrics = &stack.proxy.shared.metrics;
    println!(
        "{subscribers} MJPEG subscribers on 50 cameras (1 frame/s), half reading at 40 KB/s, {seconds} s"
    );
    println!(
        "origin requests: {origin} ({:.0}/min; 50 cameras at 1 frame/s is 3000/min)",
        origin as f64 * 60.0 / elapsed
    );
    println!(
        "frames sent: {}, skipped: {}; received: fast {:.1} MB/s, slow {:.2} MB/s in all",
        metrics.stream.frames_sent.get(),
        metrics.stream.frames_skipped.get(),
        fast_bytes as f64 / elapsed / 1e6,
        slow_bytes as f64 / elapsed / 1e6
    );
    println!(
        "proxy CPU: {cpu:.2} s in {elapsed:.1} s ({:.0}% of one core)",
        cpu / elapsed * 100.0
    );
    stack.stop();
}
