//! The binary: check-config exit codes and messages, token minting, the demo, and readiness
//! through a graceful shutdown.

use std::path::PathBuf;
use std::process::Command;

fn framecache() -> Command {
    Command::new(env!("CARGO_BIN_EXE_framecache"))
}

fn repo_config() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/framecache.toml")
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("framecache-e2e-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn shipped_configs_are_valid() {
    let out = framecache()
        .arg("check-config")
        .arg(repo_config())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));
}

#[test]
fn bad_config_exits_64_naming_every_bad_key() {
    let dir = TempDir::new("bad");
    let path = dir.0.join("bad.toml");
    std::fs::write(
        &path,
        r#"
[server]
listen = "not-an-address"
threads = -1
[auth]
secret_file = "missing.secret"
extra = true
[origin]
addresses = []
max_frame_bytes = "big"
"#,
    )
    .unwrap();
    let out = framecache()
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in [
        "server.listen",
        "server.threads",
        "auth.secret_file",
        "auth.extra",
        "admin.token_file",
        "origin.addresses",
        "origin.signing_key_file",
        "origin.max_frame_bytes",
    ] {
        assert!(
            stderr.lines().any(|l| l.contains(&format!(": {key}: "))),
            "{key} not named in:\n{stderr}"
        );
    }
    assert!(
        stderr.contains("not-an-address"),
        "the offending value is shown"
    );
    assert!(!stderr.contains("panicked"));

    // serve refuses the same file with the same exit code.
    let out = framecache().arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    // A missing file and bad usage are 64 too.
    let out = framecache()
        .args(["check-config", "/nonexistent/framecache.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = framecache().arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = framecache().output().unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn token_mints_what_the_proxy_accepts() {
    let out = framecache()
        .arg("token")
        .arg("--config")
        .arg(repo_config())
        .args([
            "--owner",
            "owner-1",
            "--camera",
            "cam-1",
            "--camera",
            "cam-2",
            "--ttl-secs",
            "60",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let config = framecache::config::Config::load(&repo_config()).unwrap();
    let verifier = framecache::auth::TokenVerifier::new(
        config.auth.secret.expose(),
        &config.auth.audience,
        config.auth.leeway,
    );
    let header = format!("Bearer {}", token.trim());
    let grant = verifier.verify(std::iter::once(header.as_bytes())).unwrap();
    assert_eq!(grant.owner().as_str(), "owner-1");

    let out = framecache()
        .arg("token")
        .arg("--config")
        .arg(repo_config())
        .args(["--owner", "owner 1", "--camera", "cam-1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("owner id"));
}

#[test]
fn demo_prints_curl_lines_that_work_and_stops_on_ctrl_c() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let mut child = framecache()
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut curl_lines = Vec::new();
    // The banner ends with the Ctrl-C line; a bounded read.
    for line in stdout.by_ref().take(200) {
        let line = line.unwrap();
        if line.starts_with("curl ") {
            curl_lines.push(line.clone());
        }
        if line.contains("Ctrl-C") {
            break;
        }
    }
    // First frame line: curl -sS -D - -o FILE -H 'Authorization: Bearer T' http://ADDR/PATH
    let line = curl_lines
        .iter()
        .find(|l| l.contains("/frame") && l.contains(" -o "))
        .unwrap();
    let (reply, path) = run_curl_line(line);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let camera = path.split('/').nth(2).unwrap();
    assert_eq!(camsim::jpeg::read_watermark(&reply.body).unwrap().0, camera);

    // The "not theirs" line answers 403.
    let denied = curl_lines
        .iter()
        .find(|l| !l.contains(" -o ") && l.contains("/frame"))
        .unwrap();
    assert_eq!(run_curl_line(denied).0.status, 403);

    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "Ctrl-C stops the demo cleanly");
    let rest: Vec<String> = stdout.map_while(Result::ok).collect();
    assert_eq!(rest, ["framecache demo stopped"]);
}

/// Does what a printed `curl … -H 'Authorization: Bearer T' http://ADDR/PATH` line does;
/// returns the reply and PATH.
fn run_curl_line(line: &str) -> (crate::common::Reply, String) {
    let token = line
        .split("Bearer ")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    let url = line.rsplit(' ').next().unwrap();
    let (addr, path) = url.trim_start_matches("http://").split_once('/').unwrap();
    let raw = format!(
        "GET /{path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let reply = crate::common::exchange(addr.parse().unwrap(), raw.as_bytes(), false);
    (reply, path.to_string())
}

/// Kills the child process if the test ends before it exits.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `GET /readyz` on a kept-alive connection and reads the answer: its status and body,
/// `None` when the connection is closed instead.
fn readyz(conn: &mut std::net::TcpStream) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    conn.write_all(b"GET /readyz HTTP/1.1\r\nHost: admin\r\n\r\n")
        .ok()?;
    let mut bytes = Vec::new();
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = resp.parse(&bytes) {
            let body_len: usize = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                .unwrap_or(0);
            if bytes.len() >= len + body_len {
                let body = String::from_utf8_lossy(&bytes[len..len + body_len]).into_owned();
                return Some((resp.code?, body));
            }
        }
        let mut chunk = [0u8; 1024];
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
        }
    }
}

#[test]
fn readyz_answers_503_once_sigterm_starts_the_shutdown() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let dir = TempDir::new("shutdown");
    let dev = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/dev");
    let dev = dev.display();
    let config = dir.0.join("framecache.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
threads = 1
grace_period_secs = 3
[auth]
secret_file = "{dev}/hub-token.secret"
[admin]
token_file = "{dev}/admin.token"
[origin]
addresses = ["127.0.0.1:9"]
signing_key_file = "{dev}/frame-signing.key"
"#
        ),
    )
    .unwrap();
    let mut child = framecache()
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut child = Running(child);
    // "... framecache listening hub=127.0.0.1:P admin=127.0.0.1:Q"
    let listening = log
        .by_ref()
        .map_while(Result::ok)
        .find(|line| line.contains("framecache listening"))
        .expect("the proxy says where it listens");
    let admin: std::net::SocketAddr = listening
        .split_once("admin=")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    // The rest of the log is read as it comes, so that the proxy never blocks on it.
    std::thread::spawn(move || log.for_each(drop));

    let get = |path: &str| {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        crate::common::exchange(admin, raw.as_bytes(), false)
    };
    crate::common::wait_until("/readyz answers 200", || get("/readyz").status == 200);
    // Kept-alive connections, opened while the proxy accepts them: a shutting-down server
    // stops accepting, but answers what arrives on connections it already has.
    let mut conns: Vec<std::net::TcpStream> = (0..8)
        .map(|_| {
            let mut conn = std::net::TcpStream::connect(admin).unwrap();
            conn.set_read_timeout(Some(std::time::Duration::from_secs(20)))
                .unwrap();
            assert_eq!(readyz(&mut conn).map(|(status, _)| status), Some(200));
            conn
        })
        .collect();

    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Until the signal is handled /readyz may still say 200 (and a connection that answered
    // after the shutdown began is closed): ask again, on the next connection if need be.
    let mut answers = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let Some(conn) = conns.last_mut() else { break };
        match readyz(conn) {
            Some((503, body)) => {
                assert_eq!(body, "not ready\n");
                answers.push(503);
                break;
            }
            Some((status, _)) => answers.push(status),
            None => {
                conns.pop();
            }
        }
    }
    assert_eq!(
        answers.last(),
        Some(&503),
        "answers after SIGTERM: {answers:?}"
    );
    assert!(
        answers.iter().all(|s| [200, 503].contains(s)),
        "{answers:?}"
    );
    // The shutdown completes: a clean exit.
    let exit = child.0.wait().unwrap();
    assert_eq!(exit.code(), Some(0));
}
