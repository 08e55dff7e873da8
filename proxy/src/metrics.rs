//! Every metric the proxy exports, in one place, with SPEC's names and labels.
//!
//! Each proxy instance owns its registry (tests run several in one process). No label ever
//! carries an owner, camera, hash, path or error text: label values come from the `as_str` of
//! small enums, and every known value is created at zero so that dashboards and alert rules see
//! a series before the first event.
//!
//! Besides the `framecache_*` families the scrape carries the process's own (`process_*`: CPU,
//! resident memory, open file descriptors, threads, start time; Linux only) and
//! `framecache_build_info`. `docs/metrics.md` lists every family with its type and labels; a
//! test compares that table with a live scrape, both ways.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::auth::AuthError;
use crate::cache::Lookup;
use crate::delivery::condition::Answer;
use crate::limit::{Limit, Refused};
use crate::origin::{Attempt, Outcome, Rejection};
use crate::rendition::choose::Reason;
use crate::rendition::{Catalogue, Chosen, Made};
use crate::request::RouteLabel;

/// Request latency buckets, seconds: from a cache hit to a slow origin.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// `result` labels of two-way outcomes, the good one first: written once, read by index.
const HANDSHAKE_RESULTS: [&str; 2] = ["ok", "failed"];
const RELOAD_RESULTS: [&str; 2] = ["ok", "error"];
const HANDOVER_RESULTS: [&str; 2] = ["kept", "dropped"];

/// The build profile, for `framecache_build_info{profile}`.
const PROFILE: &str = if cfg!(debug_assertions) {
    "debug"
} else {
    "release"
};

/// The proxy's metrics, by section.
pub struct Metrics {
    registry: Registry,
    /// Configuration reloads by result (ok, error).
    pub reloads: IntCounterVec,
    /// When the configuration in force was read (start or last good reload), Unix seconds.
    pub last_reload: prometheus::Gauge,
    pub hub: HubMetrics,
    pub connections: ConnectionMetrics,
    pub cache: CacheMetrics,
    pub origin: OriginMetrics,
    pub stream: StreamMetrics,
    pub rendition: RenditionMetrics,
    pub cluster: ClusterMetrics,
}

/// Hub requests and what they were answered with.
pub struct HubMetrics {
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub auth_failures: IntCounterVec,
    pub response_bytes: IntCounterVec,
    pub not_modified: IntCounterVec,
    pub partial_responses: IntCounterVec,
    pub bytes_saved: IntCounterVec,
    pub variant_choices: IntCounterVec,
    pub write_timeouts: IntCounterVec,
    /// Requests, streams and connections refused or ended by a `[limits]` limit.
    pub limited: IntCounterVec,
    /// Requests whose token was signed with a previous secret.
    pub auth_previous_key_uses: IntCounter,
}

/// Hub connections: admitted, refused, their TLS handshakes.
pub struct ConnectionMetrics {
    /// Refused at accept, by reason.
    pub refused: IntCounterVec,
    pub tls_handshakes: IntCounterVec,
    /// By listener and protocol.
    pub total: IntCounterVec,
    pub open: IntGaugeVec,
}

/// A hub connection's protocol: the `protocol` label of the hub connection metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubProtocol {
    Http1,
    H2,
}

impl HubProtocol {
    pub const ALL: [HubProtocol; 2] = [HubProtocol::Http1, HubProtocol::H2];

    pub fn as_str(&self) -> &'static str {
        match self {
            HubProtocol::Http1 => "http1",
            HubProtocol::H2 => "h2",
        }
    }
}

/// The `listener` label of the hub connection metrics.
fn listener_label(tls: bool) -> &'static str {
    if tls {
        "tls"
    } else {
        "plain"
    }
}

