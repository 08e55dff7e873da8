//! Hub connections before the proxy sees a request: admission, and every HTTP/1.1 request head
//! read under the edge's limits.
//!
//! [`HubApp`] wraps Pingora's HTTP application (the proxy) as a `ServerApp`. The hub listeners
//! ask it to admit each connection ([`HubApp::admit`]: `limits.max_connections`, and
//! `limits.max_connections_per_ip` from its address) and, on the TLS listener, to complete the
//! handshake within the head time ([`HubApp::handshake`], counted in
//! `framecache_tls_handshakes_total`). An HTTP/2 connection (ALPN `h2`, or h2c with prior
//! knowledge when `server.h2` is on) goes to Pingora's own HTTP/2 server, each of its streams
//! authorised on its own. For HTTP/1.1 it runs Pingora's keep-alive loop with one change: each
//! request head is read here first, all of it within `limits.header_bytes` and
//! `limits.header_timeout_ms` (a trickle of bytes does not extend the time), checked, and only
//! then handed to Pingora whole (`ServerSession::set_pipelined_prefix`), so Pingora never reads
//! a head from the socket.
//!
//! Why not Pingora's own loop: Pingora 0.9 accepts heads up to 1 MiB, restarts its read timeout
//! on every byte, parses a growing head again on every read, and answers a malformed head itself
//! (an empty 400 with `Server: Pingora`, before any hook of the proxy runs, so it is neither
//! counted nor logged). The loop kept here is the ~20 lines of pingora-core's
//! `impl ServerApp for HttpServerApp` (`apps/mod.rs`), HTTP/1 branch; re-read it when Pingora
//! is upgraded. Every refusal made here is answered in the JSON error format, counted in
//! `framecache_requests_total{route="other"}` and logged without the offending bytes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::listeners::tls::Acceptor;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as TcpConnection;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout, timeout_at, Instant};

use crate::config::LimitsConfig;
use crate::delivery::error_body;
use crate::hub_listener::tls_socket;
use crate::limit::{Admission, Admitted, Limit};
use crate::metrics::{HubProtocol, Metrics};
use crate::request::RouteLabel;

/// The proxy's HTTP application behind admission and the head reader.
pub struct HubApp<A> {
    proxy: Arc<A>,
    admission: Arc<Admission>,
    heads: HeadLimits,
    /// How long a kept-alive connection may wait for its next request.
    idle_timeout: Duration,
    /// h2c with prior knowledge on plaintext connections (`server.h2`).
    h2c: bool,
    metrics: Arc<Metrics>,
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a request head may be.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Largest head, request line to the empty line, in bytes.
    pub bytes: usize,
    /// The whole head must arrive within this, counted from the connection's accept for its
    /// first request and from the first byte for the next ones.
    pub time: Duration,
}

impl<A> HubApp<A> {
    pub fn new(
        proxy: A,
        limits: &LimitsConfig,
        idle_timeout: Duration,
        h2c: bool,
        metrics: Arc<Metrics>,
    ) -> HubApp<A> {
        HubApp {
            proxy: Arc::new(proxy),
            admission: Arc::new(Admission::new(
                limits.max_connections,
                limits.max_connections_per_ip,
            )),
            heads: HeadLimits {
                bytes: limits.header_bytes,
                time: limits.header_timeout,
            },
            idle_timeout,
            h2c,
            metrics,
        }
    }

    /// Admits a connection from `ip`, or counts why not (the listener then closes it).
    pub fn admit(&self, ip: IpAddr) -> Option<Admitted> {
        self.admission
            .admit(Some(ip))
            .map_err(|refused| self.metrics.record_refused(refused))
            .ok()
    }

