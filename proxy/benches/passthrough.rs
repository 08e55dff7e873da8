//! Uncached frames through the proxy against the camera backend directly, side by side.
//!
//! `cargo bench -p framecache --bench passthrough [-- SECONDS CONNECTIONS ROUNDS]`
//!
//! Starts camsim (1280×720 frames, frozen so that the backend serves the same bytes from
//! memory) and the proxy in this process, then drives keep-alive connections at each in turn,
//! alternating rounds so that both see the same machine state, and prints requests per second
//! and latency percentiles. Every proxied request is a full origin fetch with attestation: the
//! difference is the proxy's cost. Figures, not assertions: this machine is shared.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HUB_SECRET: &[u8] = b"bench-hub-secret-bench-hub-secret-bench";
const SIGNING_KEY: [u8; 32] = *b"bench-frame-signing-key-32-bytes";

struct Round {
    requests: usize,
    bytes: usize,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Round {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&mut self, p: f64) -> f64 {
        self.latencies_us.sort_unstable();
        let i = ((self.latencies_us.len() as f64 * p).ceil() as usize).saturating_sub(1);
        self.latencies_us[i.min(self.latencies_us.len() - 1)] as f64 / 1000.0
    }
}

/// Reads one response (head + Content-Length body); returns the body length.
async fn read_response(conn: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).expect("ascii head");
            assert!(
                head.starts_with("HTTP/1.1 200"),
                "unexpected answer: {head}"
            );
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let l = l.to_ascii_lowercase();
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("content-length");
            let total = end + 4 + len;
            while buf.len() < total {
                let mut chunk = [0u8; 64 * 1024];
                let n = conn.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..total);
            return Ok(len);
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn round(addr: SocketAddr, requests: Vec<String>, seconds: f64) -> Round {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| {
            tokio::spawn(async move {
                let mut conn = TcpStream::connect(addr).await.unwrap();
                conn.set_nodelay(true).unwrap();
                let mut buf = Vec::with_capacity(256 * 1024);
                let (mut n, mut bytes, mut lat) = (0usize, 0usize, Vec::new());
                while Instant::now() < deadline {
                    let t = Instant::now();
                    conn.write_all(request.as_bytes()).await.unwrap();
                    bytes += read_response(&mut conn, &mut buf).await.unwrap();
                    lat.push(t.elapsed().as_micros() as u64);
                    n += 1;
                }
                (n, bytes, lat)
            })
        })
        .collect();
    let mut r = Round {
        requests: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
    };
    for task in tasks {
        let (n, bytes, lat) = task.await.unwrap();
        r.requests += n;
        r.bytes += bytes;
        r.latencies_us.extend(lat);
    }
    r.elapsed = started.elapsed();
    r
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let arg = |i: usize, default: f64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (seconds, connections, rounds) = (arg(0, 5.0), arg(1, 16.0) as usize, arg(2, 3.0) as usize);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let backend = runtime
        .block_on(camsim::start(camsim::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            signing_key: SIGNING_KEY,
            owners: 4,
            cameras_per_owner: 2,
            fps: 0.0,
            ..camsim::Config::default()
        }))
        .unwrap();
    let mut config = framecache::config::Config::local(
        backend.local_addr(),
        HUB_SECRET,
        b"bench-admin-token-0123",
        SIGNING_KEY,
    );
    config.server.threads = 2;
    let proxy = framecache::app::spawn(config).unwrap();

    // One connection per (owner, camera) pair, round-robin over the topology.
    let topology = backend.topology().clone();
    let pairs: Vec<(String, String)> = topology
        .owners()
        .into_iter()
        .flat_map(|o| {
            topology
                .cameras_of(&o)
                .into_iter()
                .map(move |c| (o.clone(), c))
        })
        .collect();
    let direct: Vec<String> = (0..connections)
        .map(|i| {
            let (owner, camera) = &pairs[i % pairs.len()];
            format!("GET /cameras/{camera}/frame HTTP/1.1\r\nHost: b\r\nX-Framecache-Owner: {owner}\r\n\r\n")
        })
        .collect();
    let proxied: Vec<String> = (0..connections)
        .map(|i| {
            let (owner, camera) = &pairs[i % pairs.len()];
            let token = framecache::auth::mint(
                HUB_SECRET,
                "framecache",
                owner,
                &[camera.clone()],
                Duration::from_secs(3600),
            )
            .unwrap();
            format!("GET /v1/cameras/{camera}/frame HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {token}\r\n\r\n")
        })
        .collect();

    // Warm both (renders each camera's frame once, fills connection pools).
    runtime.block_on(round(backend.local_addr(), direct.clone(), 0.5));
    runtime.block_on(round(proxy.hub_addr, proxied.clone(), 0.5));

    println!(
        "uncached frames, {connections} keep-alive connections, {seconds} s rounds, {rounds} rounds each, alternating"
    );
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "target", "req/s", "p50 ms", "p99 ms", "MB/s", "frame bytes"
    );
    let mut totals = [(0.0, 0.0), (0.0, 0.0)];
    for _ in 0..rounds {
        for (i, (name, addr, reqs)) in [
            ("camsim direct", backend.local_addr(), &direct),
            ("framecache → camsim", proxy.hub_addr, &proxied),
        ]
        .into_iter()
        .enumerate()
        {
            let mut r = runtime.block_on(round(addr, reqs.clone(), seconds));
            let (p50, p99) = (r.percentile(0.50), r.percentile(0.99));
            println!(
                "{name:<22} {:>10.0} {p50:>10.2} {p99:>10.2} {:>10.1} {:>12}",
                r.rps(),
                r.bytes as f64 / r.elapsed.as_secs_f64() / 1e6,
                r.bytes / r.requests.max(1)
            );
            totals[i].0 += r.rps();
            totals[i].1 += p99;
        }
    }
    let n = rounds as f64;
    println!(
        "mean: direct {:.0} req/s p99 {:.2} ms; proxied {:.0} req/s p99 {:.2} ms; proxied/direct throughput {:.2}×",
        totals[0].0 / n,
        totals[0].1 / n,
        totals[1].0 / n,
        totals[1].1 / n,
        totals[1].0 / totals[0].0
    );
    proxy.stop();
    runtime.block_on(backend.shutdown());
}