/// An open hub connection, counted in `framecache_hub_connections_open` until dropped.
pub struct OpenConnection(IntGauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The frame cache.
pub struct CacheMetrics {
    pub lookups: IntCounterVec,
    pub key_collisions: IntCounter,
    pub cross_owner_hits: IntCounter,
    pub stored_bytes: IntGauge,
    pub entries: IntGauge,
    pub evictions: IntCounter,
    /// `cache.max_bytes`, set once by the cache, so that alerts can compare the stored bytes
    /// with the budget.
    pub max_bytes: IntGauge,
    pub purges: IntCounter,
    pub purged_entries: IntCounter,
    /// Entries handed over by the instance this one upgraded, by result (kept, dropped).
    pub handover: IntCounterVec,
}

/// Requests to camera backends.
pub struct OriginMetrics {
    pub requests: IntCounterVec,
    pub duration: Histogram,
    pub rejections: IntCounterVec,
    /// Frames accepted by a previous signing key.
    pub previous_key_uses: IntCounter,
}

/// The edge tier: requests to home nodes and the members' state. Present (at zero) on a node
/// that works alone too, so that dashboards and alerts need no special case.
pub struct ClusterMetrics {
    /// Requests this node made to home nodes, by outcome (`PeerOutcome`).
    pub peer_requests: IntCounterVec,
    /// Home answers refused by attestation, by reason (the origin's reasons).
    pub peer_rejections: IntCounterVec,
    /// Members by state (healthy, unhealthy), this node included.
    pub members: IntGaugeVec,
    /// Requests on `cluster.peer_listen` without a valid peer credential.
    pub peer_auth_failures: IntCounter,
}

/// MJPEG streams.
pub struct StreamMetrics {
    pub subscribers: IntGauge,
    pub frames_sent: IntCounter,
    pub frames_skipped: IntCounter,
}

/// Renditions made and served.
pub struct RenditionMetrics {
    pub results: IntCounterVec,
    pub duration: Histogram,
}

/// What one hub request did, as `logging` collected it.
pub struct RequestRecord<'a> {
    pub route: RouteLabel,
    /// The status written, or "0" when nothing was.
    pub status: &'a str,
    pub duration: Duration,
    pub auth_failure: Option<AuthError>,
    pub lookup: Option<Lookup>,
    /// How a frame was answered, and the frame's length.
    pub answer: Option<(Answer, usize)>,
    pub chosen: Option<Chosen>,
    pub body_bytes: usize,
    pub write_timed_out: bool,
}

/// Makes metric families in one registry.
struct Families<'a>(&'a Registry);

impl Families<'_> {
    fn register<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        self.0
            .register(Box::new(c.clone()))
            .expect("invariant: metric names are unique");
        c
    }

    /// A collector read at each scrape.
    fn collector(&self, c: Box<dyn prometheus::core::Collector>) {
        self.0
            .register(c)
            .expect("invariant: metric names are unique");
    }

    /// A counter with labels, every value of `values` created at zero (one label each).
    fn counter_of<'v>(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        values: impl IntoIterator<Item = &'v str>,
    ) -> IntCounterVec {
        let c = self.register(
            IntCounterVec::new(Opts::new(name, help), labels)
                .expect("invariant: metric definitions are valid"),
        );
        for value in values {
            c.with_label_values(&[value]);
        }
        c
    }

    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.counter_of(name, help, labels, [])
    }

    fn plain(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help).expect("invariant: metric definitions are valid"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("invariant: metric definitions are valid"))
    }

    fn histogram(&self, name: &str, help: &str) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
        self.register(Histogram::with_opts(opts).expect("invariant: metric definitions are valid"))
    }
}

