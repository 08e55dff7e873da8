//! Cache hits of ~70 KB frames: framecache against nginx `proxy_cache`, side by side.
//!
//! `cargo bench -p framecache --bench hits [-- SECONDS CONNECTIONS ROUNDS]`
//! (`scripts/bench` installs nginx when missing and runs this with the other benchmarks.)
//!
//! Both serve the same camsim frames from a warm cache. nginx is keyed on
//! `$http_authorization|$request_uri` with `proxy_cache_lock on` and sends with `sendfile`
//! (as Debian's stock configuration does), the setup a team would otherwise deploy; it does
//! not verify tokens or re-check owners, framecache does both on every hit. Rounds alternate
//! so both see the same machine state. Figures, never assertions.

mod load;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use load::round;

/// nginx with proxy_cache in front of the camera backend, on a free loopback port.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Nginx {
    fn start(origin: SocketAddr, workers: usize) -> Option<Nginx> {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let dir =
            std::env::temp_dir().join(format!("framecache-bench-nginx-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("cache")).ok()?;
        let conf = format!(
            r#"
worker_processes {workers};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 10000000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    proxy_cache_path {dir}/cache levels=1:2 keys_zone=frames:64m max_size=1g inactive=10m use_temp_path=off;
    upstream camsim {{ server {origin}; keepalive 64; }}
    server {{
        listen {addr};
        location ~ ^/v1(/cameras/[^/]+/frame)$ {{
            proxy_pass http://camsim$1;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Framecache-Owner $http_x_hub_owner;
            proxy_cache frames;
            proxy_cache_key "$http_authorization|$request_uri";
            proxy_cache_lock on;
            proxy_cache_valid 200 60s;
            proxy_ignore_headers Cache-Control Expires Set-Cookie;
        }}
    }}
}}
"#,
            dir = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).ok()?;
        let child = Command::new(nginx)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        // Bounded wait for the listener.
        for _ in 0..200 {
            if std::net::TcpStream::connect(addr).is_ok() {
                return Some(Nginx { child, addr, dir });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, so that the master stops its workers (SIGKILL would orphan them).
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn main() {
    let arg = load::arg;
    let (seconds, connections, rounds) = (arg(0, 5.0), arg(1, 32.0) as usize, arg(2, 3.0) as usize);

    let stack = load::Stack::start(
        |o| {
            o.owners = 8;
            o.cameras_per_owner = 2;
            o.quality = 70;
            o.fps = 0.0;
        },
        |c| c.cache.latest_fresh = Duration::from_secs(600),
    );
    let (runtime, backend, proxy) = (&stack.runtime, &stack.backend, &stack.proxy);
    let nginx = Nginx::start(backend.local_addr(), 2);
    let pairs = stack.pairs();
    let requests: Vec<String> = (0..connections)
        .map(|i| {
            let (owner, camera) = &pairs[i % pairs.len()];
            stack.hub_request(owner, camera)
        })
        .collect();

    let mut targets = vec![load::Target {
        name: "framecache",
        addr: proxy.hub_addr,
        requests: requests.clone(),
    }];
    match &nginx {
        Some(n) => targets.push(load::Target {
            name: "nginx proxy_cache",
            addr: n.addr,
            requests,
        }),
        None => println!("nginx not found: install Debian's nginx to compare (scripts/bench does)"),
    }
    // Warm: every (owner, camera) once, so every measured request is a hit.
    for target in &targets {
        runtime.block_on(round(target.addr, target.requests.clone(), 0.5));
    }
    let origin_before = backend.stats().requests_total;

    println!(
        "cache hits, {connections} keep-alive connections, {seconds} s rounds, {rounds} rounds each, alternating"
    );
    let means = load::compare(runtime, &targets, seconds, rounds);
    for (target, (rps, p99)) in targets.iter().zip(&means) {
        println!(
            "mean {}: {rps:.0} req/s, p99 {p99:.2} ms ({:.2}× framecache req/s)",
            target.name,
            rps / means[0].0
        );
    }
    println!(
        "origin requests during the measured rounds: {}",
        backend.stats().requests_total - origin_before
    );
    drop(nginx);
    stack.stop();
}
