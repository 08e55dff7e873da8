//! Choosing a rendition for a hub that did not ask for one.
//!
//! In order:
//! 1. `Save-Data: on` → the smallest rendition.
//! 2. Client hints: `Downlink` (Mbit/s, with `RTT` in ms when sent), else `ECT`, mapped to the
//!    link of the Network Information API's table: `slow-2g` 50 kbit/s and 2000 ms, `2g`
//!    70 kbit/s and 1400 ms, `3g` 700 kbit/s and 270 ms, `4g` unbounded.
//! 3. The connection's own measurement: Linux `TCP_INFO` on the hub's socket, its delivery
//!    rate and smoothed RTT.
//! 4. A connection that has delivered nothing yet has no rate of its own: the link the same
//!    hub (owner, address, `User-Agent`) measured on an earlier connection ([`LinkMemory`]),
//!    else `full`.
//!
//! With a link known, the choice is the largest rendition expected to arrive within
//! `delivery.target_time_ms`: one RTT plus its size over the rate, the size being the cached
//! rendition's when there is one, else the full frame's scaled by the square of the width
//! ratio. When none fits, the smallest.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use http::HeaderMap;

use crate::identity::OwnerId;
use crate::variant::{Catalogue, Rendition};

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

/// Bytes a connection must have had acknowledged before its busy-time average counts, and
/// before its measurement is kept for the hub's next connections: below that, the kernel's
/// sample alone speaks, and after a 304 or a small frame it says little.
pub const SETTLED_BYTES: u64 = 16 * 1024;

/// What is known of a hub's link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// Bytes per second; infinite when unbounded.
    pub rate: f64,
    pub rtt: Duration,
}

impl Link {
    /// The expected time to deliver `bytes`.
    pub fn time_for(&self, bytes: usize) -> Duration {
        let transfer = bytes as f64 / self.rate;
        self.rtt
            .saturating_add(Duration::try_from_secs_f64(transfer).unwrap_or(Duration::MAX))
    }

    /// From the connection's `TCP_INFO`; `None` before it has delivered anything.
    ///
    /// The rate is the lower of the kernel's latest delivery-rate sample and the average over
    /// the connection's busy time (bytes acknowledged over the time it had data in flight, idle
    /// time excluded). The sample alone reacts fast but, behind a receive window that opens in
    /// bursts, reads high; the average needs a few frames' worth of bytes to mean anything and
    /// is used once [`SETTLED_BYTES`] have been acknowledged.
    pub fn measured(info: &TcpInfo) -> Option<Link> {
        if info.delivery_rate == 0 {
            return None;
        }
        let average = if info.bytes_acked >= SETTLED_BYTES && info.busy_time_us > 0 {
            info.bytes_acked as f64 * 1e6 / info.busy_time_us as f64
        } else {
            f64::INFINITY
        };
        Some(Link {
            rate: (info.delivery_rate as f64).min(average),
            rtt: Duration::from_micros(info.rtt_us.into()),
        })
    }
}

/// Which hub a connection comes from, as far as the proxy can tell: its owner, its address,
/// and a hash of its `User-Agent`, so that a household's wired display and its tablet on a
/// weak signal, behind one address, are told apart when they are different models.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HubKey {
    pub owner: OwnerId,
    pub addr: IpAddr,
    pub agent: u64,
}

impl HubKey {
    pub fn new(owner: &OwnerId, addr: IpAddr, user_agent: Option<&[u8]>) -> HubKey {
        let agent = user_agent.map_or(0, |ua| {
            let hash = blake3::hash(ua);
            u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 of 32 bytes"))
        });
        HubKey {
            owner: owner.clone(),
            addr,
            agent,
        }
    }
}

/// Links measured on hubs' earlier connections, as the kernel keeps per-destination TCP
/// metrics: a hub that polls less often than the idle timeout opens a new connection each
/// time, and without this every one of its frames would be chosen blind (`full`). Keyed by
/// [`HubKey`], owner included, so that one owner's hubs never steer another's choice, even
/// behind one NAT address. An entry lives `ttl` from when it was learnt, so a hub's link is
/// measured afresh at least that often. At `max` entries the expired ones are swept (at most
/// once a second) and, while none has expired, new hubs are not remembered: no owner's hubs
/// can push out another's.
pub struct LinkMemory {
    links: DashMap<HubKey, (Link, Instant)>,
    ttl: Duration,
    max: usize,
    last_sweep: std::sync::Mutex<Option<Instant>>,
}

impl LinkMemory {
    pub fn new(ttl: Duration, max: usize) -> LinkMemory {
        LinkMemory {
            links: DashMap::new(),
            ttl,
            max,
            last_sweep: std::sync::Mutex::new(None),
        }
    }

    /// Keeps `info`'s link for the hub's next connections, once it has settled.
    pub fn remember(&self, hub: HubKey, info: &TcpInfo) {
        let Some(link) = Link::measured(info).filter(|_| info.bytes_acked >= SETTLED_BYTES) else {
            return;
        };
        if self.links.len() >= self.max && !self.links.contains_key(&hub) {
            self.sweep();
            if self.links.len() >= self.max {
                return;
            }
        }
        self.links.insert(hub, (link, Instant::now()));
    }

    /// Drops the expired entries, at most once a second.
    fn sweep(&self) {
        let mut last = self.last_sweep.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
            return;
        }
        *last = Some(Instant::now());
        self.links.retain(|_, (_, at)| at.elapsed() < self.ttl);
    }

    /// The link last learnt for `hub`, if it is recent.
    pub fn recall(&self, hub: &HubKey) -> Option<Link> {
        let (link, at) = *self.links.get(hub)?;
        (at.elapsed() < self.ttl).then_some(link)
    }
}

