//! What one owner may cause or hold of the edge, so that no token can spend the camera backends'
//! capacity or the proxy's memory for everyone else (`[limits]`).
//!
//! - [`OriginBudget`]: origin requests per owner per second, a token bucket with a burst of
//!   twice the rate. Beyond it a request that would have to ask the origin is answered 429.
//! - [`StreamSlots`]: MJPEG streams open at once per owner.
//! - [`Admission`]: hub connections open at once, in all and per client address.
//! - [`Limit`]: the `limit` label of `framecache_limited_total`, for these and the limits
//!   enforced elsewhere (request heads, stream lifetimes).
//!
//! Owners come only from verified tokens, so the maps here grow with real owners, not with
//! what a client sends; they are swept all the same.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::identity::OwnerId;

/// A limit that refused something: the `limit` label of `framecache_limited_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// An owner asked for more origin requests than `limits.owner_origin_rps` allows.
    OwnerOriginRps,
    /// An owner opened more streams than `limits.streams_per_owner`.
    StreamsPerOwner,
    /// A request head larger than `limits.header_bytes`.
    HeaderBytes,
    /// A request head that took longer than `limits.header_timeout_ms`.
    HeaderTimeout,
    /// A stream ended after `limits.stream_max_secs`.
    StreamMax,
    /// A stream ended because its token expired.
    TokenExpired,
}

impl Limit {
    pub const ALL: [Limit; 6] = [
        Limit::OwnerOriginRps,
        Limit::StreamsPerOwner,
        Limit::HeaderBytes,
        Limit::HeaderTimeout,
        Limit::StreamMax,
        Limit::TokenExpired,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Limit::OwnerOriginRps => "owner_origin_rps",
            Limit::StreamsPerOwner => "streams_per_owner",
            Limit::HeaderBytes => "header_bytes",
            Limit::HeaderTimeout => "header_timeout",
            Limit::StreamMax => "stream_max",
            Limit::TokenExpired => "token_expired",
        }
    }
}

/// Owners' buckets kept at most before full ones are swept.
const BUCKETS_SWEPT_PAST: usize = 65_536;

/// Per-owner token buckets for origin requests.
pub struct OriginBudget {
    /// Tokens per second.
    rate: f64,
    burst: f64,
    buckets: DashMap<OwnerId, Bucket>,
    last_sweep: Mutex<Option<Instant>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl OriginBudget {
    /// `rate` origin requests per second per owner, bursts of twice that.
    pub fn new(rate: u32) -> OriginBudget {
        let rate = f64::from(rate.max(1));
        OriginBudget {
            rate,
            burst: 2.0 * rate,
            buckets: DashMap::new(),
            last_sweep: Mutex::new(None),
        }
    }

    /// Takes one origin request from `owner`'s budget; when it is spent, how long until the
    /// next one may be made.
    pub fn take(&self, owner: &OwnerId) -> Result<(), Duration> {
        self.take_at(owner, Instant::now())
    }

    fn take_at(&self, owner: &OwnerId, now: Instant) -> Result<(), Duration> {
        if self.buckets.len() >= BUCKETS_SWEPT_PAST {
            self.sweep(now);
        }
        let mut bucket = self.buckets.entry(owner.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
    }

    /// Forgets owners whose bucket has refilled (they are as if new), at most once a second.
    fn sweep(&self, now: Instant) {
        let mut last = self.last_sweep.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(1)) {
            return;
        }
        *last = Some(now);
        let full_after = Duration::from_secs_f64(self.burst / self.rate);
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.at) < full_after);
    }
}

/// MJPEG streams open per owner.
pub struct StreamSlots {
    max: usize,
    open: DashMap<OwnerId, usize>,
}

/// A stream's place in its owner's count, given back when dropped.
pub struct StreamSlot<'a> {
    slots: &'a StreamSlots,
    owner: OwnerId,
}

impl StreamSlots {
    pub fn new(max: usize) -> StreamSlots {
        StreamSlots {
            max,
            open: DashMap::new(),
        }
    }

    /// A place for one more stream of `owner`, if it has fewer than the maximum open.
    pub fn acquire(&self, owner: &OwnerId) -> Option<StreamSlot<'_>> {
        let mut open = self.open.entry(owner.clone()).or_insert(0);
        if *open >= self.max {
            return None;
        }
        *open += 1;
        Some(StreamSlot {
            slots: self,
            owner: owner.clone(),
        })
    }

    /// Streams open for `owner`.
    pub fn open(&self, owner: &OwnerId) -> usize {
        self.open.get(owner).map_or(0, |n| *n)
    }
}

impl Drop for StreamSlot<'_> {
    fn drop(&mut self) {
        self.slots.open.remove_if_mut(&self.owner, |_, open| {
            *open = open.saturating_sub(1);
            *open == 0
        });
    }
}

/// Why a hub connection was refused at accept: the `reason` label of
/// `framecache_connections_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `limits.max_connections` are open.
    MaxConnections,
    /// `limits.max_connections_per_ip` are open from the client's address.
    PerIp,
}

impl Refused {
    pub const ALL: [Refused; 2] = [Refused::MaxConnections, Refused::PerIp];

    pub fn as_str(&self) -> &'static str {
        match self {
            Refused::MaxConnections => "max_connections",
            Refused::PerIp => "per_ip",
        }
    }
}

