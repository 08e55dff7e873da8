//! The edge tier: several nodes, one cache per camera.
//!
//! Each camera has a home node, found by consistent hashing of the camera id over the members'
//! names ([`ring`]). A node that is not a camera's home asks the home over its peer listener
//! ([`peer`]) with the hub's own `Authorization` header and a peer credential
//! ([`credential`]); the home verifies the hub's token itself, serves from its cache (asking
//! the origin on a miss) and answers with the origin's attestation headers, which the asking
//! node verifies with its own signing keys, exactly as an origin answer. So each frame is
//! fetched from the camera backend once across the tier, and no member's word about an owner is
//! ever taken.
//!
//! Membership and health are pingora-load-balancing's: a `LoadBalancer` over [`ring::NameRing`],
//! fed by a static list or by DNS ([`discovery`]), health-checked by TCP connects to each
//! member's peer listener. A home that is unhealthy or cannot be reached is skipped: the next
//! member on the ring, then the origin directly.
//!
//! A home's 403/404, the owner's 429 there and its origin's failure (502/504) are final: another
//! member would only ask the same origin again. A home never hands on a copy it serves stale,
//! and copies travel with their `Age`. Budgets are spent, and purges act, on each member alone;
//! the peer hop is plaintext HTTP/1.1, for a private network.

pub mod credential;
pub mod discovery;
pub mod peer;
pub mod ring;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora::lb::discovery::Static;
use pingora::lb::health_check::TcpHealthCheck;
use pingora::lb::{Backend, Backends, LoadBalancer};
use serde::Serialize;

use crate::cache::key::Identity;
use crate::config::{ClusterConfig, Members, OriginConfig};
use crate::metrics::Metrics;
use crate::origin::{Attempt, Origin, OriginError, Rejection, VerifiedFrame};
use credential::PeerKey;
use ring::NameRing;

/// Members looked at on the ring for one camera (the ring repeats each member many times).
const MAX_RING_STEPS: usize = 256;

/// Members asked for one frame before the origin is asked directly: the home, then the next.
const MAX_MEMBERS_ASKED: usize = 2;

/// The `outcome` label of `framecache_peer_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerOutcome {
    /// The home answered with a frame that verified, or with its origin's 403/404.
    Ok,
    /// The home's answer failed attestation: refused, counted by reason, never served.
    Rejected,
    /// The home could not be reached or failed, or its origin did (a 502).
    Error,
    /// The home did not answer in time, or its origin did not (a 504).
    Timeout,
    /// No member could answer: the origin was asked directly.
    Fallback,
}

impl PeerOutcome {
    pub const ALL: [PeerOutcome; 5] = [
        PeerOutcome::Ok,
        PeerOutcome::Rejected,
        PeerOutcome::Error,
        PeerOutcome::Timeout,
        PeerOutcome::Fallback,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            PeerOutcome::Ok => "ok",
            PeerOutcome::Rejected => "rejected",
            PeerOutcome::Error => "error",
            PeerOutcome::Timeout => "timeout",
            PeerOutcome::Fallback => "fallback",
        }
    }
}

/// One member as `/admin/cluster` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MemberState {
    pub name: String,
    pub address: String,
    /// `healthy` or `unhealthy`.
    pub state: &'static str,
    /// This node.
    #[serde(rename = "self")]
    pub this: bool,
}

/// This node's view of the tier.
pub struct Cluster {
    node: Arc<str>,
    balancer: LoadBalancer<NameRing>,
    /// Asks other members, with the origin's timeouts and signing keys; replaced by a reload
    /// that changes `[origin]`.
    client: ArcSwap<Origin>,
    key: PeerKey,
    metrics: Arc<Metrics>,
    /// Discovery runs again this often (`peers_dns`); a static list never changes.
    refresh: Option<Duration>,
    health_check: Duration,
}

