//! The test stack: camsim and the proxy started in-process on loopback port 0, a raw HTTP/1.1
//! client that sends exactly the bytes a test writes, scrape helpers, a gate that holds origin
//! requests until the test lets them through, a camera backend written byte by byte, and TLS
//! and HTTP/2 clients with a certificate authority made in the test.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use framecache::app::Running;
use framecache::config::{Config, Secret, TlsConfig, TlsKey};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const HUB_SECRET: &[u8] = b"e2e-test-hub-secret-e2e-test-hub-secret";
pub const ADMIN_TOKEN: &[u8] = b"e2e-test-admin-token";
pub const SIGNING_KEY: [u8; 32] = *b"e2e-test-frame-signing-key-32byt";
/// Longest any one exchange may take before the test fails (never reached when things work).
const PATIENCE: Duration = Duration::from_secs(20);

/// camsim and the proxy, stopped when dropped.
pub struct Stack {
    pub proxy: Running,
    pub camsim: camsim::Handle,

    runtime: tokio::runtime::Runtime,
}

impl Stack {
    /// Three owners with two cameras each (owner-1 reads cam-1, cam-2, cam-5; owner-2 reads
    /// cam-1, cam-3, cam-4), small frozen frames.
    pub fn start() -> Stack {
        Stack::with(|_| {}, |_| {})
    }

    pub fn with(
        proxy: impl FnOnce(&mut Config),
        origin: impl FnOnce(&mut camsim::Config),
    ) -> Stack {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut camsim_config = camsim::Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            signing_key: SIGNING_KEY,
            owners: 3,
            cameras_per_owner: 2,
            width: 320,
            height: 240,
            fps: 0.0,
            ..camsim::Config::default()
        };
        origin(&mut camsim_config);
        let camsim = runtime.block_on(camsim::start(camsim_config)).unwrap();
        let mut config = Config::local(camsim.local_addr(), HUB_SECRET, ADMIN_TOKEN, SIGNING_KEY);
        config.server.threads = 1;
        proxy(&mut config);
        let proxy = framecache::app::spawn(config).unwrap();
        Stack {
            proxy,
            camsim,

            runtime,
        }
    }

    /// Like [`Stack::with`], with a [`Gate`] between the proxy and camsim: origin requests wait
    /// there until the test opens it.
    pub fn gated(
        proxy: impl FnOnce(&mut Config),
        origin: impl FnOnce(&mut camsim::Config),
    ) -> (Stack, Gate) {
        let mut gate = None;
        let stack = Stack::with(
            |c| {
                let held = Gate::start(c.origin.addresses[0]);
                c.origin.addresses = vec![held.addr];
                gate = Some(held);
                proxy(c);
            },
            origin,
        );
        (stack, gate.expect("invariant: the proxy is configured"))
    }

    /// A token for `owner` granting `cameras`, valid for an hour.
    pub fn token(&self, owner: &str, cameras: &[&str]) -> String {
        let cameras: Vec<String> = cameras.iter().map(|c| c.to_string()).collect();
        framecache::auth::mint(
            HUB_SECRET,
            "framecache",
            owner,
            &cameras,
            Duration::from_secs(3600),
        )
        .unwrap()
    }

    /// `GET path` as `owner` with a token for `cameras`.
    pub fn get_as(&self, owner: &str, cameras: &[&str], path: &str) -> Reply {
        let token = self.token(owner, cameras);
        self.get(path, &[("Authorization", &format!("Bearer {token}"))])
    }

    /// `GET path` with extra headers.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send("GET", path, headers)
    }

    pub fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send_only(method, path, headers)
            .reply(method == "HEAD")
    }

    /// Sends a request on a connection of its own; the answer is read later.
    pub fn send_only(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Sent {
        let mut raw =
            format!("{method} {path} HTTP/1.1\r\nHost: hub.test\r\nConnection: close\r\n");
        for (name, value) in headers {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        raw.push_str("\r\n");
        Sent::send(self.proxy.hub_addr, raw.as_bytes())
    }

    /// `GET path` as `owner` with a token for `cameras`, sent; the answer is read later.
    pub fn send_as(&self, owner: &str, cameras: &[&str], path: &str) -> Sent {
        let token = self.token(owner, cameras);
        self.send_only(
            "GET",
            path,
            &[("Authorization", &format!("Bearer {token}"))],
        )
    }

    /// The admin listener's `/metrics`.
    pub fn scrape(&self) -> String {
        let raw = "GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";
        let reply = exchange(self.proxy.admin_addr, raw.as_bytes(), false);
        assert_eq!(reply.status, 200);
        reply.text()
    }

    /// The value of one series in the scrape, like `framecache_auth_failures_total{reason="expired"}`.
    /// Panics when the scrape has no such series (see [`metric_in`]).
    pub fn metric(&self, series: &str) -> f64 {
        metric_in(&self.scrape(), series)
    }

    /// Requests the origin has received so far.
    pub fn origin_requests(&self) -> u64 {
        self.camsim.stats().requests_total
    }

    pub fn set_faults(&self, faults: camsim::Faults) {
        self.camsim.set_faults(faults);
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // The proxy stops on its own drop; camsim's tasks end with the runtime.
        self.runtime
            .block_on(async { tokio::task::yield_now().await });
    }
}

/// The value of one series in a scrape text, written as the scrape writes it: the name, then
/// the labels in the scrape's (alphabetical) order, like
/// `framecache_variant_choices_total{reason="ect",variant="thumb"}`.
///
/// Panics when the scrape has no such series, naming the series asked for and those of the
/// same name that exist: a misspelt name or label must fail the test, not read as 0.
pub fn metric_in(scrape: &str, series: &str) -> f64 {
    series_value(scrape, series).unwrap_or_else(|| {
        let name = series.split('{').next().unwrap_or(series);
        let same_name: Vec<&str> = scrape
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.rsplit_once(' ').map(|(s, _)| s))
            .filter(|s| s.split('{').next() == Some(name))
            .collect();
        panic!("the scrape has no series {series}; series named {name}: {same_name:?}")
    })
}