/// Hub connections open at once: at most `max` in all, `per_ip` from one client address.
pub struct Admission {
    max: usize,
    per_ip: usize,
    open: AtomicUsize,
    by_ip: DashMap<IpAddr, usize>,
}

/// A connection's place, given back when it closes.
pub struct Admitted {
    admission: Arc<Admission>,
    ip: Option<IpAddr>,
}

impl Admission {
    pub fn new(max: usize, per_ip: usize) -> Admission {
        Admission {
            max,
            per_ip,
            open: AtomicUsize::new(0),
            by_ip: DashMap::new(),
        }
    }

    /// Admits a connection from `ip` (unknown for a peer without an IP address), or says why
    /// not. An IPv6 client is counted by its /64, the block one subscriber holds.
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Admitted, Refused> {
        let ip = ip.map(client_block);
        if self.open.fetch_add(1, Ordering::SeqCst) >= self.max {
            self.open.fetch_sub(1, Ordering::SeqCst);
            return Err(Refused::MaxConnections);
        }
        // Built now, so that an early return below gives the place back.
        let mut admitted = Admitted {
            admission: Arc::clone(self),
            ip: None,
        };
        if let Some(ip) = ip {
            let mut open = self.by_ip.entry(ip).or_insert(0);
            if *open >= self.per_ip {
                return Err(Refused::PerIp);
            }
            *open += 1;
            admitted.ip = Some(ip);
        }
        Ok(admitted)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// The address a client is counted by: an IPv4 address as it is (an IPv4-mapped IPv6 one as
/// IPv4), an IPv6 address by its /64.
fn client_block(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(segments.into())
        }
        v4 => v4,
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let admission = &self.admission;
        if let Some(ip) = self.ip {
            admission.by_ip.remove_if_mut(&ip, |_, open| {
                *open = open.saturating_sub(1);
                *open == 0
            });
        }
        admission.open.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(name: &str) -> OwnerId {
        OwnerId::parse(name).unwrap()
    }

    #[test]
    fn a_budget_allows_its_burst_then_its_rate() {
        let budget = OriginBudget::new(20);
        let (alice, bob) = (owner("alice"), owner("bob"));
        let t0 = Instant::now();
        for _ in 0..40 {
            assert_eq!(budget.take_at(&alice, t0), Ok(()));
        }
        let wait = budget.take_at(&alice, t0).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(50),
            "{wait:?}"
        );
        // Another owner is not touched by alice's spending.
        assert_eq!(budget.take_at(&bob, t0), Ok(()));
        // A second later alice has 20 more, not 40.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..20 {
            assert_eq!(budget.take_at(&alice, t1), Ok(()));
        }
        assert!(budget.take_at(&alice, t1).is_err());
    }

    #[test]
    fn budgets_are_swept_once_full() {
        let budget = OriginBudget::new(1);
        let t0 = Instant::now();
        budget.take_at(&owner("alice"), t0).unwrap();
        budget.sweep(t0 + Duration::from_secs(1));
        assert_eq!(budget.buckets.len(), 1, "not yet refilled");
        *budget.last_sweep.lock().unwrap() = None;
        budget.sweep(t0 + Duration::from_secs(3));
        assert_eq!(budget.buckets.len(), 0);
    }

    #[test]
    fn stream_slots_are_per_owner_and_given_back() {
        let slots = StreamSlots::new(2);
        let (alice, bob) = (owner("alice"), owner("bob"));
        let a1 = slots.acquire(&alice).unwrap();
        let _a2 = slots.acquire(&alice).unwrap();
        assert!(slots.acquire(&alice).is_none());
        assert!(slots.acquire(&bob).is_some());
        drop(a1);
        assert_eq!(slots.open(&alice), 1);
        let _a3 = slots.acquire(&alice).unwrap();
        assert!(slots.acquire(&alice).is_none());
    }

    #[test]
    fn admission_bounds_all_and_each_address() {
        let admission = Arc::new(Admission::new(3, 2));
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let a1 = admission.admit(Some(a)).unwrap();
        let _a2 = admission.admit(Some(a)).unwrap();
        assert_eq!(admission.admit(Some(a)).err(), Some(Refused::PerIp));
        let _b1 = admission.admit(Some(b)).unwrap();
        assert_eq!(
            admission.admit(Some(b)).err(),
            Some(Refused::MaxConnections)
        );
        assert_eq!(admission.open(), 3);
        drop(a1);
        assert_eq!(admission.open(), 2);
        let _a3 = admission.admit(Some(a)).unwrap();
        assert_eq!(admission.admit(None).err(), Some(Refused::MaxConnections));
        // One IPv6 subscriber's /64 is one client, however many addresses it uses.
        let wide = Arc::new(Admission::new(10, 1));
        let _one = wide.admit(Some("2001:db8::1".parse().unwrap())).unwrap();
        let other = wide.admit(Some("2001:db8::2:3".parse().unwrap()));
        assert_eq!(other.err(), Some(Refused::PerIp));
        assert!(wide.admit(Some("2001:db8:0:1::1".parse().unwrap())).is_ok());
    }

    #[test]
    fn labels() {
        let labels: Vec<_> = Limit::ALL.iter().map(Limit::as_str).collect();
        assert_eq!(labels.len(), 6);
        assert!(labels.contains(&"owner_origin_rps") && labels.contains(&"token_expired"));
    }
}
