//! TLS and HTTP/2 to hubs: the plaintext listener's answers on the TLS listener over HTTP/1.1 and
//! HTTP/2, certificates as a client sees them, ALPN and its fallbacks, h2c with prior knowledge,
//! two owners on one HTTP/2 connection, MJPEG over HTTP/2, what the TLS port does with clients that
//! do not speak TLS, session resumption, the connection metrics, and idle HTTP/2 connections.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, Tls12Resumption, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, HandshakeKind,
    ProtocolVersion, SignatureScheme,
};

use crate::common::{
    alpn, client_provider, client_runtime, http1, metric_in, tls_connect, tls_error, until,
    wait_until, Leaf, Reply, Stack, TestCa, ALPN_H2, ALPN_HTTP1, EXPIRED_LEAF_VALID_AT, H2,
    OTHER_HOST, TLS_ALL,
};

const LATEST_1: &str = "/v1/cameras/cam-1/frame";
const LATEST_2: &str = "/v1/cameras/cam-2/frame";

/// The header fields of an answer as compared across listeners and protocols: names lowercased,
/// sorted; without the fields of the connection that HTTP/2 does not have (`connection`,
/// `keep-alive`, `transfer-encoding`); `date` and `age` by name only, their values move with
/// the clock.
fn comparable(reply: &Reply) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = reply
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "connection" | "keep-alive" | "transfer-encoding"
            )
        })
        .map(|(name, value)| match name.as_str() {
            "date" | "age" => (name, String::new()),
            "cache-control" if !value.contains("immutable") => (name, without_max_age(&value)),
            _ => (name, value),
        })
        .collect();
    fields.sort();
    fields
}

/// `cache-control` with the number of `max-age` left out: a latest frame's is the time it stays
/// fresh, which falls as the clock moves.
fn without_max_age(value: &str) -> String {
    match value.split_once("max-age=") {
        Some((before, after)) => {
            let rest = after.trim_start_matches(|c: char| c.is_ascii_digit());
            format!("{before}max-age=…{rest}")
        }
        None => value.to_string(),
    }
}

/// `what` answered the same as `plain`: status, header fields (see [`comparable`]) and body.
fn assert_same(what: &str, reply: &Reply, plain: &Reply) {
    assert_eq!(reply.status, plain.status, "{what}: status");
    assert_eq!(
        comparable(reply),
        comparable(plain),
        "{what}: header fields"
    );
    assert_eq!(reply.body, plain.body, "{what}: body");
}

/// A plaintext HTTP/1.1 request with `headers`.
fn plain(stack: &Stack, method: &str, path: &str, headers: &[(String, String)]) -> Reply {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    stack.send(method, path, &headers)
}

/// A TLS connection that negotiated `h2`, as an HTTP/2 client.
async fn h2_over_tls(stack: &Stack, config: &Arc<ClientConfig>) -> H2 {
    let tls = tls_connect(stack.tls_addr(), config, "localhost")
        .await
        .unwrap();
    assert_eq!(alpn(&tls), Some(ALPN_H2));
    H2::handshake(tls, "https").await.unwrap()
}

/// An HTTP/1.1 request on a TLS connection of its own, checking the ALPN outcome first.
async fn http1_over_tls(
    stack: &Stack,
    config: &Arc<ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(String, String)],
) -> Reply {
    let mut tls = tls_connect(stack.tls_addr(), config, "localhost")
        .await
        .unwrap();
    let chosen = alpn(&tls);
    assert!(chosen.is_none() || chosen == Some(ALPN_HTTP1), "{chosen:?}");
    http1(&mut tls, method, path, headers).await
}

/// A request asked on every listener and protocol, and the status it must get.
struct Ask<'a> {
    what: &'a str,
    method: &'a str,
    path: &'a str,
    headers: Vec<(String, String)>,
    status: u16,
}

fn ask<'a>(
    what: &'a str,
    method: &'a str,
    path: &'a str,
    headers: Vec<(String, String)>,
    status: u16,
) -> Ask<'a> {
    Ask {
        what,
        method,
        path,
        headers,
        status,
    }
}

