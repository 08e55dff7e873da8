//! The edge under hostile load (SPEC Part 2, "Limits"). Each test is one attack, scaled down to
//! run in seconds, and asserts what the attacker gets (status, JSON error, headers), what the
//! scrape counts and, where memory is the point, what the process holds.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use framecache::config::Config;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::common::{
    in_own_process, parse_reply, raw_body, signed_frame, wait_until, Answer, RawOrigin, Reply,
    Stack, HUB_SECRET,
};

/// Longest a test waits for an answer it expects (never reached when things work).
const PATIENCE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Raw connections

/// What came back on a connection.
#[derive(Debug)]
enum Outcome {
    Answered(Reply),
    /// Closed or reset before a whole answer arrived.
    Closed,
}

/// Reads one answer from `conn` (not to a HEAD request), without waiting for the connection to
/// close, so that a kept-alive connection can be used again.
fn read_reply(conn: &mut TcpStream) -> Outcome {
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(reply) = parse_reply(&bytes, false) {
            return Outcome::Answered(reply);
        }
        match conn.read(&mut chunk) {
            Ok(0) => return Outcome::Closed,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                return Outcome::Closed
            }
            Err(e) => panic!(
                "no answer within {PATIENCE:?} ({} bytes read): {e}",
                bytes.len()
            ),
        }
    }
}

/// A GET of `path` with `token`, on a connection kept alive.
fn get_head(path: &str, token: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: hub.test\r\nAuthorization: Bearer {token}\r\n\r\n")
}

/// Checks a refusal: its status, its JSON error code, and no `Server` header.
fn assert_refusal(reply: &Reply, status: u16, code: &str, what: &str) {
    assert_eq!(reply.status, status, "{what}: {}", reply.text());
    assert_eq!(reply.error_code(), code, "{what}");
    assert_eq!(reply.header("server"), None, "{what}");
}

