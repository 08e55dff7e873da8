//! Faults camsim injects: the settings, their names, and one request's draw.
//!
//! Faults only touch frame requests that would otherwise get a 200 (a 400, 403 or 404 is
//! answered plainly). Each rate is a probability drawn independently per request. When several
//! are drawn, `hang` wins over everything, then `error`; `leak` wins over `wrong_camera`,
//! `missing_signature` over `bad_signature`, `reset` over `truncate`. `latency` and `throttle`
//! apply whenever they are set. A fault is counted in the stats only when it actually changed
//! the answer.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// How long a hang lasts when `hang_ms` is 0.
pub const DEFAULT_HANG_MS: u64 = 30_000;

/// Fault settings. All rates are probabilities in `0..=1`; the default injects nothing.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Uniform delay `[min, max]` in ms before the response head (jitter).
    pub latency_ms: Option<(u64, u64)>,
    /// Throttles body writes to this many bytes per second (must be > 0).
    pub bandwidth_bytes_per_sec: Option<u64>,
    /// Send the head and about half the body, then reset the connection (RST).
    pub reset_rate: f64,
    /// Send the full `Content-Length` but about half the body, then close (FIN).
    pub truncate_rate: f64,
    /// Answer 503 with a text body.
    pub error_rate: f64,
    /// Read the request and never answer; close when the client does or after `hang_ms`.
    pub hang_rate: f64,
    /// How long a hang holds the connection; 0 means [`DEFAULT_HANG_MS`].
    pub hang_ms: u64,
    /// `X-Frame-Owner` names another owner (the signature is otherwise valid).
    pub wrong_owner_rate: f64,
    /// Answer with another camera's frame, consistently: its `X-Frame-Camera`, body and valid
    /// signature.
    pub wrong_camera_rate: f64,
    /// The incident: another camera's body, seq, captured-at and signature (valid for that
    /// camera) under the requested camera's `X-Frame-Camera`. A verifying client sees a bad
    /// signature for the camera it asked for.
    pub leak_rate: f64,
    /// Signature bytes corrupted (still 64 hex chars).
    pub bad_signature_rate: f64,
    /// No `X-Frame-Signature` header.
    pub missing_signature_rate: f64,
    /// `Content-Type: text/html`.
    pub wrong_content_type_rate: f64,
    /// A by-hash request answered with a different valid frame of the camera (the latest, or
    /// the newest other retained frame when the latest is the one asked for).
    pub wrong_hash_rate: f64,
}

impl Faults {
    /// No faults at all.
    pub fn none() -> Self {
        Faults::default()
    }

    /// How long a hang holds the connection.
    pub fn hang_duration(&self) -> Duration {
        Duration::from_millis(if self.hang_ms == 0 {
            DEFAULT_HANG_MS
        } else {
            self.hang_ms
        })
    }

    /// Every problem with these settings, one line each, naming the key and the value.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (key, rate) in self.rates() {
            if !(0.0..=1.0).contains(&rate) {
                problems.push(format!("{key}: must be within 0..=1, got {rate}"));
            }
        }
        if let Some((min, max)) = self.latency_ms {
            if min > max {
                problems.push(format!(
                    "latency_ms: min must be <= max, got [{min}, {max}]"
                ));
            }
        }
        if self.bandwidth_bytes_per_sec == Some(0) {
            problems.push("bandwidth_bytes_per_sec: must be > 0, got 0".to_owned());
        }
        problems
    }

    fn rates(&self) -> [(&'static str, f64); 11] {
        [
            ("reset_rate", self.reset_rate),
            ("truncate_rate", self.truncate_rate),
            ("error_rate", self.error_rate),
            ("hang_rate", self.hang_rate),
            ("wrong_owner_rate", self.wrong_owner_rate),
            ("wrong_camera_rate", self.wrong_camera_rate),
            ("leak_rate", self.leak_rate),
            ("bad_signature_rate", self.bad_signature_rate),
            ("missing_signature_rate", self.missing_signature_rate),
            ("wrong_content_type_rate", self.wrong_content_type_rate),
            ("wrong_hash_rate", self.wrong_hash_rate),
        ]
    }
}

/// One kind of injected fault; `as_str` is its key in `Stats::faults_injected`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    Reset,
    Truncate,
    Error,
    Hang,
    WrongOwner,
    WrongCamera,
    Leak,
    BadSignature,
    MissingSignature,
    WrongContentType,
    WrongHash,
    Latency,
    Throttle,
}

impl Fault {
    /// Every fault kind.
    pub const ALL: [Fault; 13] = [
        Fault::Reset,
        Fault::Truncate,
        Fault::Error,
        Fault::Hang,
        Fault::WrongOwner,
        Fault::WrongCamera,
        Fault::Leak,
        Fault::BadSignature,
        Fault::MissingSignature,
        Fault::WrongContentType,
        Fault::WrongHash,
        Fault::Latency,
        Fault::Throttle,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Fault::Reset => "reset",
            Fault::Truncate => "truncate",
            Fault::Error => "error",
            Fault::Hang => "hang",
            Fault::WrongOwner => "wrong_owner",
            Fault::WrongCamera => "wrong_camera",
            Fault::Leak => "leak",
            Fault::BadSignature => "bad_signature",
            Fault::MissingSignature => "missing_signature",
            Fault::WrongContentType => "wrong_content_type",
            Fault::WrongHash => "wrong_hash",
            Fault::Latency => "latency",
            Fault::Throttle => "throttle",
        }
    }
}