#[test]
fn tls_and_http2_answer_as_the_plaintext_listener_does() {
    let ca = TestCa::new();
    // Latest frames stay fresh for the whole test: every answer after the first is a hit.
    let stack = Stack::with_tls(
        ca.tls(Leaf::Localhost),
        |c| c.cache.latest_fresh = Duration::from_secs(600),
        |_| {},
    );
    let owner_1 = stack.bearer("owner-1", &["cam-1"]);
    let first = plain(&stack, "GET", LATEST_1, std::slice::from_ref(&owner_1));
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(
        first.header("cache-status"),
        Some("framecache; fwd=miss; stored")
    );
    let hash = blake3::hash(&first.body).to_hex().to_string();
    let etag = format!("\"{hash}\"");
    let by_hash = format!("/v1/cameras/cam-1/frames/{hash}");
    let len = first.body.len();
    let with = |extra: (&str, &str)| vec![owner_1.clone(), (extra.0.into(), extra.1.into())];
    let cam_9 = stack.bearer("owner-1", &["cam-9"]);

    let cases = [
        ask("latest", "GET", LATEST_1, vec![owner_1.clone()], 200),
        ask("latest, HEAD", "HEAD", LATEST_1, vec![owner_1.clone()], 200),
        ask("by hash", "GET", &by_hash, vec![owner_1.clone()], 200),
        ask(
            "if-none-match",
            "GET",
            LATEST_1,
            with(("if-none-match", &etag)),
            304,
        ),
        ask("range", "GET", LATEST_1, with(("range", "bytes=0-99")), 206),
        ask(
            "suffix range",
            "GET",
            &by_hash,
            with(("range", "bytes=-10")),
            206,
        ),
        ask(
            "bad range",
            "GET",
            LATEST_1,
            with(("range", "bytes=99999999-")),
            416,
        ),
        ask("no token", "GET", LATEST_1, vec![], 401),
        ask("not granted", "GET", LATEST_2, vec![owner_1.clone()], 403),
        ask(
            "unknown camera",
            "GET",
            "/v1/cameras/cam-9/frame",
            vec![cam_9],
            404,
        ),
        ask(
            "unknown path",
            "GET",
            "/v1/nothing",
            vec![owner_1.clone()],
            404,
        ),
        ask(
            "unknown query key",
            "GET",
            "/v1/cameras/cam-1/frame?x=1",
            vec![owner_1.clone()],
            400,
        ),
        ask(
            "dot segment",
            "GET",
            "/v1/cameras/cam-2/../cam-1/frame",
            vec![owner_1.clone()],
            400,
        ),
        ask(
            "other method",
            "DELETE",
            LATEST_1,
            vec![owner_1.clone()],
            405,
        ),
    ];

    let runtime = client_runtime();
    let h1_config = Arc::new(ca.client(TLS_ALL, &[ALPN_HTTP1]));
    let h2_config = Arc::new(ca.client(TLS_ALL, &[ALPN_H2]));
    runtime.block_on(async {
        // Every HTTP/2 request on one connection.
        let h2 = h2_over_tls(&stack, &h2_config).await;
        for Ask {
            what,
            method,
            path,
            headers,
            status,
        } in &cases
        {
            let plain = plain(&stack, method, path, headers);
            assert_eq!(
                plain.status,
                *status,
                "{what} on plaintext: {}",
                plain.text()
            );
            let h1 = http1_over_tls(&stack, &h1_config, method, path, headers).await;
            assert_same(&format!("{what} over TLS, HTTP/1.1"), &h1, &plain);
            let h2 = h2.request(method, path, headers).await.unwrap();
            assert_same(&format!("{what} over TLS, HTTP/2"), &h2, &plain);
        }
    });

    // What the answers compared above are, once (SPEC, "Hub-facing HTTP API").
    let get = |headers: &[(String, String)], path: &str| plain(&stack, "GET", path, headers);
    let latest = get(std::slice::from_ref(&owner_1), LATEST_1);
    assert_eq!(latest.body, first.body);
    assert_eq!(
        camsim::jpeg::read_watermark(&latest.body).unwrap().0,
        "cam-1"
    );
    assert_eq!(latest.header("etag"), Some(etag.as_str()));
    assert_eq!(latest.header("content-type"), Some("image/jpeg"));
    let max_age: u64 = latest
        .header("cache-control")
        .and_then(|v| v.strip_prefix("private, max-age="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{:?}", latest.header("cache-control")));
    assert!(
        (590..=600).contains(&max_age),
        "what stays of 600 s: {max_age}"
    );
    assert_eq!(latest.header("cache-status"), Some("framecache; hit"));
    assert_eq!(latest.header("content-location"), Some(by_hash.as_str()));
    assert_eq!(latest.header("x-frame-seq"), first.header("x-frame-seq"));
    let hashed = get(std::slice::from_ref(&owner_1), &by_hash);
    assert_eq!(
        hashed.header("cache-control"),
        Some("private, max-age=31536000, immutable")
    );
    let range = get(&with(("range", "bytes=0-99")), LATEST_1);
    assert_eq!(range.body, first.body[..100]);
    let content_range = format!("bytes 0-99/{len}");
    assert_eq!(range.header("content-range"), Some(content_range.as_str()));
    let unsatisfiable = get(&with(("range", "bytes=99999999-")), LATEST_1);
    let content_range = format!("bytes */{len}");
    assert_eq!(
        unsatisfiable.header("content-range"),
        Some(content_range.as_str())
    );
    let not_modified = get(&with(("if-none-match", &etag)), LATEST_1);
    assert!(not_modified.body.is_empty());
    assert_eq!(not_modified.header("etag"), Some(etag.as_str()));
    let no_token = get(&[], LATEST_1);
    assert_eq!(no_token.error_code(), "invalid_token");
    assert_eq!(
        no_token.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );
    assert_eq!(
        get(&[stack.bearer("owner-1", &["cam-1"])], LATEST_2).error_code(),
        "forbidden"
    );
    let unknown = get(
        &[stack.bearer("owner-1", &["cam-9"])],
        "/v1/cameras/cam-9/frame",
    );
    assert_eq!(unknown.error_code(), "not_found");

    let scrape = stack.scrape();
    let connections = |labels: &str| {
        metric_in(
            &scrape,
            &format!("framecache_hub_connections_total{{{labels}}}"),
        )
    };
    assert_eq!(connections(r#"listener="tls",protocol="h2""#), 1.0);
    assert_eq!(
        connections(r#"listener="tls",protocol="http1""#),
        cases.len() as f64
    );
    // cam-1 was fetched once, for the first request: every answer since came from the cache.
    assert_eq!(stack.origin_requests_for("cam-1"), 1);
}

/// The camera in a frame's watermark.
fn camera_of(reply: &Reply) -> String {
    camsim::jpeg::read_watermark(&reply.body)
        .unwrap_or_else(|| panic!("a watermarked frame: {} {}", reply.status, reply.text()))
        .0
}

/// Verifies the server's chain as WebPKI does with the test CA, with the clock at `now`: a
/// client that trusts a certificate however old it is.
#[derive(Debug)]
struct VerifyAt {
    webpki: Arc<WebPkiServerVerifier>,
    now: UnixTime,
}

impl ServerCertVerifier for VerifyAt {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            self.now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The TLS handshakes the proxy counted with `result`.
fn handshakes(stack: &Stack, result: &str) -> f64 {
    stack.metric(&format!(
        r#"framecache_tls_handshakes_total{{result="{result}"}}"#
    ))
}

#[test]
fn an_expired_certificate_fails_verification_and_a_client_that_trusts_it_gets_frames() {
    let ca = TestCa::new();
    let stack = Stack::with_tls(ca.tls(Leaf::Expired), |_| {}, |_| {});
    let runtime = client_runtime();
    let strict = Arc::new(ca.client(TLS_ALL, &[ALPN_HTTP1]));
    let error = runtime
        .block_on(tls_connect(stack.tls_addr(), &strict, "localhost"))
        .expect_err("an expired certificate");
    assert!(
        matches!(
            tls_error(&error),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            ))
        ),
        "{error:?}"
    );
    // The client gave up with an alert: the proxy counts a failed handshake.
    wait_until("the failed handshake is counted", || {
        handshakes(&stack, "failed") == 1.0
    });

    // A client whose clock is in 2020 trusts the same certificate.
    let mut trusting = ca.client(TLS_ALL, &[ALPN_HTTP1]);
    let webpki = WebPkiServerVerifier::builder_with_provider(
        Arc::new(ca.roots()),
        Arc::new(client_provider()),
    )
    .build()
    .unwrap();
    trusting
        .dangerous()
        .set_certificate_verifier(Arc::new(VerifyAt {
            webpki,
            now: UnixTime::since_unix_epoch(Duration::from_secs(EXPIRED_LEAF_VALID_AT)),
        }));
    let trusting = Arc::new(trusting);
    let token = stack.bearer("owner-1", &["cam-2"]);
    let reply = runtime.block_on(async {
        let mut tls = tls_connect(stack.tls_addr(), &trusting, "localhost")
            .await
            .unwrap();
        http1(&mut tls, "GET", LATEST_2, &[token]).await
    });
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(camera_of(&reply), "cam-2");
    assert_eq!(handshakes(&stack, "ok"), 1.0);
    assert_eq!(handshakes(&stack, "failed"), 1.0);
}

#[test]
fn a_certificate_for_another_host_fails_verification_and_a_client_asking_for_that_host_gets_frames()
{
    let ca = TestCa::new();
    let stack = Stack::with_tls(ca.tls(Leaf::WrongHost), |_| {}, |_| {});
    let runtime = client_runtime();
    let config = Arc::new(ca.client(TLS_ALL, &[ALPN_H2, ALPN_HTTP1]));
    let error = runtime
        .block_on(tls_connect(stack.tls_addr(), &config, "localhost"))
        .expect_err("a certificate for another name");
    assert!(
        matches!(
            tls_error(&error),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            ))
        ),
        "{error:?}"
    );
    wait_until("the failed handshake is counted", || {
        handshakes(&stack, "failed") == 1.0
    });

    // The certificate's own name (a hub that resolves it to this edge), over HTTP/2.
    let token = stack.bearer("owner-1", &["cam-2"]);
    let reply = runtime.block_on(async {
        let tls = tls_connect(stack.tls_addr(), &config, OTHER_HOST)
            .await
            .unwrap();
        assert_eq!(alpn(&tls), Some(ALPN_H2));
        let h2 = H2::handshake(tls, "https").await.unwrap();
        h2.request("GET", LATEST_2, &[token]).await.unwrap()
    });
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(camera_of(&reply), "cam-2");
    assert_eq!(handshakes(&stack, "ok"), 1.0);
    assert_eq!(handshakes(&stack, "failed"), 1.0);
}

/// Protocols a client offers in ALPN, and the one the server chooses.
type Offer = (&'static [&'static str], Option<&'static str>);

#[test]
fn alpn_falls_back_to_http1() {
    let ca = TestCa::new();
    let runtime = client_runtime();
    for h2 in [true, false] {
        let stack = Stack::with_tls(ca.tls(Leaf::Localhost), |c| c.server.h2 = h2, |_| {});
        let token = stack.bearer("owner-1", &["cam-2"]);
        // What the client offers, and what it gets.
        let offers: &[Offer] = if h2 {
            &[(&[ALPN_HTTP1], Some(ALPN_HTTP1)), (&[], None)]
        } else {
            &[(&[ALPN_H2, ALPN_HTTP1], Some(ALPN_HTTP1)), (&[], None)]
        };
        let mut served = 0.0;
        for (offered, gets) in offers {
            let config = Arc::new(ca.client(TLS_ALL, offered));
            let reply = runtime.block_on(async {
                let mut tls = tls_connect(stack.tls_addr(), &config, "localhost")
                    .await
                    .unwrap();
                assert_eq!(alpn(&tls), *gets, "server.h2 = {h2}, offered {offered:?}");
                http1(&mut tls, "GET", LATEST_2, std::slice::from_ref(&token)).await
            });
            assert_eq!(reply.status, 200, "{}", reply.text());
            assert_eq!(
                camsim::jpeg::read_watermark(&reply.body).unwrap().0,
                "cam-2"
            );
            served += 1.0;
        }
        if !h2 {
            // A client that speaks only h2 to an edge without it: RFC 7301's alert.
            let config = Arc::new(ca.client(TLS_ALL, &[ALPN_H2]));
            let error = runtime
                .block_on(tls_connect(stack.tls_addr(), &config, "localhost"))
                .expect_err("no protocol in common");
            assert_eq!(
                tls_error(&error),
                Some(&rustls::Error::AlertReceived(
                    AlertDescription::NoApplicationProtocol
                )),
                "{error}"
            );
        }
        let scrape = stack.scrape();
        let tls = |protocol: &str| {
            metric_in(
                &scrape,
                &format!(
                    r#"framecache_hub_connections_total{{listener="tls",protocol="{protocol}"}}"#
                ),
            )
        };
        assert_eq!(tls("http1"), served, "server.h2 = {h2}");
        assert_eq!(tls("h2"), 0.0, "server.h2 = {h2}");
    }
}

#[test]
fn h2c_with_prior_knowledge_on_the_plaintext_listener() {
    let stack = Stack::with(|c| c.cache.latest_fresh = Duration::from_secs(600), |_| {});
    let token = stack.bearer("owner-1", &["cam-1", "cam-2"]);
    let runtime = client_runtime();
    let (first, second) = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(stack.proxy.hub_addr)
            .await
            .unwrap();
        let h2 = H2::handshake(tcp, "http").await.unwrap();
        let headers = std::slice::from_ref(&token);
        // Two streams on the connection at once.
        let (first, second) = tokio::join!(
            h2.request("GET", LATEST_1, headers),
            h2.request("GET", LATEST_2, headers)
        );
        (first.unwrap(), second.unwrap())
    });
    for (reply, camera, path) in [(&first, "cam-1", LATEST_1), (&second, "cam-2", LATEST_2)] {
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(camsim::jpeg::read_watermark(&reply.body).unwrap().0, camera);
        assert_eq!(
            reply.header("cache-status"),
            Some("framecache; fwd=miss; stored")
        );
        // The same answer as HTTP/1.1 gives, a hit now.
        let mut plain = plain(&stack, "GET", path, std::slice::from_ref(&token));
        assert_eq!(plain.header("cache-status"), Some("framecache; hit"));
        for (name, value) in &mut plain.headers {
            if name.eq_ignore_ascii_case("cache-status") {
                *value = "framecache; fwd=miss; stored".into();
            }
        }
        assert_same(&format!("{path} over h2c"), reply, &plain);
    }
    let scrape = stack.scrape();
    assert_eq!(
        metric_in(
            &scrape,
            r#"framecache_hub_connections_total{listener="plain",protocol="h2"}"#
        ),
        1.0
    );
    assert_eq!(
        metric_in(
            &scrape,
            r#"framecache_hub_connections_total{listener="plain",protocol="http1"}"#
        ),
        2.0
    );
}

