//! HTTP/1.1 by hand, over a plain `TcpStream`.
//!
//! camsim has to misbehave precisely: cut a body short under a full `Content-Length`, reset a
//! connection mid-body, hang, throttle. An HTTP library would not let it, so requests are parsed
//! with `httparse` and responses are written byte by byte. Connections are kept alive (HTTP/1.1
//! default, `Connection: close` honoured); a request head is bounded to 16 KiB and a request
//! body to 64 KiB.

use std::io;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Largest request head (request line and headers).
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest request body (`PUT /control/faults`).
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;

/// What becomes of the connection after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The answer is complete; the next request may follow if the client keeps the connection.
    Open,
    /// Close gracefully (FIN).
    Close,
    /// Drop at once (after a reset has been arranged).
    Abort,
}

/// One parsed request.
#[derive(Debug)]
pub(crate) struct Request {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Names lower-cased.
    headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
    /// Whether the client wants the connection kept open after this exchange.
    pub keep_alive: bool,
}

impl Request {
    /// The first header named `name` (lower-case), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Why no request could be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("connection closed")]
    Closed,
    #[error("request head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("request body larger than {MAX_BODY_BYTES} bytes")]
    BodyTooLarge,
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("chunked request bodies are not supported")]
    Chunked,
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl ReadError {
    /// The answer owed to the client before closing, if any.
    pub fn response(&self) -> Option<Response> {
        let status = match self {
            ReadError::Closed | ReadError::Io(_) => return None,
            ReadError::HeadTooLarge => 431,
            ReadError::BodyTooLarge => 413,
            ReadError::Malformed(_) => 400,
            ReadError::Chunked => 501,
        };
        Some(Response::text(status, &self.to_string()))
    }
}

/// Reads one request. `buf` carries bytes already read past the previous request.
pub(crate) async fn read_request(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
) -> Result<Request, ReadError> {
    let (head_len, mut request, content_length, expect_continue) = loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Request::new(&mut headers);
            match parsed.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let (request, length, expect) = build(&parsed)?;
                    break (len, request, length, expect);
                }
                Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
                    return Err(ReadError::HeadTooLarge)
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => return Err(ReadError::HeadTooLarge),
                Err(e) => return Err(ReadError::Malformed(e.to_string())),
            }
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(if buf.is_empty() {
                ReadError::Closed
            } else {
                ReadError::Malformed("connection closed mid-request".to_owned())
            });
        }
    };
    if head_len > MAX_HEAD_BYTES {
        return Err(ReadError::HeadTooLarge);
    }
    buf.advance(head_len);
    if content_length > 0 && expect_continue && buf.is_empty() {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    while buf.len() < content_length {
        if stream.read_buf(buf).await? == 0 {
            return Err(ReadError::Malformed(
                "connection closed mid-body".to_owned(),
            ));
        }
    }
    request.body = buf.split_to(content_length).freeze();
    Ok(request)
}

/// The request, its body length, and whether it expects `100 Continue`.
fn build(parsed: &httparse::Request<'_, '_>) -> Result<(Request, usize, bool), ReadError> {
    let malformed = |what: &str| ReadError::Malformed(what.to_owned());
    let method = parsed.method.ok_or_else(|| malformed("no method"))?;
    let target = parsed.path.ok_or_else(|| malformed("no target"))?;
    let version = parsed.version.ok_or_else(|| malformed("no version"))?;
    let headers: Vec<(String, Vec<u8>)> = parsed
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect();
    let mut content_length = None;
    let mut close = version == 0;
    let mut expect_continue = false;
    for (name, value) in &headers {
        let text = std::str::from_utf8(value).unwrap_or("");
        match name.as_str() {
            "content-length" => {
                let length: usize = text
                    .trim()
                    .parse()
                    .map_err(|_| malformed("bad content-length"))?;
                if content_length.is_some_and(|l| l != length) {
                    return Err(malformed("conflicting content-length headers"));
                }
                content_length = Some(length);
            }
            "transfer-encoding" => return Err(ReadError::Chunked),
            "connection" => {
                for token in text.split(',').map(str::trim) {
                    if token.eq_ignore_ascii_case("close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case("keep-alive") {
                        close = false;
                    }
                }
            }
            "expect" => expect_continue = text.trim().eq_ignore_ascii_case("100-continue"),
            _ => {}
        }
    }
    let content_length = content_length.unwrap_or(0);
    if content_length > MAX_BODY_BYTES {
        return Err(ReadError::BodyTooLarge);
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (target, None),
    };
    let request = Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query,
        headers,
        body: Bytes::new(),
        keep_alive: !close,
    };
    Ok((request, content_length, expect_continue))
}