impl HubMetrics {
    fn new(f: &Families) -> HubMetrics {
        let request_duration = f.register(
            HistogramVec::new(
                HistogramOpts::new(
                    "framecache_request_duration_seconds",
                    "Time from request header to the end of the response, by route.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["route"],
            )
            .expect("invariant: metric definitions are valid"),
        );
        for route in RouteLabel::ALL {
            request_duration.with_label_values(&[route.as_str()]);
        }
        let frame_routes = [RouteLabel::Frame, RouteLabel::FrameByHash];
        HubMetrics {
            requests: f.counter(
                "framecache_requests_total",
                "Hub requests answered, by route and HTTP status.",
                &["route", "status"],
            ),
            request_duration,
            auth_failures: f.counter_of(
                "framecache_auth_failures_total",
                "Hub requests refused by token verification, by reason.",
                &["reason"],
                AuthError::ALL.iter().map(AuthError::as_str),
            ),
            response_bytes: f.counter(
                "framecache_response_bytes_total",
                "Frame body bytes sent to hubs, by rendition.",
                &["variant"],
            ),
            not_modified: f.counter_of(
                "framecache_not_modified_total",
                "Frame requests answered 304 Not Modified (If-None-Match), by route.",
                &["route"],
                frame_routes.iter().map(RouteLabel::as_str),
            ),
            partial_responses: f.counter_of(
                "framecache_partial_responses_total",
                "Frame requests with a Range header, by result (partial, unsatisfiable, ignored).",
                &["result"],
                Answer::RANGED.iter().filter_map(Answer::range_label),
            ),
            bytes_saved: f.counter_of(
                "framecache_bytes_saved_total",
                "Frame body bytes not sent because the hub had them, by reason (not_modified, range).",
                &["reason"],
                ["not_modified", "range"],
            ),
            variant_choices: f.counter(
                "framecache_variant_choices_total",
                "Frame responses and stream frames by the rendition served and why it was chosen.",
                &["variant", "reason"],
            ),
            write_timeouts: f.counter_of(
                "framecache_hub_write_timeouts_total",
                "Hubs dropped for taking less than 16 KiB per delivery.write_timeout_ms, by route.",
                &["route"],
                frame_routes
                    .iter()
                    .chain([&RouteLabel::Stream])
                    .map(RouteLabel::as_str),
            ),
            limited: f.counter_of(
                "framecache_limited_total",
                "Requests and streams refused or ended by a [limits] limit, by limit.",
                &["limit"],
                Limit::ALL.iter().map(Limit::as_str),
            ),
            auth_previous_key_uses: f.plain(
                "framecache_auth_previous_key_uses_total",
                "Hub requests whose token was signed with one of auth.previous_secret_files.",
            ),
        }
    }
}

impl ConnectionMetrics {
    fn new(f: &Families) -> ConnectionMetrics {
        let connections = ConnectionMetrics {
            tls_handshakes: f.counter_of(
                "framecache_tls_handshakes_total",
                "TLS handshakes on the hub TLS listener, by result (ok, failed: garbage, plaintext, timeouts included).",
                &["result"],
                HANDSHAKE_RESULTS,
            ),
            total: f.counter(
                "framecache_hub_connections_total",
                "Hub connections by listener (plain, tls) and protocol (http1, h2).",
                &["listener", "protocol"],
            ),
            open: f.register(
                    IntGaugeVec::new(
                        Opts::new(
                            "framecache_hub_connections_open",
                            "Hub connections open, by listener (plain, tls) and protocol (http1, h2).",
                        ),
                        &["listener", "protocol"],
                    )
                    .expect("invariant: metric definitions are valid"),
            ),
            refused: f.counter_of(
                "framecache_connections_refused_total",
                "Hub connections refused at accept, by reason (max_connections, per_ip).",
                &["reason"],
                Refused::ALL.iter().map(Refused::as_str),
            ),
        };
        for tls in [false, true] {
            for protocol in HubProtocol::ALL {
                let labels = [listener_label(tls), protocol.as_str()];
                connections.total.with_label_values(&labels);
                connections.open.with_label_values(&labels);
            }
        }
        connections
    }
}

impl CacheMetrics {
    fn new(f: &Families) -> CacheMetrics {
        CacheMetrics {
            lookups: f.counter_of(
                "framecache_cache_lookups_total",
                "Frame requests by how the cache answered them.",
                &["result"],
                Lookup::ALL.iter().map(Lookup::as_str),
            ),
            key_collisions: f.plain(
                "framecache_cache_key_collisions_total",
                "Cache entries found under a request's key digest with another identity. Never served.",
            ),
            cross_owner_hits: f.plain(
                "framecache_cache_cross_owner_hits_total",
                "Cache entries found for a request of another owner. Never served.",
            ),
            stored_bytes: f.gauge(
                "framecache_cache_stored_bytes",
                "Frame body bytes held by the cache (each body once).",
            ),
            entries: f.gauge("framecache_cache_entries", "Cache entries."),
            evictions: f.plain(
                "framecache_cache_evictions_total",
                "Entries evicted to stay within cache.max_bytes.",
            ),
            max_bytes: f.gauge(
                "framecache_cache_max_bytes",
                "The cache's memory budget for frame bodies (cache.max_bytes).",
            ),
            purges: f.plain(
                "framecache_cache_purges_total",
                "Purge requests carried out (POST /admin/purge).",
            ),
            purged_entries: f.plain(
                "framecache_cache_purged_entries_total",
                "Entries removed by purges.",
            ),
            handover: f.counter_of(
                "framecache_cache_handover_entries_total",
                "Entries the previous instance handed over in an upgrade, by result (kept, dropped: did not check out).",
                &["result"],
                HANDOVER_RESULTS,
            ),
        }
    }
}

impl OriginMetrics {
    fn new(f: &Families) -> OriginMetrics {
        OriginMetrics {
            requests: f.counter_of(
                "framecache_origin_requests_total",
                "Requests made to camera backends, by outcome.",
                &["outcome"],
                Outcome::ALL.iter().map(Outcome::as_str),
            ),
            duration: f.histogram(
                "framecache_origin_request_duration_seconds",
                "Time of one origin request, connect to last byte.",
            ),
            rejections: f.counter_of(
                "framecache_origin_rejections_total",
                "Origin answers refused by attestation, by reason. Nothing of them was served.",
                &["reason"],
                Rejection::ALL.iter().map(Rejection::as_str),
            ),
            previous_key_uses: f.plain(
                "framecache_origin_previous_key_uses_total",
                "Frames accepted on a signature by one of origin.previous_signing_key_files.",
            ),
        }
    }
}

impl StreamMetrics {
    fn new(f: &Families) -> StreamMetrics {
        StreamMetrics {
            subscribers: f.gauge(
                "framecache_stream_subscribers",
                "Hubs connected to an MJPEG stream.",
            ),
            frames_sent: f.plain(
                "framecache_stream_frames_sent_total",
                "Frames written to MJPEG stream subscribers.",
            ),
            frames_skipped: f.plain(
                "framecache_stream_frames_skipped_total",
                "Frames a stream subscriber did not get because a newer one was ready (slow hub or slower interval).",
            ),
        }
    }
}

impl RenditionMetrics {
    fn new(f: &Families) -> RenditionMetrics {
        RenditionMetrics {
            results: f.counter_of(
                "framecache_renditions_total",
                "Renditions asked of the cache, by result (hit, rendered, coalesced, failed, busy).",
                &["result"],
                Made::ALL.iter().map(Made::as_str),
            ),
            duration: f.histogram(
                "framecache_render_duration_seconds",
                "Time to make one rendition (decode, resize, encode), waiting for a slot excluded.",
            ),
        }
    }
}

impl ClusterMetrics {
    fn new(f: &Families) -> ClusterMetrics {
        let members = f.register(
            IntGaugeVec::new(
                Opts::new(
                    "framecache_cluster_members",
                    "Members of the edge tier by state (healthy, unhealthy), this node included.",
                ),
                &["state"],
            )
            .expect("invariant: metric definitions are valid"),
        );
        for state in ["healthy", "unhealthy"] {
            members.with_label_values(&[state]);
        }
        ClusterMetrics {
            peer_requests: f.counter_of(
                "framecache_peer_requests_total",
                "Requests to a camera's home node, by outcome; fallback: the origin was asked directly.",
                &["outcome"],
                crate::cluster::PeerOutcome::ALL.iter().map(|o| o.as_str()),
            ),
            peer_rejections: f.counter_of(
                "framecache_peer_rejections_total",
                "Home node answers refused by attestation, by reason. Nothing of them was served.",
                &["reason"],
                Rejection::ALL.iter().map(Rejection::as_str),
            ),
            members,
            peer_auth_failures: f.plain(
                "framecache_peer_auth_failures_total",
                "Requests on the peer listener refused for a missing or invalid peer credential.",
            ),
        }
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let f = Families(&registry);
        let build_info = f.register(
            IntGaugeVec::new(
                Opts::new(
                    "framecache_build_info",
                    "Always 1; the labels name the running build.",
                ),
                &["version", "profile"],
            )
            .expect("invariant: metric definitions are valid"),
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), PROFILE])
            .set(1);
        // CPU seconds, resident and virtual memory, open and maximum file descriptors, threads,
        // start time: read from /proc at each scrape.
        #[cfg(target_os = "linux")]
        f.collector(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        f.collector(Box::new(SealedCollector::new()));
        let last_reload = f.register(
            prometheus::Gauge::new(
                "framecache_config_last_reload_success_timestamp_seconds",
                "When the configuration in force was read: at start, or by the last good reload.",
            )
            .expect("invariant: metric definitions are valid"),
        );
        last_reload.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        Metrics {
            reloads: f.counter_of(
                "framecache_config_reloads_total",
                "Configuration reloads (SIGHUP), by result (ok, error: the file was refused).",
                &["result"],
                RELOAD_RESULTS,
            ),
            last_reload,
            hub: HubMetrics::new(&f),
            connections: ConnectionMetrics::new(&f),
            cache: CacheMetrics::new(&f),
            origin: OriginMetrics::new(&f),
            stream: StreamMetrics::new(&f),
            rendition: RenditionMetrics::new(&f),
            cluster: ClusterMetrics::new(&f),
            registry,
        }
        .with_renditions(&Catalogue::built_in())
    }

