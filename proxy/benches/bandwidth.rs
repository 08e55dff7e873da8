//! Hubs on slow links: time to a complete frame and bytes per minute of viewing, with the
//! proxy's automatic choice against always asking for the full frame.
//!
//! `cargo bench -p framecache --bench bandwidth [-- SECONDS TARGET_MS]` (default 60 s and the
//! default `delivery.target_time_ms`, 1000)
//!
//! Each hub keeps one connection and reads at its link's rate (256 kbit/s, 1 Mbit/s,
//! 20 Mbit/s) through a small receive buffer, so that the proxy's socket feels the pace as it
//! would behind a real slow link; no kernel shaping. It asks for the camera's latest frame
//! (1280×720, about 94 KB; the camera captures one a second) at one of two cadences: a
//! dashboard's, once a second (or as soon as the last frame is in when that took longer), and
//! a tile's, once every 10 s (Home Assistant's and Apple Home's); and, on the slow link, a
//! tile that opens a new connection for every poll, as one polling less often than the
//! proxy's idle timeout does. All fourteen hubs run at once, on one camera.
//!
//! Besides the whole run, the figures are given without each hub's first frame: nothing is
//! known of a hub's link before its first frame, which is always `full`.

mod load;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// One hub's run.
struct Run {
    times: Vec<Duration>,
    /// Body bytes of each frame, in order.
    sizes: Vec<usize>,
    elapsed: Duration,
    variants: Vec<String>,
}

/// A connection whose small receive buffer lets the proxy feel the reader's pace.
fn connect(addr: SocketAddr) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(1024).expect("receive buffer");
    socket.connect(&addr.into()).expect("connect");
    let conn: TcpStream = socket.into();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    conn
}

/// How a hub polls.
#[derive(Clone, Copy)]
struct Cadence {
    name: &'static str,
    every: Duration,
    /// A new connection for every poll, as a hub polling less often than the proxy's idle
    /// timeout gets.
    reconnect: bool,
}