    /// Completes the TLS handshake of an accepted connection within the head time, counted as
    /// ok or failed (a plaintext request or garbage on the TLS port fails here and never
    /// reaches the proxy).
    pub async fn handshake(
        &self,
        acceptor: &Acceptor,
        tcp: tokio::net::TcpStream,
        peer: SocketAddr,
    ) -> std::io::Result<Stream> {
        let socket = tls_socket(tcp, peer)?;
        let handshake = timeout(self.heads.time, acceptor.tls_handshake(socket)).await;
        let ok = matches!(handshake, Ok(Ok(_)));
        self.metrics.record_handshake(ok);
        match handshake {
            Ok(Ok(stream)) => Ok(Box::new(stream)),
            Ok(Err(e)) => Err(std::io::Error::other(e.to_string())),
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for HubApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let tls = stream.get_ssl_digest().is_some();
        if tls && matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            let _open = self.metrics.hub_connection(tls, HubProtocol::H2);
            return self.proxy.process_new(stream, shutdown).await;
        }
        let mut open = None;
        let mut persisted = None;
        let mut first = true;
        loop {
            // The first request's head is due within the head time of the accept; a kept-alive
            // connection may idle between requests.
            let idle = if first { None } else { Some(self.idle_timeout) };
            let h2c = self.h2c && first && !tls;
            let head = match read_head(&mut stream, self.heads, idle, h2c, shutdown).await {
                Head::Ready(head) => head,
                Head::H2c(preface) => {
                    let _open = self.metrics.hub_connection(tls, HubProtocol::H2);
                    let stream = rewound(stream, &preface)?;
                    return self.proxy.process_new(stream, shutdown).await;
                }
                Head::Closed => return None,
                Head::Refused(refusal) => {
                    self.refuse(stream, refusal).await;
                    return None;
                }
            };
            if open.is_none() {
                open = Some(self.metrics.hub_connection(tls, HubProtocol::Http1));
            }
            let mut session = ServerSession::new_http1(stream);
            match persisted.take() {
                Some(settings) => {
                    pingora::apps::HttpPersistentSettings::apply_to_session(settings, &mut session)
                }
                None if *shutdown.borrow() => session.set_keepalive(None),
                None => session.set_keepalive(Some(self.idle_timeout.as_secs())),
            }
            session.set_pipelined_prefix(head);
            let reused = self.proxy.process_new_http(session, shutdown).await?;
            (stream, persisted) = reused.consume();
            first = false;
        }
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

impl<A> HubApp<A> {
    /// Answers a refused head and closes the connection.
    async fn refuse(&self, mut stream: Stream, refusal: Refusal) {
        let (status, code, message) = refusal.answer();
        let status_text = status.to_string();
        self.metrics
            .hub
            .requests
            .with_label_values(&[RouteLabel::Other.as_str(), &status_text])
            .inc();
        match refusal {
            Refusal::TooLarge => self.metrics.record_limited(Limit::HeaderBytes),
            Refusal::TimedOut => self.metrics.record_limited(Limit::HeaderTimeout),
            _ => {}
        }
        tracing::info!(status, code, reason = message, "request head refused");
        let response = refusal_bytes(status, code, message);
        // Best effort, briefly: a client that sent a bad head may not read either.
        let _ = timeout(Duration::from_secs(2), async {
            stream.write_all(&response).await?;
            stream.flush().await?;
            stream.shutdown().await?;
            // Read (and drop) what the client still sends for a moment, so that closing does not
            // reset the connection before it has read the answer.
            let mut sink = [0u8; 4096];
            let mut drained = 0;
            while drained < 64 * 1024 {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
            std::io::Result::Ok(())
        })
        .await;
    }
}

/// `stream` with `read` put back in front of what is still to be read, for Pingora's HTTP/2
/// server to find the preface (only plaintext connections, Pingora's own socket type, come
/// here).
fn rewound(stream: Stream, read: &[u8]) -> Option<Stream> {
    let mut stream = match stream.into_any().downcast::<TcpConnection>() {
        Ok(stream) => stream,
        Err(_) => {
            tracing::warn!("h2c on a connection that cannot be rewound: closed");
            return None;
        }
    };
    stream.rewind(read);
    Some(stream)
}

/// How reading a head ended.
#[derive(Debug)]
enum Head {
    /// The whole head, and whatever followed it in the same reads.
    Ready(BytesMut),
    /// The HTTP/2 connection preface (h2c with prior knowledge), and what followed it.
    H2c(BytesMut),
    /// The connection closed, idled out or the server is shutting down, with no head begun.
    Closed,
    Refused(Refusal),
}

/// Why a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Larger than `limits.header_bytes`, or more header fields than parsed at most: 431.
    TooLarge,
    /// Not all there within `limits.header_timeout_ms`: 408.
    TimedOut,
    /// Not a well-formed HTTP/1.x request head: 400, with why.
    Malformed(&'static str),
    /// A method no hub path allows (`CONNECT`): 405.
    Method,
}

impl Refusal {
    /// Status, error code and message.
    fn answer(&self) -> (u16, &'static str, &'static str) {
        match self {
            Refusal::TooLarge => (
                431,
                "request_header_fields_too_large",
                "the request head is larger than this edge accepts",
            ),
            Refusal::TimedOut => (
                408,
                "request_timeout",
                "the request head did not arrive in time",
            ),
            Refusal::Malformed(why) => (400, "bad_request", why),
            Refusal::Method => (405, "method_not_allowed", "use GET, HEAD"),
        }
    }
}

/// The bytes of a refusal: the JSON error, and `Connection: close`.
fn refusal_bytes(status: u16, code: &str, message: &str) -> Vec<u8> {
    let body = error_body(code, message);
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let allow = if status == 405 {
        "allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nx-content-type-options: nosniff\r\ndate: {date}\r\n{allow}connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Reads one request head from `stream`. `idle`: how long to wait for its first byte on a
/// kept-alive connection (`None`: the first request, whose whole head is due within the head
/// time). The head is looked at only when its end may have arrived, so a head sent a byte at a
/// time costs no more than one sent at once.
async fn read_head(
    stream: &mut Stream,
    limits: HeadLimits,
    idle: Option<Duration>,
    h2c: bool,
    shutdown: &ShutdownWatch,
) -> Head {
    let mut buf = BytesMut::with_capacity(4096.min(limits.bytes + 1));
    let mut deadline = Instant::now() + limits.time;
    if let Some(idle) = idle {
        let mut shutdown = shutdown.clone();
        let first = tokio::select! {
            read = timeout(idle, stream.read_buf(&mut buf)) => read,
            _ = shutdown.changed() => return Head::Closed,
        };
        match first {
            Ok(Ok(n)) if n > 0 => deadline = Instant::now() + limits.time,
            _ => return Head::Closed,
        }
    }
    // Where the search for the head's end resumes.
    let mut searched = 0;
    loop {
        // With h2c, a connection whose bytes so far are the start of the HTTP/2 preface is
        // HTTP/2 once all of it is there.
        let preface = buf.len().min(H2_PREFACE.len());
        let maybe_h2 = h2c && buf[..preface] == H2_PREFACE[..preface];
        if maybe_h2 && preface == H2_PREFACE.len() {
            return Head::H2c(buf);
        }
        if !maybe_h2 {
            // The head's own bytes only: a body may follow it in the same read.
            if let Some(end) = head_end(&buf, searched) {
                return match check(&buf[..end], limits) {
                    Ok(()) => Head::Ready(buf),
                    Err(refusal) => Head::Refused(refusal),
                };
            }
            if has_bare_lf(&buf, searched) {
                return Head::Refused(Refusal::Malformed("lines must end in CRLF"));
            }
        }
        if buf.len() > limits.bytes {
            return Head::Refused(Refusal::TooLarge);
        }
        searched = buf.len().saturating_sub(3);
        let room = limits.bytes + 1 - buf.len();
        let mut limited = (&mut *stream).take(room as u64);
        match timeout_at(deadline, limited.read_buf(&mut buf)).await {
            Err(_) if buf.is_empty() => return Head::Closed,
            Err(_) => return Head::Refused(Refusal::TimedOut),
            Ok(Ok(0)) | Ok(Err(_)) => return Head::Closed,
            Ok(Ok(_)) => {}
        }
    }
}

/// Where the head in `buf` ends (just past its empty line), looking from `from`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let from = from.min(buf.len());
    buf[from..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| from + i + 4)
}

/// Whether `buf`, from `from` on, has a line feed without a carriage return before it (RFC 9112
/// lets a server refuse those; accepting them is how heads get read two ways).
fn has_bare_lf(buf: &[u8], from: usize) -> bool {
    let from = from.min(buf.len());
    buf.iter()
        .enumerate()
        .skip(from)
        .any(|(i, &b)| b == b'\n' && (i == 0 || buf[i - 1] != b'\r'))
}

/// Header fields parsed at most; more is a head too large.
const MAX_FIELDS: usize = 128;

/// Checks a whole head: RFC 9112's grammar with CRLF line endings, `Host` on HTTP/1.1, no
/// fragment in the target, and body framing that cannot be read two ways.
fn check(head: &[u8], limits: HeadLimits) -> Result<(), Refusal> {
    use Refusal::Malformed;

    if head.len() > limits.bytes {
        return Err(Refusal::TooLarge);
    }
    if has_bare_lf(head, 0) {
        return Err(Malformed("lines must end in CRLF"));
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Malformed("incomplete request head")),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
        Err(_) => return Err(Malformed("malformed request head")),
    }
    if req.method == Some("CONNECT") {
        return Err(Refusal::Method);
    }
    if req.path.is_some_and(|p| p.contains('#')) {
        return Err(Malformed(
            "a fragment (#) is not allowed in the request target",
        ));
    }
    if req.path.is_some_and(|p| !p.starts_with('/')) {
        return Err(Malformed("the request target must be a path (origin-form)"));
    }
    let headers = &*req.headers;
    let named = |name: &'static str| {
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
    };
    match (req.version, named("host").count()) {
        (Some(1), 0) => return Err(Malformed("HTTP/1.1 requests must carry Host")),
        (_, n) if n > 1 => return Err(Malformed("more than one Host")),
        _ => {}
    }
    if named("host").any(|h| h.value.contains(&b'@')) {
        return Err(Malformed("Host must not carry user information"));
    }
    let lengths: Vec<&[u8]> = named("content-length").map(|h| h.value).collect();
    if lengths.len() > 1 {
        return Err(Malformed("more than one Content-Length"));
    }
    let length = |v: &[u8]| std::str::from_utf8(v).ok()?.parse::<u64>().ok();
    if lengths
        .first()
        .is_some_and(|v| !v.iter().all(u8::is_ascii_digit) || length(v).is_none())
    {
        return Err(Malformed("Content-Length must be a number of bytes"));
    }
    let codings: Vec<&[u8]> = named("transfer-encoding").map(|h| h.value).collect();
    if codings.len() > 1 {
        return Err(Malformed("more than one Transfer-Encoding"));
    }
    if codings
        .first()
        .is_some_and(|v| !v.trim_ascii().eq_ignore_ascii_case(b"chunked"))
    {
        return Err(Malformed("the only Transfer-Encoding taken is chunked"));
    }
    if !codings.is_empty() {
        if req.version == Some(0) {
            return Err(Malformed("Transfer-Encoding is not allowed in HTTP/1.0"));
        }
        if !lengths.is_empty() {
            return Err(Malformed("both Content-Length and Transfer-Encoding"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        bytes: 16 * 1024,
        time: Duration::from_secs(10),
    };

    fn checked(head: &str) -> Result<(), Refusal> {
        let bytes = head.as_bytes();
        if has_bare_lf(bytes, 0) {
            return Err(Refusal::Malformed("bare LF"));
        }
        let end = head_end(bytes, 0).expect("a whole head");
        check(&bytes[..end], LIMITS)
    }

    #[test]
    fn good_heads_pass() {
        assert_eq!(
            checked("GET /v1/cameras/cam-1/frame HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(())
        );
        assert_eq!(checked("GET / HTTP/1.0\r\n\r\n"), Ok(()));
        assert_eq!(
            checked("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"),
            Ok(())
        );
        assert_eq!(
            checked("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok(())
        );
    }

    #[test]
    fn hostile_heads_are_refused() {
        let malformed = |head: &str| matches!(checked(head), Err(Refusal::Malformed(_)));
        for head in [
            "GET / HTTP/1.1\nHost: a\n\n",
            "GET / HTTP/1.1\r\nHost: a\n\r\n",
            "GET /v1/cameras/cam-1/frame#x HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
            "GET / HTTP/9.9\r\nHost: a\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET http://other.example/v1/cameras/cam-1/frame HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: user@h\r\n\r\n",
        ] {
            assert!(malformed(head), "{head:?} → {:?}", checked(head));
        }
        assert_eq!(
            checked("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Err(Refusal::Method)
        );
        let many: String = (0..MAX_FIELDS + 1)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        assert_eq!(
            checked(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")),
            Err(Refusal::TooLarge)
        );
    }

    #[test]
    fn the_head_end_is_found_across_reads() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody";
        assert_eq!(head_end(head, 0), Some(27));
        // Resumed three bytes before the end of what had arrived: a terminator split across
        // two reads is found.
        assert_eq!(head_end(head, 26 - 3), Some(27));
        assert_eq!(head_end(&head[..26], 0), None);
        assert!(has_bare_lf(b"GET / HTTP/1.1\nHost: a\n\n", 0));
        assert!(has_bare_lf(b"\n", 0));
        assert!(!has_bare_lf(head, 0));
        // The byte before `from` still counts: a CRLF split across reads is not bare.
        assert!(!has_bare_lf(b"GET / HTTP/1.1\r\n", 15));
    }

    #[test]
    fn refusals_are_json_and_close() {
        let bytes = refusal_bytes(431, "request_header_fields_too_large", "too large");
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{text}"
        );
        assert!(text.contains("connection: close\r\n"));
        assert!(!text.to_ascii_lowercase().contains("server:"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "request_header_fields_too_large");
    }
}