    /// Creates the per-rendition series of `catalogue` at zero.
    pub fn with_renditions(self, catalogue: &Catalogue) -> Metrics {
        for r in catalogue.all() {
            let name = r.variant.as_str();
            self.hub.response_bytes.with_label_values(&[name]);
            for reason in Reason::ALL {
                self.hub
                    .variant_choices
                    .with_label_values(&[name, reason.as_str()]);
            }
        }
        self
    }

    /// Records one hub request, when it ends.
    pub fn record_request(&self, r: &RequestRecord<'_>) {
        let hub = &self.hub;
        let route = r.route.as_str();
        hub.requests.with_label_values(&[route, r.status]).inc();
        hub.request_duration
            .with_label_values(&[route])
            .observe(r.duration.as_secs_f64());
        if let Some(reason) = r.auth_failure {
            hub.auth_failures
                .with_label_values(&[reason.as_str()])
                .inc();
        }
        if let Some(lookup) = r.lookup {
            self.cache
                .lookups
                .with_label_values(&[lookup.as_str()])
                .inc();
        }
        if let Some((answer, len)) = r.answer {
            self.record_answer(route, answer, len);
        }
        if let Some(chosen) = r.chosen {
            self.record_frame_sent(chosen, r.body_bytes);
        }
        if r.write_timed_out {
            hub.write_timeouts.with_label_values(&[route]).inc();
        }
    }