/// Serving another camera's frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Swap {
    /// Consistently: headers describe the other camera.
    WrongCamera,
    /// Under the requested camera's `X-Frame-Camera`.
    Leak,
}

/// Damage to the signature header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SignatureFault {
    Missing,
    Bad,
}

/// Cutting the body short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cut {
    /// About half the body, then RST.
    Reset,
    /// About half the body, then FIN.
    Truncate,
}

/// The faults drawn for one frame request.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Plan {
    pub hang: Option<Duration>,
    pub latency: Option<Duration>,
    pub error: bool,
    pub wrong_hash: bool,
    pub swap: Option<Swap>,
    pub wrong_owner: bool,
    pub signature: Option<SignatureFault>,
    pub wrong_content_type: bool,
    pub cut: Option<Cut>,
    pub bandwidth: Option<u64>,
}

impl Plan {
    /// Draws one request's faults; `by_hash` tells whether `wrong_hash` can apply.
    pub fn draw(faults: &Faults, by_hash: bool, rng: &mut impl Rng) -> Plan {
        // `random()` is in [0, 1): a rate of 0 (or NaN) never fires, a rate of 1 always does.
        let mut hit = |rate: f64| rng.random::<f64>() < rate;
        if hit(faults.hang_rate) {
            return Plan {
                hang: Some(faults.hang_duration()),
                ..Plan::default()
            };
        }
        let error = hit(faults.error_rate);
        let mut plan = Plan {
            error,
            ..Plan::default()
        };
        if !error {
            plan.wrong_hash = by_hash && hit(faults.wrong_hash_rate);
            plan.swap = match (hit(faults.leak_rate), hit(faults.wrong_camera_rate)) {
                (true, _) => Some(Swap::Leak),
                (false, true) => Some(Swap::WrongCamera),
                (false, false) => None,
            };
            plan.wrong_owner = hit(faults.wrong_owner_rate);
            plan.signature = match (
                hit(faults.missing_signature_rate),
                hit(faults.bad_signature_rate),
            ) {
                (true, _) => Some(SignatureFault::Missing),
                (false, true) => Some(SignatureFault::Bad),
                (false, false) => None,
            };
            plan.wrong_content_type = hit(faults.wrong_content_type_rate);
            plan.cut = match (hit(faults.reset_rate), hit(faults.truncate_rate)) {
                (true, _) => Some(Cut::Reset),
                (false, true) => Some(Cut::Truncate),
                (false, false) => None,
            };
            plan.bandwidth = faults.bandwidth_bytes_per_sec.filter(|bps| *bps > 0);
        }
        plan.latency = faults
            .latency_ms
            .map(|(min, max)| Duration::from_millis(rng.random_range(min.min(max)..=max.max(min))));
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_rate(rate: f64) -> Faults {
        Faults {
            reset_rate: rate,
            truncate_rate: rate,
            error_rate: rate,
            hang_rate: rate,
            wrong_owner_rate: rate,
            wrong_camera_rate: rate,
            leak_rate: rate,
            bad_signature_rate: rate,
            missing_signature_rate: rate,
            wrong_content_type_rate: rate,
            wrong_hash_rate: rate,
            ..Faults::default()
        }
    }

    #[test]
    fn no_faults_draw_an_empty_plan() {
        let plan = Plan::draw(&Faults::none(), true, &mut rand::rng());
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn hang_wins_over_everything() {
        let plan = Plan::draw(&every_rate(1.0), true, &mut rand::rng());
        assert_eq!(
            plan,
            Plan {
                hang: Some(Duration::from_millis(DEFAULT_HANG_MS)),
                ..Plan::default()
            }
        );
    }

    #[test]
    fn precedence_below_error() {
        let faults = Faults {
            hang_rate: 0.0,
            error_rate: 0.0,
            latency_ms: Some((5, 5)),
            bandwidth_bytes_per_sec: Some(1000),
            ..every_rate(1.0)
        };
        let plan = Plan::draw(&faults, false, &mut rand::rng());
        assert_eq!(
            plan,
            Plan {
                hang: None,
                latency: Some(Duration::from_millis(5)),
                error: false,
                wrong_hash: false,
                swap: Some(Swap::Leak),
                wrong_owner: true,
                signature: Some(SignatureFault::Missing),
                wrong_content_type: true,
                cut: Some(Cut::Reset),
                bandwidth: Some(1000),
            }
        );
    }

    #[test]
    fn out_of_range_settings_are_problems() {
        let faults = Faults {
            leak_rate: -0.1,
            reset_rate: f64::NAN,
            latency_ms: Some((10, 1)),
            bandwidth_bytes_per_sec: Some(0),
            ..Faults::default()
        };
        assert_eq!(faults.problems().len(), 4, "{:?}", faults.problems());
    }

    #[test]
    fn json_is_strict_and_defaults_missing_keys() {
        let faults: Faults = serde_json::from_str(r#"{"leak_rate": 0.5}"#).unwrap();
        assert_eq!(faults.leak_rate, 0.5);
        assert_eq!(
            faults.hang_duration(),
            Duration::from_millis(DEFAULT_HANG_MS)
        );
        assert!(serde_json::from_str::<Faults>(r#"{"leak": 1}"#).is_err());
    }

    #[test]
    fn fault_names_are_unique() {
        let mut names: Vec<_> = Fault::ALL.iter().map(Fault::as_str).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Fault::ALL.len());
    }
}
