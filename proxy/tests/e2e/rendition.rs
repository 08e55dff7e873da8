//! Renditions: made from the owner's own verified frame, cached in its scope, their own ETag,
//! the source's seq; chosen from hints or the measured link when not asked for.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use framecache::identity::ContentHash;
use framecache::rendition::render;
use framecache::rendition::{Catalogue, Rendition, Variant};

use crate::common::{
    raw_body, signed_frame, stack_on, wait_until, Answer, RawOrigin, Reply, Stack,
};

/// A stack whose camsim makes 1280×720 frames (about 90 KB), as real cameras' stills.
fn hd_stack(proxy: impl FnOnce(&mut framecache::config::Config)) -> Stack {
    Stack::with(proxy, |o| {
        o.width = 1280;
        o.height = 720;
    })
}

fn dims(jpeg: &[u8]) -> (u32, u32) {
    let mut d = jpeg_decoder::Decoder::new(jpeg);
    d.decode().expect("a rendition decodes");
    let info = d.info().unwrap();
    (info.width.into(), info.height.into())
}

fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", ContentHash::of(body))
}

fn built_in(name: &str) -> Rendition {
    Catalogue::built_in().find(name).unwrap()
}

#[test]
fn each_rendition_fits_its_width_with_its_own_etag_and_the_sources_seq() {
    let stack = hd_stack(|_| {});
    let full = stack.get_as(
        "owner-1",
        &["cam-1"],
        "/v1/cameras/cam-1/frame?variant=full",
    );
    assert_eq!(full.status, 200);
    assert_eq!(dims(&full.body), (1280, 720));
    assert_eq!(full.header("x-frame-variant"), Some("full"));
    let source_hash = ContentHash::of(&full.body);
    let seq = full.header("x-frame-seq").unwrap().to_string();

    for (name, width) in [("medium", 640), ("thumb", 320)] {
        let path = format!("/v1/cameras/cam-1/frame?variant={name}");
        let r = stack.get_as("owner-1", &["cam-1"], &path);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(dims(&r.body), (width, width * 720 / 1280), "{name}");
        assert_eq!(r.header("content-type"), Some("image/jpeg"));
        assert_eq!(r.header("etag"), Some(etag_of(&r.body).as_str()));
        assert_ne!(r.header("etag"), full.header("etag"));
        assert_eq!(r.header("x-frame-seq"), Some(seq.as_str()));
        assert_eq!(r.header("x-frame-variant"), Some(name));
        assert_eq!(
            r.header("content-location").unwrap(),
            format!("/v1/cameras/cam-1/frames/{source_hash}?variant={name}")
        );
        assert!(
            r.body.len() < full.body.len() / 2,
            "{name}: {}",
            r.body.len()
        );
        // Exactly the rendering of this owner's own frame of this camera, without its metadata.
        assert_eq!(r.body, render::render(&full.body, &built_in(name)).unwrap());
        assert!(camsim::jpeg::read_watermark(&r.body).is_none());

        // The same rendition by the source's address: immutable, same bytes, from the cache.
        let by_hash = stack.get_as(
            "owner-1",
            &["cam-1"],
            &format!("/v1/cameras/cam-1/frames/{source_hash}?variant={name}"),
        );
        assert_eq!(by_hash.status, 200);
        assert_eq!(by_hash.body, r.body);
        assert_eq!(
            by_hash.header("cache-control"),
            Some("private, max-age=31536000, immutable")
        );
    }
    // Each rendition was made once; the by-hash requests were hits.
    assert_eq!(
        stack.metric(r#"framecache_renditions_total{result="rendered"}"#),
        2.0
    );
    assert_eq!(
        stack.metric(r#"framecache_renditions_total{result="hit"}"#),
        2.0
    );
    let thumb_bytes = stack.metric(r#"framecache_response_bytes_total{variant="thumb"}"#);
    assert!(thumb_bytes > 0.0);
    assert_eq!(
        stack.metric(r#"framecache_variant_choices_total{reason="requested",variant="thumb"}"#),
        2.0
    );
}

#[test]
fn renditions_are_never_shared_across_owners_or_cameras() {
    let stack = hd_stack(|_| {});
    // owner-1 and owner-2 share cam-1; owner-1 also has cam-2.
    let cases = [
        ("owner-1", "cam-1"),
        ("owner-2", "cam-1"),
        ("owner-1", "cam-2"),
    ];
    let mut thumbs = Vec::new();
    for (owner, camera) in cases {
        let full = stack.get_as(
            owner,
            &[camera],
            &format!("/v1/cameras/{camera}/frame?variant=full"),
        );
        let thumb = stack.get_as(
            owner,
            &[camera],
            &format!("/v1/cameras/{camera}/frame?variant=thumb"),
        );
        let watermark = camsim::jpeg::read_watermark(&full.body).unwrap();
        assert_eq!(watermark.0, camera);
        assert_eq!(
            thumb.body,
            render::render(&full.body, &built_in("thumb")).unwrap(),
            "{owner} {camera}: the thumb is of its own frame"
        );
        thumbs.push(thumb);
    }
    // One rendering per owner-scoped frame, even for the camera two owners share.
    assert_eq!(
        stack.metric(r#"framecache_renditions_total{result="rendered"}"#),
        3.0
    );
    assert_eq!(stack.metric("framecache_cache_cross_owner_hits_total"), 0.0);
    assert_eq!(stack.metric("framecache_cache_key_collisions_total"), 0.0);

    // owner-2 cannot reach owner-1's cam-2 rendition by its address.
    let cam2_source = thumbs[2].header("content-location").unwrap().to_string();
    let denied = stack.get_as("owner-2", &["cam-1"], &cam2_source);
    assert_eq!(denied.status, 403);
    // Even with a token naming cam-2, owner-2's request is made and checked as owner-2's.
    let other = stack.get_as("owner-2", &["cam-2"], &cam2_source);
    assert_ne!(other.status, 200, "{}", other.text());
    assert_eq!(stack.metric("framecache_cache_cross_owner_hits_total"), 0.0);
}

#[test]
fn concurrent_requests_for_a_rendition_render_it_once() {
    let stack = Arc::new(hd_stack(|_| {}));
    // The source frame is cached first, so that only the rendering is raced.
    let full = stack.get_as(
        "owner-1",
        &["cam-1"],
        "/v1/cameras/cam-1/frame?variant=full",
    );
    let hash = ContentHash::of(&full.body);
    let path = format!("/v1/cameras/cam-1/frames/{hash}?variant=medium");
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let (stack, path) = (stack.clone(), path.clone());
            thread::spawn(move || stack.get_as("owner-1", &["cam-1"], &path))
        })
        .collect();
    let bodies: Vec<Vec<u8>> = handles
        .into_iter()
        .map(|h| {
            let r = h.join().unwrap();
            assert_eq!(r.status, 200);
            r.body
        })
        .collect();
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    let metric = |result: &str| {
        stack.metric(&format!(
            "framecache_renditions_total{{result=\"{result}\"}}"
        ))
    };
    assert_eq!(metric("rendered"), 1.0);
    assert_eq!(
        metric("rendered") + metric("coalesced") + metric("hit"),
        20.0
    );
}

#[test]
fn configured_renditions_and_conditional_requests() {
    let stack = hd_stack(|c| {
        let tiny = Rendition {
            variant: Variant::intern("tiny").unwrap(),
            max_width: 96,
            quality: 50,
        };
        c.delivery.renditions =
            Catalogue::new(Catalogue::built_in().all().iter().copied().chain([tiny]));
    });
    let r = stack.get_as(
        "owner-1",
        &["cam-1"],
        "/v1/cameras/cam-1/frame?variant=tiny",
    );
    assert_eq!(r.status, 200);
    assert_eq!(dims(&r.body).0, 96);
    // Save-Data now takes the configured smallest.
    let token = stack.token("owner-1", &["cam-1"]);
    let auth = format!("Bearer {token}");
    let saved = stack.get(
        "/v1/cameras/cam-1/frame",
        &[("Authorization", &auth), ("Save-Data", "on")],
    );
    assert_eq!(saved.header("x-frame-variant"), Some("tiny"));
    assert_eq!(saved.body, r.body);

    // The rendition's own ETag answers 304; the full frame's does not match it.
    let etag = r.header("etag").unwrap();
    let not_modified = stack.get(
        "/v1/cameras/cam-1/frame?variant=tiny",
        &[("Authorization", &auth), ("If-None-Match", etag)],
    );
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    assert_eq!(not_modified.header("etag"), Some(etag));
    let full = stack.get(
        "/v1/cameras/cam-1/frame?variant=full",
        &[("Authorization", &auth), ("If-None-Match", etag)],
    );
    assert_eq!(full.status, 200);
    // Ranges resume a rendition byte for byte.
    let part = stack.get(
        "/v1/cameras/cam-1/frame?variant=tiny",
        &[
            ("Authorization", &auth),
            ("Range", "bytes=100-"),
            ("If-Range", etag),
        ],
    );
    assert_eq!(part.status, 206);
    assert_eq!(part.body, r.body[100..]);

    for bad in ["huge", "Thumb", "thumb ", "full,thumb"] {
        let path = format!("/v1/cameras/cam-1/frame?variant={bad}");
        let r = stack.get_as("owner-1", &["cam-1"], &path.replace(' ', "%20"));
        assert_eq!(r.status, 400, "{bad:?}");
    }
}

#[test]
fn a_content_address_without_variant_is_always_the_full_frame() {
    let stack = hd_stack(|_| {});
    let token = stack.token("owner-1", &["cam-1"]);
    let auth = format!("Bearer {token}");
    let full = stack.get(
        "/v1/cameras/cam-1/frame?variant=full",
        &[("Authorization", &auth)],
    );
    let hash = ContentHash::of(&full.body);
    let by_hash = stack.get(
        &format!("/v1/cameras/cam-1/frames/{hash}"),
        &[("Authorization", &auth), ("Save-Data", "on")],
    );
    assert_eq!(by_hash.header("x-frame-variant"), Some("full"));
    assert_eq!(ContentHash::of(&by_hash.body), hash);
    assert_eq!(by_hash.header("content-location"), None);
    let thumb = stack.get(
        &format!("/v1/cameras/cam-1/frames/{hash}?variant=thumb"),
        &[("Authorization", &auth)],
    );
    assert_eq!(
        thumb.header("content-location").unwrap(),
        format!("/v1/cameras/cam-1/frames/{hash}?variant=thumb")
    );
}

#[test]
fn a_purge_between_frame_and_rendition_keeps_the_rendition_out() {
    let stack = hd_stack(|c| c.cache.latest_fresh = Duration::from_secs(60));
    let owner = framecache::identity::OwnerId::parse("owner-1").unwrap();
    let camera = framecache::identity::CameraId::parse("cam-1").unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The cache is shared through an Arc in the running proxy; borrow it the same way.
    let cache = stack.proxy.shared.cache.clone();
    let thumb = built_in("thumb");
    let source = runtime
        .block_on(cache.get(
            &owner,
            &camera,
            framecache::request::FrameRef::Latest,
            &framecache::cache::Via::Origin,
        ))
        .unwrap();
    let address = source.frame.hash;
    assert!(cache.purge(&owner, None) > 0);
    let served = runtime
        .block_on(cache.rendition(&owner, &camera, source, thumb))
        .unwrap();
    assert!(served.frame.is_rendition());
    // Served to the request that had the frame, but not kept past the purge.
    assert_eq!(
        cache.cached_rendition_len(&owner, &camera, address, thumb),
        None
    );
    assert_eq!(cache.usage().0, 0);
}

#[test]
fn a_rendition_not_ready_in_time_is_busy_unless_the_proxy_chose_it() {
    // A request waits for a rendering at most `cache.coalesce_wait_ms`: at 0 it never waits,
    // so the request that starts a rendering gets it only if it is already made.
    let stack = hd_stack(|c| c.cache.coalesce_wait = Duration::ZERO);
    let token = stack.token("owner-1", &["cam-1"]);
    let auth = format!("Bearer {token}");
    let full = stack.get(
        "/v1/cameras/cam-1/frame?variant=full",
        &[("Authorization", &auth)],
    );
    assert_eq!(full.status, 200);
    // Asked for by name: 503, try again shortly.
    let busy = stack.get(
        "/v1/cameras/cam-1/frame?variant=medium",
        &[("Authorization", &auth)],
    );
    assert_eq!(busy.status, 503);
    assert_eq!(busy.error_code(), "rendition_busy");
    assert_eq!(busy.header("retry-after"), Some("1"));
    // Chosen by the proxy (Save-Data: the thumb): the full frame instead of an error.
    let chosen = stack.get(
        "/v1/cameras/cam-1/frame",
        &[("Authorization", &auth), ("Save-Data", "on")],
    );
    assert_eq!(chosen.status, 200);
    assert_eq!(chosen.header("x-frame-variant"), Some("full"));
    assert_eq!(chosen.body, full.body);
    assert_eq!(chosen.header("etag"), full.header("etag"));
    // The rendering went on; once it is made, asking again gets it.
    let owner = framecache::identity::OwnerId::parse("owner-1").unwrap();
    let camera = framecache::identity::CameraId::parse("cam-1").unwrap();
    let source = ContentHash::of(&full.body);
    wait_until("the medium rendition is made", || {
        stack
            .cache()
            .cached_rendition_len(&owner, &camera, source, built_in("medium"))
            .is_some()
    });
    let again = stack.get(
        "/v1/cameras/cam-1/frame?variant=medium",
        &[("Authorization", &auth)],
    );
    assert_eq!(again.status, 200);
    assert_eq!(again.header("x-frame-variant"), Some("medium"));
    assert_eq!(dims(&again.body), (640, 360));
}

#[test]
fn a_frame_that_does_not_decode_fails_its_rendition_unless_the_proxy_chose_it() {
    // A backend whose frames are signed but are not JPEGs.
    let origin = RawOrigin::start(16, |seen| Answer::Send(signed_frame(seen, "")));
    let stack = stack_on(&origin);
    let token = stack.token("owner-1", &["cam-1"]);
    let auth = format!("Bearer {token}");
    // Asked for by name: 502.
    let failed = stack.get(
        "/v1/cameras/cam-1/frame?variant=thumb",
        &[("Authorization", &auth)],
    );
    assert_eq!(failed.status, 502);
    assert_eq!(failed.error_code(), "rendition_failed");
    // Chosen by the proxy: the frame as the camera sent it.
    let chosen = stack.get(
        "/v1/cameras/cam-1/frame",
        &[("Authorization", &auth), ("Save-Data", "on")],
    );
    assert_eq!(chosen.status, 200);
    assert_eq!(chosen.header("x-frame-variant"), Some("full"));
    assert_eq!(chosen.body, raw_body("cam-1"));
    assert_eq!(
        stack.metric(r#"framecache_renditions_total{result="failed"}"#),
        2.0
    );
    assert_eq!(
        stack.metric(r#"framecache_renditions_total{result="rendered"}"#),
        0.0
    );
}

#[test]
fn hints_choose_as_documented() {
    let stack = hd_stack(|_| {});
    let token = stack.token("owner-1", &["cam-1"]);
    let auth = format!("Bearer {token}");
    let choose = |hints: &[(&str, &str)]| {
        let mut headers = vec![("Authorization", auth.as_str())];
        headers.extend_from_slice(hints);
        let r = stack.get("/v1/cameras/cam-1/frame", &headers);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("accept-ch"), Some("Save-Data, ECT"));
        assert_eq!(r.header("vary"), Some("Save-Data, ECT"));
        r.header("x-frame-variant").unwrap().to_string()
    };
    // Without hints, a new connection goes by what is known of the hub's link: nothing yet,
    // then the fast loopback link its first connection measured. The full frame either way;
    // so too below when hints are malformed and ignored.
    assert_eq!(choose(&[]), "full");
    assert_eq!(choose(&[("Save-Data", "on")]), "thumb");
    assert_eq!(choose(&[("ECT", "slow-2g")]), "thumb");
    assert_eq!(choose(&[("ECT", "2g")]), "thumb");
    assert_eq!(choose(&[("ECT", "3g")]), "medium");
    assert_eq!(choose(&[("ECT", "4g")]), "full");
    assert_eq!(choose(&[("Downlink", "0.04")]), "thumb");
    assert_eq!(choose(&[("Downlink", "0.1")]), "medium");
    assert_eq!(choose(&[("Downlink", "10")]), "full");
    // Malformed hints are ignored, not errors.
    assert_eq!(choose(&[("ECT", "fast"), ("Downlink", "x")]), "full");
    assert_eq!(
        stack.metric(r#"framecache_variant_choices_total{reason="ect",variant="thumb"}"#),
        2.0
    );
    assert_eq!(
        stack.metric(r#"framecache_variant_choices_total{reason="save_data",variant="thumb"}"#),
        1.0
    );
    // An explicit variant is never second-guessed.
    let asked = stack.get(
        "/v1/cameras/cam-1/frame?variant=full",
        &[("Authorization", &auth), ("Save-Data", "on")],
    );
    assert_eq!(asked.header("x-frame-variant"), Some("full"));
    // It depends on no hint: it neither varies on them nor asks for them.
    assert_eq!(asked.header("vary"), None);
    assert_eq!(asked.header("accept-ch"), None);
}

/// A hub on one keep-alive connection, reading responses at `rate` bytes per second (`None`:
/// as fast as it can), with a small receive buffer so that, as on a real slow link, the
/// sender feels the pace.
struct Hub {
    conn: TcpStream,
    rate: Option<f64>,
    auth: String,
}

impl Hub {
    fn connect(stack: &Stack, rate: Option<f64>) -> Hub {
        Hub::connect_as(stack, rate, "owner-1")
    }

    /// A hub of `owner`, with a token for its `cam-1`.
    fn connect_as(stack: &Stack, rate: Option<f64>, owner: &str) -> Hub {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        if rate.is_some() {
            socket.set_recv_buffer_size(4096).unwrap();
        }
        socket.connect(&stack.proxy.hub_addr.into()).unwrap();
        let conn: TcpStream = socket.into();
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Hub {
            conn,
            rate,
            auth: format!("Bearer {}", stack.token(owner, &["cam-1"])),
        }
    }

    /// `GET path`, read to the end of the body at the hub's pace.
    fn get(&mut self, path: &str) -> Reply {
        write!(
            self.conn,
            "GET {path} HTTP/1.1\r\nHost: hub\r\nAuthorization: {}\r\n\r\n",
            self.auth
        )
        .unwrap();
        let started = Instant::now();
        let mut bytes = Vec::new();
        let mut buf = [0u8; 2048];
        loop {
            if let Some(reply) = complete(&bytes) {
                return reply;
            }
            let n = self.conn.read(&mut buf).unwrap();
            assert!(n > 0, "connection closed mid-response");
            bytes.extend_from_slice(&buf[..n]);
            if let Some(rate) = self.rate {
                let due = Duration::from_secs_f64(bytes.len() as f64 / rate);
                thread::sleep(due.saturating_sub(started.elapsed()));
            }
        }
    }
}

/// A whole response with a Content-Length body, if `bytes` holds one.
fn complete(bytes: &[u8]) -> Option<Reply> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    resp.parse(&bytes[..end]).ok()?;
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    (bytes.len() >= end + len).then(|| Reply {
        status: resp.code.unwrap(),
        headers,
        body: bytes[end..end + len].to_vec(),
    })
}

#[test]
fn a_throttled_hub_gets_a_smaller_rendition_than_an_unthrottled_one() {
    let stack = hd_stack(|_| {});
    let mut fast = Hub::connect(&stack, None);
    let mut slow = Hub::connect(&stack, Some(40_000.0));
    // First responses: nothing measured on either connection yet (the slow one may start from
    // the fast one's link, remembered for the same owner, address and agent), so both get the
    // full frame.
    for hub in [&mut fast, &mut slow] {
        let r = hub.get("/v1/cameras/cam-1/frame");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-frame-variant"), Some("full"));
    }
    // Then each connection's own delivery rate decides.
    let fast_choice = fast.get("/v1/cameras/cam-1/frame");
    let slow_choice = slow.get("/v1/cameras/cam-1/frame");
    let variant = |r: &Reply| r.header("x-frame-variant").unwrap().to_string();
    assert_eq!(variant(&fast_choice), "full");
    assert_ne!(variant(&slow_choice), "full");
    assert!(slow_choice.body.len() < fast_choice.body.len() / 2);
    assert_eq!(
        stack.metric(r#"framecache_variant_choices_total{reason="measured",variant="full"}"#),
        1.0
    );
}

#[test]
fn a_new_connection_starts_from_the_link_its_hub_measured_on_the_last_one() {
    let stack = hd_stack(|_| {});
    let variant = |r: &Reply| r.header("x-frame-variant").unwrap().to_string();
    // A slow hub's first poll: nothing is known, so the full frame; delivering it measures.
    let mut first = Hub::connect(&stack, Some(40_000.0));
    let r = first.get("/v1/cameras/cam-1/frame");
    assert_eq!((r.status, variant(&r).as_str()), (200, "full"));
    drop(first);
    // The proxy keeps the link once the last bytes are acknowledged, and counts the request
    // after that.
    wait_until("the first poll to be done with", || {
        stack.metric(r#"framecache_variant_choices_total{reason="unmeasured",variant="full"}"#)
            == 1.0
    });
    // Its next poll comes on a new connection (it polls less often than the idle timeout):
    // the link its last connection measured chooses, before this one has sent a byte.
    let mut next = Hub::connect(&stack, Some(40_000.0));
    let r = next.get("/v1/cameras/cam-1/frame");
    assert_eq!(r.status, 200);
    assert_ne!(variant(&r), "full");
    assert_eq!(r.header("vary"), Some("Save-Data, ECT"));
    // Counted once the request is done, after the proxy has learnt from this frame too.
    let remembered = format!(
        r#"framecache_variant_choices_total{{reason="remembered",variant="{}"}}"#,
        variant(&r)
    );
    wait_until("the remembered choice to be counted", || {
        stack.metric(&remembered) == 1.0
    });
    // Another owner's hub at the same address is not that hub: nothing is known of its link.
    let mut other = Hub::connect_as(&stack, None, "owner-2");
    let r = other.get("/v1/cameras/cam-1/frame");
    assert_eq!((r.status, variant(&r).as_str()), (200, "full"));
    wait_until("both unknown links to be counted", || {
        stack.metric(r#"framecache_variant_choices_total{reason="unmeasured",variant="full"}"#)
            == 2.0
    });
}

/// A stack whose hub connections have a small kernel send buffer (`server.send_buffer_bytes`),
/// so that a hub that stops reading really stalls the proxy's writes of a ~90 KB frame.
fn small_buffer_stack(write_timeout: Duration) -> Stack {
    hd_stack(|c| {
        c.server.send_buffer = Some(16 * 1024);
        c.delivery.write_timeout = write_timeout;
        c.cache.latest_fresh = Duration::from_secs(60);
    })
}

#[test]
fn a_hub_that_stops_reading_is_dropped_and_holds_nothing_up() {
    let stack = small_buffer_stack(Duration::from_millis(300));
    // Sends its request, then never reads.
    let mut stalled = Hub::connect(&stack, Some(1.0));
    write!(
        stalled.conn,
        "GET /v1/cameras/cam-1/frame?variant=full HTTP/1.1\r\nHost: hub\r\nAuthorization: {}\r\n\r\n",
        stalled.auth
    )
    .unwrap();
    // Meanwhile hubs of the same owner and camera are served: the stalled one holds no origin
    // fetch, no flight and no rendering.
    for _ in 0..3 {
        let r = stack.get_as(
            "owner-1",
            &["cam-1"],
            "/v1/cameras/cam-1/frame?variant=full",
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(stack.origin_requests_for("cam-1"), 1);
    assert_eq!(stack.cache().flights(), 0);
    wait_until("the stalled hub is dropped", || {
        stack.metric(r#"framecache_hub_write_timeouts_total{route="frame"}"#) == 1.0
    });
    // The proxy closed the connection: what was buffered can be read, then the end.
    stalled
        .conn
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = stalled.conn.read_to_end(&mut rest);
    assert!(
        rest.len() < 90_000,
        "{} bytes reached the stalled hub",
        rest.len()
    );
}

#[test]
fn a_slow_hub_that_keeps_reading_gets_the_whole_frame() {
    // Each 16 KiB write may stall at most 2 s; the whole frame, more than the socket buffers
    // hold, takes longer than that at this pace.
    let stack = small_buffer_stack(Duration::from_secs(2));
    let mut slow = Hub::connect(&stack, Some(20_000.0));
    let started = Instant::now();
    let r = slow.get("/v1/cameras/cam-1/frame?variant=full");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag"), Some(etag_of(&r.body).as_str()));
    assert!(started.elapsed() > Duration::from_secs(3));
    assert_eq!(
        stack.metric(r#"framecache_hub_write_timeouts_total{route="frame"}"#),
        0.0
    );
}