    /// Records a frame (or a stream's part) of `bytes` body bytes sent in `chosen`.
    pub fn record_frame_sent(&self, chosen: Chosen, bytes: usize) {
        let variant = chosen.rendition.variant.as_str();
        self.hub
            .variant_choices
            .with_label_values(&[variant, chosen.reason.as_str()])
            .inc();
        if bytes > 0 {
            self.hub
                .response_bytes
                .with_label_values(&[variant])
                .inc_by(bytes as u64);
        }
    }

    /// Records how a frame of `len` bytes was answered.
    fn record_answer(&self, route: &str, answer: Answer, len: usize) {
        let hub = &self.hub;
        if let Some(result) = answer.range_label() {
            hub.partial_responses.with_label_values(&[result]).inc();
        }
        match answer {
            Answer::NotModified => {
                hub.not_modified.with_label_values(&[route]).inc();
                hub.bytes_saved
                    .with_label_values(&["not_modified"])
                    .inc_by(len as u64);
            }
            Answer::Partial { start, end } => {
                hub.bytes_saved
                    .with_label_values(&["range"])
                    .inc_by((len - (end - start + 1)) as u64);
            }
            _ => {}
        }
    }

    /// Records a refusal (or an end) by `limit`.
    pub fn record_limited(&self, limit: Limit) {
        self.hub.limited.with_label_values(&[limit.as_str()]).inc();
    }

    /// Records a configuration reload at `now` (Unix seconds).
    pub fn record_reload(&self, ok: bool, now: f64) {
        let result = RELOAD_RESULTS[usize::from(!ok)];
        self.reloads.with_label_values(&[result]).inc();
        if ok {
            self.last_reload.set(now);
        }
    }

    /// Records what an upgrade's cache handover brought: entries kept and dropped.
    pub fn record_handover(&self, kept: usize, dropped: usize) {
        let [kept_label, dropped_label] = HANDOVER_RESULTS;
        let counted = &self.cache.handover;
        counted.with_label_values(&[kept_label]).inc_by(kept as u64);
        counted
            .with_label_values(&[dropped_label])
            .inc_by(dropped as u64);
    }

    /// Records a TLS handshake on the hub TLS listener.
    pub fn record_handshake(&self, ok: bool) {
        let result = HANDSHAKE_RESULTS[usize::from(!ok)];
        self.connections
            .tls_handshakes
            .with_label_values(&[result])
            .inc();
    }