/// The HTTP/2 connection preface and an empty SETTINGS frame, as an h2c client opens.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[test]
fn without_http2_the_h2c_preface_gets_a_400() {
    let stack = Stack::with(|c| c.server.h2 = false, |_| {});
    // The preface is a malformed HTTP/1.1 head: the JSON 400, and the connection closed.
    let reply = crate::common::exchange(stack.proxy.hub_addr, H2_PREFACE, false);
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(reply.error_code(), "bad_request");
    assert_eq!(reply.header("connection"), Some("close"));
    // An HTTP/2 client sees its connection fail.
    let runtime = client_runtime();
    let token = stack.bearer("owner-1", &["cam-1"]);
    let outcome = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(stack.proxy.hub_addr)
            .await
            .unwrap();
        let h2 = H2::handshake(tcp, "http").await?;
        h2.request("GET", LATEST_1, &[token]).await
    });
    assert!(outcome.is_err(), "{outcome:?}");

    let scrape = stack.scrape();
    assert_eq!(
        metric_in(
            &scrape,
            r#"framecache_requests_total{route="other",status="400"}"#
        ),
        2.0
    );
    assert_eq!(
        metric_in(
            &scrape,
            r#"framecache_hub_connections_total{listener="plain",protocol="h2"}"#
        ),
        0.0
    );
    assert_eq!(stack.origin_requests(), 0);
}