/// `framecache_limited_total` of `limit`.
fn limited(stack: &Stack, limit: &str) -> f64 {
    stack.metric(&format!(r#"framecache_limited_total{{limit="{limit}"}}"#))
}

/// `framecache_requests_total` of `route` and `status`.
fn requests(stack: &Stack, route: &str, status: u16) -> f64 {
    stack.metric(&format!(
        r#"framecache_requests_total{{route="{route}",status="{status}"}}"#
    ))
}

// ---------------------------------------------------------------------------------------------
// 1. Request heads

/// `bytes` of a request head that never ends: a request line and one header field whose value
/// goes on and on.
fn endless_head(bytes: usize) -> Vec<u8> {
    let mut head = b"GET /v1/cameras/cam-1/frame HTTP/1.1\r\nHost: hub.test\r\nCookie: ".to_vec();
    head.resize(bytes, b'a');
    head
}

/// Sends `bytes` on `conn` one byte every 50 ms while reading the answer; returns how many had
/// been sent when the answer (or the close) came, and what it was.
fn trickle(conn: TcpStream, bytes: &[u8]) -> (usize, Outcome) {
    let sent = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writer = conn.try_clone().unwrap();
    let trickler = {
        let (bytes, sent, stop) = (bytes.to_vec(), sent.clone(), stop.clone());
        thread::spawn(move || {
            for byte in bytes {
                if stop.load(Ordering::SeqCst) || writer.write_all(&[byte]).is_err() {
                    return;
                }
                sent.fetch_add(1, Ordering::SeqCst);
                // The attack's pace, not a wait for the proxy.
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let mut reader = conn;
    let outcome = read_reply(&mut reader);
    let sent_by_then = sent.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    trickler.join().unwrap();
    (sent_by_then, outcome)
}

/// `field` of `/proc/self/status` (like `VmRSS`), in bytes.
fn proc_status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Head exhaustion: 200 connections, each sending a request head that never ends, 1 MiB of it
/// (as much as Pingora alone would buffer of each, until its read timeout). Each is refused with
/// 431 once `limits.header_bytes` (16 KiB) have arrived, or closed, and the proxy, which runs in
/// this process, never holds much more than that of each: its peak resident memory grows by a
/// few MiB, where keeping the heads would take up to 200 MiB.
#[test]
fn endless_request_heads_are_refused_at_the_size_limit_in_bounded_memory() {
    if !in_own_process(
        "limits::endless_request_heads_are_refused_at_the_size_limit_in_bounded_memory",
    ) {
        return;
    }
    const CONNECTIONS: usize = 200;
    let stack = Stack::start();
    let head = endless_head(1 << 20);
    let before = proc_status_bytes("VmRSS");
    let mut conns: Vec<TcpStream> = (0..CONNECTIONS)
        .map(|_| {
            let mut conn = TcpStream::connect(stack.proxy.hub_addr).unwrap();
            // The proxy may close before it has read it all.
            let _ = conn.write_all(&head);
            conn
        })
        .collect();
    let outcomes: Vec<Outcome> = conns.iter_mut().map(read_reply).collect();
    // The peak since the process started, against what it held before the attack.
    let growth = proc_status_bytes("VmHWM").saturating_sub(before);
    let answered = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Answered(_)))
        .count();
    eprintln!(
        "{answered} of {CONNECTIONS} answered before the close; resident memory before {} KiB, \
         peak growth {} KiB",
        before / 1024,
        growth / 1024
    );
    for outcome in &outcomes {
        if let Outcome::Answered(reply) = outcome {
            assert_refusal(
                reply,
                431,
                "request_header_fields_too_large",
                "endless head",
            );
        }
    }
    assert!(
        growth < 40 << 20,
        "the proxy's memory grew by {} KiB for {CONNECTIONS} endless heads",
        growth / 1024
    );
    assert_eq!(limited(&stack, "header_bytes"), CONNECTIONS as f64);
    assert_eq!(requests(&stack, "other", 431), CONNECTIONS as f64);
    assert_eq!(stack.origin_requests(), 0);
}

/// Slowloris: a request head sent one byte every 50 ms (it would take over ten seconds),
/// against `limits.header_timeout_ms` of 400 ms. The proxy answers 408, or closes, while most
/// of the head is still unsent: a trickle of bytes does not extend the time.
#[test]
fn a_trickled_request_head_is_cut_off_at_the_head_timeout() {
    let stack = Stack::with(
        |c| c.limits.header_timeout = Duration::from_millis(400),
        |_| {},
    );
    let head = get_head(
        "/v1/cameras/cam-2/frame",
        &stack.token("owner-1", &["cam-2"]),
    );
    let conn = TcpStream::connect(stack.proxy.hub_addr).unwrap();
    let (sent, outcome) = trickle(conn, head.as_bytes());
    assert!(
        sent < head.len() / 2,
        "{sent} of {} bytes sent before the answer",
        head.len()
    );
    if let Outcome::Answered(reply) = outcome {
        assert_refusal(&reply, 408, "request_timeout", "trickled head");
    }
    assert_eq!(limited(&stack, "header_timeout"), 1.0);
    assert_eq!(requests(&stack, "other", 408), 1.0);
    assert_eq!(stack.origin_requests(), 0);
}

/// Both attacks on a kept-alive connection, after a request it was served: its next request
/// head is bounded in size and in time as the first one was.
#[test]
fn the_next_head_on_a_kept_alive_connection_is_bounded_too() {
    let stack = Stack::with(
        |c| c.limits.header_timeout = Duration::from_millis(400),
        |_| {},
    );
    let head = get_head(
        "/v1/cameras/cam-2/frame",
        &stack.token("owner-1", &["cam-2"]),
    );
    let served = || {
        let mut conn = TcpStream::connect(stack.proxy.hub_addr).unwrap();
        conn.write_all(head.as_bytes()).unwrap();
        match read_reply(&mut conn) {
            Outcome::Answered(reply) => assert_eq!(reply.status, 200, "{}", reply.text()),
            Outcome::Closed => panic!("the first request was not answered"),
        }
        conn
    };

    let mut conn = served();
    let _ = conn.write_all(&endless_head(64 * 1024));
    if let Outcome::Answered(reply) = read_reply(&mut conn) {
        assert_refusal(
            &reply,
            431,
            "request_header_fields_too_large",
            "endless next head",
        );
    }
    assert_eq!(limited(&stack, "header_bytes"), 1.0);
    assert_eq!(requests(&stack, "other", 431), 1.0);

    let (sent, outcome) = trickle(served(), head.as_bytes());
    assert!(
        sent < head.len() / 2,
        "{sent} of {} bytes sent before the answer",
        head.len()
    );
    if let Outcome::Answered(reply) = outcome {
        assert_refusal(&reply, 408, "request_timeout", "trickled next head");
    }
    assert_eq!(limited(&stack, "header_timeout"), 1.0);
    assert_eq!(requests(&stack, "other", 408), 1.0);
    assert_eq!(requests(&stack, "frame", 200), 2.0);
}

// ---------------------------------------------------------------------------------------------
// 2. Streams

/// A stack whose cameras move (20 frames a second) and whose streams look for a new frame every
/// 100 ms, so that a stream writes often; no origin budget gets in the way.
fn streaming_stack(proxy: impl FnOnce(&mut Config)) -> Stack {
    Stack::with(
        |c| {
            c.delivery.stream_interval = Duration::from_millis(100);
            c.cache.latest_fresh = Duration::from_millis(100);
            c.limits.owner_origin_rps = 1000;
            proxy(c);
        },
        |o| o.fps = 20.0,
    )
}

/// Asks for `camera`'s stream with `token` on a new connection: the connection, its answer's
/// head read, when the stream opened; the answer otherwise.
fn ask_stream(stack: &Stack, camera: &str, token: &str) -> Result<BufReader<TcpStream>, Reply> {
    let mut conn = TcpStream::connect(stack.proxy.hub_addr).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    conn.write_all(get_head(&format!("/v1/cameras/{camera}/stream"), token).as_bytes())
        .unwrap();
    let mut reader = BufReader::new(conn);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        head.push_str(&line);
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    if head.starts_with("HTTP/1.1 200") {
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: multipart/x-mixed-replace; boundary=framecache-frame"),
            "{head}"
        );
        return Ok(reader);
    }
    let mut bytes = head.into_bytes();
    let mut reply = None;
    while reply.is_none() {
        let mut chunk = [0u8; 4096];
        let n = reader.read(&mut chunk).unwrap();
        bytes.extend_from_slice(&chunk[..n]);
        reply = parse_reply(&bytes, false);
        assert!(
            n > 0 || reply.is_some(),
            "{:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
    Err(reply.expect("invariant: read until parsed"))
}

/// [`ask_stream`], when the stream must open.
fn open_stream(stack: &Stack, camera: &str, token: &str) -> BufReader<TcpStream> {
    ask_stream(stack, camera, token)
        .unwrap_or_else(|reply| panic!("the stream was refused: {} {}", reply.status, reply.text()))
}

/// The rest of a stream's body, de-chunked, up to its last chunk; the stream must end within
/// [`PATIENCE`].
fn body_to_end(reader: &mut BufReader<TcpStream>) -> Vec<u8> {
    let deadline = Instant::now() + PATIENCE;
    let mut body = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "the stream did not end ({} bytes read)",
            body.len()
        );
        let mut size = String::new();
        reader.read_line(&mut size).unwrap();
        let size = usize::from_str_radix(size.trim(), 16)
            .unwrap_or_else(|_| panic!("chunk size {size:?} after {} bytes", body.len()));
        let mut data = vec![0u8; size + 2];
        reader.read_exact(&mut data).unwrap();
        assert_eq!(&data[size..], b"\r\n", "a chunk's end");
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&data[..size]);
    }
}

/// Checks that a stream's body is whole parts of `camera`'s frames (each part's ETag the hash of
/// its JPEG, each JPEG watermarked with the camera and the part's seq) and then the closing
/// delimiter, nothing after it. Returns the number of parts.
fn whole_parts_then_close(body: &[u8], camera: &str) -> usize {
    let mut rest = body;
    let mut parts = 0;
    while rest != b"--framecache-frame--\r\n" {
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| {
                let tail = &rest[..rest.len().min(200)];
                panic!(
                    "after {parts} parts, no part and no closing delimiter: {:?}",
                    String::from_utf8_lossy(tail)
                )
            });
        let head = std::str::from_utf8(&rest[..end]).unwrap();
        assert!(head.starts_with("--framecache-frame\r\n"), "{head}");
        let field = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {head}"))
                .trim()
                .to_string()
        };
        let len: usize = field("Content-Length:").parse().unwrap();
        let start = end + 4;
        assert!(rest.len() >= start + len + 2, "part {parts} is cut short");
        let jpeg = &rest[start..start + len];
        assert_eq!(
            field("ETag:"),
            format!("\"{}\"", blake3::hash(jpeg).to_hex())
        );
        let (watermarked, seq) = camsim::jpeg::read_watermark(jpeg).unwrap();
        assert_eq!(watermarked, camera);
        assert_eq!(field("X-Frame-Seq:"), seq.to_string());
        assert_eq!(&rest[start + len..start + len + 2], b"\r\n");
        rest = &rest[start + len + 2..];
        parts += 1;
    }
    parts
}

