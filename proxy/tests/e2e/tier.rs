//! The edge tier on loopback: three members with peer listeners on addresses of their own
//! (127.77.T.N), one camsim. Origin requests per frame across the tier, the peer hop with
//! conditional requests, ranges, renditions and the stream, a home that leaks, credentials,
//! and a member that goes away and comes back. (The same across real hosts, partitions
//! included, is `deploy/tier-test`.)

use std::net::SocketAddr;
use std::time::Duration;

use framecache::app::Running;
use framecache::cluster::credential::{self, PeerKey};
use framecache::config::{ClusterConfig, Config, Members, Secret};

use crate::common::{
    exchange, metric_in, wait_until, wait_within, Reply, ADMIN_TOKEN, HUB_SECRET, SIGNING_KEY,
};

const PEER_KEY: &[u8] = b"e2e-test-peer-key-e2e-test-peer-key!";
const PEER_PORT: u16 = 17443;
const NAMES: [&str; 3] = ["edge-a", "edge-b", "edge-c"];

/// camsim and members of one tier, stopped when dropped.
struct Tier {
    camsim: camsim::Handle,
    nodes: Vec<Running>,
    _runtime: tokio::runtime::Runtime,
}

/// The peer address of member `n` of the tier of test `t`.
fn peer_addr(t: u8, n: usize) -> SocketAddr {
    SocketAddr::from(([127, 77, t, n as u8 + 1], PEER_PORT))
}

fn members(t: u8, count: usize) -> Vec<(String, SocketAddr)> {
    (0..count)
        .map(|n| (NAMES[n].to_string(), peer_addr(t, n)))
        .collect()
}

impl Tier {
    /// `count` members (of [`NAMES`]) in front of one frozen camsim; `members` may replace
    /// the member list every node is given.
    fn start(t: u8, count: usize, faults: camsim::Faults) -> Tier {
        Tier::start_with(t, count, faults, members(t, count), peer_addr)
    }

    /// With the member list `list`; member `n` listens for peers on `listen(t, n)`.
    fn start_with(
        t: u8,
        count: usize,
        faults: camsim::Faults,
        list: Vec<(String, SocketAddr)>,
        listen: fn(u8, usize) -> SocketAddr,
    ) -> Tier {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let camsim = runtime
            .block_on(camsim::start(camsim_config(faults)))
            .unwrap();
        let configs: Vec<Config> = (0..count)
            .map(|n| {
                let mut config =
                    Config::local(camsim.local_addr(), HUB_SECRET, ADMIN_TOKEN, SIGNING_KEY);
                config.server.threads = 1;
                config.cluster = Some(ClusterConfig {
                    node: NAMES[n].to_string(),
                    peer_listen: listen(t, n),
                    members: Members::Static(list.clone()),
                    peer_key: Secret(PEER_KEY.to_vec()),
                    dns_refresh: ClusterConfig::DNS_REFRESH,
                    health_check: Duration::from_millis(100),
                });
                config
            })
            .collect();
        let nodes = configs
            .into_iter()
            .map(|c| framecache::app::spawn(c).unwrap())
            .collect();
        Tier {
            camsim,
            nodes,
            _runtime: runtime,
        }
    }

    fn node(&self, n: usize) -> &Running {
        &self.nodes[n]
    }