impl Cluster {
    pub fn new(config: &ClusterConfig, origin: &OriginConfig, metrics: Arc<Metrics>) -> Cluster {
        let (discovery, refresh): (
            Box<dyn pingora::lb::discovery::ServiceDiscovery + Send + Sync>,
            _,
        ) = match &config.members {
            Members::Static(list) => {
                let set: BTreeSet<Backend> = list
                    .iter()
                    .map(|(name, addr)| ring::member(name, *addr))
                    .collect();
                (Static::new(set), None)
            }
            Members::Dns { host, port } => match discovery::Dns::new(host, *port) {
                Ok(dns) => (Box::new(dns), Some(config.dns_refresh)),
                Err(error) => {
                    // Alone until the resolver can be read: the origin serves every camera.
                    tracing::error!(%error, "cluster.peers_dns: no resolver");
                    (Static::new(BTreeSet::new()), None)
                }
            },
        };
        let mut backends = Backends::new(discovery);
        let mut check = TcpHealthCheck::new();
        check.peer_template.options.connection_timeout = Some(origin.connect_timeout);
        // A member is marked down after two failed checks in a row and up after two good ones,
        // so that one lost packet does not move its cameras.
        check.consecutive_failure = 2;
        check.consecutive_success = 2;
        backends.set_health_check(check);
        let balancer = LoadBalancer::from_backends(backends);
        if refresh.is_none() {
            // A static list is there at once: homes are known before the first request.
            let update = std::pin::pin!(balancer.update());
            let mut context = std::task::Context::from_waker(std::task::Waker::noop());
            let ready = update.poll(&mut context);
            debug_assert!(ready.is_ready(), "static discovery does not wait");
        }
        Cluster {
            node: config.node.as_str().into(),
            balancer,
            client: ArcSwap::from_pointee(Origin::for_peers(origin)),
            key: PeerKey::new(config.peer_key.expose()),
            metrics,
            refresh,
            health_check: config.health_check,
        }
    }

