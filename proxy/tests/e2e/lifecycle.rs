//! The running binary's lifecycle: configuration reloads on SIGHUP (secrets rotated with the
//! old one still accepted, then dropped; a broken file; a certificate rotated), and streams
//! ended at a part boundary by SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{exchange, wait_until, Reply, SIGNING_KEY};

/// A folder of its own, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!(
            "framecache-e2e-lifecycle-{name}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `framecache serve` on a configuration file, killed if the test ends first.
struct Serving {
    child: Child,
    plain: SocketAddr,
    tls: Option<SocketAddr>,
    admin: SocketAddr,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serving {
    fn start(config: &Path) -> Serving {
        let mut child = Command::new(env!("CARGO_BIN_EXE_framecache"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
        // "... framecache listening plain=Some(127.0.0.1:P) tls=None admin=127.0.0.1:Q"
        let line = log
            .by_ref()
            .map_while(Result::ok)
            .find(|line| line.contains("framecache listening"))
            .expect("the proxy says where it listens");
        std::thread::spawn(move || log.for_each(drop));
        let field = |name: &str| {
            let value = line.split_once(&format!("{name}="))?.1;
            let value = value.split_whitespace().next()?;
            let value = value.trim_start_matches("Some(").trim_end_matches(')');
            value.parse::<SocketAddr>().ok()
        };
        let serving = Serving {
            plain: field("plain").expect("a plaintext listener"),
            tls: field("tls"),
            admin: field("admin").expect("an admin listener"),
            child,
        };
        wait_until("/readyz answers 200", || {
            serving.get_admin("/readyz").status == 200
        });
        serving
    }

    fn get_admin(&self, path: &str) -> Reply {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        exchange(self.admin, raw.as_bytes(), false)
    }

    /// A series of the scrape; absent is a failure.
    fn metric(&self, series: &str) -> f64 {
        crate::common::metric_in(&self.get_admin("/metrics").text(), series)
    }

    fn frame(&self, token: &str) -> Reply {
        let raw = format!(
            "GET /v1/cameras/cam-1/frame HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        exchange(self.plain, raw.as_bytes(), false)
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGHUP, then waits until the reload is counted with `result`, `count` in all.
    fn reload(&self, result: &str, count: f64) {
        self.signal("HUP");
        let series = format!(r#"framecache_config_reloads_total{{result="{result}"}}"#);
        wait_until(&format!("reload {result} #{count}"), || {
            self.metric(&series) == count
        });
    }
}

/// camsim on its own runtime, one owner-1 camera cam-1 among others.
struct Origin {
    handle: camsim::Handle,
    _runtime: tokio::runtime::Runtime,
}

fn origin(fps: f64) -> Origin {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let handle = runtime
        .block_on(camsim::start(camsim::Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            signing_key: SIGNING_KEY,
            owners: 2,
            cameras_per_owner: 2,
            width: 320,
            height: 240,
            fps,
            ..camsim::Config::default()
        }))
        .unwrap();
    Origin {
        handle,
        _runtime: runtime,
    }
}

/// A configuration file's text.
fn config(origin: SocketAddr, auth: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
threads = 1
grace_period_secs = 3
{extra}
[auth]
{auth}
[admin]
token_file = "admin.token"
[origin]
addresses = ["{origin}"]
signing_key_file = "signing.key"
"#
    )
}

fn mint(secret: &[u8], owner: &str) -> String {
    framecache::auth::mint(
        secret,
        "framecache",
        owner,
        &["cam-1".to_string()],
        Duration::from_secs(3600),
    )
    .unwrap()
}

/// A hub-token secret rotated by reload: the new secret with the old one among the previous
/// ones accepts both tokens (the old ones counted); once the old one is dropped its tokens get
/// 401; a broken file changes nothing and is counted.
#[test]
fn a_reload_rotates_the_hub_token_secret_and_a_broken_file_changes_nothing() {
    let origin = origin(0.0);
    let dir = Dir::new("rotate");
    let (old, new) = (
        b"the-old-hub-secret-the-old-hub-secret-0".as_slice(),
        b"the-new-hub-secret-the-new-hub-secret-1".as_slice(),
    );
    dir.write("old.secret", old);
    dir.write("new.secret", new);
    dir.write("admin.token", crate::common::ADMIN_TOKEN);
    dir.write("signing.key", hex::encode(SIGNING_KEY));
    let addr = origin.handle.local_addr();
    let path = dir.write(
        "framecache.toml",
        config(addr, r#"secret_file = "old.secret""#, ""),
    );
    let serving = Serving::start(&path);
    let (old_token, new_token) = (mint(old, "owner-1"), mint(new, "owner-1"));
    assert_eq!(serving.frame(&old_token).status, 200);
    assert_eq!(serving.frame(&new_token).status, 401);

    // Rotate: the new secret, the old one still accepted.
    dir.write(
        "framecache.toml",
        config(
            addr,
            "secret_file = \"new.secret\"\nprevious_secret_files = [\"old.secret\"]",
            "",
        ),
    );
    serving.reload("ok", 1.0);
    assert_eq!(serving.frame(&new_token).status, 200);
    let before = serving.metric("framecache_auth_previous_key_uses_total");
    assert_eq!(serving.frame(&old_token).status, 200);
    assert_eq!(
        serving.metric("framecache_auth_previous_key_uses_total"),
        before + 1.0
    );

    // The old secret dropped: its tokens are refused.
    dir.write(
        "framecache.toml",
        config(addr, r#"secret_file = "new.secret""#, ""),
    );
    serving.reload("ok", 2.0);
    assert_eq!(serving.frame(&old_token).status, 401);
    assert_eq!(serving.frame(&new_token).status, 200);

    // A broken file (a key file that is not there, an unknown key) changes nothing.
    dir.write(
        "framecache.toml",
        config(
            addr,
            "secret_file = \"old.secret\"\nprevious_secret_files = [\"missing.secret\"]",
            "nonsense = 1",
        ),
    );
    serving.reload("error", 1.0);
    assert_eq!(serving.frame(&old_token).status, 401);
    assert_eq!(serving.frame(&new_token).status, 200);
    assert_eq!(
        serving.metric(r#"framecache_config_reloads_total{result="ok"}"#),
        2.0
    );
}

/// A certificate authority made for the test and a `localhost` certificate it signed: the
/// authority's PEM, the certificate's PEM chain and key PEM.
fn certificate(name: &str) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_cert.pem(), leaf.pem(), key.serialize_pem())
}

/// Whether curl, trusting only `ca`, completes a TLS request to `addr` as `localhost`.
fn curl_trusts(ca: &Path, addr: SocketAddr, token: &str) -> bool {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(ca)
        .args([
            "--resolve",
            &format!("localhost:{}:127.0.0.1", addr.port()),
            "-H",
            &format!("Authorization: Bearer {token}"),
            &format!("https://localhost:{}/v1/cameras/cam-1/frame", addr.port()),
        ])
        .output()
        .expect("curl runs");
    out.status.success() && out.stdout == b"200"
}

/// The TLS certificate rotated by reload: new handshakes are made with the new certificate (a
/// client trusting only the new authority now succeeds, one trusting only the old fails), and a
/// connection opened before the reload goes on.
#[test]
fn a_reload_rotates_the_tls_certificate_for_new_handshakes() {
    let origin = origin(0.0);
    let dir = Dir::new("certificate");
    let secret = b"the-hub-secret-the-hub-secret-the-hub-s".as_slice();
    dir.write("hub.secret", secret);
    dir.write("admin.token", crate::common::ADMIN_TOKEN);
    dir.write("signing.key", hex::encode(SIGNING_KEY));
    let (old_ca, old_cert, old_key) = certificate("old");
    let (new_ca, new_cert, new_key) = certificate("new");
    let old_ca = dir.write("old-ca.pem", old_ca);
    let new_ca = dir.write("new-ca.pem", new_ca);
    dir.write("edge.crt", old_cert);
    dir.write("edge.key", old_key);
    let tls =
        "tls_listen = \"127.0.0.1:0\"\n[tls]\ncert_file = \"edge.crt\"\nkey_file = \"edge.key\"";
    let addr = origin.handle.local_addr();
    let path = dir.write(
        "framecache.toml",
        config(addr, r#"secret_file = "hub.secret""#, tls),
    );
    let serving = Serving::start(&path);
    let tls_addr = serving.tls.expect("a TLS listener");
    let token = mint(secret, "owner-1");
    assert!(curl_trusts(&old_ca, tls_addr, &token));
    assert!(!curl_trusts(&new_ca, tls_addr, &token));

    dir.write("edge.crt", new_cert);
    dir.write("edge.key", new_key);
    serving.reload("ok", 1.0);
    assert!(curl_trusts(&new_ca, tls_addr, &token));
    assert!(!curl_trusts(&old_ca, tls_addr, &token));
    assert!(
        serving.metric(r#"framecache_tls_handshakes_total{result="failed"}"#) >= 2.0,
        "the handshakes refused by the client are counted failed"
    );
}

/// SIGTERM while a hub watches a stream and another downloads slowly: the stream ends after a
/// whole part with the closing delimiter, the download completes, and the process exits 0
/// within the grace period.
#[test]
fn sigterm_ends_streams_at_a_part_boundary_and_finishes_downloads() {
    let origin = origin(10.0);
    let dir = Dir::new("drain");
    let secret = b"the-hub-secret-the-hub-secret-the-hub-s".as_slice();
    dir.write("hub.secret", secret);
    dir.write("admin.token", crate::common::ADMIN_TOKEN);
    dir.write("signing.key", hex::encode(SIGNING_KEY));
    let path = dir.write(
        "framecache.toml",
        config(
            origin.handle.local_addr(),
            r#"secret_file = "hub.secret""#,
            "",
        ) + "[delivery]\nstream_interval_ms = 100\n",
    );
    let mut serving = Serving::start(&path);
    let token = mint(secret, "owner-1");
    let mut stream = TcpStream::connect(serving.plain).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET /v1/cameras/cam-1/stream HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    // A slow download: the frame asked for and not read yet.
    let mut download = TcpStream::connect(serving.plain).unwrap();
    download
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        download,
        "GET /v1/cameras/cam-1/frame HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut seen = vec![0u8; 4096];
    let n = stream.read(&mut seen).unwrap();
    assert!(n > 0, "the stream started");

    serving.signal("TERM");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.contains("--framecache-frame--"),
        "the stream ends with the closing delimiter"
    );
    let mut answer = Vec::new();
    download.read_to_end(&mut answer).unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "the download finished: {:?}",
        String::from_utf8_lossy(&answer[..answer.len().min(40)])
    );
    let exit = wait_exit(&mut serving.child, Duration::from_secs(15));
    assert_eq!(exit, Some(0), "exit within the grace period");
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// A free loopback port (bound and released: an upgrade needs fixed addresses).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A hub polling `path` on a kept-alive connection until `stop`; a request that fails on a
/// kept-alive connection is retried once on a new one, as HTTP clients do. Returns the answers
/// (200s) and the failures that a retry did not mend.
fn poll(
    addr: SocketAddr,
    token: String,
    path: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(u32, Vec<String>)> {
    std::thread::spawn(move || {
        let raw =
            format!("GET {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\r\n");
        let (mut served, mut failed) = (0, Vec::new());
        let mut conn: Option<BufReader<TcpStream>> = None;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let mut outcome = Err(String::new());
            for _ in 0..2 {
                let reused = conn.is_some();
                let stream = match conn.take() {
                    Some(stream) => stream,
                    None => match TcpStream::connect(addr) {
                        Ok(stream) => {
                            stream
                                .set_read_timeout(Some(Duration::from_secs(10)))
                                .unwrap();
                            BufReader::new(stream)
                        }
                        Err(e) => {
                            outcome = Err(format!("connect: {e}"));
                            break;
                        }
                    },
                };
                match ask(stream, raw.as_bytes()) {
                    Ok((status, stream)) => {
                        outcome = Ok(status);
                        conn = stream;
                        break;
                    }
                    // A kept-alive connection the old instance closed: once more, anew.
                    Err(e) if reused => outcome = Err(e),
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                }
            }
            match outcome {
                Ok(200) => served += 1,
                Ok(status) => failed.push(format!("status {status}")),
                Err(e) => failed.push(e),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (served, failed)
    })
}

/// One request on `conn`: the status, and the connection if it stays open.
fn ask(
    mut conn: BufReader<TcpStream>,
    raw: &[u8],
) -> Result<(u16, Option<BufReader<TcpStream>>), String> {
    conn.get_mut().write_all(raw).map_err(|e| e.to_string())?;
    let mut line = String::new();
    conn.read_line(&mut line).map_err(|e| e.to_string())?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line: {line:?}"))?;
    let (mut length, mut close) = (0usize, false);
    loop {
        line.clear();
        conn.read_line(&mut line).map_err(|e| e.to_string())?;
        let header = line.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        if let Some(v) = header.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        close |= header == "connection: close";
    }
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok((status, (!close).then_some(conn)))
}

/// A fleet of kept-alive hubs polls through a binary upgrade (`serve --upgrade`, SIGQUIT to the
/// old instance): no request fails (one retry on a closed kept-alive connection is what HTTP
/// clients do), the old instance exits, and the new one starts with the old one's cache: the
/// by-hash frames the hubs hold are answered without asking the origin again.
#[test]
fn hubs_polling_through_an_upgrade_see_no_failure_and_a_warm_cache() {
    let origin = origin(0.0);
    let dir = Dir::new("upgrade");
    let secret = b"the-hub-secret-the-hub-secret-the-hub-s".as_slice();
    dir.write("hub.secret", secret);
    dir.write("admin.token", crate::common::ADMIN_TOKEN);
    dir.write("signing.key", hex::encode(SIGNING_KEY));
    let (hub, admin) = (free_port(), free_port());
    let text = config(origin.handle.local_addr(), r#"secret_file = "hub.secret""#, "")
        .replace(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"",
            &format!(
                "listen = \"127.0.0.1:{hub}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nupgrade_sock = \"upgrade.sock\""
            ),
        );
    // Frames fresh for a minute: with a warm cache, the upgrade asks the origin for nothing.
    let path = dir.write(
        "framecache.toml",
        text + "[cache]\nlatest_fresh_ms = 60000\n",
    );
    let mut old = Serving::start(&path);
    let token = mint(secret, "owner-1");
    let latest = old.frame(&token);
    assert_eq!(latest.status, 200);
    let by_hash: &'static str = Box::leak(
        latest
            .header("content-location")
            .expect("a latest frame names its address")
            .to_string()
            .into_boxed_str(),
    );
    assert_eq!(exchange(old.plain, format!("GET {by_hash} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").as_bytes(), false).status, 200);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hubs: Vec<_> = (0..6)
        .map(|i| {
            let path = if i % 2 == 0 {
                "/v1/cameras/cam-1/frame"
            } else {
                by_hash
            };
            poll(old.plain, token.clone(), path, stop.clone())
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = origin.handle.stats().requests_total;

    // The new instance waits for the sockets; SIGQUIT makes the old one hand them over.
    let new_child = Command::new(env!("CARGO_BIN_EXE_framecache"))
        .args(["serve", "--upgrade", "--config"])
        .arg(&path)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let new = Serving {
        child: new_child,
        plain: old.plain,
        tls: None,
        admin: old.admin,
    };
    std::thread::sleep(Duration::from_millis(500));
    old.signal("QUIT");
    let exit = wait_exit(&mut old.child, Duration::from_secs(20));
    assert_eq!(
        exit,
        Some(0),
        "the old instance exits within its grace period"
    );
    // The new instance alone now.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut served = 0;
    for hub in hubs {
        let (ok, failed) = hub.join().unwrap();
        assert!(failed.is_empty(), "failed requests: {failed:?}");
        served += ok;
    }
    assert!(served > 50, "{served} answers");
    assert_eq!(
        new.metric(r#"framecache_cache_handover_entries_total{result="kept"}"#),
        2.0,
        "the latest and by-hash entries of the frame were handed over"
    );
    // A cold start would have asked for both frames again.
    let after = origin.handle.stats().requests_total;
    assert_eq!(after - before, 0, "origin requests during the upgrade");
    assert_eq!(new.frame(&token).status, 200);
}
