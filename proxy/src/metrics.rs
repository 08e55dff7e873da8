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

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::auth::AuthError;
use crate::cache::Lookup;
use crate::delivery::condition::Answer;
use crate::origin::{Attempt, Outcome, Rejection};
use crate::route::RouteLabel;
use crate::variant::Catalogue;

/// Request latency buckets, seconds: from a cache hit to a slow origin.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The build profile, for `framecache_build_info{profile}`.
const PROFILE: &str = if cfg!(debug_assertions) {
    "debug"
} else {
    "release"
};

/// The proxy's metrics.
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub auth_failures: IntCounterVec,
    pub origin_requests: IntCounterVec,
    pub origin_duration: Histogram,
    pub origin_rejections: IntCounterVec,
    pub response_bytes: IntCounterVec,
    pub cache_lookups: IntCounterVec,
    pub cache_key_collisions: IntCounter,
    pub cache_cross_owner_hits: IntCounter,
    pub cache_stored_bytes: IntGauge,
    pub cache_entries: IntGauge,
    pub cache_evictions: IntCounter,
    /// `cache.max_bytes`, set once by the cache, so that alerts can compare the stored bytes
    /// with the budget.
    pub cache_max_bytes: IntGauge,
    pub cache_purges: IntCounter,
    pub cache_purged_entries: IntCounter,
    pub not_modified: IntCounterVec,
    pub partial_responses: IntCounterVec,
    pub bytes_saved: IntCounterVec,
    pub stream_subscribers: IntGauge,
    pub stream_frames_sent: IntCounter,
    pub stream_frames_skipped: IntCounter,
    pub renditions: IntCounterVec,
    pub render_duration: Histogram,
    pub variant_choices: IntCounterVec,
    pub hub_write_timeouts: IntCounterVec,
}

/// The `result` labels of `framecache_renditions_total`.
pub const RENDITION_RESULTS: [&str; 5] = ["hit", "rendered", "coalesced", "failed", "busy"];

