//! The MJPEG stream: the camera's frames, newest-wins for a stalled reader, shared origin polls,
//! and stalled readers dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{wait_until, Stack};

/// A hub reading a stream: de-chunks the body and splits it into parts.
struct Viewer {
    reader: BufReader<TcpStream>,
    /// De-chunked bytes not yet taken as parts.
    pending: Vec<u8>,
}

/// One part: its seq and its JPEG bytes.
struct Part {
    seq: u64,
    body: Vec<u8>,
}

impl Viewer {
    fn open(stack: &Stack, owner: &str, camera: &str) -> Viewer {
        Viewer::open_query(stack, owner, camera, "")
    }

    /// With a query such as `?variant=thumb`.
    fn open_query(stack: &Stack, owner: &str, camera: &str, query: &str) -> Viewer {
        let conn = TcpStream::connect(stack.proxy.hub_addr).unwrap();
        Viewer::start(conn, stack, owner, camera, query)
    }

    /// On a connection whose receive buffer (`SO_RCVBUF`, set before connecting so that the
    /// window is small from the start) holds only `bytes`: a hub that stops reading stalls the
    /// proxy's writes at once.
    fn open_small(stack: &Stack, owner: &str, camera: &str, query: &str, bytes: usize) -> Viewer {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(bytes).unwrap();
        socket.connect(&stack.proxy.hub_addr.into()).unwrap();
        Viewer::start(socket.into(), stack, owner, camera, query)
    }

    /// Asks for the stream on `conn` and reads the answer's head.
    fn start(mut conn: TcpStream, stack: &Stack, owner: &str, camera: &str, query: &str) -> Viewer {
        let token = stack.token(owner, &[camera]);
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        write!(
            conn,
            "GET /v1/cameras/{camera}/stream{query} HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(conn);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: multipart/x-mixed-replace; boundary=framecache-frame"),
            "{head}"
        );
        Viewer {
            reader,
            pending: Vec::new(),
        }
    }

    /// Reads one HTTP chunk into `pending`.
    fn read_chunk(&mut self) {
        let mut size = String::new();
        self.reader.read_line(&mut size).unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        let mut data = vec![0u8; size + 2];
        self.reader.read_exact(&mut data).unwrap();
        self.pending.extend_from_slice(&data[..size]);
    }

    fn next_part(&mut self) -> Part {
        loop {
            if let Some(end) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.pending[..end]).into_owned();
                assert!(head.starts_with("--framecache-frame\r\n"), "{head}");
                let field = |name: &str| {
                    head.lines()
                        .find_map(|l| l.strip_prefix(name))
                        .unwrap()
                        .trim()
                        .to_string()
                };
                let len: usize = field("Content-Length:").parse().unwrap();
                let seq: u64 = field("X-Frame-Seq:").parse().unwrap();
                let start = end + 4;
                while self.pending.len() < start + len + 2 {
                    self.read_chunk();
                }
                let body = self.pending[start..start + len].to_vec();
                assert_eq!(&self.pending[start + len..start + len + 2], b"\r\n");
                self.pending.drain(..start + len + 2);
                let etag = field("ETag:");
                assert_eq!(etag, format!("\"{}\"", blake3::hash(&body).to_hex()));
                return Part { seq, body };
            }
            self.read_chunk();
        }
    }
}

#[test]
fn the_stream_delivers_the_cameras_frames_in_order() {
    let stack = Stack::with(
        |c| {
            c.delivery.stream_interval = Duration::from_millis(20);
            c.cache.latest_fresh = Duration::from_millis(20);
        },
        |o| o.fps = 50.0,
    );
    let mut viewer = Viewer::open(&stack, "owner-1", "cam-2");
    let mut last = 0;
    for _ in 0..5 {
        let part = viewer.next_part();
        let (camera, seq) = camsim::jpeg::read_watermark(&part.body).unwrap();
        assert_eq!(camera, "cam-2");
        assert_eq!(seq, part.seq);
        assert!(
            part.seq > last,
            "newer frames only: {} after {last}",
            part.seq
        );
        last = part.seq;
    }
    assert_eq!(stack.metric("framecache_stream_subscribers"), 1.0);
    // Counted once its last byte is written, which can be just after the hub has read it.
    wait_until("five frames are counted", || {
        stack.metric("framecache_stream_frames_sent_total") >= 5.0
    });
    drop(viewer);
    wait_until("the subscriber is gone", || {
        stack.metric("framecache_stream_subscribers") == 0.0
    });
}