/// The value of one series in a scrape text, if the scrape has it.
fn series_value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| {
            value
                .parse()
                .unwrap_or_else(|e| panic!("{series}: value {value:?}: {e}"))
        })
    })
}

/// A parsed response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    /// The JSON error code of an error answer.
    pub fn error_code(&self) -> String {
        assert_eq!(self.header("content-type"), Some("application/json"));
        self.json()["error"].as_str().unwrap().to_string()
    }
}

/// Sends raw request bytes on a new connection and reads one response to the end.
pub fn exchange(addr: SocketAddr, raw: &[u8], head: bool) -> Reply {
    Sent::send(addr, raw).reply(head)
}

/// A request sent on its own connection, its answer not read yet.
pub struct Sent {
    stream: TcpStream,
    raw: Vec<u8>,
}

impl Sent {
    pub fn send(addr: SocketAddr, raw: &[u8]) -> Sent {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.write_all(raw).unwrap();
        Sent {
            stream,
            raw: raw.to_vec(),
        }
    }

    /// Reads the response to the end (`head`: to a HEAD request, without a body).
    pub fn reply(mut self, head: bool) -> Reply {
        let mut bytes = Vec::new();
        // The server closes the connection after the answer (Connection: close) or on bad
        // input.
        let _ = self.stream.read_to_end(&mut bytes);
        parse_reply(&bytes, head).unwrap_or_else(|| {
            panic!(
                "no complete response to {:?}: {:?}",
                String::from_utf8_lossy(&self.raw),
                String::from_utf8_lossy(&bytes)
            )
        })
    }
}

/// The response at the start of `bytes`, once its head and (unless `head`: the answer to a
/// HEAD request) its `Content-Length` of body have arrived.
pub fn parse_reply(bytes: &[u8], head: bool) -> Option<Reply> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(len) = resp.parse(bytes).ok()? else {
        return None;
    };
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let status = resp.code?;
    let mut body = bytes[len..].to_vec();
    if !head {
        if let Some(n) = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok())
        {
            if body.len() < n {
                return None;
            }
            body.truncate(n);
        }
    }
    Some(Reply {
        status,
        headers,
        body,
    })
}