#[test]
fn two_owners_on_one_http2_connection_each_get_their_own_frames() {
    let ca = TestCa::new();
    let stack = Stack::with_tls(
        ca.tls(Leaf::Localhost),
        |c| c.cache.latest_fresh = Duration::from_secs(600),
        |_| {},
    );
    let owner_1 = stack.bearer("owner-1", &["cam-1", "cam-2"]);
    let owner_2 = stack.bearer("owner-2", &["cam-1", "cam-3"]);
    // owner-1 with a token that does not name cam-3, and with one that does though the
    // backend does not share cam-3 with owner-1.
    let not_granted = stack.bearer("owner-1", &["cam-2"]);
    let not_shared = stack.bearer("owner-1", &["cam-3"]);
    let config = Arc::new(ca.client(TLS_ALL, &[ALPN_H2]));
    let runtime = client_runtime();
    runtime.block_on(async {
        let h2 = h2_over_tls(&stack, &config).await;

        // Interleaved: every stream is open before any answer is read.
        let mut streams = Vec::new();
        for i in 0..4 {
            streams.push((
                "owner-1",
                "cam-2",
                h2.start("GET", LATEST_2, std::slice::from_ref(&owner_1))
                    .await
                    .unwrap(),
            ));
            streams.push((
                "owner-2",
                "cam-3",
                h2.start(
                    "GET",
                    "/v1/cameras/cam-3/frame",
                    std::slice::from_ref(&owner_2),
                )
                .await
                .unwrap(),
            ));
            if i == 1 {
                for token in [&not_granted, &not_shared] {
                    let refused = h2.start(
                        "GET",
                        "/v1/cameras/cam-3/frame",
                        std::slice::from_ref(token),
                    );
                    streams.push(("owner-1", "forbidden", refused.await.unwrap()));
                }
            }
        }
        // Read at once, as a hub does: the answers share the connection's flow-control window.
        let replies: Vec<_> = streams
            .into_iter()
            .map(|(owner, camera, response)| {
                (
                    owner,
                    camera,
                    tokio::spawn(crate::common::h2_reply(response)),
                )
            })
            .collect();
        let mut answered = 0;
        for (owner, camera, reply) in replies {
            let reply = reply.await.unwrap().unwrap();
            if camera == "forbidden" {
                assert_eq!(reply.status, 403, "{}", reply.text());
                assert_eq!(reply.error_code(), "forbidden");
                continue;
            }
            assert_eq!(reply.status, 200, "{owner} {camera}: {}", reply.text());
            assert_eq!(camera_of(&reply), camera, "{owner}");
            let hash = blake3::hash(&reply.body).to_hex();
            assert_eq!(reply.header("etag"), Some(format!("\"{hash}\"").as_str()));
            assert_eq!(
                reply.header("content-location"),
                Some(format!("/v1/cameras/{camera}/frames/{hash}").as_str())
            );
            answered += 1;
        }
        assert_eq!(answered, 8);

        // cam-1, which both read: each owner's first request is a miss of its own, fetched
        // for that owner, though the other's is in flight or stored on the same connection.
        let (first_1, first_2) = tokio::join!(
            h2.request("GET", LATEST_1, std::slice::from_ref(&owner_1)),
            h2.request("GET", LATEST_1, std::slice::from_ref(&owner_2))
        );
        let (first_1, first_2) = (first_1.unwrap(), first_2.unwrap());
        for (owner, reply) in [("owner-1", &first_1), ("owner-2", &first_2)] {
            assert_eq!(reply.status, 200, "{owner}: {}", reply.text());
            assert_eq!(camera_of(reply), "cam-1");
            assert_eq!(
                reply.header("cache-status"),
                Some("framecache; fwd=miss; stored"),
                "{owner}'s first cam-1 frame"
            );
        }
        // Then each hits its own entry.
        let (again_1, again_2) = tokio::join!(
            h2.request("GET", LATEST_1, std::slice::from_ref(&owner_1)),
            h2.request("GET", LATEST_1, std::slice::from_ref(&owner_2))
        );
        for (owner, reply, first) in [
            ("owner-1", again_1.unwrap(), &first_1),
            ("owner-2", again_2.unwrap(), &first_2),
        ] {
            assert_eq!(
                reply.header("cache-status"),
                Some("framecache; hit"),
                "{owner}"
            );
            assert_eq!(reply.header("etag"), first.header("etag"), "{owner}");
            assert_eq!(reply.body, first.body, "{owner}");
        }
    });

    let seen = stack.camsim.stats();
    assert_eq!(seen.frame_requests_for("cam-1"), 2, "one fetch per owner");
    let scrape = stack.scrape();
    for series in [
        "framecache_cache_cross_owner_hits_total",
        "framecache_cache_key_collisions_total",
    ] {
        assert_eq!(metric_in(&scrape, series), 0.0, "{series}");
    }
    assert_eq!(
        metric_in(
            &scrape,
            r#"framecache_auth_failures_total{reason="camera_not_granted"}"#
        ),
        1.0
    );
    assert_eq!(
        metric_in(
            &scrape,
            r#"framecache_hub_connections_total{listener="tls",protocol="h2"}"#
        ),
        1.0
    );
}