/// Polls with `request` at `cadence` for `seconds`, reading at `rate` bytes per second.
fn hub(addr: SocketAddr, request: String, rate: f64, cadence: Cadence, seconds: f64) -> Run {
    let mut conn = connect(addr);
    let started = Instant::now();
    let mut run = Run {
        times: Vec::new(),
        sizes: Vec::new(),
        elapsed: Duration::ZERO,
        variants: Vec::new(),
    };
    let mut buf = vec![0u8; 16 * 1024];
    while started.elapsed().as_secs_f64() < seconds {
        if cadence.reconnect && !run.sizes.is_empty() {
            conn = connect(addr);
        }
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
        run.sizes.push(body_len);
        thread::sleep(cadence.every.saturating_sub(asked.elapsed()));
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

/// One hub's figures: whole run, and without its first frame.
struct Figures {
    frames: usize,
    median: Duration,
    kb_per_frame: f64,
    kb_per_minute: f64,
    /// Without the first frame.
    later_kb_per_frame: f64,
    later_kb_per_minute: f64,
    served: String,
}

impl Figures {
    fn of(mut run: Run) -> Figures {
        assert!(
            run.sizes.len() >= 2,
            "a hub got {} frames: run for longer (SECONDS)",
            run.sizes.len()
        );
        let kb = |sizes: &[usize]| sizes.iter().sum::<usize>() as f64 / 1000.0;
        let per_frame = |sizes: &[usize]| kb(sizes) / sizes.len().max(1) as f64;
        let seconds = run.elapsed.as_secs_f64();
        // Without the first frame: the minute starts when the first frame was in.
        let later_seconds = (seconds - run.times[0].as_secs_f64()).max(1e-3);
        let mut counts: Vec<(String, usize)> = Vec::new();
        for (i, v) in run.variants.iter().enumerate() {
            let v = if i == 0 {
                format!("{v} (first)")
            } else {
                v.clone()
            };
            match counts.iter_mut().find(|(name, _)| *name == v) {
                Some((_, n)) => *n += 1,
                None => counts.push((v, 1)),
            }
        }
        let served: Vec<String> = counts.iter().map(|(v, n)| format!("{v} {n}")).collect();
        Figures {
            frames: run.sizes.len(),
            median: median(&mut run.times),
            kb_per_frame: per_frame(&run.sizes),
            kb_per_minute: kb(&run.sizes) / seconds * 60.0,
            later_kb_per_frame: per_frame(&run.sizes[1..]),
            later_kb_per_minute: kb(&run.sizes[1..]) / later_seconds * 60.0,
            served: served.join(", "),
        }
    }
}

fn main() {
    let seconds = load::arg(0, 60.0);
    let target = Duration::from_millis(load::arg(1, 1000.0) as u64);
    let stack = load::Stack::start(
        |o| {
            o.width = 1280;
            o.height = 720;
            o.fps = 1.0;
        },
        |c| c.delivery.target_time = target,
    );
    let request = |owner: &str, query: &str| {
        let token = stack.token(owner, "cam-1");
        format!(
            "GET /v1/cameras/cam-1/frame{query} HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
    };
    let links = [
        ("256 kbit/s", 32_000.0),
        ("1 Mbit/s", 125_000.0),
        ("20 Mbit/s", 2_500_000.0),
    ];
    let cadence = |name, secs, reconnect| Cadence {
        name,
        every: Duration::from_secs(secs),
        reconnect,
    };
    // The proxy remembers links by owner and address, and every hub here comes from the same
    // address: the reconnecting hubs are another owner's, so that only their own connections
    // teach the proxy about their link.
    let cadences = [
        (cadence("1 s", 1, false), "owner-1", &links[..]),
        (cadence("10 s", 10, false), "owner-1", &links[..]),
        // Only the slow link: the others get `full` anyway.
        (cadence("10 s*", 10, true), "owner-2", &links[..1]),
    ];
    let addr = stack.proxy.hub_addr;
    let mut hubs = Vec::new();
    for (cadence, owner, links) in cadences {
        for &(link, rate) in links {
            for (mode, query) in [("auto", ""), ("full", "?variant=full")] {
                let request = request(owner, query);
                let hub = thread::spawn(move || hub(addr, request, rate, cadence, seconds));
                hubs.push((cadence.name, link, mode, hub));
            }
        }
    }
    println!(
        "hubs polling a 1280x720 camera for {seconds:.0} s, once a second or once every 10 s; \
         each reads at its link's rate; delivery.target_time_ms = {}",
        target.as_millis()
    );
    println!(
        "{:<5} {:<11} {:<5} {:>6} {:>9} {:>9} {:>7} {:>11} {:>9} | {:>9} {:>9}  renditions served",
        "poll",
        "link",
        "mode",
        "frames",
        "median s",
        "KB/frame",
        "KB/min",
        "÷ per frame",
        "÷ per min",
        "KB/frame",
        "÷ per min",
    );
    println!(
        "{:>78} | {:>19}",
        "(÷: the always-full hub's figure over the auto hub's)", "without first frame"
    );
    println!("(10 s*: a new connection for every poll)");
    let rows: Vec<_> = hubs
        .into_iter()
        .map(|(cadence, link, mode, hub)| {
            (cadence, link, mode, Figures::of(hub.join().expect("hub")))
        })
        .collect();
    let full = |cadence: &str, link: &str| {
        rows.iter()
            .find(|(c, l, m, _)| *c == cadence && *l == link && *m == "full")
            .map(|(.., f)| f)
            .expect("a full hub for every auto hub")
    };
    for (cadence, link, mode, f) in &rows {
        let ratio = |full: f64, auto: f64| {
            if *mode == "auto" {
                format!("{:.1}×", full / auto)
            } else {
                String::new()
            }
        };
        let base = full(cadence, link);
        println!(
            "{cadence:<5} {link:<11} {mode:<5} {:>6} {:>9.2} {:>9.1} {:>7.0} {:>11} {:>9} | {:>9.1} {:>9}  {}",
            f.frames,
            f.median.as_secs_f64(),
            f.kb_per_frame,
            f.kb_per_minute,
            ratio(base.kb_per_frame, f.kb_per_frame),
            ratio(base.kb_per_minute, f.kb_per_minute),
            f.later_kb_per_frame,
            ratio(base.later_kb_per_minute, f.later_kb_per_minute),
            f.served,
        );
    }
    stack.stop();
}