/// A stream outliving its token: a hub opens a stream with a token that expires in about two
/// seconds (`auth.leeway_secs` 0). The stream ends then, after a whole part, with the
/// multipart's closing delimiter, and is counted `token_expired`.
#[test]
fn a_stream_ends_when_its_token_expires() {
    let stack = streaming_stack(|c| c.auth.leeway = Duration::ZERO);
    let token = framecache::auth::mint(
        HUB_SECRET,
        "framecache",
        "owner-1",
        &["cam-2".to_string()],
        Duration::from_secs(2),
    )
    .unwrap();
    let mut stream = open_stream(&stack, "cam-2", &token);
    let parts = whole_parts_then_close(&body_to_end(&mut stream), "cam-2");
    assert!(parts >= 1, "{parts} parts");
    // Counted once the proxy has finished the request, just after the hub read its end.
    wait_until("the stream's end is counted", || {
        limited(&stack, "token_expired") == 1.0
    });
    assert_eq!(limited(&stack, "stream_max"), 0.0);
    assert_eq!(requests(&stack, "stream", 200), 1.0);
}

/// A stream held open for ever: with `limits.stream_max_secs` of one second, a stream on a
/// token valid for an hour ends after a second, with whole parts and the closing delimiter,
/// and is counted `stream_max`.
#[test]
fn a_stream_ends_at_stream_max() {
    let stack = streaming_stack(|c| c.limits.stream_max = Duration::from_secs(1));
    let token = stack.token("owner-1", &["cam-2"]);
    let mut stream = open_stream(&stack, "cam-2", &token);
    let parts = whole_parts_then_close(&body_to_end(&mut stream), "cam-2");
    assert!(parts >= 1, "{parts} parts");
    wait_until("the stream's end is counted", || {
        limited(&stack, "stream_max") == 1.0
    });
    assert_eq!(limited(&stack, "token_expired"), 0.0);
}

