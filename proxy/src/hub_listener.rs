//! The hub listeners: accept hub connections, plaintext and TLS, admit them within the edge's
//! limits, and hand them to the proxy ([`HubApp`]); a plaintext connection is wrapped in a
//! [`HubSocket`] that sends sealed frame bodies by reference.
//!
//! Why framecache accepts itself rather than through Pingora's `Service::add_tcp` and
//! `add_tls_with_settings`: Pingora's listeners hand the app its own socket type, which cannot
//! send a sealed body with `sendfile` (a plaintext hit costs about 13 % more CPU that way, and
//! the hits benchmark served 49,666 req/s against 66,703 with it); they take a TLS handshake
//! for up to a fixed 60 s before any limit applies, and count no failed handshake. So the accept
//! loop below is framecache's: about 40 lines following Pingora's `run_endpoint`, with the same
//! table of listening sockets (`ListenFds`, which a graceful upgrade hands to the next process)
//! and Pingora's own TLS acceptor. Re-read `pingora-core`'s `services/listening.rs` on a
//! Pingora upgrade.
//!
//! [`HubSocket`] is a Pingora virtual socket over the accepted TCP stream: a write of bytes
//! that lie in a sealed body (see [`crate::sealed`]) becomes `sendfile(2)` from that body's
//! memory file; every other write is a plain send. Pingora writes a response body as one slice,
//! straight to the connection's socket (a virtual socket gets no write buffer of Pingora's;
//! [`HubSocket`] holds small writes itself). The socket's own descriptor and the accepted peer
//! address go into the connection's digest, so the client address and `TCP_INFO` (the
//! bandwidth hints) work as on a plain connection.

use std::io::{self, IoSlice};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::listeners::tls::Acceptor;
use pingora::protocols::l4::stream::Stream as TcpConnection;
use pingora::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream};
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::Service;
use rustix::net::SendFlags;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::app::Socket;
use crate::hub::HubApp;
use crate::sealed;

/// A Pingora service accepting hub connections on one listening socket, plaintext or TLS.
pub struct HubListener<A> {
    name: String,
    addr: SocketAddr,
    /// Bound here, unless it is to be inherited.
    listener: Option<TcpListener>,
    tls: Option<Arc<Acceptor>>,
    app: Arc<HubApp<A>>,
}

impl<A> HubListener<A> {
    /// Listens on `socket`: the socket the server inherited for its address (an upgrade), else
    /// the one bound (non-blocking), else one bound when the service starts. With `tls`, every
    /// connection is a TLS handshake first.
    pub fn new(
        name: &str,
        socket: Socket,
        tls: Option<Arc<Acceptor>>,
        app: Arc<HubApp<A>>,
    ) -> HubListener<A> {
        HubListener {
            name: name.to_string(),
            addr: socket.addr,
            listener: socket.bound,
            tls,
            app,
        }
    }