#[test]
fn a_stream_is_refused_like_any_frame_request() {
    let stack = Stack::start();
    // Not granted: 403 before any stream starts.
    let reply = stack.get_as("owner-1", &["cam-1"], "/v1/cameras/cam-2/stream");
    assert_eq!(reply.status, 403);
    // Not the owner's at the backend: the origin's 403.
    let reply = stack.get_as("owner-1", &["cam-3"], "/v1/cameras/cam-3/stream");
    assert_eq!(reply.status, 403);
    assert_eq!(stack.metric("framecache_stream_subscribers"), 0.0);
}

/// Distinct frames camsim has sent whole (each seq of each owner's camera once).
fn distinct_frames_served(stack: &Stack) -> u64 {
    let stats = stack.camsim.stats();
    stats.frames_served - stats.frames_served_again
}

#[test]
fn a_stalled_reader_resumes_at_the_newest_frame() {
    let stack = Stack::with(
        |c| {
            c.delivery.stream_interval = Duration::from_millis(10);
            c.cache.latest_fresh = Duration::from_millis(10);
            // A subscriber's own poll fetches the frame it then writes.
            c.cache.stale_while_revalidate = Duration::ZERO;
            // Small kernel buffers on the proxy's side too: a frame (about 76 KB) does not fit
            // in what the sockets hold between the proxy and a hub that stopped reading.
            c.server.send_buffer = Some(16 * 1024);
            // Stalled far longer than this test takes is still not dropped.
            c.delivery.write_timeout = Duration::from_secs(60);
        },
        |o| {
            // Frozen: the camera moves only when the test advances it.
            o.fps = 0.0;
            (o.width, o.height) = (1280, 720);
        },
    );
    // Full frames: the proxy's own choice would follow the stalled link down to a rendition.
    let mut stalled = Viewer::open_small(&stack, "owner-1", "cam-2", "?variant=full", 4096);
    let first = stalled.next_part();
    assert_eq!(first.seq, 1);
    assert!(first.body.len() > 64 * 1024, "{} bytes", first.body.len());
    // The hub stops reading. The camera moves on; the subscriber's next poll fetches frame 2
    // and starts writing it, and that write cannot finish.
    assert_eq!(stack.camsim.advance("cam-2"), Some(2));
    wait_until("the subscriber has fetched frame 2", || {
        distinct_frames_served(&stack) == 2
    });
    // A second hub of the same owner watches the camera meanwhile and sees every frame, one
    // by one: each was there to be had while the first hub's write was blocked.
    let mut watching = Viewer::open_query(&stack, "owner-1", "cam-2", "?variant=full");
    assert_eq!(watching.next_part().seq, 2);
    let current = 10;
    for seq in 3..=current {
        assert_eq!(stack.camsim.advance("cam-2"), Some(seq));
        assert_eq!(watching.next_part().seq, seq);
    }
    // Frames 2 to 10 to the watching hub (counted once written); only frame 1 to the stalled
    // one, whose write of frame 2 is still blocked.
    wait_until("the watching hub's frames are counted", || {
        stack.metric("framecache_stream_frames_sent_total") >= 10.0
    });
    assert_eq!(
        stack.metric("framecache_stream_frames_sent_total"),
        10.0,
        "the stalled hub's write of frame 2 went through: it never stalled"
    );
    // The hub reads again: the frame whose write was under way, then the camera's current
    // frame, not the backlog in between.
    let resumed = stalled.next_part();
    assert_eq!(resumed.seq, 2, "the frame in flight");
    let after = stalled.next_part();
    assert_eq!(
        camsim::jpeg::read_watermark(&after.body),
        Some(("cam-2".to_string(), current)),
        "frame {} after the backlog, the camera is at {current}",
        after.seq
    );
    assert_eq!(after.seq, current);
    // Frames 3 to 9 were skipped for the stalled hub; the watching hub missed none.
    assert_eq!(stack.metric("framecache_stream_frames_skipped_total"), 7.0);
}