/// One part of an MJPEG stream: its head's seq and its JPEG.
struct Part {
    seq: u64,
    body: Vec<u8>,
}

/// An MJPEG stream read from an HTTP/2 stream's DATA frames.
struct Parts {
    body: h2::RecvStream,
    pending: Vec<u8>,
}

impl Parts {
    async fn next(&mut self) -> Part {
        loop {
            if let Some(end) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.pending[..end]).into_owned();
                assert!(head.starts_with("--framecache-frame\r\n"), "{head}");
                let field = |name: &str| {
                    head.lines()
                        .find_map(|l| l.strip_prefix(name))
                        .unwrap_or_else(|| panic!("{name} in {head}"))
                        .trim()
                        .to_string()
                };
                let len: usize = field("Content-Length:").parse().unwrap();
                let seq: u64 = field("X-Frame-Seq:").parse().unwrap();
                let start = end + 4;
                while self.pending.len() < start + len + 2 {
                    self.read().await;
                }
                let body = self.pending[start..start + len].to_vec();
                assert_eq!(&self.pending[start + len..start + len + 2], b"\r\n");
                self.pending.drain(..start + len + 2);
                let etag = format!("\"{}\"", blake3::hash(&body).to_hex());
                assert_eq!(field("ETag:"), etag);
                return Part { seq, body };
            }
            self.read().await;
        }
    }

    async fn read(&mut self) {
        let chunk = tokio::time::timeout(Duration::from_secs(20), self.body.data())
            .await
            .expect("stream data within 20 s")
            .expect("the stream goes on")
            .unwrap();
        let _ = self.body.flow_control().release_capacity(chunk.len());
        self.pending.extend_from_slice(&chunk);
    }
}

