//! Choosing a rendition for a hub that did not ask for one.
//!
//! In order:
//! 1. `Save-Data: on` → the smallest rendition.
//! 2. Client hints, as a tier of the Network Information API's table: `slow-2g` 50 kbit/s and
//!    2000 ms, `2g` 70 kbit/s and 1400 ms, `3g` 700 kbit/s and 270 ms, `4g` unbounded. `ECT`
//!    names the tier; without it, `Downlink` (Mbit/s, with `RTT` in ms when sent) is put in
//!    the tier it falls in, as the browser does when it computes `ECT` from the same two
//!    figures. So what hints decide depends on `Save-Data` and the tier only, and the answer
//!    says `Vary: Save-Data, ECT`, which a downstream cache can key on (four tiers, two
//!    Save-Data values), rather than on `Downlink` and `RTT`, continuous figures that would
//!    split its entries without end. `Accept-CH` asks for those two hints only. (Without
//!    hints the choice is the connection's, below, which no `Vary` can name: frames are
//!    `private`, for the hub's own cache only.)
//! 3. The connection's own measurement: Linux `TCP_INFO` on the hub's socket, its delivery
//!    rate and minimum RTT.
//! 4. A connection that has delivered nothing yet has no rate of its own: the link the same
//!    hub (owner, address, `User-Agent`) measured on an earlier connection
//!    ([`LinkMemory`](crate::delivery::link::LinkMemory)), else `full`.
//!
//! How a link is measured and remembered is delivery's ([`crate::delivery::link`]); this module
//! only weighs it.
//!
//! With a link known, the choice is the largest rendition expected to arrive within
//! `delivery.target_time_ms`: one RTT plus its size over the rate, the size being the cached
//! rendition's when there is one, else the full frame's scaled by the square of the width
//! ratio. When none fits, the smallest.

use std::cell::OnceCell;
use std::time::Duration;

use http::HeaderMap;

use super::{render, Catalogue, Chosen, Rendition};
use crate::cache::store::StoredFrame;
use crate::cache::FrameCache;
use crate::config::DeliveryConfig;
use crate::delivery::link::Link;
use crate::request::{FrameRef, FrameRequest, Target};

/// Why a rendition was chosen: the `reason` label of `framecache_variant_choices_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `variant=` asked for it.
    Requested,
    SaveData,
    Ect,
    Downlink,
    /// From the connection's `TCP_INFO`.
    Measured,
    /// A new connection: from what the same hub's earlier connection measured.
    Remembered,
    /// Nothing known about the link: `full`.
    Unmeasured,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::Requested,
        Reason::SaveData,
        Reason::Ect,
        Reason::Downlink,
        Reason::Measured,
        Reason::Remembered,
        Reason::Unmeasured,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::Requested => "requested",
            Reason::SaveData => "save_data",
            Reason::Ect => "ect",
            Reason::Downlink => "downlink",
            Reason::Measured => "measured",
            Reason::Remembered => "remembered",
            Reason::Unmeasured => "unmeasured",
        }
    }
}

/// What the request's headers say about the link, if anything.
pub enum Hint {
    SaveData,
    Link(Link, Reason),
}

/// `Accept-CH` of an automatic answer: the hints the choice depends on, and so its `Vary`.
pub const ACCEPT_CH: &str = "Save-Data, ECT";

/// A tier of the Network Information API's effective connection types: its name, the largest
/// downlink (kbit/s) and the smallest RTT (ms) that put a link in it.
struct Tier {
    name: &'static str,
    kbits: f64,
    rtt_ms: u64,
}

/// From the slowest up; a link in none of them is `4g`.
const TIERS: [Tier; 3] = [
    Tier {
        name: "slow-2g",
        kbits: 50.0,
        rtt_ms: 2000,
    },
    Tier {
        name: "2g",
        kbits: 70.0,
        rtt_ms: 1400,
    },
    Tier {
        name: "3g",
        kbits: 700.0,
        rtt_ms: 270,
    },
];