impl Stack {
    /// A request to the admin listener with the admin token (or another).
    pub fn admin(&self, method: &str, path: &str, body: &str, token: Option<&str>) -> Reply {
        let token = token.unwrap_or(std::str::from_utf8(ADMIN_TOKEN).unwrap());
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        exchange(self.proxy.admin_addr, raw.as_bytes(), false)
    }

    /// Frame requests the origin has received for `camera`.
    pub fn origin_requests_for(&self, camera: &str) -> u64 {
        self.camsim.stats().frame_requests_for(camera)
    }

    pub fn cache(&self) -> &framecache::cache::FrameCache {
        &self.proxy.shared.cache
    }
}

/// Polls `condition` (every millisecond, for at most 5 s) until it holds; panics naming `what`
/// otherwise. For state the test cannot be told about, like a fetch being under way.
pub fn wait_until(what: &str, condition: impl Fn() -> bool) {
    wait_within(Duration::from_secs(5), what, condition)
}

/// [`wait_until`] with another limit.
pub fn wait_within(limit: Duration, what: &str, condition: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("gave up waiting until {what}");
}

/// Whether the calling test's body should run in this process. In a process started for that
/// test alone, yes. Otherwise no: this starts the test binary again for just the test `name`
/// (its full path, like `delivery::some_test`), checks that it ran and passed there, and
/// returns false.
///
/// For tests that read process-wide counters (what `framecache::sealed` sent by reference):
/// with no other test in the process, everything counted is the test's own.
pub fn in_own_process(name: &str) -> bool {
    const ALONE: &str = "FRAMECACHE_E2E_ALONE";
    if std::env::var(ALONE).as_deref() == Ok(name) {
        return true;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ALONE, name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} in a process of its own:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    false
}

/// A camera backend in front of camsim that holds every request until the test opens the gate:
/// a slow origin without a clock, so that a test can act while a fetch is under way for as long
/// as it needs. Requests go through to camsim byte for byte, and its answers come back byte for
/// byte (faults included), each proxy connection on a camsim connection of its own.
pub struct Gate {
    pub addr: SocketAddr,
    state: Arc<(Mutex<GateState>, Condvar)>,
}

#[derive(Default)]
struct GateState {
    open: bool,
    /// Requests waiting at the gate now.
    held: usize,
    /// (owner, camera) of every request that reached the gate.
    seen: Vec<(String, String)>,
    stopped: bool,
}

impl Gate {
    /// A closed gate in front of `camsim`.
    fn start(camsim: SocketAddr) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Arc<(Mutex<GateState>, Condvar)> = Arc::default();
        let shared = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if shared
                    .0
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .stopped
                {
                    break;
                }
                let (Ok(conn), Ok(upstream)) = (conn, TcpStream::connect(camsim)) else {
                    continue;
                };
                let shared = shared.clone();
                std::thread::spawn(move || relay(conn, upstream, &shared));
            }
        });
        Gate { addr, state }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets every held request through, and later ones too.
    pub fn open(&self) {
        self.state().open = true;
        self.state.1.notify_all();
    }

    /// Holds the requests that arrive from now on.
    pub fn close(&self) {
        self.state().open = false;
    }

    /// Requests waiting at the gate now.
    pub fn held(&self) -> usize {
        self.state().held
    }

    /// The (owner, camera) of every request that reached the gate so far, sorted.
    pub fn seen(&self) -> Vec<(String, String)> {
        let mut seen = self.state().seen.clone();
        seen.sort();
        seen
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        {
            let mut state = self.state();
            state.stopped = true;
            state.open = true;
        }
        self.state.1.notify_all();
        // Wakes the accept loop so that it sees the stop.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Relays one proxy connection to camsim: each request once the gate is open, camsim's bytes
/// back as they come.
fn relay(mut conn: TcpStream, mut upstream: TcpStream, gate: &(Mutex<GateState>, Condvar)) {
    let (Ok(mut back), Ok(mut to_proxy)) = (upstream.try_clone(), conn.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut back, &mut to_proxy);
        let _ = to_proxy.shutdown(Shutdown::Write);
    });
    let mut buf = Vec::new();
    loop {
        // Frame requests are a head only.
        let parsed = {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let owner = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(framecache_protocol::OWNER))
                        .map(|h| String::from_utf8_lossy(h.value).into_owned())
                        .unwrap_or_default();
                    // /cameras/{camera}/frame
                    let camera = req.path.unwrap_or("").split('/').nth(2).unwrap_or("");
                    Some((len, owner, camera.to_string()))
                }
                _ => None,
            }
        };
        let Some((len, owner, camera)) = parsed else {
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let (lock, opened) = gate;
        let mut state = lock.lock().unwrap_or_else(PoisonError::into_inner);
        state.seen.push((owner, camera));
        state.held += 1;
        let mut state = opened
            .wait_while(state, |s| !s.open)
            .unwrap_or_else(PoisonError::into_inner);
        state.held -= 1;
        drop(state);
        if upstream.write_all(&buf[..len]).is_err() {
            break;
        }
        buf.drain(..len);
    }
    let _ = upstream.shutdown(Shutdown::Write);
}