/// The value of `Retry-After`, in seconds, which must be there.
fn retry_after(reply: &Reply) -> u64 {
    let value = reply.header("retry-after").expect("a Retry-After header");
    value
        .parse()
        .unwrap_or_else(|e| panic!("Retry-After {value:?}: {e}"))
}

/// Asks for `camera`'s stream with `token` until it opens (a place is given back only once the
/// proxy has noticed a stream gone); returns it and how many times it was refused with 429
/// meanwhile.
fn stream_once_a_place_frees(
    stack: &Stack,
    camera: &str,
    token: &str,
) -> (BufReader<TcpStream>, u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut refused = 0;
    loop {
        match ask_stream(stack, camera, token) {
            Ok(stream) => return (stream, refused),
            Err(reply) => {
                assert_refusal(&reply, 429, "too_many_requests", "while a place frees");
                refused += 1;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no place was given back ({refused} refusals)"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Stream hoarding: with `limits.streams_per_owner` 2, an owner's third stream at once is
/// refused 429 with `Retry-After`; another owner's stream is served; and once one of the first
/// two has gone, the owner may open another.
#[test]
fn an_owner_holds_at_most_streams_per_owner_streams() {
    let stack = streaming_stack(|c| c.limits.streams_per_owner = 2);
    let token = stack.token("owner-1", &["cam-1", "cam-2", "cam-5"]);
    let first = open_stream(&stack, "cam-1", &token);
    let _second = open_stream(&stack, "cam-2", &token);
    let third = ask_stream(&stack, "cam-5", &token).expect_err("a third stream was served");
    assert_refusal(&third, 429, "too_many_requests", "a third stream");
    assert!(retry_after(&third) >= 1);
    assert_eq!(limited(&stack, "streams_per_owner"), 1.0);

    // Another owner's streams are counted apart.
    let _other = open_stream(&stack, "cam-3", &stack.token("owner-2", &["cam-3"]));

    // The proxy notices a hub gone at its next write, and gives its place back.
    drop(first);
    let (_again, refused) = stream_once_a_place_frees(&stack, "cam-5", &token);
    assert_eq!(
        limited(&stack, "streams_per_owner"),
        1.0 + f64::from(refused)
    );
    assert_eq!(requests(&stack, "stream", 429), 1.0 + f64::from(refused));
}

/// The same hoarding while the camera shows a still scene (no new frame, so the proxy has
/// nothing to write to the stream): a hub that leaves the stream and comes back must get its
/// place back, or after `limits.streams_per_owner` reconnects its owner is locked out until
/// `limits.stream_max_secs` or the camera moves.
#[test]
fn a_stream_left_while_the_camera_is_still_gives_its_place_back() {
    let stack = Stack::with(
        |c| {
            c.delivery.stream_interval = Duration::from_millis(100);
            c.limits.streams_per_owner = 1;
        },
        |o| o.fps = 0.0,
    );
    let token = stack.token("owner-1", &["cam-2"]);
    let mut first = open_stream(&stack, "cam-2", &token);
    // The hub has its frame, and leaves.
    let mut byte = [0u8; 1];
    first.read_exact(&mut byte).unwrap();
    drop(first);
    let (_again, refused) = stream_once_a_place_frees(&stack, "cam-2", &token);
    assert_eq!(limited(&stack, "streams_per_owner"), f64::from(refused));
}

// ---------------------------------------------------------------------------------------------
// 3. Negative caching and the owner's origin budget

/// A content address no camera ever produced.
fn missing_hash(n: u32) -> String {
    blake3::hash(format!("never captured {n}").as_bytes())
        .to_hex()
        .to_string()
}

/// Hash enumeration against the backend: an owner asks 50 times for a frame by a hash the origin
/// does not have. The origin is asked once; the other 49 are answered from the remembered 404
/// (`limits.not_found_ttl_ms`). It is remembered per owner: another owner asking for the same
/// hash makes its own origin request, once.
#[test]
fn an_origin_404_by_hash_is_remembered_per_owner() {
    let stack = Stack::with(|c| c.limits.not_found_ttl = Duration::from_secs(60), |_| {});
    let path = format!("/v1/cameras/cam-1/frames/{}", missing_hash(0));
    // owner-1 owns cam-1; owner-2 reads it, shared.
    for (owner, asks, origin_requests) in [("owner-1", 50, 1), ("owner-2", 10, 2)] {
        for _ in 0..asks {
            let reply = stack.get_as(owner, &["cam-1"], &path);
            assert_eq!(reply.status, 404, "{owner}: {}", reply.text());
            assert_eq!(reply.error_code(), "not_found");
        }
        assert_eq!(
            stack.origin_requests_for("cam-1"),
            origin_requests,
            "{owner}"
        );
    }
    assert_eq!(requests(&stack, "frame_by_hash", 404), 60.0);
}

/// Spending the backend for everyone: with `limits.owner_origin_rps` 2 (a burst of 4), an owner
/// asking for many frames the cache does not have is answered 429 with `Retry-After` once the
/// burst is spent, counted `owner_origin_rps`, and no origin request is made for those. What is
/// cached is still served to it, and another owner is served as usual.
#[test]
fn an_owner_past_its_origin_budget_gets_429() {
    let stack = Stack::with(
        |c| {
            c.limits.owner_origin_rps = 2;
            c.cache.latest_fresh = Duration::from_secs(60);
        },
        |_| {},
    );
    let latest = stack.get_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
    assert_eq!(latest.status, 200);
    let (mut not_found, mut too_many) = (0u64, 0u64);
    for n in 0..20 {
        let path = format!("/v1/cameras/cam-2/frames/{}", missing_hash(n));
        let reply = stack.get_as("owner-1", &["cam-2"], &path);
        match reply.status {
            404 => not_found += 1,
            429 => {
                assert_refusal(&reply, 429, "too_many_requests", "past the budget");
                assert!(retry_after(&reply) >= 1);
                too_many += 1;
            }
            other => panic!("{other}: {}", reply.text()),
        }
    }
    eprintln!("owner-1: {not_found} answered 404 by the origin, {too_many} refused 429");
    assert!(too_many >= 1, "the budget was never spent");
    assert!(
        not_found >= 3,
        "the burst of 4 (one spent on the latest frame) was not allowed"
    );
    // Every 404 came from the origin; no 429 did.
    assert_eq!(stack.origin_requests_for("cam-2"), 1 + not_found);
    assert_eq!(limited(&stack, "owner_origin_rps"), too_many as f64);

    // A cached frame costs no origin request: still served.
    let hit = stack.get_as("owner-1", &["cam-2"], "/v1/cameras/cam-2/frame");
    assert_eq!(hit.status, 200);
    assert_eq!(hit.header("cache-status"), Some("framecache; hit"));
    // Another owner's budget is its own.
    let other = stack.get_as("owner-2", &["cam-3"], "/v1/cameras/cam-3/frame");
    assert_eq!(other.status, 200, "{}", other.text());
    let path = format!("/v1/cameras/cam-3/frames/{}", missing_hash(0));
    assert_eq!(stack.get_as("owner-2", &["cam-3"], &path).status, 404);
    assert_eq!(limited(&stack, "owner_origin_rps"), too_many as f64);
}

// ---------------------------------------------------------------------------------------------
// 4. Refusals made while parsing

/// Request heads that could be read two ways (smuggling, cache poisoning) or that no hub sends:
/// each is refused before any route or token is looked at, in the JSON error format, without a
/// `Server` header, counted under route `other`, and none reaches the origin, though each names
/// a frame with a valid token.
#[test]
fn heads_refused_while_parsing_are_json_counted_and_never_reach_the_origin() {
    let stack = Stack::start();
    let auth = format!(
        "Authorization: Bearer {}",
        stack.token("owner-1", &["cam-1"])
    );
    let frame = "GET /v1/cameras/cam-1/frame HTTP/1.1";
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "duplicate Content-Length",
            format!("{frame}\r\nHost: h\r\n{auth}\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n"),
            400,
            "bad_request",
        ),
        (
            "Content-Length with Transfer-Encoding",
            format!(
                "{frame}\r\nHost: h\r\n{auth}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            400,
            "bad_request",
        ),
        (
            "HTTP/1.1 without Host",
            format!("{frame}\r\n{auth}\r\n\r\n"),
            400,
            "bad_request",
        ),
        (
            "a fragment in the target",
            format!("GET /v1/cameras/cam-1/frame#x HTTP/1.1\r\nHost: h\r\n{auth}\r\n\r\n"),
            400,
            "bad_request",
        ),
        (
            "bare LF line endings",
            format!("{frame}\nHost: h\n{auth}\n\n"),
            400,
            "bad_request",
        ),
        (
            "obs-fold",
            format!("{frame}\r\nHost: h\r\n{auth}\r\nX-Folded: a\r\n b\r\n\r\n"),
            400,
            "bad_request",
        ),
        (
            "CONNECT",
            format!("CONNECT cam-1:443 HTTP/1.1\r\nHost: cam-1:443\r\n{auth}\r\n\r\n"),
            405,
            "method_not_allowed",
        ),
    ];
    for (what, raw, status, code) in &cases {
        let reply = crate::common::exchange(stack.proxy.hub_addr, raw.as_bytes(), false);
        assert_refusal(&reply, *status, code, what);
        if *status == 405 {
            assert_eq!(reply.header("allow"), Some("GET, HEAD"), "{what}");
        }
    }
    assert_eq!(requests(&stack, "other", 400), 6.0);
    assert_eq!(requests(&stack, "other", 405), 1.0);
    assert_eq!(stack.origin_requests(), 0);
    // The same request, well formed, is served, also without a Server header.
    let reply = crate::common::exchange(
        stack.proxy.hub_addr,
        format!("{frame}\r\nHost: h\r\n{auth}\r\nConnection: close\r\n\r\n").as_bytes(),
        false,
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("server"), None);
}

/// Heads the edge's own check lets through but Pingora then refuses: a `Content-Length` too
/// large for any number, a `Transfer-Encoding` other than `chunked` (or two of them), an
/// absolute-form target, a `Host` with userinfo. Each must be refused like the others: 400 in
/// the JSON error format, no `Server` header, counted under route `other`.
#[test]
fn heads_pingora_would_refuse_are_refused_like_the_others() {
    let stack = Stack::start();
    let auth = format!(
        "Authorization: Bearer {}",
        stack.token("owner-1", &["cam-1"])
    );
    let frame = "GET /v1/cameras/cam-1/frame HTTP/1.1";
    let cases: Vec<(&str, String)> = vec![
        (
            "a Content-Length beyond any number",
            format!("{frame}\r\nHost: h\r\n{auth}\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
        ),
        (
            "Transfer-Encoding gzip",
            format!("{frame}\r\nHost: h\r\n{auth}\r\nTransfer-Encoding: gzip\r\n\r\n"),
        ),
        (
            "two Transfer-Encoding fields",
            format!(
                "{frame}\r\nHost: h\r\n{auth}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n"
            ),
        ),
        (
            "an absolute-form target",
            format!("GET http://other.example/v1/cameras/cam-1/frame HTTP/1.1\r\nHost: h\r\n{auth}\r\n\r\n"),
        ),
        (
            "a Host with userinfo",
            format!("{frame}\r\nHost: user@h\r\n{auth}\r\n\r\n"),
        ),
    ];
    let mut wrong = Vec::new();
    for (what, raw) in &cases {
        let reply = crate::common::exchange(stack.proxy.hub_addr, raw.as_bytes(), false);
        let json = reply.header("content-type") == Some("application/json");
        if reply.status != 400 || !json || reply.header("server").is_some() {
            wrong.push(format!(
                "{what}: {} content-type {:?} server {:?}",
                reply.status,
                reply.header("content-type"),
                reply.header("server")
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(requests(&stack, "other", 400), cases.len() as f64);
    assert_eq!(stack.origin_requests(), 0);
}

// ---------------------------------------------------------------------------------------------
// 5. Revocation during stale-while-revalidate

/// Revocation racing stale-while-revalidate: owner-2's frame of cam-1 (a camera shared with it)
/// is cached (`cache.latest_fresh_ms` 300, `stale_while_revalidate_ms` 1000); then the backend
/// stops sharing cam-1 with owner-2, and answers 403. The first request after the frame has gone
/// stale may still get the copy (answered at once while the background refresh asks the
/// origin), but once that refresh has been refused owner-2 gets the frame no more: not latest,
/// not by hash, not as stale-if-error when the origin then fails.
#[test]
fn a_share_revoked_during_stale_while_revalidate_ends_with_the_refused_refresh() {
    let status = Arc::new(Mutex::new(200u16));
    let origin = {
        let status = status.clone();
        RawOrigin::start(64, move |seen| {
            Answer::Send(match *status.lock().unwrap() {
                200 => signed_frame(seen, ""),
                403 => b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".to_vec(),
                _ => b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".to_vec(),
            })
        })
    };
    let addr = origin.addr;
    let stack = Stack::with(
        |c| {
            c.origin.addresses = vec![addr];
            c.cache.latest_fresh = Duration::from_millis(300);
            c.cache.stale_while_revalidate = Duration::from_secs(1);
            c.cache.stale_if_error = Duration::from_secs(60);
        },
        |_| {},
    );
    let ask = |path: &str| stack.get_as("owner-2", &["cam-1"], path);
    let latest = "/v1/cameras/cam-1/frame";
    let first = ask(latest);
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.body, raw_body("cam-1"));
    let by_hash = first
        .header("content-location")
        .expect("a Content-Location")
        .to_string();

    *status.lock().unwrap() = 403;
    // While fresh, the copy is served without asking the origin; then comes the first request
    // after it went stale.
    let deadline = Instant::now() + Duration::from_secs(10);
    let stale = loop {
        let reply = ask(latest);
        if reply.header("cache-status") != Some("framecache; hit") {
            break reply;
        }
        assert_eq!(reply.body, first.body);
        assert!(Instant::now() < deadline, "the frame never went stale");
    };
    match stale.status {
        // Within stale-while-revalidate: the copy, while the refresh asks the origin.
        200 => {
            assert_eq!(
                stale.header("cache-status"),
                Some("framecache; hit; detail=revalidating")
            );
            assert_eq!(stale.body, first.body);
        }
        // This machine was slow enough to miss the window: the origin was asked at once.
        403 => {}
        other => panic!("{other}: {}", stale.text()),
    }
    wait_until("the origin's 403 has been taken in", || {
        origin.requests() == 2 && stack.cache().flights() == 0
    });
    // A 403 is an answer the proxy accepts: counted as such.
    assert_eq!(
        stack.metric(r#"framecache_origin_requests_total{outcome="ok"}"#),
        2.0
    );

    for _ in 0..3 {
        let reply = ask(latest);
        assert_refusal(&reply, 403, "forbidden", "latest after the revocation");
    }
    let reply = ask(&by_hash);
    assert_refusal(&reply, 403, "forbidden", "by hash after the revocation");
    // The origin fails: nothing of owner-2's cam-1 is left to be served stale.
    *status.lock().unwrap() = 503;
    let reply = ask(latest);
    assert_eq!(
        reply.status,
        502,
        "stale-if-error after the revocation: {:?}",
        reply.header("cache-status")
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Connections

/// A new connection from `from` (a loopback address) to the hub listener.
fn connect_from(addr: SocketAddr, from: [u8; 4]) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.into()
}

/// Asks for a frame on a new connection from `from`: the connection, kept alive, when it was
/// served; `None` when it was closed without an answer.
fn served_from(stack: &Stack, from: [u8; 4], token: &str) -> Option<TcpStream> {
    let mut conn = connect_from(stack.proxy.hub_addr, from);
    if conn
        .write_all(get_head("/v1/cameras/cam-2/frame", token).as_bytes())
        .is_err()
    {
        return None;
    }
    match read_reply(&mut conn) {
        Outcome::Answered(reply) => {
            assert_eq!(reply.status, 200, "{}", reply.text());
            Some(conn)
        }
        Outcome::Closed => None,
    }
}

/// Asks on new connections from `from` until one is served (a place is given back once the
/// proxy has seen a connection close); returns it and how many were refused meanwhile.
fn served_once_a_place_frees(stack: &Stack, from: [u8; 4], token: &str) -> (TcpStream, u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut refused = 0;
    loop {
        if let Some(conn) = served_from(stack, from, token) {
            return (conn, refused);
        }
        refused += 1;
        assert!(
            Instant::now() < deadline,
            "no place was given back ({refused} refusals)"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// `framecache_connections_refused_total` of `reason`.
fn refused(stack: &Stack, reason: &str) -> f64 {
    stack.metric(&format!(
        r#"framecache_connections_refused_total{{reason="{reason}"}}"#
    ))
}

const HOME: [u8; 4] = [127, 0, 0, 1];
const ELSEWHERE: [u8; 4] = [127, 0, 0, 2];

/// Connection hoarding from one address: with `limits.max_connections_per_ip` 2, a third
/// connection from 127.0.0.1 while two are open is closed without an answer and counted
/// `per_ip`; another address is still served; once one of the two closes, a new one is served.
#[test]
fn connections_from_one_address_are_bounded() {
    let stack = Stack::with(|c| c.limits.max_connections_per_ip = 2, |_| {});
    let token = stack.token("owner-1", &["cam-2"]);
    let first = served_from(&stack, HOME, &token).expect("the first connection is served");
    let _second = served_from(&stack, HOME, &token).expect("the second connection is served");
    assert!(
        served_from(&stack, HOME, &token).is_none(),
        "a third connection from the same address was served"
    );
    assert_eq!(refused(&stack, "per_ip"), 1.0);
    let _elsewhere = served_from(&stack, ELSEWHERE, &token).expect("another address is served");

    drop(first);
    let (_again, meanwhile) = served_once_a_place_frees(&stack, HOME, &token);
    assert_eq!(refused(&stack, "per_ip"), 1.0 + f64::from(meanwhile));
    assert_eq!(refused(&stack, "max_connections"), 0.0);
}

/// Connection hoarding from many addresses: with `limits.max_connections` 2, a third connection
/// from any address while two are open is closed without an answer and counted
/// `max_connections`; once one of the two closes, a new one is served.
#[test]
fn connections_in_all_are_bounded() {
    let stack = Stack::with(|c| c.limits.max_connections = 2, |_| {});
    let token = stack.token("owner-1", &["cam-2"]);
    let first = served_from(&stack, HOME, &token).expect("the first connection is served");
    let _second = served_from(&stack, ELSEWHERE, &token).expect("the second connection is served");
    for from in [HOME, ELSEWHERE, [127, 0, 0, 3]] {
        assert!(
            served_from(&stack, from, &token).is_none(),
            "a third connection, from {from:?}, was served"
        );
    }
    assert_eq!(refused(&stack, "max_connections"), 3.0);

    drop(first);
    let (_again, meanwhile) = served_once_a_place_frees(&stack, [127, 0, 0, 3], &token);
    assert_eq!(
        refused(&stack, "max_connections"),
        3.0 + f64::from(meanwhile)
    );
    assert_eq!(refused(&stack, "per_ip"), 0.0);
}

// ---------------------------------------------------------------------------------------------
// 7. Tokens

/// A token with a `crit` header (RFC 7515 §4.1.11): the extensions it lists must be understood
/// or the token refused, and this proxy understands none. Validly signed, it gets 401 and is
/// counted `malformed`; the same claims without it are served.
#[test]
fn a_token_with_a_crit_header_is_refused() {
    let stack = Stack::start();
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = serde_json::json!({
        "sub": "owner-1", "cams": ["cam-2"], "aud": "framecache", "exp": exp,
    });
    let key = EncodingKey::from_secret(HUB_SECRET);
    let sign = |header: &Header| jsonwebtoken::encode(header, &claims, &key).unwrap();
    let crit = sign(&Header {
        crit: Some(vec!["exp".to_string()]),
        ..Header::new(Algorithm::HS256)
    });
    let plain = sign(&Header::new(Algorithm::HS256));
    let ask = |token: &str| {
        stack.get(
            "/v1/cameras/cam-2/frame",
            &[("Authorization", &format!("Bearer {token}"))],
        )
    };
    let malformed = || stack.metric(r#"framecache_auth_failures_total{reason="malformed"}"#);

    let reply = ask(&crit);
    assert_refusal(&reply, 401, "invalid_token", "a crit token");
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token""#)
    );
    assert_eq!(malformed(), 1.0);
    assert_eq!(stack.origin_requests(), 0);

    assert_eq!(ask(&plain).status, 200);
    // Refused again: a refused token is not remembered as verified, whatever was served since.
    assert_eq!(ask(&crit).status, 401);
    assert_eq!(malformed(), 2.0);
}