/// A complete answer with a small body (errors, control endpoints).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl Response {
    pub fn text(status: u16, message: &str) -> Self {
        Response {
            status,
            headers: vec![("Content-Type", "text/plain; charset=utf-8".to_owned())],
            body: Bytes::from(format!("{message}\n")),
        }
    }

    pub fn json(status: u16, value: &impl serde::Serialize) -> Self {
        match serde_json::to_vec_pretty(value) {
            Ok(mut body) => {
                body.push(b'\n');
                Response {
                    status,
                    headers: vec![("Content-Type", "application/json".to_owned())],
                    body: Bytes::from(body),
                }
            }
            Err(e) => Response::text(500, &format!("cannot encode json: {e}")),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Writes the whole answer; the body is left out for HEAD.
    pub async fn send(
        &self,
        stream: &mut TcpStream,
        head_only: bool,
        close: bool,
    ) -> io::Result<()> {
        let head = head(self.status, &self.headers, self.body.len(), close);
        stream.write_all(&head).await?;
        if !head_only {
            stream.write_all(&self.body).await?;
        }
        stream.flush().await
    }
}

/// A response head: status line, the given headers, `Content-Length`, and `Connection: close`
/// when the connection ends after this answer.
pub(crate) fn head(
    status: u16,
    headers: &[(&'static str, String)],
    content_length: usize,
    close: bool,
) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\nServer: camsim\r\n", reason(status));
    for (name, value) in headers {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str(&format!("Content-Length: {content_length}\r\n"));
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Writes `body`, paced to `bytes_per_sec` when given.
pub(crate) async fn write_body(
    stream: &mut TcpStream,
    body: &[u8],
    bytes_per_sec: Option<u64>,
) -> io::Result<()> {
    let Some(rate) = bytes_per_sec.filter(|r| *r > 0) else {
        stream.write_all(body).await?;
        return stream.flush().await;
    };
    // About 20 writes a second, each followed by a pause that keeps the average at `rate`.
    let chunk = usize::try_from(rate / 20)
        .unwrap_or(usize::MAX)
        .clamp(1, 64 * 1024);
    let start = Instant::now();
    let mut sent = 0u64;
    for piece in body.chunks(chunk) {
        stream.write_all(piece).await?;
        stream.flush().await?;
        sent += piece.len() as u64;
        tokio::time::sleep_until(start + Duration::from_secs_f64(sent as f64 / rate as f64)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<(Request, usize, bool), ReadError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(raw.as_bytes()) {
            Ok(httparse::Status::Complete(_)) => build(&parsed),
            other => panic!("not a complete request: {other:?}"),
        }
    }

    #[test]
    fn keep_alive_follows_version_and_connection_header() {
        let (r, ..) = parse("GET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert!(r.keep_alive);
        assert_eq!((r.path.as_str(), r.query.as_deref()), ("/a", Some("b=c")));
        let (r, ..) = parse("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").unwrap();
        assert!(!r.keep_alive);
        let (r, ..) = parse("GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!r.keep_alive);
        let (r, ..) = parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        assert!(r.keep_alive);
    }

    #[test]
    fn bodies_are_bounded_and_must_be_plain() {
        let (_, length, expect) =
            parse("PUT / HTTP/1.1\r\nContent-Length: 12\r\nExpect: 100-continue\r\n\r\n").unwrap();
        assert_eq!((length, expect), (12, true));
        let too_big = format!(
            "PUT / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        assert!(matches!(parse(&too_big), Err(ReadError::BodyTooLarge)));
        let chunked = "PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(parse(chunked), Err(ReadError::Chunked)));
        let conflicting = "PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert!(matches!(parse(conflicting), Err(ReadError::Malformed(_))));
    }

    #[test]
    fn heads_carry_length_and_close() {
        let head = head(503, &[("Content-Type", "text/plain".to_owned())], 5, true);
        let text = String::from_utf8(head).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(text.contains("\r\nContent-Length: 5\r\n"));
        assert!(text.ends_with("Connection: close\r\n\r\n"));
    }
}