#[test]
fn an_mjpeg_stream_over_http2() {
    let ca = TestCa::new();
    let stack = Stack::with_tls(
        ca.tls(Leaf::Localhost),
        |c| {
            c.delivery.stream_interval = Duration::from_millis(20);
            c.cache.latest_fresh = Duration::from_millis(20);
        },
        |o| o.fps = 50.0,
    );
    let token = stack.bearer("owner-1", &["cam-2"]);
    let config = Arc::new(ca.client(TLS_ALL, &[ALPN_H2]));
    let runtime = client_runtime();
    runtime.block_on(async {
        let h2 = h2_over_tls(&stack, &config).await;
        let response = h2
            .start(
                "GET",
                "/v1/cameras/cam-2/stream",
                std::slice::from_ref(&token),
            )
            .await
            .unwrap();
        let (head, body) = response.await.unwrap().into_parts();
        assert_eq!(head.status, 200);
        assert_eq!(
            head.headers.get("content-type").unwrap(),
            "multipart/x-mixed-replace; boundary=framecache-frame"
        );
        let mut parts = Parts {
            body,
            pending: Vec::new(),
        };
        let mut last = 0;
        for i in 0..5 {
            let part = parts.next().await;
            let (camera, seq) = camsim::jpeg::read_watermark(&part.body).expect("a whole JPEG");
            assert_eq!(camera, "cam-2");
            assert_eq!(seq, part.seq);
            assert!(seq > last, "newer frames only: {seq} after {last}");
            last = seq;
            if i == 2 {
                // A sibling stream on the same connection is answered meanwhile.
                let frame = h2
                    .request("GET", LATEST_2, std::slice::from_ref(&token))
                    .await;
                let frame = frame.unwrap();
                assert_eq!(frame.status, 200);
                assert_eq!(camera_of(&frame), "cam-2");
            }
        }
        assert_eq!(stack.metric("framecache_stream_subscribers"), 1.0);
        // Ending the HTTP/2 stream (RST_STREAM) ends the subscriber; the connection stays.
        drop(parts);
        until("the subscriber is gone", || {
            stack.metric("framecache_stream_subscribers") == 0.0
        })
        .await;
        let frame = h2.request("GET", LATEST_2, &[token]).await.unwrap();
        assert_eq!(frame.status, 200);
    });
    let scrape = stack.scrape();
    assert_eq!(
        metric_in(
            &scrape,
            r#"framecache_requests_total{route="stream",status="200"}"#
        ),
        1.0
    );
    assert_eq!(
        metric_in(
            &scrape,
            r#"framecache_hub_connections_total{listener="tls",protocol="h2"}"#
        ),
        1.0
    );
}

/// Reads what the server sends on `conn` until it closes (or 10 s pass, which fails).
fn read_until_closed(conn: &mut TcpStream) -> Vec<u8> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the server did not close the connection: {e} after {got:?}"),
        }
    }
}