#[test]
fn twenty_subscribers_share_the_origin_polls() {
    let interval = Duration::from_millis(100);
    let stack = Arc::new(Stack::with(
        |c| {
            c.delivery.stream_interval = interval;
            c.cache.latest_fresh = interval;
            c.server.threads = 2;
            c.limits.streams_per_owner = 20;
        },
        |o| o.fps = 10.0,
    ));
    let started = Instant::now();
    let before = stack.origin_requests_for("cam-2");
    let viewers: Vec<_> = (0..20)
        .map(|_| {
            let stack = Arc::clone(&stack);
            thread::spawn(move || {
                let mut viewer = Viewer::open(&stack, "owner-1", "cam-2");
                (0..5).map(|_| viewer.next_part().seq).collect::<Vec<_>>()
            })
        })
        .collect();
    for viewer in viewers {
        let seqs = viewer.join().unwrap();
        assert!(seqs.windows(2).all(|w| w[1] > w[0]), "{seqs:?}");
    }
    let windows = started.elapsed().as_secs_f64() / interval.as_secs_f64();
    let polls = (stack.origin_requests_for("cam-2") - before) as f64;
    // About one poll per fresh window, however many watch (20 viewers would otherwise make 20).
    assert!(
        polls <= 2.0 * windows + 4.0,
        "{polls} origin polls in {windows:.1} windows for 20 viewers"
    );
}

#[test]
fn a_reader_that_never_reads_is_dropped() {
    let stack = Stack::with(
        |c| {
            c.delivery.stream_interval = Duration::from_millis(5);
            c.delivery.write_timeout = Duration::from_millis(300);
            c.cache.latest_fresh = Duration::from_millis(5);
        },
        |o| o.fps = 100.0,
    );
    let token = stack.token("owner-1", &["cam-2"]);
    // A hub on a tiny receive window: the proxy's send buffer fills after a frame or two.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = stack.proxy.hub_addr;
    let mut conn = runtime
        .block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.set_recv_buffer_size(2048)?;
            socket.connect(addr).await
        })
        .unwrap()
        .into_std()
        .unwrap();
    conn.set_nonblocking(false).unwrap();
    write!(
        conn,
        "GET /v1/cameras/cam-2/stream HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    wait_until("the subscriber is connected", || {
        stack.metric("framecache_stream_subscribers") == 1.0
    });
    // Never read: the socket buffers fill (seconds, as the kernel grows them), then a write
    // blocks past the write timeout and the subscriber is dropped.
    crate::common::wait_within(
        Duration::from_secs(60),
        "the stalled subscriber is dropped",
        || stack.metric("framecache_stream_subscribers") == 0.0,
    );
    assert!(stack.metric("framecache_stream_frames_sent_total") > 0.0);
    assert_eq!(
        stack.metric(r#"framecache_hub_write_timeouts_total{route="stream"}"#),
        1.0
    );
    drop(conn);
}

/// Kernel TCP memory of the host, in pages (`/proc/net/sockstat`, `TCP: ... mem N`).
fn tcp_memory_pages() -> u64 {
    let stat = std::fs::read_to_string("/proc/net/sockstat").unwrap();
    let tcp = stat.lines().find(|l| l.starts_with("TCP:")).unwrap();
    let mut words = tcp.split_whitespace();
    words.find(|w| *w == "mem").unwrap();
    words.next().unwrap().parse().unwrap()
}

