//! The edge under hostile load (SPEC Part 2, "Limits"). Each test is one attack, scaled down to
//! run in seconds, and asserts what the attacker gets (status, JSON error, headers), what the
//! scrape counts and, where memory is the point, what the process holds.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::common::{in_own_process, parse_reply, Reply, Stack};

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
