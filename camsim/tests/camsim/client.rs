//! A small raw HTTP/1.1 client, so tests see exactly what camsim puts on the wire: short bodies,
//! resets and silences included.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound for any single wait on camsim; reaching it fails the test.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// How a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// All `Content-Length` bytes arrived.
    Complete,
    /// The server closed (FIN) before all bytes arrived.
    Eof,
    /// The connection was reset before all bytes arrived.
    Reset,
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub end: End,
}

impl Reply {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn content_length(&self) -> usize {
        self.header("content-length")
            .and_then(|v| v.parse().ok())
            .expect("a Content-Length header")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("json: {e}: {}", self.text()))
    }
}

pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect to camsim");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send request");
    }

    pub async fn send(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) {
        let mut request = format!("{method} {target} HTTP/1.1\r\nHost: camsim\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() || matches!(method, "PUT" | "POST") {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body);
        self.send_raw(&bytes).await;
    }

    /// Reads one response. `Err` when no complete head arrived (the error says how the
    /// connection ended: `UnexpectedEof` or `ConnectionReset`).
    pub async fn receive(&mut self, head_request: bool) -> io::Result<Reply> {
        tokio::time::timeout(PATIENCE, self.receive_now(head_request))
            .await
            .expect("camsim answered in time")
    }

    async fn receive_now(&mut self, head_request: bool) -> io::Result<Reply> {
        let head_len = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at + 4;
            }
            match self.fill().await? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                _ => continue,
            }
        };
        let head = String::from_utf8(self.buf[..head_len].to_vec()).expect("utf-8 head");
        self.buf.drain(..head_len);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (name, value) = l.split_once(':').expect("header line");
                (name.trim().to_owned(), value.trim().to_owned())
            })
            .collect();
        let mut reply = Reply {
            status,
            headers,
            body: Vec::new(),
            end: End::Complete,
        };
        let wanted = if head_request {
            0
        } else {
            reply.content_length()
        };
        while self.buf.len() < wanted {
            match self.fill().await {
                Ok(0) => {
                    reply.end = End::Eof;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    reply.end = End::Reset;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let take = wanted.min(self.buf.len());
        reply.body = self.buf.drain(..take).collect();
        Ok(reply)
    }

    /// Sends a request and reads its response, which must have a complete head.
    pub async fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        self.send(method, target, headers, body).await;
        self.receive(method == "HEAD")
            .await
            .expect("a response head")
    }

    /// Waits for the server to end the connection: `Ok(())` on a clean close after no further
    /// bytes, the error otherwise.
    pub async fn closed(&mut self) -> io::Result<()> {
        let mut rest = Vec::new();
        let read = self.stream.read_to_end(&mut rest);
        let result = tokio::time::timeout(PATIENCE, read)
            .await
            .expect("camsim closed in time");
        assert!(
            rest.is_empty() && self.buf.is_empty(),
            "unexpected bytes: {rest:?}"
        );
        result.map(|_| ())
    }

    async fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