    fn get(&self, n: usize, owner: &str, path: &str, extra: &[(&str, &str)]) -> Reply {
        let token = token(owner, &self.camsim.topology().cameras_of(owner));
        let mut raw = format!("GET {path} HTTP/1.1\r\nHost: hub.test\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n");
        for (name, value) in extra {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        raw.push_str("\r\n");
        exchange(self.node(n).hub_addr, raw.as_bytes(), false)
    }

    /// `GET path` on member `n`'s peer listener with `headers`.
    fn peer_get(&self, n: usize, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut raw = format!("GET {path} HTTP/1.1\r\nHost: peer\r\nConnection: close\r\n");
        for (name, value) in headers {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        raw.push_str("\r\n");
        exchange(self.node(n).peer_addr.unwrap(), raw.as_bytes(), false)
    }

    fn scrape(&self, n: usize) -> String {
        let raw = "GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";
        exchange(self.node(n).admin_addr, raw.as_bytes(), false).text()
    }

    fn metric(&self, n: usize, series: &str) -> f64 {
        metric_in(&self.scrape(n), series)
    }

    /// The member whose name is the home of `camera` as member 0 sees it.
    fn home_of(&self, camera: &str) -> usize {
        let cluster = self.node(0).shared.cluster.as_ref().unwrap();
        let home = framecache::cluster::ring::name_of(&cluster.homes(camera)[0]);
        NAMES.iter().position(|n| **n == *home).unwrap()
    }

    fn cluster_view(&self, n: usize) -> serde_json::Value {
        let token = std::str::from_utf8(ADMIN_TOKEN).unwrap();
        let raw = format!("GET /admin/cluster HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
        exchange(self.node(n).admin_addr, raw.as_bytes(), false).json()
    }

    fn healthy(&self, n: usize, name: &str) -> bool {
        let view = self.cluster_view(n);
        view["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == name && m["state"] == "healthy")
    }

    fn origin_requests(&self) -> u64 {
        self.camsim.stats().frame_requests.values().sum()
    }
}

fn camsim_config(faults: camsim::Faults) -> camsim::Config {
    camsim::Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        signing_key: SIGNING_KEY,
        owners: 3,
        cameras_per_owner: 3,
        width: 320,
        height: 240,
        fps: 0.0,
        faults,
        ..camsim::Config::default()
    }
}

/// The latest frame of `camera` straight from camsim, for `owner`.
fn origin_frame(tier: &Tier, owner: &str, camera: &str) -> Vec<u8> {
    let raw = format!("GET /cameras/{camera}/frame HTTP/1.1\r\nHost: camsim\r\nX-Framecache-Owner: {owner}\r\nConnection: close\r\n\r\n");
    let reply = exchange(tier.camsim.local_addr(), raw.as_bytes(), false);
    assert_eq!(reply.status, 200);
    reply.body
}

fn token(owner: &str, cameras: &[String]) -> String {
    framecache::auth::mint(
        HUB_SECRET,
        "framecache",
        owner,
        cameras,
        Duration::from_secs(3600),
    )
    .unwrap()
}

/// Every hub asks every member for every camera of its owner's: each frame leaves camsim
/// once, whichever member the hub reached, and every answer is the owner's own.
#[test]
fn one_origin_request_per_frame_across_the_tier() {
    let tier = Tier::start(1, 3, camsim::Faults::none());
    let topology = tier.camsim.topology().clone();
    let mut distinct = 0;
    let mut bodies: Vec<(String, String, Vec<u8>)> = Vec::new();
    for round in 0..2 {
        if round == 1 {
            // What every member served was the owner's own latest frame.
            for (owner, camera, body) in bodies.drain(..) {
                assert_eq!(
                    body,
                    origin_frame(&tier, &owner, &camera),
                    "{owner} {camera}"
                );
                distinct += 1;
            }
        }
        for owner in topology.owners() {
            for camera in topology.cameras_of(&owner) {
                if round == 1 {
                    tier.camsim.advance(&camera);
                }
                distinct += 1;
                let mut etags = Vec::new();
                for n in 0..3 {
                    let reply = tier.get(n, &owner, &format!("/v1/cameras/{camera}/frame"), &[]);
                    assert_eq!(reply.status, 200, "{}", reply.text());
                    etags.push(reply.header("etag").unwrap().to_string());
                    if n == 0 {
                        bodies.push((owner.clone(), camera.clone(), reply.body));
                    }
                }
                assert!(etags.iter().all(|e| *e == etags[0]), "{camera}: {etags:?}");
            }
        }
        // Past the latest frames' freshness: round two asks again, for the advanced frames.
        std::thread::sleep(Duration::from_millis(1100));
    }
    // The direct checks above count as origin requests too.
    assert_eq!(
        tier.origin_requests(),
        distinct,
        "origin requests per distinct frame must be 1.00"
    );
    let asked: f64 = (0..3)
        .map(|n| tier.metric(n, "framecache_peer_requests_total{outcome=\"ok\"}"))
        .sum();
    assert!(asked > 0.0, "non-home members asked the homes");
    for n in 0..3 {
        let scrape = tier.scrape(n);
        assert_eq!(
            metric_in(&scrape, "framecache_cache_cross_owner_hits_total"),
            0.0
        );
        assert_eq!(
            metric_in(
                &scrape,
                "framecache_peer_requests_total{outcome=\"fallback\"}"
            ),
            0.0
        );
        assert_eq!(
            metric_in(&scrape, "framecache_cluster_members{state=\"healthy\"}"),
            3.0
        );
    }
}

/// Through a member that is not the camera's home: 304, 206, a rendition and the stream work
/// as on the home, from the frame the home verified.
#[test]
fn conditional_range_rendition_and_stream_through_a_non_home() {
    let tier = Tier::start(2, 3, camsim::Faults::none());
    let owner = "owner-1";
    let camera = tier.camsim.topology().cameras_of(owner)[0].clone();
    let home = tier.home_of(&camera);
    let other = (home + 1) % 3;
    let path = format!("/v1/cameras/{camera}/frame");
    let full = tier.get(other, owner, &path, &[]);
    assert_eq!(full.status, 200);
    let etag = full.header("etag").unwrap().to_string();
    let not_modified = tier.get(other, owner, &path, &[("If-None-Match", &etag)]);
    assert_eq!(not_modified.status, 304);
    let part = tier.get(other, owner, &path, &[("Range", "bytes=0-99")]);
    assert_eq!(part.status, 206);
    assert_eq!(part.body, full.body[..100]);
    let thumb = tier.get(other, owner, &format!("{path}?variant=thumb"), &[]);
    assert_eq!(thumb.status, 200);
    assert!(thumb.body.len() < full.body.len());
    // The stream: read its first part and go.
    let token = token(owner, &tier.camsim.topology().cameras_of(owner));
    let raw = format!("GET /v1/cameras/{camera}/stream HTTP/1.1\r\nHost: hub.test\r\nAuthorization: Bearer {token}\r\n\r\n");
    let mut socket = std::net::TcpStream::connect(tier.node(other).hub_addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::io::Write::write_all(&mut socket, raw.as_bytes()).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 16384];
    while !seen
        .windows(full.body.len().min(64))
        .any(|w| w == &full.body[..full.body.len().min(64)])
    {
        let n = std::io::Read::read(&mut socket, &mut buf).unwrap();
        assert!(n > 0, "the stream ended before its first frame");
        seen.extend_from_slice(&buf[..n]);
        assert!(seen.len() < 4 << 20);
    }
    assert!(String::from_utf8_lossy(&seen).contains("multipart/x-mixed-replace"));
    assert_eq!(tier.origin_requests(), 1);
}

/// A home that hands over another camera's frame (camsim with its leak fault standing in as
/// member edge-b): refused, counted by reason, never served; the hub gets its own camera's
/// frame from the origin.
#[test]
fn a_leaking_home_is_refused_and_never_served() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    for (leak, reason) in [
        (
            camsim::Faults {
                leak_rate: 1.0,
                ..camsim::Faults::none()
            },
            "bad_signature",
        ),
        (
            camsim::Faults {
                wrong_owner_rate: 1.0,
                ..camsim::Faults::none()
            },
            "owner_mismatch",
        ),
        (
            camsim::Faults {
                wrong_camera_rate: 1.0,
                ..camsim::Faults::none()
            },
            "camera_mismatch",
        ),
    ] {
        let leaky = runtime
            .block_on(camsim::start(camsim_config(leak)))
            .unwrap();
        // edge-b is the leaky camsim; only edge-a runs.
        let list = vec![
            ("edge-a".to_string(), peer_addr(3, 0)),
            ("edge-b".to_string(), leaky.local_addr()),
        ];
        let tier = Tier::start_with(3, 1, camsim::Faults::none(), list, peer_addr);
        let cluster = tier.node(0).shared.cluster.clone().unwrap();
        let topology = tier.camsim.topology().clone();
        let mut homed_at_b = 0;
        for owner in topology.owners() {
            for camera in topology.cameras_of(&owner) {
                let home = framecache::cluster::ring::name_of(&cluster.homes(&camera)[0]);
                homed_at_b += usize::from(&*home == "edge-b");
                let reply = tier.get(0, &owner, &format!("/v1/cameras/{camera}/frame"), &[]);
                assert_eq!(reply.status, 200, "{}", reply.text());
                // What was served is this owner's frame of this camera, as the origin has it.
                assert_eq!(
                    reply.body,
                    origin_frame(&tier, &owner, &camera),
                    "{owner} {camera}"
                );
            }
        }
        assert!(homed_at_b > 0, "some cameras are homed at the leaky member");
        let scrape = tier.scrape(0);
        let series = format!("framecache_peer_rejections_total{{reason=\"{reason}\"}}");
        assert_eq!(metric_in(&scrape, &series), homed_at_b as f64, "{reason}");
        assert_eq!(
            metric_in(
                &scrape,
                "framecache_peer_requests_total{outcome=\"rejected\"}"
            ),
            homed_at_b as f64
        );
        assert_eq!(
            metric_in(
                &scrape,
                "framecache_peer_requests_total{outcome=\"fallback\"}"
            ),
            homed_at_b as f64
        );
        assert_eq!(
            metric_in(&scrape, "framecache_cache_cross_owner_hits_total"),
            0.0
        );
        drop(tier);
        runtime.block_on(leaky.shutdown());
    }
}

/// The peer listener serves members only: no credential, a forged, expired or moved one, or a
/// credential without the hub's own token are refused, and refusals of the credential counted.
#[test]
fn the_peer_listener_refuses_without_a_valid_credential() {
    let tier = Tier::start(4, 2, camsim::Faults::none());
    let owner = "owner-1";
    let cameras = tier.camsim.topology().cameras_of(owner);
    let camera = &cameras[0];
    let topology = tier.camsim.topology();
    let not_granted = topology
        .cameras()
        .into_iter()
        .find(|c| !cameras.contains(c))
        .unwrap();
    let bearer = format!("Bearer {}", token(owner, &cameras));
    let path = format!("/cameras/{camera}/frame");
    let key = PeerKey::new(PEER_KEY);
    let sign = |path: &str, authorization: &str, at: u64| {
        let request = credential::Request {
            method: "GET",
            path,
            authorization: authorization.as_bytes(),
        };
        key.sign("edge-b", &request, at)
    };
    let now = credential::unix_now();
    let peer = |path: &str, headers: &[(&str, &str)]| tier.peer_get(0, path, headers);
    let forged = format!("edge-b {now} {}", "0".repeat(64));
    let other_key = PeerKey::new(b"not-the-tier-key-not-the-tier-key-!!").sign(
        "edge-b",
        &credential::Request {
            method: "GET",
            path: &path,
            authorization: bearer.as_bytes(),
        },
        now,
    );
    let refused: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("a hub's request", vec![("Authorization", bearer.clone())]),
        (
            "a forged credential",
            vec![
                ("Authorization", bearer.clone()),
                ("X-Framecache-Peer", forged),
            ],
        ),
        (
            "another key's credential",
            vec![
                ("Authorization", bearer.clone()),
                ("X-Framecache-Peer", other_key),
            ],
        ),
        (
            "an old credential",
            vec![
                ("Authorization", bearer.clone()),
                ("X-Framecache-Peer", sign(&path, &bearer, now - 120)),
            ],
        ),
        (
            "a credential for another path",
            vec![
                ("Authorization", bearer.clone()),
                ("X-Framecache-Peer", sign("/cameras/x/frame", &bearer, now)),
            ],
        ),
        (
            "a credential for another token",
            vec![
                ("Authorization", bearer.clone()),
                ("X-Framecache-Peer", sign(&path, "Bearer other", now)),
            ],
        ),
    ];
    for (i, (what, headers)) in refused.iter().enumerate() {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let reply = peer(&path, &headers);
        assert_eq!(reply.status, 401, "{what}");
        assert_eq!(reply.error_code(), "invalid_peer_credential", "{what}");
        assert_eq!(
            tier.metric(0, "framecache_peer_auth_failures_total"),
            (i + 1) as f64,
            "{what}"
        );
    }
    // A valid credential is not a token: the hub's own must verify and grant the camera.
    let no_token = peer(&path, &[("X-Framecache-Peer", &sign(&path, "", now))]);
    assert_eq!(no_token.status, 401);
    let other_path = format!("/cameras/{not_granted}/frame");
    let not_granted = peer(
        &other_path,
        &[
            ("Authorization", &bearer),
            ("X-Framecache-Peer", &sign(&other_path, &bearer, now)),
        ],
    );
    assert_eq!(not_granted.status, 403);
    let wrong_owner = peer(
        &path,
        &[
            ("Authorization", &bearer),
            ("X-Framecache-Peer", &sign(&path, &bearer, now)),
            ("X-Framecache-Owner", "owner-2"),
        ],
    );
    assert_eq!(wrong_owner.status, 400);
    let good = peer(
        &path,
        &[
            ("Authorization", &bearer),
            ("X-Framecache-Peer", &sign(&path, &bearer, now)),
        ],
    );
    assert_eq!(good.status, 200);
    assert_eq!(good.header("x-frame-owner"), Some(owner));
    assert!(good.header("x-frame-signature").is_some());
    assert_eq!(
        tier.metric(0, "framecache_peer_auth_failures_total"),
        refused.len() as f64
    );
    // A hub listener ignores peer credentials: without a token, 401 as for any hub.
    let raw = format!("GET /v1/cameras/{camera}/frame HTTP/1.1\r\nHost: hub.test\r\nConnection: close\r\nX-Framecache-Peer: {}\r\n\r\n", sign(&format!("/v1/cameras/{camera}/frame"), "", now));
    let hub = exchange(tier.node(0).hub_addr, raw.as_bytes(), false);
    assert_eq!(hub.status, 401);
    assert_eq!(
        tier.metric(0, "framecache_auth_failures_total{reason=\"missing\"}"),
        1.0
    );
}

/// A member cut off from the others (its peer address stops answering, connections cut mid
/// way) is skipped: its stand-in on the ring, else the origin, and no hub sees an error. Once
/// it answers again it gets its cameras back.
#[test]
fn a_member_cut_off_is_skipped_and_gets_its_cameras_back() {
    // edge-c listens behind a link that the test can cut.
    let behind = |t: u8, n: usize| SocketAddr::from(([127, 77, t, n as u8 + 101], PEER_PORT));
    let tier = Tier::start_with(5, 3, camsim::Faults::none(), members(5, 3), |t, n| {
        if n == 2 {
            SocketAddr::from(([127, 77, t, 103], PEER_PORT))
        } else {
            peer_addr(t, n)
        }
    });
    let link = Link::start(&tier._runtime, peer_addr(5, 2), behind(5, 2));
    wait_until("edge-c is healthy", || tier.healthy(0, "edge-c"));
    let topology = tier.camsim.topology().clone();
    let c_cameras: Vec<(String, String)> = topology
        .owners()
        .into_iter()
        .flat_map(|o| {
            topology
                .cameras_of(&o)
                .into_iter()
                .map(move |c| (o.clone(), c))
        })
        .filter(|(_, c)| tier.home_of(c) == 2)
        .collect();
    assert!(!c_cameras.is_empty());
    link.cut();
    // Until the health checks notice, asking edge-c fails fast and the stand-in serves;
    // afterwards edge-c is not asked.
    for (owner, camera) in &c_cameras {
        let reply = tier.get(0, owner, &format!("/v1/cameras/{camera}/frame"), &[]);
        assert_eq!(reply.status, 200, "{camera}");
    }
    wait_within(Duration::from_secs(5), "edge-c is marked unhealthy", || {
        !tier.healthy(0, "edge-c")
    });
    wait_until("the member gauges follow", || {
        tier.metric(0, "framecache_cluster_members{state=\"unhealthy\"}") == 1.0
            && tier.metric(0, "framecache_cluster_members{state=\"healthy\"}") == 2.0
    });
    let cluster = tier.node(0).shared.cluster.clone().unwrap();
    for (_, camera) in &c_cameras {
        let stand_in = framecache::cluster::ring::name_of(&cluster.homes(camera)[0]);
        assert_ne!(&*stand_in, "edge-c");
    }
    link.restore();
    wait_within(Duration::from_secs(5), "edge-c is healthy again", || {
        tier.healthy(0, "edge-c")
    });
    for (_, camera) in &c_cameras {
        let home = framecache::cluster::ring::name_of(&cluster.homes(camera)[0]);
        assert_eq!(&*home, "edge-c");
    }
    let before = tier.metric(2, "framecache_origin_requests_total{outcome=\"ok\"}");
    std::thread::sleep(Duration::from_millis(2100));
    for (owner, camera) in &c_cameras {
        let reply = tier.get(0, owner, &format!("/v1/cameras/{camera}/frame"), &[]);
        assert_eq!(reply.status, 200);
    }
    // edge-a asked edge-c, which asked the origin.
    let asked = c_cameras.len() as f64;
    wait_until("edge-c fetched its cameras again", || {
        tier.metric(2, "framecache_origin_requests_total{outcome=\"ok\"}") - before == asked
    });
}

/// A TCP link to a member's peer listener that the test can cut (its address refuses
/// connections and open ones are dropped) and restore.
struct Link {
    at: SocketAddr,
    to: SocketAddr,
    handle: tokio::runtime::Handle,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Link {
    fn start(runtime: &tokio::runtime::Runtime, at: SocketAddr, to: SocketAddr) -> Link {
        let link = Link {
            at,
            to,
            handle: runtime.handle().clone(),
            tasks: Default::default(),
        };
        link.restore();
        link
    }

    fn restore(&self) {
        let (at, to, tasks) = (self.at, self.to, self.tasks.clone());
        let listener = std::net::TcpListener::bind(at).unwrap();
        listener.set_nonblocking(true).unwrap();
        let accept = self.handle.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((mut conn, _)) = listener.accept().await {
                let relay = tokio::spawn(async move {
                    if let Ok(mut upstream) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
                    }
                });
                tasks.lock().unwrap().push(relay.abort_handle());
            }
        });
        self.tasks.lock().unwrap().push(accept.abort_handle());
    }

    fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        // The listener is closed once its task has been dropped.
        wait_until("the link is cut", || {
            std::net::TcpStream::connect(self.at).is_err()
        });
    }
}

