//! framecache: an edge proxy between hubs (smart displays) and camera backends that never
//! hands one owner's camera frame to another.
//!
//! Built on Pingora. Every frame is attested against the camera backend's signature before a
//! byte of it reaches a hub, and the owner a frame is fetched for comes only from a verified hub
//! token.
//!
//! # Layout
//!
//! Every module, one line each (a unit test below keeps this list and the modules in step):
//!
//! - `main.rs`: parses the command line, dispatches to [`cli`].
//! - [`access`] — access links (`?access=`) for clients that cannot send headers: one owner's
//!   one camera, for a short while.
//! - [`cli`] — the subcommands (`serve`, `check-config`, `token`, `demo`) and exit codes.
//! - [`config`] — the TOML file, its serde mirror and validation into [`config::Config`].
//! - [`app`] — binds the listeners and runs the Pingora server: [`app::run`] is what the binary
//!   and the end-to-end tests start.
//! - [`hub`] — hub connections before the proxy: admission (`limits.max_connections`, per
//!   address) and each HTTP/1.1 request head read whole within `limits.header_bytes` and
//!   `limits.header_timeout_ms`, refused in JSON when malformed.
//! - [`hub_listener`] — accepts hub connections, plaintext (as virtual sockets that send sealed
//!   bodies with `sendfile`) and TLS (through Pingora's acceptor), on sockets an upgrade hands
//!   over.
//! - [`identity`] — `OwnerId`, `CameraId`, `ContentHash`: identities as types.
//! - [`request`] — the one typed hub request: [`request::FrameRef`] (latest or by hash),
//!   [`request::Target`], and [`request::FrameRequest`], whose owner comes from a verified
//!   token.
//! - [`route`] — strict parsing of a request line into a [`request::HubRequest`].
//! - [`auth`] — hub tokens (JWT HS256) → a [`auth::Grant`] of one owner and some cameras.
//! - [`cache`] — the owner-scoped frame cache: [`cache::key`] (identities and their digests),
//!   [`cache::store`] (the byte-bounded index), [`cache::flight`] (one fetch per key).
//! - [`cluster`] — the edge tier: each camera's home member by consistent hashing of its id
//!   over the members' names, frames asked of the home with the hub's token and a peer
//!   credential and attested again, the peer listener, membership and health checks.
//! - [`limit`] — what one owner may cause or hold: origin request budgets, streams open, and the
//!   `limit` label of refusals.
//! - [`origin`] — camera-backend requests through Pingora's connector, and attestation (the
//!   protocol itself is the `framecache-protocol` crate, shared with camsim).
//! - [`rendition`] — smaller JPEGs for slow links: [`rendition::choose`] →
//!   [`rendition::render`] → [`rendition::cache`] → the fallback [`rendition::serve`].
//! - [`delivery`] — frame response headers, JSON errors (the one place errors become HTTP), the
//!   pace a hub must keep; [`delivery::condition`] decides 200 / 304 / 206 / 416 from
//!   `If-None-Match`, `Range`, `If-Range`; [`delivery::link`] measures and remembers hubs'
//!   links.
//! - [`stream`] — the MJPEG stream: newest frame wins, one origin poll per fresh window.
//! - [`proxy`] — the only `impl ProxyHttp`: glue between Pingora's phases and the above.
//! - [`tls`] — TLS to hubs: the rustls configuration (resumption, ALPN) and a certificate that a
//!   reload can replace.
//! - [`reload`] — SIGHUP: the configuration file read again and applied while running.
//! - [`upgrade`] — a binary upgrade's cache handover: the running instance hands its entries to
//!   the new one, which keeps those that check out.
//! - [`sealed`] — frame bodies in sealed memory files, found by address when written.
//! - [`admin`] — `/metrics`, `/healthz`, `/readyz`, `POST /admin/purge`.
//! - [`metrics`] — every metric name, in one place.
//! - [`demo`] — camsim and the proxy in one process, with demo keys (feature `demo`, on by
//!   default).
//!
//! # Request path
//!
//! A hub sends `GET /v1/cameras/cam-1/frame` with `Authorization: Bearer <token>`.
//!
//! 1. [`hub_listener`] accepted the connection and [`hub`] admitted it and read the request
//!    head within the edge's limits; Pingora parses it and calls [`proxy::Edge`]'s
//!    `request_filter`, before any other phase.
//! 2. [`route::parse`] turns the raw path and query into a [`request::HubRequest`], or refuses
//!    it (400, 404, 405) without normalising anything.
//! 3. [`auth::TokenVerifier::verify`] checks the token's signature, audience, expiry and claim
//!    grammar, giving the verified owner; [`auth::Grant::camera`] checks the camera is granted
//!    (401 / 403). The request becomes a [`request::FrameRequest`], the only type the layers
//!    below see.
//! 4. [`cache::FrameCache::get`] looks up the key of (owner, camera, frame, variant); a fresh
//!    entry whose stored identity equals the request's is served (a just-stale latest frame
//!    too, while one background fetch refreshes it). An entry of another identity
//!    is counted (collision or cross-owner hit), evicted, and treated as a miss.
//! 5. On a miss (within the owner's origin budget, else 429), the request leads or joins the
//!    key's flight ([`cache::flight`]); the leader's
//!    task calls [`origin::Origin::fetch`], which asks a camera backend with
//!    `X-Framecache-Owner` over a pooled Pingora connection, buffers the whole body, and accepts
//!    it only if status, content type, size, owner, camera, signature (and for by-hash requests
//!    the body's hash) all check out. The verified frame is stored as a latest and a by-hash
//!    entry sharing one body, and handed to every waiter. If the origin failed, the owner's own
//!    latest frame may be served stale; else 502, 503, 504, or the origin's 403/404 (which
//!    also ends the owner's cached copies of that camera).
//! 6. [`delivery::Delivery::choose`] asks [`rendition::choose`] for a rendition (`variant=`, the
//!    hub's hints, or its link as [`delivery::link`] knows it); [`rendition::serve`] has it from
//!    the owner's scope in the cache, or makes it once (coalesced, on a bounded pool of blocking
//!    threads) from the verified frame, or falls back to the full frame.
//! 7. [`delivery::Delivery::frame`]: [`delivery::condition`] turns `If-None-Match` / `Range`
//!    into 304, 206 or 416, and the frame (or the part asked for) is written with its `ETag`,
//!    `Cache-Control`, `Cache-Status`, `Age`, `Content-Location` and `X-Frame-*` headers within
//!    its deadline, or the JSON error; a body in a [`sealed`] file leaves by `sendfile` from it.
//! 8. Pingora's `logging` phase records the request in [`metrics`]; origin requests are recorded
//!    where they complete.