/// The fields of Linux's `TCP_INFO` the measurement uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpInfo {
    /// `tcpi_delivery_rate`, bytes per second.
    pub delivery_rate: u64,
    /// `tcpi_rtt`, µs.
    pub rtt_us: u32,
    /// `tcpi_bytes_acked`.
    pub bytes_acked: u64,
    /// `tcpi_busy_time`, µs.
    pub busy_time_us: u64,
    /// Bytes sent and not yet acknowledged, or not yet sent (`tcpi_unacked`,
    /// `tcpi_notsent_bytes`).
    pub outstanding: bool,
}

/// What the request's headers say about the link, if anything.
pub enum Hint {
    SaveData,
    Link(Link, Reason),
}

/// `Accept-CH`: the hints the proxy reads.
pub const ACCEPT_CH: &str = "Save-Data, ECT, Downlink, RTT";

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
    if let Some(mbits) = downlink {
        let link = Link {
            rate: mbits * 125_000.0,
            rtt,
        };
        return Some(Hint::Link(link, Reason::Downlink));
    }
    let (kbits, rtt_ms) = match value("ect")?.as_str() {
        "slow-2g" => (50.0, 2000),
        "2g" => (70.0, 1400),
        "3g" => (700.0, 270),
        "4g" => (f64::INFINITY, 0),
        _ => return None,
    };
    let link = Link {
        rate: kbits * 125.0,
        rtt: Duration::from_millis(rtt_ms),
    };
    Some(Hint::Link(link, Reason::Ect))
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

#[cfg(test)]
mod tests {
    use super::*;

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
        // 94 KB in 1 s needs about 0.75 Mbit/s; the medium estimate (23.5 KB) 0.19 Mbit/s.
        for (downlink, expected) in [
            ("0.1", "thumb"),
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
        // Downlink is more precise than ECT and wins over it; RTT counts against the target.
        assert_eq!(pick(&[("downlink", "1"), ("ect", "2g")], None).0, "full");
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
    fn measured_links() {
        let info = |delivery_rate, rtt_us, bytes_acked, busy_time_us| TcpInfo {
            outstanding: false,
            delivery_rate,
            rtt_us,
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
    }

    #[test]
    fn links_are_remembered_per_hub_once_settled() {
        let memory = LinkMemory::new(Duration::from_secs(600), 4);
        let (alice, bob) = (
            OwnerId::parse("alice").unwrap(),
            OwnerId::parse("bob").unwrap(),
        );
        let home: IpAddr = "192.0.2.7".parse().unwrap();
        let elsewhere: IpAddr = "198.51.100.1".parse().unwrap();
        let display = Some(&b"Display/2.1"[..]);
        let hub = |owner: &OwnerId, addr, agent| HubKey::new(owner, addr, agent);
        let slow = TcpInfo {
            delivery_rate: 40_000,
            rtt_us: 80_000,
            bytes_acked: 94_000,
            busy_time_us: 3_000_000,
            outstanding: false,
        };
        // A 304 or a small frame says too little to keep.
        memory.remember(
            hub(&alice, home, display),
            &TcpInfo {
                bytes_acked: 600,
                ..slow
            },
        );
        assert_eq!(memory.recall(&hub(&alice, home, display)), None);
        memory.remember(hub(&alice, home, display), &slow);
        assert_eq!(
            memory.recall(&hub(&alice, home, display)),
            Link::measured(&slow)
        );
        // Another owner at the same address, the owner elsewhere, or another model of hub is
        // not that hub.
        assert_eq!(memory.recall(&hub(&bob, home, display)), None);
        assert_eq!(memory.recall(&hub(&alice, elsewhere, display)), None);
        assert_eq!(memory.recall(&hub(&alice, home, Some(b"Tablet/9"))), None);
        assert_eq!(memory.recall(&hub(&alice, home, None)), None);
        // Nothing delivered: nothing to keep.
        memory.remember(hub(&bob, home, display), &TcpInfo::default());
        assert_eq!(memory.recall(&hub(&bob, home, display)), None);
    }

    #[test]
    fn remembered_links_expire_and_stay_bounded() {
        let info = TcpInfo {
            delivery_rate: 40_000,
            rtt_us: 80_000,
            bytes_acked: 94_000,
            busy_time_us: 3_000_000,
            outstanding: false,
        };
        let (alice, bob) = (
            OwnerId::parse("alice").unwrap(),
            OwnerId::parse("bob").unwrap(),
        );
        let hub = |owner: &OwnerId, i: u8| HubKey::new(owner, IpAddr::from([192, 0, 2, i]), None);
        let expired = LinkMemory::new(Duration::ZERO, 4);
        expired.remember(hub(&alice, 1), &info);
        assert_eq!(expired.recall(&hub(&alice, 1)), None);
        // Full: the hubs already known keep their links and are updated; a flood of new ones
        // from one owner pushes none of them out.
        let memory = LinkMemory::new(Duration::from_secs(600), 4);
        for i in 0..3 {
            memory.remember(hub(&bob, i), &info);
        }
        for i in 10..60 {
            memory.remember(hub(&alice, i), &info);
            assert!(memory.links.len() <= 4);
        }
        for i in 0..3 {
            assert!(memory.recall(&hub(&bob, i)).is_some());
            memory.remember(hub(&bob, i), &info);
            assert!(memory.recall(&hub(&bob, i)).is_some());
        }
        // Once expired, entries make room.
        let brief = LinkMemory::new(Duration::from_millis(1), 2);
        brief.remember(hub(&alice, 1), &info);
        brief.remember(hub(&alice, 2), &info);
        std::thread::sleep(Duration::from_millis(5));
        brief.remember(hub(&bob, 3), &info);
        assert!(brief.links.contains_key(&hub(&bob, 3)));
        assert_eq!(brief.links.len(), 1);
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