/// Subscribers on tiny receive windows that never read, behind send buffers large enough to
/// absorb many seconds of frames: each is dropped once it has taken no bytes for the write
/// timeout, though the kernel would still accept writes, and the host's TCP memory they hold
/// stays about a frame each instead of growing with every frame sent.
#[test]
fn subscribers_that_never_read_are_dropped_while_the_kernel_still_takes_writes() {
    const SUBSCRIBERS: usize = 40;
    let stack = Stack::with(
        |c| {
            c.delivery.stream_interval = Duration::from_millis(50);
            c.delivery.write_timeout = Duration::from_millis(1000);
            c.cache.latest_fresh = Duration::from_millis(50);
            // 8 MiB of send buffer (16 MiB as the kernel counts it): at 20 frames a second of
            // ~40 KB, a subscriber's writes would not block for about ten seconds.
            c.server.send_buffer = Some(8 << 20);
            c.limits.streams_per_owner = SUBSCRIBERS;
        },
        |o| {
            o.fps = 20.0;
            o.width = 640;
            o.height = 480;
        },
    );
    let before = tcp_memory_pages();
    let token = stack.token("owner-1", &["cam-2"]);
    let conns: Vec<TcpStream> = (0..SUBSCRIBERS)
        .map(|_| {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            socket.connect(&stack.proxy.hub_addr.into()).unwrap();
            let mut conn: TcpStream = socket.into();
            write!(
                conn,
                "GET /v1/cameras/cam-2/stream?variant=full HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {token}\r\n\r\n"
            )
            .unwrap();
            conn
        })
        .collect();
    wait_until("every subscriber is connected", || {
        stack.metric("framecache_stream_subscribers") >= 1.0
    });
    let peak = std::cell::Cell::new(0);
    crate::common::wait_within(
        Duration::from_secs(8),
        "every subscriber that never reads is dropped",
        || {
            peak.set(peak.get().max(tcp_memory_pages()));
            stack.metric(r#"framecache_hub_write_timeouts_total{route="stream"}"#)
                == SUBSCRIBERS as f64
        },
    );
    assert_eq!(stack.metric("framecache_stream_subscribers"), 0.0);
    // Each held about one frame (a 640×480 frame is ~40 KB, 10 pages): allow four times that.
    let grown = peak.get().saturating_sub(before);
    assert!(
        grown < (SUBSCRIBERS * 40) as u64,
        "TCP memory grew by {grown} pages for {SUBSCRIBERS} subscribers"
    );
    drop(conns);
}

#[test]
fn a_stream_of_a_rendition_carries_that_rendition_of_the_cameras_frames() {
    let stack = Stack::with(
        |c| {
            c.delivery.stream_interval = Duration::from_millis(20);
            c.cache.latest_fresh = Duration::from_millis(20);
        },
        |o| {
            o.fps = 20.0;
            o.width = 1280;
            o.height = 720;
        },
    );
    let mut viewer = Viewer::open_query(&stack, "owner-1", "cam-1", "?variant=thumb");
    let mut last = 0;
    for _ in 0..3 {
        let part = viewer.next_part();
        assert!(part.seq > last);
        last = part.seq;
        let mut d = jpeg_decoder::Decoder::new(&part.body[..]);
        d.decode().unwrap();
        assert_eq!(d.info().unwrap().width, 320);
        // Exactly the thumb of this camera's frame of that seq (camsim's frames are
        // deterministic), without the source's metadata.
        let source = camsim::frame::render("cam-1", part.seq, 1280, 720, 80).unwrap();
        let thumb = framecache::rendition::Catalogue::built_in()
            .find("thumb")
            .unwrap();
        assert_eq!(
            part.body,
            framecache::rendition::render::render(&source, &thumb).unwrap()
        );
        assert!(camsim::jpeg::read_watermark(&part.body).is_none());
    }
    assert!(stack.metric(r#"framecache_response_bytes_total{variant="thumb"}"#) > 0.0);
    assert_eq!(
        stack.metric(r#"framecache_response_bytes_total{variant="full"}"#),
        0.0
    );
}
