//! The admin listener (`server.admin_listen`).
//!
//! | method, path        | answer                                                         |
//! |---------------------|----------------------------------------------------------------|
//! | `GET /metrics`      | Prometheus text exposition of [`crate::metrics`]               |
//! | `GET /healthz`      | 200 while the process runs                                     |
//! | `GET /readyz`       | 200 once the listeners are up, 503 before and at shutdown      |
//! | `POST /admin/purge` | admin bearer token; JSON `{"owner": ID}` or `{"owner": ID, "camera": ID}` → `{"purged": N}` |
//! | `GET /admin/cluster` | admin bearer token; `{"node": NAME, "members": [{"name", "address", "state", "self"}]}` (404 on a node alone); with `?camera=ID` also `"homes"`: the members that camera is asked of now, in order |
//!
//! Anything else is a JSON 404, or 405 for another method on a known path.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::auth;
use crate::cache::FrameCache;
use crate::cluster::Cluster;
use crate::config::Secret;
use crate::delivery;
use crate::identity::{CameraId, OwnerId};
use crate::metrics::Metrics;

/// Largest purge request body.
const MAX_BODY: usize = 4096;

/// The admin application.
pub struct Admin {
    metrics: Arc<Metrics>,
    cache: Arc<FrameCache>,
    /// Replaced by a reload.
    token: Arc<ArcSwap<Secret>>,
    ready: Arc<AtomicBool>,
    /// Set once the cache was handed to a new instance: purges are refused from then on.
    handed_over: Arc<AtomicBool>,
    /// The tier this node is a member of, for `/admin/cluster`.
    cluster: Option<Arc<Cluster>>,
}

/// An answer: status, content type, body.
type Answer = (StatusCode, &'static str, Vec<u8>);

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

fn error(status: StatusCode, code: &str, message: &str) -> Answer {
    (status, JSON, delivery::error_body(code, message).to_vec())
}

fn unauthorised() -> Answer {
    error(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "the admin bearer token is missing or wrong",
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    owner: String,
    camera: Option<String>,
}

impl Admin {
    pub fn new(
        metrics: Arc<Metrics>,
        cache: Arc<FrameCache>,
        token: Arc<ArcSwap<Secret>>,
        ready: Arc<AtomicBool>,
        handed_over: Arc<AtomicBool>,
    ) -> Admin {
        Admin {
            metrics,
            cache,
            token,
            ready,
            handed_over,
            cluster: None,
        }
    }

    /// Shows `cluster` on `/admin/cluster`.
    pub fn with_cluster(mut self, cluster: Option<Arc<Cluster>>) -> Admin {
        self.cluster = cluster;
        self
    }

    async fn answer(&self, session: &mut ServerSession) -> Answer {
        let req = session.req_header();
        let (method, path) = (req.method.clone(), req.uri.path().to_string());
        let allowed = match path.as_str() {
            "/metrics" | "/healthz" | "/readyz" => Method::GET,
            "/admin/purge" => Method::POST,
            "/admin/cluster" if self.cluster.is_some() => Method::GET,
            _ => return error(StatusCode::NOT_FOUND, "not_found", "no such resource"),
        };
        if method != allowed {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                &format!("use {allowed}"),
            );
        }
        match path.as_str() {
            "/metrics" => (
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(),
            ),
            "/readyz" if !self.ready.load(Ordering::Acquire) => (
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                b"not ready\n".to_vec(),
            ),
            "/readyz" => (StatusCode::OK, TEXT, b"ready\n".to_vec()),
            "/healthz" => (StatusCode::OK, TEXT, b"ok\n".to_vec()),
            "/admin/cluster" => self.cluster(session),
            _ => self.purge(session).await,
        }
    }

    fn authorised(&self, session: &ServerSession) -> bool {
        let mut values = session
            .req_header()
            .headers
            .get_all(http::header::AUTHORIZATION)
            .into_iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return false;
        };
        let Some(token) = auth::bearer_credentials(value.as_bytes()) else {
            return false;
        };
        bool::from(token.ct_eq(self.token.load().expose()))
    }

    fn cluster(&self, session: &ServerSession) -> Answer {
        if !self.authorised(session) {
            return unauthorised();
        }
        let Some(cluster) = &self.cluster else {
            return error(StatusCode::NOT_FOUND, "not_found", "no such resource");
        };
        let mut body = serde_json::json!({
            "node": cluster.node(),
            "members": cluster.members(),
        });
        let query = session.req_header().uri.query().unwrap_or_default();
        if let Some(camera) = query.strip_prefix("camera=") {
            let Ok(camera) = CameraId::parse(camera) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "camera id is not valid",
                );
            };
            let homes: Vec<String> = (cluster.homes(camera.as_str()).iter())
                .map(|b| crate::cluster::ring::name_of(b).to_string())
                .collect();
            body["homes"] = serde_json::json!(homes);
        }
        (StatusCode::OK, JSON, body.to_string().into_bytes())
    }

    async fn purge(&self, session: &mut ServerSession) -> Answer {
        if !self.authorised(session) {
            return unauthorised();
        }
        if self.handed_over.load(Ordering::SeqCst) {
            // The new instance has this one's cache: a purge carried out here would not reach
            // it. Both answer on the admin socket for a few seconds; asked again, it does.
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "upgrading",
                "this instance is handing over to a new one: ask again",
            );
        }
        let body = match read_body(session).await {
            Ok(body) => body,
            Err(answer) => return answer,
        };
        let request: PurgeRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                // Said in our words: serde's message would repeat what the client sent.
                let why = match e.classify() {
                    serde_json::error::Category::Data => {
                        "expected {\"owner\": ID} or {\"owner\": ID, \"camera\": ID}, nothing else"
                    }
                    _ => "the body is not JSON",
                };
                return error(StatusCode::BAD_REQUEST, "bad_request", why);
            }
        };
        let Ok(owner) = OwnerId::parse(&request.owner) else {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "owner id is not valid",
            );
        };
        let camera = match request.camera.as_deref().map(CameraId::parse) {
            None => None,
            Some(Ok(camera)) => Some(camera),
            Some(Err(_)) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "camera id is not valid",
                )
            }
        };
        let purged = self.cache.purge(&owner, camera.as_ref());
        tracing::info!(purged, by_camera = camera.is_some(), "cache purged");
        let body = serde_json::json!({ "purged": purged }).to_string();
        (StatusCode::OK, JSON, body.into_bytes())
    }
}

/// Reads the request body, at most [`MAX_BODY`] bytes.
async fn read_body(session: &mut ServerSession) -> Result<Bytes, Answer> {
    let mut body = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too_large",
                        "the request body is too large",
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.freeze()),
            Err(_) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "the request body could not be read",
                ))
            }
        }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let (status, content_type, body) = self.answer(session).await;
        let mut builder = Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len())
            .header(http::header::CACHE_CONTROL, "no-store");
        if status == StatusCode::METHOD_NOT_ALLOWED {
            let allow = if session.req_header().uri.path() == "/admin/purge" {
                "POST"
            } else {
                "GET"
            };
            builder = builder.header(http::header::ALLOW, allow);
        }
        if status == StatusCode::UNAUTHORIZED {
            builder = builder.header(http::header::WWW_AUTHENTICATE, "Bearer");
        }
        builder
            .body(body)
            .expect("invariant: static header values are valid")
    }
}