/// The link a tier stands for: its downlink and RTT (`4g`: unbounded, no RTT).
fn tier_link(name: &str) -> Option<Link> {
    if name == "4g" {
        return Some(Link {
            rate: f64::INFINITY,
            rtt: Duration::ZERO,
        });
    }
    let tier = TIERS.iter().find(|t| t.name == name)?;
    Some(Link {
        rate: tier.kbits * 125.0,
        rtt: Duration::from_millis(tier.rtt_ms),
    })
}

/// The tier a measured downlink (kbit/s) and RTT fall in: the slowest whose downlink bound it
/// is at or under, or whose RTT bound it is at or over.
fn tier_of(kbits: f64, rtt: Duration) -> &'static str {
    TIERS
        .iter()
        .find(|t| kbits <= t.kbits || rtt >= Duration::from_millis(t.rtt_ms))
        .map_or("4g", |t| t.name)
}

/// Reads `Save-Data`, `Downlink` (+ `RTT`) and `ECT`. Malformed values are ignored.
pub fn hint(headers: &HeaderMap) -> Option<Hint> {
    let value = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().trim_matches('"').to_ascii_lowercase())
    };
    if value("save-data").is_some_and(|v| v.split(';').next().map(str::trim) == Some("on")) {
        return Some(Hint::SaveData);
    }
    let rtt = value("rtt")
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(Duration::ZERO, |ms| {
            Duration::from_millis(ms.min(60_000).into())
        });
    let downlink = value("downlink")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|d| d.is_finite() && *d > 0.0);
    // ECT, what Vary names, decides when sent; Downlink (and RTT) only without it.
    if let Some(link) = value("ect").as_deref().and_then(tier_link) {
        return Some(Hint::Link(link, Reason::Ect));
    }
    let link = tier_link(tier_of(downlink? * 1000.0, rtt))?;
    Some(Hint::Link(link, Reason::Downlink))
}

/// The frame the choice is made for.
pub struct Source {
    pub len: usize,
    /// Width in pixels, when the frame header could be read.
    pub width: Option<u32>,
}

/// The expected size of `rendition` of `source`.
pub fn estimate(rendition: &Rendition, source: &Source) -> usize {
    match source.width {
        Some(width) if rendition.max_width > 0 && rendition.max_width < width => {
            let ratio = f64::from(rendition.max_width) / f64::from(width);
            (source.len as f64 * ratio * ratio).ceil() as usize
        }
        _ => source.len,
    }
}

/// The largest rendition of `catalogue` expected to reach the hub over `link` within `target`
/// (`size` gives each one's size), else the smallest.
fn largest_within(
    catalogue: &Catalogue,
    link: Link,
    target: Duration,
    size: impl Fn(&Rendition) -> usize,
) -> Rendition {
    catalogue
        .all()
        .iter()
        .rev()
        .find(|r| link.time_for(size(r)) <= target)
        .copied()
        .unwrap_or_else(|| catalogue.smallest())
}

/// Chooses for a hub: from its hints, else from `measured` (asked only when no hint decides;
/// the link and whether the connection measured it or it was remembered), else `full`.
pub fn choose(
    catalogue: &Catalogue,
    headers: &HeaderMap,
    measured: impl FnOnce() -> Option<(Link, Reason)>,
    target: Duration,
    size: impl Fn(&Rendition) -> usize,
) -> (Rendition, Reason) {
    let (link, reason) = match hint(headers) {
        Some(Hint::SaveData) => return (catalogue.smallest(), Reason::SaveData),
        Some(Hint::Link(link, reason)) => (link, reason),
        None => match measured() {
            Some(known) => known,
            None => return (Rendition::FULL, Reason::Unmeasured),
        },
    };
    (largest_within(catalogue, link, target, size), reason)
}