#[test]
fn clients_that_do_not_speak_tls_are_closed_and_counted() {
    let ca = TestCa::new();
    let stack = Stack::with_tls(
        ca.tls(Leaf::Localhost),
        |c| c.limits.header_timeout = Duration::from_millis(300),
        |_| {},
    );
    let token = stack.token("owner-1", &["cam-2"]);
    let plaintext = format!(
        "GET {LATEST_2} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    let garbage: Vec<u8> = (0..512u32).map(|i| (i * 151 % 251) as u8 | 0x80).collect();
    for (n, (what, bytes)) in [
        ("plaintext HTTP/1.1", plaintext.as_bytes()),
        ("garbage", &garbage[..]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut conn = TcpStream::connect(stack.tls_addr()).unwrap();
        conn.write_all(bytes).unwrap();
        let answer = read_until_closed(&mut conn);
        // At most a TLS alert record (content type 21), never an HTTP answer.
        assert!(
            answer.is_empty() || answer[0] == 21,
            "{what}: {:?}",
            String::from_utf8_lossy(&answer)
        );
        wait_until("the failed handshake is counted", || {
            handshakes(&stack, "failed") == (n + 1) as f64
        });
    }
    // A client that connects and says nothing is closed after limits.header_timeout_ms.
    let mut silent = TcpStream::connect(stack.tls_addr()).unwrap();
    let answer = read_until_closed(&mut silent);
    assert!(answer.is_empty(), "{answer:?}");
    wait_until("the silent handshake is counted", || {
        handshakes(&stack, "failed") == 3.0
    });

    let scrape = stack.scrape();
    assert_eq!(
        metric_in(&scrape, r#"framecache_tls_handshakes_total{result="ok"}"#),
        0.0
    );
    // None of them reached the proxy.
    let requests: f64 = scrape
        .lines()
        .filter(|line| line.starts_with("framecache_requests_total{"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(requests, 0.0, "{scrape}");
    for protocol in ["http1", "h2"] {
        let series =
            format!(r#"framecache_hub_connections_total{{listener="tls",protocol="{protocol}"}}"#);
        assert_eq!(metric_in(&scrape, &series), 0.0, "{series}");
    }
    assert_eq!(stack.origin_requests(), 0);
}

#[test]
fn a_second_connection_resumes_the_tls_session() {
    let ca = TestCa::new();
    let stack = Stack::with_tls(ca.tls(Leaf::Localhost), |_| {}, |_| {});
    let token = stack.bearer("owner-1", &["cam-2"]);
    let runtime = client_runtime();
    let session_ids_only =
        Resumption::in_memory_sessions(64).tls12_resumption(Tls12Resumption::SessionIdOnly);
    // (what, version, how a TLS 1.2 client resumes: rustls's default offers tickets and ids)
    let cases = [
        (
            "TLS 1.3",
            &rustls::version::TLS13,
            ProtocolVersion::TLSv1_3,
            None,
        ),
        (
            "TLS 1.2, tickets or session ids",
            &rustls::version::TLS12,
            ProtocolVersion::TLSv1_2,
            None,
        ),
        (
            "TLS 1.2, session ids only",
            &rustls::version::TLS12,
            ProtocolVersion::TLSv1_2,
            Some(session_ids_only),
        ),
    ];
    for (what, version, protocol, resumption) in cases {
        // Each case its own session store.
        let mut config = ca.client(&[version], &[ALPN_HTTP1]);
        if let Some(resumption) = resumption {
            config.resumption = resumption;
        }
        let config = Arc::new(config);
        for expected in [HandshakeKind::Full, HandshakeKind::Resumed] {
            let reply = runtime.block_on(async {
                let mut tls = tls_connect(stack.tls_addr(), &config, "localhost")
                    .await
                    .unwrap();
                let session = tls.get_ref().1;
                assert_eq!(session.protocol_version(), Some(protocol), "{what}");
                assert_eq!(session.handshake_kind(), Some(expected), "{what}");
                // Read to the end: a TLS 1.3 ticket comes after the handshake.
                http1(&mut tls, "GET", LATEST_2, std::slice::from_ref(&token)).await
            });
            assert_eq!(reply.status, 200, "{what}: {}", reply.text());
            assert_eq!(camera_of(&reply), "cam-2");
        }
    }
    assert_eq!(handshakes(&stack, "ok"), 6.0);
    assert_eq!(handshakes(&stack, "failed"), 0.0);
}

#[test]
fn hub_connections_are_counted_by_listener_and_protocol() {
    let ca = TestCa::new();
    let stack = Stack::with_tls(ca.tls(Leaf::Localhost), |_| {}, |_| {});
    let token = stack.bearer("owner-1", &["cam-1", "cam-2"]);
    let headers = std::slice::from_ref(&token);
    let runtime = client_runtime();
    let h1_config = Arc::new(ca.client(TLS_ALL, &[ALPN_HTTP1]));
    let bare_config = Arc::new(ca.client(TLS_ALL, &[]));
    let h2_config = Arc::new(ca.client(TLS_ALL, &[ALPN_H2, ALPN_HTTP1]));
    let series = |listener: &str, protocol: &str, kind: &str| {
        format!(
            r#"framecache_hub_connections_{kind}{{listener="{listener}",protocol="{protocol}"}}"#
        )
    };
    let open = |listener: &str, protocol: &str| stack.metric(&series(listener, protocol, "open"));

    runtime.block_on(async {
        // TLS, HTTP/1.1: two that offered http/1.1, one that offered nothing.
        for config in [&h1_config, &h1_config, &bare_config] {
            let reply = http1_over_tls(&stack, config, "GET", LATEST_1, headers).await;
            assert_eq!(reply.status, 200);
        }
        // TLS, HTTP/2: one connection, three streams.
        let h2 = h2_over_tls(&stack, &h2_config).await;
        for _ in 0..3 {
            assert_eq!(
                h2.request("GET", LATEST_2, headers).await.unwrap().status,
                200
            );
        }
        // Plaintext, h2c: one connection, two streams.
        let tcp = tokio::net::TcpStream::connect(stack.proxy.hub_addr)
            .await
            .unwrap();
        let h2c = H2::handshake(tcp, "http").await.unwrap();
        for _ in 0..2 {
            assert_eq!(
                h2c.request("GET", LATEST_1, headers).await.unwrap().status,
                200
            );
        }
        // Plaintext, HTTP/1.1.
        assert_eq!(plain(&stack, "GET", LATEST_1, headers).status, 200);
        // A failed handshake.
        let mut garbage = TcpStream::connect(stack.tls_addr()).unwrap();
        garbage.write_all(&[0xff; 64]).unwrap();
        let answer = read_until_closed(&mut garbage);
        assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");

        // The HTTP/2 connections are open; the HTTP/1.1 ones (Connection: close) are done.
        assert_eq!(open("tls", "h2"), 1.0);
        assert_eq!(open("plain", "h2"), 1.0);
        wait_until("the HTTP/1.1 connections are closed", || {
            open("tls", "http1") == 0.0 && open("plain", "http1") == 0.0
        });
        drop(h2);
        drop(h2c);
    });
    // The runtime's end closed the HTTP/2 connections.
    drop(runtime);
    wait_until("the HTTP/2 connections are closed", || {
        open("tls", "h2") == 0.0 && open("plain", "h2") == 0.0
    });

    let scrape = stack.scrape();
    let total =
        |listener: &str, protocol: &str| metric_in(&scrape, &series(listener, protocol, "total"));
    assert_eq!(total("tls", "http1"), 3.0);
    assert_eq!(total("tls", "h2"), 1.0);
    assert_eq!(total("plain", "h2"), 1.0);
    assert_eq!(total("plain", "http1"), 1.0);
    assert_eq!(
        metric_in(&scrape, r#"framecache_tls_handshakes_total{result="ok"}"#),
        4.0
    );
    assert_eq!(
        metric_in(
            &scrape,
            r#"framecache_tls_handshakes_total{result="failed"}"#
        ),
        1.0
    );
    assert_eq!(
        metric_in(
            &scrape,
            r#"framecache_requests_total{route="frame",status="200"}"#
        ),
        9.0
    );
}

#[test]
fn idle_http2_connections_are_closed() {
    let ca = TestCa::new();
    let stack = Stack::with_tls(
        ca.tls(Leaf::Localhost),
        |c| {
            c.limits.header_timeout = Duration::from_millis(300);
            c.delivery.idle_timeout = Duration::from_secs(1);
        },
        |_| {},
    );
    let token = stack.bearer("owner-1", &["cam-2"]);
    let headers = std::slice::from_ref(&token);
    let config = Arc::new(ca.client(TLS_ALL, &[ALPN_H2]));
    let open = |listener: &str| {
        stack.metric(&format!(
            r#"framecache_hub_connections_open{{listener="{listener}",protocol="h2"}}"#
        ))
    };
    let runtime = client_runtime();
    runtime.block_on(async {
        // Idle after one request, on TLS and on h2c; and one that never asks anything.
        let used = h2_over_tls(&stack, &config).await;
        assert_eq!(
            used.request("GET", LATEST_2, headers).await.unwrap().status,
            200
        );
        let tcp = tokio::net::TcpStream::connect(stack.proxy.hub_addr)
            .await
            .unwrap();
        let h2c = H2::handshake(tcp, "http").await.unwrap();
        assert_eq!(
            h2c.request("GET", LATEST_2, headers).await.unwrap().status,
            200
        );
        let silent = h2_over_tls(&stack, &config).await;
        // The proxy counts a connection once its side of the handshake is done.
        until("the three connections are counted open", || {
            (open("tls"), open("plain")) == (2.0, 1.0)
        })
        .await;

        // An HTTP/1.1 connection idle this long is closed (delivery.idle_timeout_secs); so is
        // an HTTP/2 one.
        until("the idle HTTP/2 connections are closed", || {
            open("tls") == 0.0 && open("plain") == 0.0
        })
        .await;
        for (what, h2) in [("used", &used), ("h2c", &h2c), ("silent", &silent)] {
            let after = h2.request("GET", LATEST_2, headers).await;
            assert!(after.is_err(), "{what}: {after:?}");
        }
    });
}

#[test]
fn a_head_too_large_gets_the_json_431_on_every_protocol() {
    let ca = TestCa::new();
    let stack = Stack::with_tls(ca.tls(Leaf::Localhost), |_| {}, |_| {});
    let token = stack.bearer("owner-1", &["cam-2"]);
    // Larger than limits.header_bytes (16 KiB).
    let large = vec![token.clone(), ("x-large".to_string(), "a".repeat(20_000))];
    let plain = plain(&stack, "GET", LATEST_2, &large);
    assert_eq!(plain.status, 431, "{}", plain.text());
    assert_eq!(plain.error_code(), "request_header_fields_too_large");
    let runtime = client_runtime();
    let h1_config = Arc::new(ca.client(TLS_ALL, &[ALPN_HTTP1]));
    let h2_config = Arc::new(ca.client(TLS_ALL, &[ALPN_H2]));
    runtime.block_on(async {
        let h1 = http1_over_tls(&stack, &h1_config, "GET", LATEST_2, &large).await;
        assert_same("a head too large over TLS, HTTP/1.1", &h1, &plain);
        let h2 = h2_over_tls(&stack, &h2_config).await;
        let refused = h2.request("GET", LATEST_2, &large).await.unwrap();
        assert_same("a head too large over TLS, HTTP/2", &refused, &plain);
        // The connection goes on.
        let next = h2.request("GET", LATEST_2, &[token]).await.unwrap();
        assert_eq!(next.status, 200);
    });
    let scrape = stack.scrape();
    assert_eq!(
        metric_in(
            &scrape,
            r#"framecache_requests_total{route="other",status="431"}"#
        ),
        3.0
    );
    assert_eq!(
        metric_in(&scrape, r#"framecache_limited_total{limit="header_bytes"}"#),
        3.0
    );
}