    /// The socket to accept on: the one inherited for this address, else the one bound here,
    /// put in the table so that a graceful upgrade hands it on.
    fn socket(&mut self, fds: Option<ListenFds>) -> io::Result<TcpListener> {
        let key = self.addr.to_string();
        let mut table = fds.as_ref().map(|fds| fds.lock());
        if let Some(fd) = table.as_ref().and_then(|table| table.get(&key).copied()) {
            // SAFETY: the table holds listening sockets the previous process handed over; each
            // is taken by the one service listening on its address.
            let inherited = unsafe { TcpListener::from_raw_fd(fd) };
            inherited.set_nonblocking(true)?;
            tracing::info!(addr = %self.addr, "listening on the inherited socket");
            return Ok(inherited);
        }
        let bound = match self.listener.take() {
            Some(bound) => bound,
            None => {
                let bound = TcpListener::bind(self.addr)?;
                bound.set_nonblocking(true)?;
                bound
            }
        };
        if let Some(table) = table.as_mut() {
            table.add(key, bound.as_raw_fd());
        }
        Ok(bound)
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> Service for HubListener<A> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        mut shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let listener = self.socket(fds).and_then(tokio::net::TcpListener::from_std);
        let listener = match listener {
            Ok(listener) => listener,
            Err(e) => {
                // A proxy without its hub listener must not report ready: exit as `serve` does
                // on any runtime failure.
                tracing::error!(error = %e, addr = %self.addr, "cannot listen for hubs");
                std::process::exit(1);
            }
        };
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                    continue;
                }
            };
            match accepted {
                Ok((tcp, peer)) => {
                    let Some(admitted) = self.app.admit(peer.ip()) else {
                        continue;
                    };
                    let (app, shutdown, tls) =
                        (self.app.clone(), shutdown.clone(), self.tls.clone());
                    tokio::spawn(async move {
                        let _admitted = admitted;
                        let stream = match tls {
                            None => hub_stream(tcp, peer),
                            Some(acceptor) => app.handshake(&acceptor, tcp, peer).await,
                        };
                        match stream {
                            Ok(stream) => serve(app, stream, shutdown).await,
                            Err(e) => tracing::debug!(error = %e, "hub connection dropped"),
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a hub connection failed");
                    // Out of descriptors or memory: accept fails at once until some are freed.
                    let exhausted = [
                        rustix::io::Errno::MFILE,
                        rustix::io::Errno::NFILE,
                        rustix::io::Errno::NOBUFS,
                        rustix::io::Errno::NOMEM,
                    ];
                    if exhausted
                        .iter()
                        .any(|x| e.raw_os_error() == Some(x.raw_os_error()))
                    {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        self.app.cleanup().await;
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(vec![self.addr.to_string()])
    }
}

/// One hub connection: the proxy's sessions on it, one after another, while it is kept alive.
async fn serve<A: ServerApp>(app: Arc<A>, stream: Stream, shutdown: ShutdownWatch) {
    let mut next = app.process_new(stream, &shutdown).await;
    while let Some(stream) = next {
        next = app.process_new(stream, &shutdown).await;
    }
}

/// Wraps an accepted plaintext connection for Pingora, its digest on the socket's own
/// descriptor and the peer address `accept` gave (still known after the hub resets the
/// connection).
fn hub_stream(tcp: TcpStream, peer: SocketAddr) -> io::Result<Stream> {
    tcp.set_nodelay(true)?;
    let digest = SocketDigest::from_raw_fd(tcp.as_raw_fd());
    let _ = digest.peer_addr.set(Some(peer.into()));
    let mut stream = TcpConnection::from(VirtualSocketStream::new(Box::new(HubSocket::new(tcp))));
    stream.set_socket_digest(digest);
    Ok(Box::new(stream))
}

/// Wraps an accepted connection for a TLS handshake: Pingora's own socket type (a body cannot
/// leave a TLS connection by `sendfile`), its digest as for a plaintext connection.
pub fn tls_socket(tcp: TcpStream, peer: SocketAddr) -> io::Result<TcpConnection> {
    tcp.set_nodelay(true)?;
    let digest = SocketDigest::from_raw_fd(tcp.as_raw_fd());
    let _ = digest.peer_addr.set(Some(peer.into()));
    let mut stream = TcpConnection::from(tcp);
    stream.set_socket_digest(digest);
    Ok(stream)
}

/// Small writes are held (up to this many bytes) until a flush or the next large write.
const HELD_MAX: usize = 4096;

/// A hub connection that sends sealed bodies with `sendfile(2)`.
///
/// Small writes (a response head) are held until the next flush or large write, as Pingora's
/// own write buffer does: a head followed by a body leaves in one `writev`, or, before a
/// sealed body, in one send flagged `MSG_MORE`, so the kernel puts the head and the start of
/// the body in the same segment. Pingora flushes at the end of every response.
#[derive(Debug)]
pub struct HubSocket {
    tcp: TcpStream,
    held: Vec<u8>,
    /// Body bytes this connection sent by reference.
    by_reference: u64,
}

impl HubSocket {
    pub fn new(tcp: TcpStream) -> HubSocket {
        HubSocket {
            tcp,
            held: Vec::new(),
            by_reference: 0,
        }
    }

    /// Sends the held bytes; with `more`, tells the kernel more follows at once.
    fn poll_send_held(&mut self, cx: &mut Context<'_>, more: bool) -> Poll<io::Result<()>> {
        let flags = if more {
            SendFlags::MORE | SendFlags::NOSIGNAL
        } else {
            SendFlags::NOSIGNAL
        };
        while !self.held.is_empty() {
            ready!(self.tcp.poll_write_ready(cx))?;
            let held = &self.held;
            let tcp = &self.tcp;
            match tcp.try_io(Interest::WRITABLE, || {
                rustix::net::send(tcp, held, flags).map_err(io::Error::from)
            }) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.held.drain(..n);
                }
                Err(e) if retry(&e) => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Sends up to `len` bytes of `file` from `offset`, when the socket can take them.
    fn poll_sendfile(
        &mut self,
        cx: &mut Context<'_>,
        file: std::os::fd::BorrowedFd<'_>,
        offset: u64,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            let sent = self.tcp.try_io(Interest::WRITABLE, || {
                let mut at = offset;
                rustix::fs::sendfile(&self.tcp, file, Some(&mut at), len).map_err(io::Error::from)
            });
            match sent {
                // The file is never shorter than the registered mapping: 0 means it is gone.
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    sealed::count_sent(n);
                    self.by_reference += n as u64;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if retry(&e) => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// A send that did nothing and may be tried again: the socket is full (readiness is cleared
/// and awaited again), or a signal came first.
fn retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

impl AsyncRead for HubSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for HubSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if buf.len() >= sealed::MIN_SEALED {
            if let Some((file, offset)) = sealed::find(buf) {
                ready!(this.poll_send_held(cx, true))?;
                return this.poll_sendfile(cx, file, offset, buf.len());
            }
        }
        if this.held.len() + buf.len() <= HELD_MAX {
            this.held.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        if this.held.is_empty() {
            return Pin::new(&mut this.tcp).poll_write(cx, buf);
        }
        // The held bytes and as much of `buf` as the socket takes, in one call.
        let held = this.held.len();
        let n = ready!(Pin::new(&mut this.tcp)
            .poll_write_vectored(cx, &[IoSlice::new(&this.held), IoSlice::new(buf)]))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        if n <= held {
            this.held.drain(..n);
            // Nothing of `buf` went yet: try again once the socket has room.
            ready!(this.poll_send_held(cx, false))?;
            return Pin::new(&mut this.tcp).poll_write(cx, buf);
        }
        this.held.clear();
        Poll::Ready(Ok(n - held))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send_held(cx, false))?;
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send_held(cx, false))?;
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

impl VirtualSocket for HubSocket {
    fn set_socket_option(&self, opt: VirtualSockOpt) -> io::Result<()> {
        match opt {
            VirtualSockOpt::NoDelay => self.tcp.set_nodelay(true),
            VirtualSockOpt::KeepAlive(ka) => {
                let keepalive = socket2::TcpKeepalive::new()
                    .with_time(ka.idle)
                    .with_interval(ka.interval)
                    .with_retries(u32::try_from(ka.count).unwrap_or(u32::MAX));
                socket2::SockRef::from(&self.tcp).set_tcp_keepalive(&keepalive)
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pattern(len: usize, salt: u8) -> Bytes {
        Bytes::from(
            (0..len)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
                .collect::<Vec<u8>>(),
        )
    }

    async fn pair() -> (HubSocket, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, client) = tokio::join!(listener.accept(), client);
        (HubSocket::new(accepted.unwrap().0), client.unwrap())
    }

    /// Reads exactly `len` bytes, slowly at first so that the sender meets a full socket.
    async fn read_all(mut client: TcpStream, len: usize) -> Vec<u8> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut got = vec![0; len];
        client.read_exact(&mut got).await.unwrap();
        got
    }

    #[tokio::test]
    async fn a_sealed_body_arrives_whole_through_a_full_socket() {
        let (mut socket, client) = pair().await;
        // Larger than any socket buffer: sendfile runs out of room and resumes.
        let body = sealed::seal(pattern(8 << 20, 3));
        assert!(sealed::find(&body).is_some());
        let reader = tokio::spawn(read_all(client, body.len()));
        socket.write_all(&body).await.unwrap();
        assert_eq!(reader.await.unwrap(), body.as_ref());
        assert_eq!(socket.by_reference, body.len() as u64);
    }

    #[tokio::test]
    async fn plain_held_and_sealed_writes_keep_their_order() {
        let (mut socket, client) = pair().await;
        let head = Bytes::from_static(b"HTTP/1.1 200 OK\r\ncontent-length: 70000\r\n\r\n");
        let body = sealed::seal(pattern(70_000, 9));
        let range = body.slice(1000..60_000);
        let heap = pattern(40_000, 1);
        let tail = Bytes::from_static(b"0\r\n\r\n");
        // Heads before a sealed body (held, then sent flagged MORE), before a large heap
        // body (sent together), and a tail held until the flush.
        let parts = [&head, &body, &head, &range, &head, &heap, &tail];
        let expected: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        let reader = tokio::spawn(read_all(client, expected.len()));
        for part in parts {
            socket.write_all(part).await.unwrap();
        }
        socket.flush().await.unwrap();
        assert_eq!(reader.await.unwrap(), expected);
        assert_eq!(
            socket.by_reference,
            (body.len() + range.len()) as u64,
            "the sealed parts went by reference, the heap body by copy"
        );
    }

    #[tokio::test]
    async fn a_small_write_waits_for_the_flush() {
        let (mut socket, mut client) = pair().await;
        socket
            .write_all(b"HTTP/1.1 304 Not Modified\r\n\r\n")
            .await
            .unwrap();
        let mut got = [0u8; 64];
        let early = tokio::time::timeout(Duration::from_millis(100), client.read(&mut got)).await;
        assert!(early.is_err(), "held until the flush");
        socket.flush().await.unwrap();
        let n = client.read(&mut got).await.unwrap();
        assert_eq!(&got[..n], b"HTTP/1.1 304 Not Modified\r\n\r\n");
    }

    #[tokio::test]
    async fn a_chained_buffer_sends_its_sealed_part_by_reference() {
        let (mut socket, client) = pair().await;
        let size = Bytes::from_static(b"11170\r\n");
        let body = sealed::seal(pattern(70_000, 5));
        let crlf = Bytes::from_static(b"\r\n");
        let mut chain =
            bytes::Buf::chain(bytes::Buf::chain(size.clone(), body.clone()), crlf.clone());
        let mut expected = size.to_vec();
        expected.extend_from_slice(&body);
        expected.extend_from_slice(&crlf);
        let reader = tokio::spawn(read_all(client, expected.len()));
        socket.write_all_buf(&mut chain).await.unwrap();
        socket.flush().await.unwrap();
        assert_eq!(reader.await.unwrap(), expected);
        assert_eq!(socket.by_reference, body.len() as u64);
    }

    #[tokio::test]
    async fn a_hub_that_leaves_mid_body_is_an_error_not_a_hang() {
        let (mut socket, client) = pair().await;
        let body = sealed::seal(pattern(16 << 20, 7));
        drop(client);
        let result = tokio::time::timeout(Duration::from_secs(10), socket.write_all(&body)).await;
        let error = result.expect("no hang").expect_err("the peer is gone");
        assert!(
            matches!(
                error.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ),
            "{error:?}"
        );
    }
}