/// What the raw origin does with one request.
pub enum Answer {
    /// Write these bytes, then keep the connection open for the next request.
    Send(Vec<u8>),
    /// Write these bytes, then close the connection (with no `Connection: close` said: the
    /// proxy takes it for a keep-alive connection).
    SendAndClose(Vec<u8>),
    /// Close the connection without answering.
    Close,
}

/// One request as the raw origin read it.
pub struct Seen {
    /// Which accepted connection, from 0.
    pub connection: usize,
    /// Which request on that connection, from 0.
    pub nth: usize,
    pub owner: String,
    pub camera: String,
}

pub type Answerer = dyn Fn(&Seen) -> Answer + Send + Sync;

/// A camera backend written byte by byte, for answers camsim cannot give (informational
/// responses, header lines split, connections closed at chosen moments). It accepts at most
/// `max_connections` connections and then stops listening, so later connects are refused.
pub struct RawOrigin {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl RawOrigin {
    pub fn start(
        max_connections: usize,
        answer: impl Fn(&Seen) -> Answer + Send + Sync + 'static,
    ) -> RawOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let answer: Arc<Answerer> = Arc::new(answer);
        let (accepted, served, stopped) = (connections.clone(), requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for (connection, stream) in listener.incoming().take(max_connections).enumerate() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                accepted.fetch_add(1, Ordering::SeqCst);
                let (answer, served) = (answer.clone(), served.clone());
                std::thread::spawn(move || serve_raw(connection, stream, &*answer, &served));
            }
            // The listener is dropped here: from now on connects are refused.
        });
        RawOrigin {
            addr,
            connections,
            requests,
            stop,
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        // Wake the accept loop if it still listens, so its thread ends.
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// Reads requests from one connection and answers each as `answer` says, until either side
/// closes (or nothing arrives for a while).
fn serve_raw(connection: usize, mut stream: TcpStream, answer: &Answerer, requests: &AtomicUsize) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    for nth in 0.. {
        let (seen, used) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(len)) = req.parse(&buf) {
                let owner = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("x-framecache-owner"))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned())
                    .unwrap_or_default();
                // /cameras/{camera}/frame
                let camera = req.path.unwrap_or("").split('/').nth(2).unwrap_or("");
                let seen = Seen {
                    connection,
                    nth,
                    owner,
                    camera: camera.to_string(),
                };
                break (seen, len);
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        buf.drain(..used);
        requests.fetch_add(1, Ordering::SeqCst);
        match answer(&seen) {
            Answer::Send(bytes) => {
                if stream.write_all(&bytes).is_err() {
                    return;
                }
            }
            Answer::SendAndClose(bytes) => {
                let _ = stream.write_all(&bytes);
                return;
            }
            Answer::Close => return,
        }
    }
}

/// The body the raw origin serves for `camera`.
pub fn raw_body(camera: &str) -> Vec<u8> {
    format!("raw origin frame of {camera}").into_bytes()
}