/// The rendition of `frame` to answer `req` with: the one asked for; `full` for a content
/// address (it names the frame with those bytes); else the proxy's choice for the hub, from its
/// hints, from `link` (asked only when no hint decides: what the connection measured, or what
/// the same hub's last connection measured), within `delivery.target_time_ms`.
pub fn for_request(
    req: &FrameRequest,
    headers: &HeaderMap,
    link: impl FnOnce() -> Option<(Link, Reason)>,
    config: &DeliveryConfig,
    cache: &FrameCache,
    frame: &StoredFrame,
) -> Chosen {
    let asked = match (req.rendition, req.target) {
        (Some(rendition), _) => Some(rendition),
        (None, Target::Frame(FrameRef::ByHash(_))) => Some(Rendition::FULL),
        (None, _) => None,
    };
    if let Some(rendition) = asked {
        return Chosen {
            rendition,
            reason: Reason::Requested,
        };
    }
    // Read only when a smaller rendition is weighed (a fast link settles on `full` first).
    let source = OnceCell::new();
    let size = |r: &Rendition| {
        if r.variant.is_full() {
            return frame.body.len();
        }
        cache
            .cached_rendition_len(&req.owner, &req.camera, frame.hash, *r)
            .unwrap_or_else(|| {
                let source = source.get_or_init(|| Source {
                    len: frame.body.len(),
                    width: render::dimensions(&frame.body).map(|(w, _)| w),
                });
                estimate(r, source)
            })
    };
    let (rendition, reason) = choose(&config.renditions, headers, link, config.target_time, size);
    Chosen { rendition, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::link::TcpInfo;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    /// A 1280-px, 94 KB frame, as camsim makes at 720p.
    fn pick(pairs: &[(&'static str, &'static str)], measured: Option<Link>) -> (String, Reason) {
        let source = Source {
            len: 94_000,
            width: Some(1280),
        };
        let (r, reason) = choose(
            &Catalogue::built_in(),
            &headers(pairs),
            || measured.map(|link| (link, Reason::Measured)),
            Duration::from_secs(1),
            |r| estimate(r, &source),
        );
        (r.variant.as_str().to_string(), reason)
    }

    #[test]
    fn save_data_takes_the_smallest() {
        assert_eq!(pick(&[("save-data", "on")], None).0, "thumb");
        assert_eq!(pick(&[("save-data", "On")], None).0, "thumb");
        // Save-Data wins over a fast link.
        assert_eq!(pick(&[("save-data", "on"), ("ect", "4g")], None).0, "thumb");
        // Anything but "on" is not a request to save.
        assert_eq!(pick(&[("save-data", "off")], None).0, "full");
    }

    #[test]
    fn ect_tiers() {
        for (ect, expected) in [
            ("slow-2g", "thumb"),
            ("2g", "thumb"),
            ("3g", "medium"),
            ("4g", "full"),
        ] {
            let (variant, reason) = pick(&[("ect", ect)], None);
            assert_eq!((variant.as_str(), reason), (expected, Reason::Ect), "{ect}");
        }
        // Unknown tiers are ignored.
        assert_eq!(
            pick(&[("ect", "5g")], None),
            ("full".into(), Reason::Unmeasured)
        );
    }

    #[test]
    fn downlink_rates() {
        // Each downlink stands for its tier's link: 0.04 Mbit/s is slow-2g's 50 kbit/s, 0.06
        // 2g's 70 kbit/s, up to 0.7 3g's 700 kbit/s, above 4g (what ECT says for them).
        for (downlink, expected) in [
            ("0.04", "thumb"),
            ("0.06", "thumb"),
            ("0.1", "medium"),
            ("0.25", "medium"),
            ("0.7", "medium"),
            ("1", "full"),
            ("10", "full"),
        ] {
            let (variant, reason) = pick(&[("downlink", downlink)], None);
            assert_eq!(
                (variant.as_str(), reason),
                (expected, Reason::Downlink),
                "{downlink}"
            );
        }
        // ECT, which Vary names, wins over Downlink; an RTT at or over a tier's puts the link
        // in that tier.
        assert_eq!(pick(&[("downlink", "1"), ("ect", "2g")], None).0, "thumb");
        assert_eq!(pick(&[("downlink", "0.04"), ("ect", "4g")], None).0, "full");
        assert_eq!(pick(&[("downlink", "1"), ("rtt", "500")], None).0, "medium");
        // Absurd values choose, they never overflow.
        assert_eq!(
            pick(&[("downlink", "1e-21"), ("rtt", "1")], None).0,
            "thumb"
        );
        assert_eq!(
            pick(&[("downlink", "1e300"), ("rtt", "99999999")], None).0,
            "thumb"
        );
        for bad in ["", "fast", "-1", "0", "NaN", "inf"] {
            let mut h = HeaderMap::new();
            h.insert("downlink", bad.parse().unwrap());
            assert!(hint(&h).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a_downlink_falls_in_the_tier_ect_would_name() {
        for (kbits, rtt, tier) in [
            (40.0, 0, "slow-2g"),
            (50.0, 0, "slow-2g"),
            (60.0, 0, "2g"),
            (10_000.0, 2000, "slow-2g"),
            (10_000.0, 1400, "2g"),
            (500.0, 100, "3g"),
            (10_000.0, 300, "3g"),
            (10_000.0, 100, "4g"),
        ] {
            assert_eq!(
                tier_of(kbits, Duration::from_millis(rtt)),
                tier,
                "{kbits} {rtt}"
            );
        }
    }

    #[test]
    fn measured_links() {
        let info = |delivery_rate, rtt_us, bytes_acked, busy_time_us| TcpInfo {
            outstanding: false,
            delivery_rate,
            rtt_us,
            min_rtt_us: 0,
            bytes_acked,
            busy_time_us,
        };
        let slow = Link::measured(&info(16_000, 20_000, 0, 0)); // 128 kbit/s
        let fast = Link::measured(&info(2_500_000, 1_000, 0, 0)); // 20 Mbit/s
        assert_eq!(pick(&[], slow), ("thumb".into(), Reason::Measured));
        assert_eq!(pick(&[], fast), ("full".into(), Reason::Measured));
        assert_eq!(Link::measured(&info(0, 100, 1 << 20, 1000)), None);
        // A bursty sample says fast, the busy-time average (94 KB in 3 s) says otherwise.
        let bursty = Link::measured(&info(2_500_000, 1_000, 94_000, 3_000_000)).unwrap();
        assert_eq!(bursty.rate, 94_000.0 / 3.0);
        // Too few bytes for the average to mean anything: the sample stands.
        let young = Link::measured(&info(2_500_000, 1_000, 4_000, 3_000_000)).unwrap();
        assert_eq!(young.rate, 2_500_000.0);
        assert_eq!(pick(&[], None), ("full".into(), Reason::Unmeasured));
        // Behind a modem's buffer the smoothed RTT holds the proxy's own queued frame: the
        // path's minimum counts, or a 1 Mbit/s line that takes a full frame in 0.77 s would
        // be expected to take 0.96 s and flip to medium on jitter.
        let queued = TcpInfo {
            min_rtt_us: 1_000,
            ..info(125_000, 200_000, 94_000, 760_000)
        };
        let link = Link::measured(&queued).unwrap();
        assert_eq!(link.rtt, Duration::from_millis(1));
        assert!(link.time_for(94_000) < Duration::from_millis(800));
    }

    #[test]
    fn a_remembered_link_chooses_like_a_measured_one() {
        let source = Source {
            len: 94_000,
            width: Some(1280),
        };
        let slow = Link {
            rate: 32_000.0,
            rtt: Duration::from_millis(80),
        };
        let (rendition, reason) = choose(
            &Catalogue::built_in(),
            &HeaderMap::new(),
            || Some((slow, Reason::Remembered)),
            Duration::from_secs(1),
            |r| estimate(r, &source),
        );
        assert_eq!(
            (rendition.variant.as_str(), reason),
            ("medium", Reason::Remembered)
        );
    }

    #[test]
    fn estimates_scale_with_area_and_never_enlarge() {
        let source = Source {
            len: 100_000,
            width: Some(1280),
        };
        let c = Catalogue::built_in();
        assert_eq!(estimate(&c.find("medium").unwrap(), &source), 25_000);
        assert_eq!(estimate(&c.find("full").unwrap(), &source), 100_000);
        let small = Source {
            len: 10_000,
            width: Some(300),
        };
        assert_eq!(estimate(&c.find("thumb").unwrap(), &small), 10_000);
    }
}