/// `/admin/cluster` lists the members and their state, with the admin token only.
#[test]
fn admin_cluster_lists_the_members() {
    let tier = Tier::start(6, 3, camsim::Faults::none());
    wait_until("every member is healthy", || {
        (0..3).all(|n| NAMES.iter().all(|m| tier.healthy(n, m)))
    });
    let view = tier.cluster_view(1);
    assert_eq!(view["node"], "edge-b");
    let members = view["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert_eq!(members[0]["name"], "edge-b");
    assert_eq!(members[0]["self"], true);
    assert_eq!(members[1]["address"], peer_addr(6, 0).to_string());
    let raw = "GET /admin/cluster HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";
    assert_eq!(
        exchange(tier.node(1).admin_addr, raw.as_bytes(), false).status,
        401
    );
}

/// An access link works through a member that is not the camera's home, which forwards it to
/// the home under its own scheme (that the home checks it itself is the next test); a tampered
/// one is refused by the member asked.
#[test]
fn access_links_work_through_a_non_home() {
    let tier = Tier::start(7, 3, camsim::Faults::none());
    let owner = "owner-1";
    let cameras = tier.camsim.topology().cameras_of(owner);
    let camera = &cameras[0];
    let other = (tier.home_of(camera) + 1) % 3;
    let token = token(owner, &cameras);
    let raw = format!("POST /v1/cameras/{camera}/links HTTP/1.1\r\nHost: hub.test\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let links = exchange(tier.node(other).hub_addr, raw.as_bytes(), false).json();
    let frame = links["frame"].as_str().unwrap();
    let get = |path: &str| {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: hub.test\r\nConnection: close\r\n\r\n");
        exchange(tier.node(other).hub_addr, raw.as_bytes(), false)
    };
    let reply = get(frame);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.body, origin_frame(&tier, owner, camera));
    assert_eq!(
        tier.metric(other, "framecache_peer_requests_total{outcome=\"ok\"}"),
        1.0
    );
    let tampered = frame.replacen("access=", "access=9", 1);
    assert_eq!(get(&tampered).status, 401);
}

/// A home whose origin fails answers with that failure, which is final: the asking member asks
/// no other member and not the origin (one origin request, not three), and a home's stale copy
/// is not handed on as fresh: the asking member falls back on its own, marked stale, as old as
/// it is.
#[test]
fn a_home_whose_origin_fails_is_final_and_stale_stays_stale() {
    let tier = Tier::start(8, 3, camsim::Faults::none());
    let owner = "owner-1";
    let camera = tier.camsim.topology().cameras_of(owner)[0].clone();
    let other = (tier.home_of(&camera) + 1) % 3;
    let path = format!("/v1/cameras/{camera}/frame");
    assert_eq!(tier.get(other, owner, &path, &[]).status, 200);
    tier.camsim.set_faults(camsim::Faults {
        error_rate: 1.0,
        ..camsim::Faults::none()
    });
    // Past the copies' freshness and stale-while-revalidate: both must ask again.
    std::thread::sleep(Duration::from_millis(2100));
    let before = tier.origin_requests();
    let stale = tier.get(other, owner, &path, &[]);
    assert_eq!(stale.status, 200, "{}", stale.text());
    assert_eq!(
        stale.header("cache-status"),
        Some("framecache; hit; detail=stale")
    );
    assert!(stale.header("age").unwrap().parse::<u64>().unwrap() >= 2);
    assert_eq!(
        tier.origin_requests() - before,
        1,
        "only the home asked the origin"
    );
    // A camera none holds: the home's 502 reaches the hub, after one origin request.
    let fresh = tier.camsim.topology().cameras_of(owner)[1].clone();
    let other = (tier.home_of(&fresh) + 1) % 3;
    let before = tier.origin_requests();
    let failed = tier.get(other, owner, &format!("/v1/cameras/{fresh}/frame"), &[]);
    assert_eq!(failed.status, 502, "{}", failed.text());
    assert_eq!(tier.origin_requests() - before, 1);
    let scrape = tier.scrape(other);
    assert_eq!(
        metric_in(
            &scrape,
            "framecache_peer_requests_total{outcome=\"fallback\"}"
        ),
        0.0
    );
    assert_eq!(
        metric_in(
            &scrape,
            "framecache_peer_rejections_total{reason=\"bad_status\"}"
        ),
        0.0
    );
}

/// The home checks a forwarded link itself: tampered, or on a frame by hash, it is refused
/// there, whatever the asking member let through.
#[test]
fn the_home_checks_forwarded_links_itself() {
    let tier = Tier::start(9, 2, camsim::Faults::none());
    let owner = "owner-1";
    let cameras = tier.camsim.topology().cameras_of(owner);
    let camera = &cameras[0];
    let tokens = tier.node(0).shared.tokens.load();
    let owner_id = framecache::identity::OwnerId::parse(owner).unwrap();
    let camera_id = framecache::identity::CameraId::parse(camera).unwrap();
    let (access, _) = tokens.link(&owner_id, u64::MAX, &camera_id);
    let key = PeerKey::new(PEER_KEY);
    let ask = |path: &str, access: &str| {
        let authorization = format!("FramecacheLink {access}");
        let request = credential::Request {
            method: "GET",
            path,
            authorization: authorization.as_bytes(),
        };
        let signed = key.sign("edge-a", &request, credential::unix_now());
        let headers = [
            ("Authorization", authorization.as_str()),
            ("X-Framecache-Peer", signed.as_str()),
        ];
        tier.peer_get(1, path, &headers).status
    };
    let latest = format!("/cameras/{camera}/frame");
    assert_eq!(ask(&latest, &access), 200);
    let tampered = format!("9{access}");
    assert_eq!(ask(&latest, &tampered), 401);
    let by_hash = format!("/cameras/{camera}/frames/{}", "ab".repeat(32));
    assert_eq!(ask(&by_hash, &access), 401);
}