/// The `reason` labels of `framecache_variant_choices_total`.
pub const CHOICE_REASONS: [&str; 7] = [
    "requested",
    "save_data",
    "ect",
    "downlink",
    "measured",
    "remembered",
    "unmeasured",
];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("invariant: metric definitions are valid");
            registry
                .register(Box::new(c.clone()))
                .expect("invariant: metric names are unique");
            c
        };
        let requests = counter(
            "framecache_requests_total",
            "Hub requests answered, by route and HTTP status.",
            &["route", "status"],
        );
        let auth_failures = counter(
            "framecache_auth_failures_total",
            "Hub requests refused by token verification, by reason.",
            &["reason"],
        );
        let origin_requests = counter(
            "framecache_origin_requests_total",
            "Requests made to camera backends, by outcome.",
            &["outcome"],
        );
        let origin_rejections = counter(
            "framecache_origin_rejections_total",
            "Origin answers refused by attestation, by reason. Nothing of them was served.",
            &["reason"],
        );
        let response_bytes = counter(
            "framecache_response_bytes_total",
            "Frame body bytes sent to hubs, by rendition.",
            &["variant"],
        );
        let not_modified = counter(
            "framecache_not_modified_total",
            "Frame requests answered 304 Not Modified (If-None-Match), by route.",
            &["route"],
        );
        let partial_responses = counter(
            "framecache_partial_responses_total",
            "Frame requests with a Range header, by result (partial, unsatisfiable, ignored).",
            &["result"],
        );
        let bytes_saved = counter(
            "framecache_bytes_saved_total",
            "Frame body bytes not sent because the hub had them, by reason (not_modified, range).",
            &["reason"],
        );
        let renditions = counter(
            "framecache_renditions_total",
            "Renditions asked of the cache, by result (hit, rendered, coalesced, failed, busy).",
            &["result"],
        );
        let variant_choices = counter(
            "framecache_variant_choices_total",
            "Frame responses and stream frames by the rendition served and why it was chosen.",
            &["variant", "reason"],
        );
        let hub_write_timeouts = counter(
            "framecache_hub_write_timeouts_total",
            "Hubs dropped for taking less than 16 KiB per delivery.write_timeout_ms, by route.",
            &["route"],
        );
        let cache_lookups = counter(
            "framecache_cache_lookups_total",
            "Frame requests by how the cache answered them.",
            &["result"],
        );
        let register = |c: Box<dyn prometheus::core::Collector>| {
            registry
                .register(c)
                .expect("invariant: metric names are unique")
        };
        let plain = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("invariant: metric definitions are valid");
            register(Box::new(c.clone()));
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("invariant: metric definitions are valid");
            register(Box::new(g.clone()));
            g
        };
        let cache_key_collisions = plain(
            "framecache_cache_key_collisions_total",
            "Cache entries found under a request's key digest with another identity. Never served.",
        );
        let cache_cross_owner_hits = plain(
            "framecache_cache_cross_owner_hits_total",
            "Cache entries found for a request of another owner. Never served.",
        );
        let cache_stored_bytes = gauge(
            "framecache_cache_stored_bytes",
            "Frame body bytes held by the cache (each body once).",
        );
        let cache_entries = gauge("framecache_cache_entries", "Cache entries.");
        let cache_max_bytes = gauge(
            "framecache_cache_max_bytes",
            "The cache's memory budget for frame bodies (cache.max_bytes).",
        );
        let build_info = IntGaugeVec::new(
            Opts::new(
                "framecache_build_info",
                "Always 1; the labels name the running build.",
            ),
            &["version", "profile"],
        )
        .expect("invariant: metric definitions are valid");
        register(Box::new(build_info.clone()));
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), PROFILE])
            .set(1);
        // CPU seconds, resident and virtual memory, open and maximum file descriptors, threads,
        // start time: read from /proc at each scrape.
        #[cfg(target_os = "linux")]
        register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        register(Box::new(SealedCollector::new()));
        let stream_subscribers = gauge(
            "framecache_stream_subscribers",
            "Hubs connected to an MJPEG stream.",
        );
        let stream_frames_sent = plain(
            "framecache_stream_frames_sent_total",
            "Frames written to MJPEG stream subscribers.",
        );
        let stream_frames_skipped = plain(
            "framecache_stream_frames_skipped_total",
            "Frames a stream subscriber did not get because a newer one was ready (slow hub or slower interval).",
        );
        let cache_purges = plain(
            "framecache_cache_purges_total",
            "Purge requests carried out (POST /admin/purge).",
        );
        let cache_purged_entries = plain(
            "framecache_cache_purged_entries_total",
            "Entries removed by purges.",
        );
        let cache_evictions = plain(
            "framecache_cache_evictions_total",
            "Entries evicted to stay within cache.max_bytes.",
        );
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "framecache_request_duration_seconds",
                "Time from request header to the end of the response, by route.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("invariant: metric definitions are valid");
        registry
            .register(Box::new(request_duration.clone()))
            .expect("invariant: metric names are unique");
        let origin_duration = Histogram::with_opts(
            HistogramOpts::new(
                "framecache_origin_request_duration_seconds",
                "Time of one origin request, connect to last byte.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("invariant: metric definitions are valid");
        registry
            .register(Box::new(origin_duration.clone()))
            .expect("invariant: metric names are unique");
        let render_duration = Histogram::with_opts(
            HistogramOpts::new(
                "framecache_render_duration_seconds",
                "Time to make one rendition (decode, resize, encode), waiting for a slot excluded.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("invariant: metric definitions are valid");
        registry
            .register(Box::new(render_duration.clone()))
            .expect("invariant: metric names are unique");

        for reason in AuthError::ALL {
            auth_failures.with_label_values(&[reason.as_str()]);
        }
        for outcome in Outcome::ALL {
            origin_requests.with_label_values(&[outcome.as_str()]);
        }
        for reason in Rejection::ALL {
            origin_rejections.with_label_values(&[reason.as_str()]);
        }
        for result in RENDITION_RESULTS {
            renditions.with_label_values(&[result]);
        }
        for route in [
            RouteLabel::Frame,
            RouteLabel::FrameByHash,
            RouteLabel::Stream,
        ] {
            hub_write_timeouts.with_label_values(&[route.as_str()]);
        }
        for route in [RouteLabel::Frame, RouteLabel::FrameByHash] {
            not_modified.with_label_values(&[route.as_str()]);
        }
        for result in Answer::RANGE_LABELS {
            partial_responses.with_label_values(&[result]);
        }
        for reason in ["not_modified", "range"] {
            bytes_saved.with_label_values(&[reason]);
        }
        for result in Lookup::LABELS {
            cache_lookups.with_label_values(&[result]);
        }
        for route in RouteLabel::ALL {
            request_duration.with_label_values(&[route.as_str()]);
        }

        Metrics {
            registry,
            requests,
            request_duration,
            auth_failures,
            origin_requests,
            origin_duration,
            origin_rejections,
            response_bytes,
            cache_lookups,
            cache_key_collisions,
            cache_cross_owner_hits,
            cache_stored_bytes,
            cache_entries,
            cache_evictions,
            cache_max_bytes,
            cache_purges,
            cache_purged_entries,
            not_modified,
            partial_responses,
            bytes_saved,
            stream_subscribers,
            stream_frames_sent,
            stream_frames_skipped,
            renditions,
            render_duration,
            variant_choices,
            hub_write_timeouts,
        }
        .with_renditions(&Catalogue::built_in())
    }

    /// Creates the per-rendition series of `catalogue` at zero.
    pub fn with_renditions(self, catalogue: &Catalogue) -> Metrics {
        for r in catalogue.all() {
            let name = r.variant.as_str();
            self.response_bytes.with_label_values(&[name]);
            for reason in CHOICE_REASONS {
                self.variant_choices.with_label_values(&[name, reason]);
            }
        }
        self
    }

    /// Records how a frame of `len` bytes was answered.
    pub fn record_answer(&self, route: &str, answer: Answer, len: usize) {
        if let Some(result) = answer.range_label() {
            self.partial_responses.with_label_values(&[result]).inc();
        }
        match answer {
            Answer::NotModified => {
                self.not_modified.with_label_values(&[route]).inc();
                self.bytes_saved
                    .with_label_values(&["not_modified"])
                    .inc_by(len as u64);
            }
            Answer::Partial { start, end } => {
                self.bytes_saved
                    .with_label_values(&["range"])
                    .inc_by((len - (end - start + 1)) as u64);
            }
            _ => {}
        }
    }

    /// Records one origin request.
    pub fn record_origin(&self, attempt: &Attempt) {
        self.origin_requests
            .with_label_values(&[attempt.outcome.as_str()])
            .inc();
        self.origin_duration.observe(attempt.elapsed.as_secs_f64());
        if let Some(reason) = attempt.rejection {
            self.origin_rejections
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