pub mod access;
pub mod admin;
pub mod app;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod delivery;
#[cfg(feature = "demo")]
pub mod demo;
pub mod hub;
pub mod hub_listener;
pub mod identity;
pub mod limit;
pub mod metrics;
pub mod origin;
pub mod proxy;
pub mod reload;
pub mod rendition;
pub mod request;
pub mod route;
pub mod sealed;
pub mod stream;
pub mod tls;
pub mod upgrade;

#[cfg(test)]
mod tests {
    /// `# Layout` names every module of the crate, and no module that is gone.
    #[test]
    fn layout_lists_every_module() {
        let lib = include_str!("lib.rs");
        let layout = lib
            .split("//! # Layout")
            .nth(1)
            .and_then(|rest| rest.split("//! # Request path").next())
            .expect("lib.rs has a # Layout section");
        let declared: Vec<&str> = lib
            .lines()
            .filter_map(|l| l.strip_prefix("pub mod "))
            .map(|m| m.trim_end_matches(';'))
            .collect();
        assert!(declared.len() > 10, "{declared:?}");
        for module in &declared {
            assert!(
                layout.contains(&format!("- [`{module}`]")),
                "module {module} is missing from # Layout"
            );
        }
        for listed in layout.lines().filter_map(|l| l.strip_prefix("//! - [`")) {
            let name = listed.split('`').next().unwrap_or_default();
            assert!(
                declared.contains(&name),
                "# Layout lists {name}, which is no module"
            );
        }
    }
}