    /// Asks members with `origin`'s signing keys and timeouts from now on.
    pub fn reconfigure(&self, origin: &OriginConfig) {
        self.client.store(Arc::new(Origin::for_peers(origin)));
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The peer credential key.
    pub fn key(&self) -> &PeerKey {
        &self.key
    }

    fn is_self(&self, backend: &Backend) -> bool {
        *ring::name_of(backend) == *self.node
    }

    /// The members to ask for `camera`, in order: its home (the first member on the ring that
    /// is healthy, this node always counting as healthy) and who stands in for it. An empty
    /// list or this node first means: ask the origin.
    pub fn homes(&self, camera: &str) -> Vec<Backend> {
        let mut homes: Vec<Backend> = Vec::with_capacity(MAX_MEMBERS_ASKED);
        while homes.len() < MAX_MEMBERS_ASKED {
            let next =
                self.balancer
                    .select_with(camera.as_bytes(), MAX_RING_STEPS, |b, healthy| {
                        (healthy || self.is_self(b)) && !homes.contains(b)
                    });
            match next {
                Some(b) => {
                    let here = self.is_self(&b);
                    homes.push(b);
                    if here {
                        break;
                    }
                }
                None => break,
            }
        }
        homes
    }

    /// A frame for `identity`'s owner from the camera's home, or from the origin when this node
    /// is the home, when no member could answer, or when a member's answer was refused. Gives
    /// the origin request's record when one was made. `budget` takes one origin request from
    /// the owner's budget: only requests that reach the origin from here spend it (a home
    /// spends its own).
    pub async fn fetch(
        &self,
        origin: &Origin,
        identity: &Identity,
        authorization: &str,
        budget: impl Fn() -> Result<(), OriginError>,
    ) -> (Result<VerifiedFrame, OriginError>, Option<Attempt>) {
        let (owner, camera, frame) = (&identity.owner, &identity.camera, identity.frame);
        let homes = self.homes(camera.as_str());
        let asked_any = homes.first().is_some_and(|b| !self.is_self(b));
        for home in homes {
            if self.is_self(&home) {
                break;
            }
            let (Some(addr), name) = (ring::addr_of(&home), ring::name_of(&home)) else {
                continue;
            };
            match self.ask(addr, identity, authorization).await {
                Ok(result) => return (result, None),
                Err(Refused::Rejected) => break,
                Err(Refused::Failed) => {
                    tracing::warn!(member = %name, camera = %camera, "home node failed: trying the next");
                }
            }
        }
        if asked_any {
            self.record(PeerOutcome::Fallback);
        }
        if let Err(limited) = budget() {
            return (Err(limited), None);
        }
        let (result, attempt) = origin.fetch(owner, camera, frame).await;
        (result, Some(attempt))
    }

    /// One request to the member at `addr`: its answer if it is final (a verified frame, or
    /// the origin's 403/404 or the owner's 429 as the home gives them), else why not.
    async fn ask(
        &self,
        addr: SocketAddr,
        identity: &Identity,
        authorization: &str,
    ) -> Result<Result<VerifiedFrame, OriginError>, Refused> {
        let path = crate::origin::frame_path(&identity.camera, identity.frame);
        let request = credential::Request {
            method: "GET",
            path: &path,
            authorization: authorization.as_bytes(),
        };
        let credential = self.key.sign(&self.node, &request, credential::unix_now());
        let (owner, camera) = (&identity.owner, &identity.camera);
        // The owner header makes this a complete camera-backend request; the home checks it
        // against the hub token's owner and takes the owner from the token alone.
        let headers = [
            ("authorization", authorization),
            (credential::HEADER, credential.as_str()),
            (framecache_protocol::OWNER, owner.as_str()),
        ];
        let (result, _) = (self.client.load())
            .ask(addr, &path, (owner, camera, identity.frame), &headers)
            .await;
        match result {
            Ok(_)
            | Err(OriginError::NotFound | OriginError::Forbidden | OriginError::Limited { .. }) => {
                self.record(PeerOutcome::Ok);
                Ok(result)
            }
            // The home's origin failed: asking another member would ask the same origin again.
            Err(OriginError::HomeOrigin { timed_out }) => {
                self.record(if timed_out {
                    PeerOutcome::Timeout
                } else {
                    PeerOutcome::Error
                });
                Ok(result)
            }
            // Cut short or oversized: the transport's doing (a home stopping mid-answer), not
            // an attestation that failed.
            Err(OriginError::Rejected(Rejection::Truncated | Rejection::TooLarge)) => {
                self.record(PeerOutcome::Error);
                Err(Refused::Failed)
            }
            Err(OriginError::Rejected(reason)) => {
                self.record(PeerOutcome::Rejected);
                let reason = reason.as_str();
                self.metrics
                    .cluster
                    .peer_rejections
                    .with_label_values(&[reason])
                    .inc();
                tracing::error!(reason, camera = %camera, home = %addr, "home node answer refused: not served");
                Err(Refused::Rejected)
            }
            Err(OriginError::Timeout) => {
                self.record(PeerOutcome::Timeout);
                Err(Refused::Failed)
            }
            Err(OriginError::Unreachable | OriginError::Io(_)) => {
                self.record(PeerOutcome::Error);
                Err(Refused::Failed)
            }
        }
    }

    fn record(&self, outcome: PeerOutcome) {
        let label = outcome.as_str();
        self.metrics
            .cluster
            .peer_requests
            .with_label_values(&[label])
            .inc();
    }

    /// Every member and its state, this node's first.
    pub fn members(&self) -> Vec<MemberState> {
        let backends = self.balancer.backends();
        let mut members: Vec<MemberState> = backends
            .get_backend()
            .iter()
            .map(|b| MemberState {
                name: ring::name_of(b).to_string(),
                address: b.addr.to_string(),
                state: if self.is_self(b) || backends.ready(b) {
                    "healthy"
                } else {
                    "unhealthy"
                },
                this: self.is_self(b),
            })
            .collect();
        members.sort_by(|a, b| (!a.this, &a.name).cmp(&(!b.this, &b.name)));
        members
    }

    /// Discovery (at start, then every `dns_refresh_secs` for `peers_dns`) and health checks
    /// (every `health_check_ms`), and the member gauges after each; runs until dropped.
    pub async fn maintain(&self) {
        let mut last_discovery: Option<tokio::time::Instant> = None;
        loop {
            let due = match (last_discovery, self.refresh) {
                (None, _) => true,
                (Some(at), Some(every)) => at.elapsed() >= every,
                (Some(_), None) => false,
            };
            if due {
                if let Err(error) = self.balancer.update().await {
                    tracing::warn!(%error, "cluster members not updated");
                }
                last_discovery = Some(tokio::time::Instant::now());
            }
            self.balancer.backends().run_health_check(true).await;
            self.update_gauges();
            tokio::time::sleep(self.health_check).await;
        }
    }

    fn update_gauges(&self) {
        let members = self.members();
        let healthy = members.iter().filter(|m| m.state == "healthy").count();
        let gauge = &self.metrics.cluster.members;
        gauge.with_label_values(&["healthy"]).set(healthy as i64);
        gauge
            .with_label_values(&["unhealthy"])
            .set((members.len() - healthy) as i64);
    }
}

/// Why a member's answer is not the answer.
enum Refused {
    /// It failed attestation: the origin is asked instead, no other member.
    Rejected,
    /// It could not be had: the next member may be asked.
    Failed,
}

/// The background service that keeps the member list and health current.
pub struct Maintenance(pub Arc<Cluster>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Maintenance {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        tokio::select! {
            _ = self.0.maintain() => {}
            _ = shutdown.changed() => {}
        }
    }
}
