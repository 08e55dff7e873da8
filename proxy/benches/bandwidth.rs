//! Hubs on slow links: time to a complete frame and bytes per minute of viewing, with the
//! proxy's automatic choice against always asking for the full frame.
//!
//! `cargo bench -p framecache --bench bandwidth [-- SECONDS TARGET_MS]` (default 30 s and the
//! default `delivery.target_time_ms`, 1000)
//!
//! Each hub keeps one connection and reads at its link's rate (256 kbit/s, 1 Mbit/s,
//! 20 Mbit/s) through a small receive buffer, so that the proxy's socket feels the pace as it
//! would behind a real slow link; no kernel shaping. It asks for the camera's latest frame once
//! a second (1280×720, about 94 KB; the camera captures one a second), or as soon as the last
//! one is in when that took longer. All six hubs run at once, on one camera.

mod load;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// One hub's run.
struct Run {
    times: Vec<Duration>,
    bytes: usize,
    elapsed: Duration,
    variants: Vec<String>,
}

/// Polls `path` for `seconds` reading at `rate` bytes per second.
fn hub(addr: SocketAddr, request: String, rate: f64, seconds: f64) -> Run {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(1024).expect("receive buffer");
    socket.connect(&addr.into()).expect("connect");
    let mut conn: TcpStream = socket.into();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let started = Instant::now();
    let mut run = Run {
        times: Vec::new(),
        bytes: 0,
        elapsed: Duration::ZERO,
        variants: Vec::new(),
    };
    let mut buf = vec![0u8; 16 * 1024];
    while started.elapsed().as_secs_f64() < seconds {
        let asked = Instant::now();
        conn.write_all(request.as_bytes()).expect("request");
        let mut got = Vec::new();
        let (head_end, body_len) = loop {
            // Paced: never ahead of the link's rate since the request.
            let due = Duration::from_secs_f64(got.len() as f64 / rate);
            thread::sleep(due.saturating_sub(asked.elapsed()));
            let n = conn.read(&mut buf).expect("read");
            assert!(n > 0, "connection closed");
            got.extend_from_slice(&buf[..n]);
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let len = header(&head, "content-length").map_or(0, |v| v.parse().unwrap_or(0));
                if got.len() >= end + 4 + len {
                    if let Some(v) = header(&head, "x-frame-variant") {
                        run.variants.push(v.to_string());
                    }
                    break (end + 4, len);
                }
            }
        };
        debug_assert!(got.len() >= head_end + body_len);
        run.times.push(asked.elapsed());
        run.bytes += body_len;
        thread::sleep(Duration::from_secs(1).saturating_sub(asked.elapsed()));
    }
    run.elapsed = started.elapsed();
    run
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let seconds = load::arg(0, 30.0);
    let target = Duration::from_millis(load::arg(1, 1000.0) as u64);
    let stack = load::Stack::start(
        |o| {
            o.width = 1280;
            o.height = 720;
            o.fps = 1.0;
        },
        |c| c.delivery.target_time = target,
    );
    let token = stack.token("owner-1", "cam-1");
    let request = |query: &str| {
        format!(
            "GET /v1/cameras/cam-1/frame{query} HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
    };
    let links = [
        ("256 kbit/s", 32_000.0),
        ("1 Mbit/s", 125_000.0),
        ("20 Mbit/s", 2_500_000.0),
    ];
    let addr = stack.proxy.hub_addr;
    let mut hubs = Vec::new();
    for (link, rate) in links {
        for (mode, query) in [("auto", ""), ("full", "?variant=full")] {
            let request = request(query);
            hubs.push((
                link,
                mode,
                thread::spawn(move || hub(addr, request, rate, seconds)),
            ));
        }
    }
    println!(
        "hubs polling a 1280x720 camera once a second for {seconds:.0} s; each reads at its link's rate; \
         delivery.target_time_ms = {}",
        target.as_millis()
    );
    println!(
        "{:<11} {:<5} {:>7} {:>16} {:>13} {:>14} {:>12}  renditions served",
        "link", "mode", "frames", "median to frame", "KB per frame", "KB per minute", "full ÷ auto"
    );
    let mut full_per_min = std::collections::HashMap::new();
    let mut rows = Vec::new();
    for (link, mode, handle) in hubs {
        let mut run = handle.join().expect("hub");
        let per_min = run.bytes as f64 / run.elapsed.as_secs_f64() * 60.0 / 1000.0;
        if mode == "full" {
            full_per_min.insert(link, per_min);
        }
        let per_frame = run.bytes as f64 / run.times.len() as f64 / 1000.0;
        rows.push((
            link,
            mode,
            run.times.len(),
            median(&mut run.times),
            per_frame,
            per_min,
            run.variants,
        ));
    }
    for (link, mode, frames, median, per_frame, per_min, variants) in rows {
        let ratio = if mode == "auto" {
            format!("{:.1}×", full_per_min[link] / per_min)
        } else {
            String::new()
        };
        let mut counts: Vec<(String, usize)> = Vec::new();
        for v in variants {
            match counts.iter_mut().find(|(name, _)| *name == v) {
                Some((_, n)) => *n += 1,
                None => counts.push((v, 1)),
            }
        }
        let served: Vec<String> = counts.iter().map(|(v, n)| format!("{v} {n}")).collect();
        println!(
            "{link:<11} {mode:<5} {frames:>7} {:>14.2} s {per_frame:>13.1} {per_min:>14.0} {ratio:>12}  {}",
            median.as_secs_f64(),
            served.join(", ")
        );
    }
    stack.stop();
}