/// A `200` SPEC accepts for what `seen` asked, signed with the test key, with `extra` header
/// lines (each ending in CRLF) added.
pub fn signed_frame(seen: &Seen, extra: &str) -> Vec<u8> {
    let body = raw_body(&seen.camera);
    let hash = blake3::hash(&body).to_hex();
    let (seq, captured_at) = (7, 1_700_000_000_123u64);
    let message = framecache_protocol::signed_message(&seen.camera, seq, captured_at, &hash);
    let signature = blake3::keyed_hash(&SIGNING_KEY, message.as_bytes()).to_hex();
    let mut bytes = format!(
        "HTTP/1.1 200 OK\r\n\
         Content-Type: image/jpeg\r\n\
         Content-Length: {}\r\n\
         X-Frame-Owner: {}\r\n\
         X-Frame-Camera: {}\r\n\
         X-Frame-Seq: {seq}\r\n\
         X-Frame-Captured-At: {captured_at}\r\n\
         X-Frame-Signature: {signature}\r\n\
         {extra}\r\n",
        body.len(),
        seen.owner,
        seen.camera,
    )
    .into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

/// A stack whose only origin is `origin`.
pub fn stack_on(origin: &RawOrigin) -> Stack {
    let addr = origin.addr;
    Stack::with(|c| c.origin.addresses = vec![addr], |_| {})
}

// TLS and HTTP/2 clients: a certificate authority made in the test, a rustls client trusting it,
// HTTP/1.1 over any connection and an HTTP/2 client.

/// A certificate authority made for one test, and the server certificates it signs.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The authority's own certificate: the root a client trusts.
    pub root: CertificateDer<'static>,
}

/// A server certificate [`TestCa`] signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaf {
    /// For `localhost` and `127.0.0.1`, valid now.
    Localhost,
    /// For `localhost` and `127.0.0.1`, valid through 2020 only (see [`EXPIRED_LEAF_VALID_AT`]).
    Expired,
    /// For [`OTHER_HOST`] only, valid now.
    WrongHost,
}

/// The only name of [`Leaf::WrongHost`].
pub const OTHER_HOST: &str = "elsewhere.test";
/// Seconds since the epoch within [`Leaf::Expired`]'s validity (2020-06-01).
pub const EXPIRED_LEAF_VALID_AT: u64 = 1_590_969_600;

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "framecache test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let root = params.self_signed(&key).unwrap().der().clone();
        TestCa {
            issuer: rcgen::Issuer::new(params, key),
            root,
        }
    }

    /// The proxy's `[tls]` for `leaf`: the chain (leaf, then this authority) and the leaf's
    /// PKCS#8 key.
    pub fn tls(&self, leaf: Leaf) -> TlsConfig {
        let names: Vec<String> = match leaf {
            Leaf::Localhost | Leaf::Expired => vec!["localhost".into(), "127.0.0.1".into()],
            Leaf::WrongHost => vec![OTHER_HOST.into()],
        };
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "framecache test edge");
        params.use_authority_key_identifier_extension = true;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        if leaf == Leaf::Expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        TlsConfig {
            cert_file: "test-ca/edge.crt".into(),
            key_file: "test-ca/edge.key".into(),
            chain: vec![cert.der().to_vec(), self.root.to_vec()],
            key: TlsKey::Pkcs8(Secret(key.serialize_der())),
        }
    }

    /// A root store holding this authority only.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.root.clone()).unwrap();
        roots
    }

    /// A client trusting this authority, offering `versions` and the ALPN `protocols`, with
    /// rustls's default session cache.
    pub fn client(
        &self,
        versions: &[&'static SupportedProtocolVersion],
        protocols: &[&str],
    ) -> ClientConfig {
        let mut config = ClientConfig::builder_with_provider(Arc::new(client_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(self.roots())
            .with_no_client_auth();
        config.alpn_protocols = protocols.iter().map(|p| p.as_bytes().to_vec()).collect();
        config
    }
}

/// TLS 1.2 and 1.3.
pub const TLS_ALL: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];
pub const ALPN_H2: &str = "h2";
pub const ALPN_HTTP1: &str = "http/1.1";

/// ring, the proxy's provider (rustls deprecates it for lacking post-quantum key exchange).
#[allow(deprecated)]
pub fn client_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

impl Stack {
    /// Like [`Stack::with`], with a TLS hub listener (`server.tls_listen` on loopback port 0)
    /// serving `tls`, besides the plaintext one.
    pub fn with_tls(
        tls: TlsConfig,
        proxy: impl FnOnce(&mut Config),
        origin: impl FnOnce(&mut camsim::Config),
    ) -> Stack {
        Stack::with(
            |c| {
                c.server.tls_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
                c.tls = Some(tls);
                proxy(c);
            },
            origin,
        )
    }

    /// The TLS hub listener's address.
    pub fn tls_addr(&self) -> SocketAddr {
        self.proxy.tls_addr.expect("a stack with a TLS listener")
    }

    /// `Authorization: Bearer …` for `owner` with a token for `cameras`.
    pub fn bearer(&self, owner: &str, cameras: &[&str]) -> (String, String) {
        (
            "authorization".to_string(),
            format!("Bearer {}", self.token(owner, cameras)),
        )
    }
}

/// [`wait_until`] for a test's async clients: the runtime goes on driving their connections
/// (an HTTP/2 stream dropped is reset by the connection's task) while `condition` does not hold.
pub async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("gave up waiting until {what}");
}