    /// Counts a hub connection of `protocol` on the plain or TLS listener, open until the
    /// returned guard is dropped.
    pub fn hub_connection(&self, tls: bool, protocol: HubProtocol) -> OpenConnection {
        let labels = [listener_label(tls), protocol.as_str()];
        self.connections.total.with_label_values(&labels).inc();
        let open = self.connections.open.with_label_values(&labels);
        open.inc();
        OpenConnection(open)
    }

    /// Records a hub connection refused at accept.
    pub fn record_refused(&self, refused: Refused) {
        self.connections
            .refused
            .with_label_values(&[refused.as_str()])
            .inc();
    }

    /// Records one origin request.
    pub fn record_origin(&self, attempt: &Attempt) {
        let origin = &self.origin;
        origin
            .requests
            .with_label_values(&[attempt.outcome.as_str()])
            .inc();
        origin.duration.observe(attempt.elapsed.as_secs_f64());
        if let Some(reason) = attempt.rejection {
            origin
                .rejections
                .with_label_values(&[reason.as_str()])
                .inc();
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("invariant: encoding to a Vec does not fail");
        out
    }
}

/// The sealed bodies and what was sent from them (process-wide, see [`crate::sealed`]), read
/// at each scrape.
struct SealedCollector {
    sent: IntCounter,
    bodies: IntGauge,
    /// Serialises scrapes: the counter catches up with the process-wide total by its delta.
    catch_up: std::sync::Mutex<()>,
}

impl SealedCollector {
    fn new() -> SealedCollector {
        SealedCollector {
            sent: IntCounter::new(
                "framecache_sent_by_reference_bytes_total",
                "Frame body bytes sent to hubs by reference (sendfile from a sealed memory file) instead of copied.",
            )
            .expect("invariant: metric definitions are valid"),
            bodies: IntGauge::new(
                "framecache_sealed_bodies",
                "Frame bodies held in sealed memory files, each holding one file descriptor.",
            )
            .expect("invariant: metric definitions are valid"),
            catch_up: std::sync::Mutex::new(()),
        }
    }
}

impl prometheus::core::Collector for SealedCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        let mut descs = self.sent.desc();
        descs.extend(self.bodies.desc());
        descs
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let _one = self
            .catch_up
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let total = crate::sealed::sent_by_reference();
        self.sent.inc_by(total.saturating_sub(self.sent.get()));
        self.bodies.set(crate::sealed::sealed_bodies() as i64);
        let mut families = self.sent.collect();
        families.extend(self.bodies.collect());
        families
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrape_has_every_spec_name_at_zero() {
        let text = String::from_utf8(Metrics::new().render()).unwrap();
        for line in [
            "framecache_auth_failures_total{reason=\"camera_not_granted\"} 0",
            "framecache_origin_requests_total{outcome=\"timeout\"} 0",
            "framecache_origin_rejections_total{reason=\"bad_signature\"} 0",
            "framecache_response_bytes_total{variant=\"full\"} 0",
            "framecache_request_duration_seconds_count{route=\"frame\"} 0",
            "framecache_origin_request_duration_seconds_count 0",
            "framecache_cache_lookups_total{result=\"coalesced\"} 0",
            "framecache_cache_key_collisions_total 0",
            "framecache_cache_cross_owner_hits_total 0",
            "framecache_cache_stored_bytes 0",
            "framecache_cache_entries 0",
            "framecache_cache_evictions_total 0",
            "framecache_cache_max_bytes 0",
            "framecache_cache_purges_total 0",
            "framecache_cache_purged_entries_total 0",
        ] {
            assert!(text.contains(line), "missing {line}");
        }
    }

    #[test]
    fn scrape_names_the_build_and_the_process() {
        let text = String::from_utf8(Metrics::new().render()).unwrap();
        let build = format!(
            "framecache_build_info{{profile=\"{PROFILE}\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&build), "missing {build}");
        if cfg!(target_os = "linux") {
            let rss = text
                .lines()
                .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
                .expect("process_resident_memory_bytes in the scrape");
            assert!(rss.parse::<f64>().unwrap() > 0.0, "rss {rss}");
            assert!(text.contains("# TYPE process_open_fds gauge"));
        }
    }
}
