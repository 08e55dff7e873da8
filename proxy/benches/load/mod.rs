//! A small keep-alive HTTP/1.1 load generator shared by the benchmarks: each connection sends
//! its request, reads the answer whole, and records the latency, until a deadline.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The allocator the proxy binary ships with, so that in-process benchmarks measure it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One answer: its head and body length.
pub struct Answer {
    pub head: String,
    pub body_len: usize,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// A keep-alive client connection that reads answers without keeping their bodies.
pub struct Conn {
    stream: TcpStream,
    /// Bytes read past the last answer (the start of the next head).
    pending: Vec<u8>,
    /// Reused read buffer.
    chunk: Vec<u8>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            pending: Vec::with_capacity(16 * 1024),
            chunk: vec![0u8; 256 * 1024],
        })
    }

    /// Sends `request` and reads its answer: the head, then Content-Length body bytes, which
    /// are counted and dropped.
    pub async fn exchange(&mut self, request: &[u8]) -> std::io::Result<Answer> {
        self.stream.write_all(request).await?;
        loop {
            if let Some(end) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.pending[..end]).into_owned();
                assert!(
                    head.starts_with("HTTP/1.1 200"),
                    "unexpected answer: {head}"
                );
                let mut answer = Answer { head, body_len: 0 };
                answer.body_len = answer
                    .header("content-length")
                    .and_then(|v| v.parse().ok())
                    .expect("content-length");
                let start = end + 4;
                let have = self.pending.len() - start;
                if have >= answer.body_len {
                    self.pending.drain(..start + answer.body_len);
                    return Ok(answer);
                }
                let mut remaining = answer.body_len - have;
                self.pending.clear();
                while remaining > 0 {
                    let n = self.stream.read(&mut self.chunk).await?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    if n > remaining {
                        self.pending.extend_from_slice(&self.chunk[remaining..n]);
                        remaining = 0;
                    } else {
                        remaining -= n;
                    }
                }
                return Ok(answer);
            }
            let n = self.stream.read(&mut self.chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.pending.extend_from_slice(&self.chunk[..n]);
        }
    }
}

/// The figures of one round.
pub struct Round {
    pub requests: usize,
    pub bytes: usize,
    pub elapsed: Duration,
    pub latencies_us: Vec<u64>,
}

impl Round {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile_ms(&mut self, p: f64) -> f64 {
        self.latencies_us.sort_unstable();
        let n = self.latencies_us.len();
        let i = ((n as f64 * p).ceil() as usize).clamp(1, n) - 1;
        self.latencies_us[i] as f64 / 1000.0
    }

    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }
}

/// Drives one keep-alive connection per request text at `addr` until `seconds` pass.
pub async fn round(addr: SocketAddr, requests: Vec<String>, seconds: f64) -> Round {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| {
            tokio::spawn(async move {
                let mut conn = Conn::connect(addr).await.expect("connect");
                let (mut n, mut bytes, mut lat) = (0usize, 0usize, Vec::new());
                while Instant::now() < deadline {
                    let t = Instant::now();
                    bytes += conn
                        .exchange(request.as_bytes())
                        .await
                        .expect("answer")
                        .body_len;
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
        let (n, bytes, lat) = task.await.expect("load task");
        r.requests += n;
        r.bytes += bytes;
        r.latencies_us.extend(lat);
    }
    r.elapsed = started.elapsed();
    r
}

/// The `i`th positional numeric argument after `cargo bench ... --`, or `default`.
pub fn arg(i: usize, default: f64) -> f64 {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .filter_map(|a| a.parse().ok())
        .nth(i)
        .unwrap_or(default)
}

pub const HUB_SECRET: &[u8] = b"bench-hub-secret-bench-hub-secret-bench";
pub const SIGNING_KEY: [u8; 32] = *b"bench-frame-signing-key-32-bytes";

/// camsim and the proxy in this process, with the benchmark keys.
pub struct Stack {
    pub runtime: tokio::runtime::Runtime,
    pub backend: camsim::Handle,
    pub proxy: framecache::app::Running,
}

impl Stack {
    /// Starts camsim (adjusted by `origin`) and the proxy (adjusted by `proxy`, 2 threads).
    pub fn start(
        origin: impl FnOnce(&mut camsim::Config),
        proxy: impl FnOnce(&mut framecache::config::Config),
    ) -> Stack {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mut camsim_config = camsim::Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            signing_key: SIGNING_KEY,
            ..camsim::Config::default()
        };
        origin(&mut camsim_config);
        let backend = runtime
            .block_on(camsim::start(camsim_config))
            .expect("camsim");
        let mut config = framecache::config::Config::local(
            backend.local_addr(),
            HUB_SECRET,
            b"bench-admin-token-0123",
            SIGNING_KEY,
        );
        config.server.threads = 2;
        proxy(&mut config);
        let proxy = framecache::app::spawn(config).expect("proxy");
        Stack {
            runtime,
            backend,
            proxy,
        }
    }

    /// Every (owner, camera) pair the topology allows.
    pub fn pairs(&self) -> Vec<(String, String)> {
        let topology = self.backend.topology().clone();
        topology
            .owners()
            .into_iter()
            .flat_map(|o| {
                topology
                    .cameras_of(&o)
                    .into_iter()
                    .map(move |c| (o.clone(), c))
            })
            .collect()
    }

    /// A token for `owner` granting `camera`.
    pub fn token(&self, owner: &str, camera: &str) -> String {
        framecache::auth::mint(
            HUB_SECRET,
            "framecache",
            owner,
            &[camera.to_string()],
            Duration::from_secs(3600),
        )
        .expect("token")
    }

    /// A keep-alive hub request for the latest frame of `camera`, as `owner`.
    pub fn hub_request(&self, owner: &str, camera: &str) -> String {
        let token = self.token(owner, camera);
        format!(
            "GET /v1/cameras/{camera}/frame HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {token}\r\nX-Hub-Owner: {owner}\r\n\r\n"
        )
    }

    pub fn stop(self) {
        self.proxy.stop();
        self.runtime.block_on(self.backend.shutdown());
    }
}

/// One side of a comparison: a name, an address, and one request text per connection.
pub struct Target {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub requests: Vec<String>,
}

/// Runs `rounds` rounds of `seconds` against each target in turn (alternating, so that all see
/// the same machine state), printing a row per round; returns each target's mean req/s and
/// mean p99 in ms.
pub fn compare(
    runtime: &tokio::runtime::Runtime,
    targets: &[Target],
    seconds: f64,
    rounds: usize,
) -> Vec<(f64, f64)> {
    println!(
        "{:<22} {:>10} {:>9} {:>9} {:>9} {:>11}",
        "target", "req/s", "p50 ms", "p99 ms", "MB/s", "frame bytes"
    );
    let mut totals = vec![(0.0, 0.0); targets.len()];
    for _ in 0..rounds {
        for (total, target) in totals.iter_mut().zip(targets) {
            let mut r = runtime.block_on(round(target.addr, target.requests.clone(), seconds));
            let (p50, p99) = (r.percentile_ms(0.50), r.percentile_ms(0.99));
            println!(
                "{:<22} {:>10.0} {p50:>9.2} {p99:>9.2} {:>9.1} {:>11}",
                target.name,
                r.rps(),
                r.mb_per_sec(),
                r.bytes / r.requests.max(1)
            );
            total.0 += r.rps();
            total.1 += p99;
        }
    }
    let n = rounds as f64;
    totals
        .into_iter()
        .map(|(rps, p99)| (rps / n, p99 / n))
        .collect()
}