/// A runtime for a test's TLS and HTTP/2 clients (the proxy runs on its own).
pub fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// The protocol ALPN chose on `tls`.
pub fn alpn(tls: &TlsStream) -> Option<&str> {
    let chosen = tls.get_ref().1.alpn_protocol()?;
    Some(std::str::from_utf8(chosen).expect("a protocol this client offered"))
}

/// A TLS connection to `addr`, verifying the server as `name`.
pub async fn tls_connect(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    name: &str,
) -> std::io::Result<TlsStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
}

/// The rustls error inside an I/O error from a handshake, if that is what it is.
pub fn tls_error(error: &std::io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

/// One HTTP/1.1 request on `stream` (with `Connection: close`), its answer read to the end.
pub async fn http1<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    method: &str,
    path: &str,
    headers: &[(String, String)],
) -> Reply {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    raw.push_str("\r\n");
    stream.write_all(raw.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    let mut bytes = Vec::new();
    // The server closes after the answer; a TLS close without close_notify is an error here,
    // after the bytes have been read.
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut bytes)).await;
    parse_reply(&bytes, method == "HEAD").unwrap_or_else(|| {
        panic!(
            "no complete response to {method} {path}: {:?}",
            String::from_utf8_lossy(&bytes)
        )
    })
}

/// An HTTP/2 client connection: requests go out as streams on it.
#[derive(Clone)]
pub struct H2 {
    send: h2::client::SendRequest<bytes::Bytes>,
    scheme: &'static str,
}

impl H2 {
    /// The HTTP/2 connection preface and settings on `io` (a TLS connection that chose `h2`, or
    /// plain TCP for h2c with prior knowledge); the connection is driven by a task of the
    /// calling runtime.
    pub async fn handshake<S>(io: S, scheme: &'static str) -> Result<H2, h2::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // A connection window larger than a stream's, as browsers have: one stream the test
        // does not read for a while does not stall its siblings.
        let (send, connection) = h2::client::Builder::new()
            .initial_connection_window_size(16 << 20)
            .handshake(io)
            .await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let send = send.ready().await?;
        Ok(H2 { send, scheme })
    }

    /// Sends a request (no body) and returns at once; its answer is awaited with [`h2_reply`].
    pub async fn start(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
    ) -> Result<h2::client::ResponseFuture, h2::Error> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}://localhost{path}", self.scheme));
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request.body(()).unwrap();
        let mut send = self.send.clone().ready().await?;
        let (response, _) = send.send_request(request, true)?;
        Ok(response)
    }

    /// One request and its whole answer.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
    ) -> Result<Reply, h2::Error> {
        h2_reply(self.start(method, path, headers).await?).await
    }
}

/// An HTTP/2 answer, its body read to the end.
pub async fn h2_reply(response: h2::client::ResponseFuture) -> Result<Reply, h2::Error> {
    let (head, mut body) = tokio::time::timeout(PATIENCE, response)
        .await
        .expect("an HTTP/2 answer within the patience")?
        .into_parts();
    let mut bytes = Vec::new();
    while let Some(chunk) = tokio::time::timeout(PATIENCE, body.data())
        .await
        .expect("HTTP/2 data within the patience")
    {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    Ok(Reply {
        status: head.status.as_u16(),
        headers: h2_headers(&head.headers),
        body: bytes,
    })
}

/// HTTP/2 header fields as a [`Reply`] holds them.
pub fn h2_headers(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}
