//! The admin listener (`server.admin_listen`).
//!
//! | method, path   | answer                                                    |
//! |----------------|-----------------------------------------------------------|
//! | `GET /metrics` | Prometheus text exposition of [`crate::metrics`]          |
//! | `GET /healthz` | 200 while the process runs                                |
//! | `GET /readyz`  | 200 once the listeners are up, 503 before and at shutdown |
//!
//! Anything else is a JSON 404, or 405 for another method on a known path.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::metrics::Metrics;

/// The admin application.
pub struct Admin {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

impl Admin {
    pub fn new(metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> Admin {
        Admin { metrics, ready }
    }

    fn answer(&self, method: &Method, path: &str) -> (StatusCode, &'static str, Vec<u8>) {
        const TEXT: &str = "text/plain; charset=utf-8";
        let known = matches!(path, "/metrics" | "/healthz" | "/readyz");
        if !known {
            return (
                StatusCode::NOT_FOUND,
                "application/json",
                json("not_found", "no such resource"),
            );
        }
        if method != Method::GET {
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                "application/json",
                json("method_not_allowed", "use GET"),
            );
        }
        match path {
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
            _ => (StatusCode::OK, TEXT, b"ok\n".to_vec()),
        }
    }
}

fn json(code: &str, message: &str) -> Vec<u8> {
    serde_json::json!({"error": code, "message": message})
        .to_string()
        .into_bytes()
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let (status, content_type, body) = self.answer(&req.method, req.uri.path());
        let mut builder = Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len())
            .header(http::header::CACHE_CONTROL, "no-store");
        if status == StatusCode::METHOD_NOT_ALLOWED {
            builder = builder.header(http::header::ALLOW, "GET");
        }
        builder
            .body(body)
            .expect("invariant: static header values are valid")
    }
}
