//! A hub's link, as its connections measure it: Linux `TCP_INFO` on the hub's socket, and a
//! memory of what a hub's earlier connections measured, for its next ones.
//!
//! [`crate::rendition::choose`] weighs what this module knows; only this module reads sockets
//! and learns.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use pingora::proxy::Session;

use crate::identity::OwnerId;
use crate::rendition::choose::Reason;

/// How long a hub's measured link is remembered for its next connection: longer than the
/// slowest polling hubs' interval (60 s), shorter than a home link's changes.
const MEMORY_TTL: Duration = Duration::from_secs(600);
/// At most this many hubs' links remembered: about 10 MiB.
const MEMORY_MAX: usize = 65_536;
/// How long a connection's first frame may take to be acknowledged before what has been
/// measured so far is kept.
const LEARN_WAIT: Duration = Duration::from_secs(10);

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
    ///
    /// The RTT is the connection's minimum, the path's own: the smoothed RTT also holds the
    /// time the proxy's last frame spent queued in front of the hub's slow link (a modem's
    /// buffer), which the size over the rate already counts. Behind a 1 Mbit/s line with a
    /// 250 ms buffer the smoothed RTT read about 200 ms where the path took 1 ms, and a full
    /// frame that arrives in 0.77 s was expected in 0.99 s (`scripts/bench links`).
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
            rtt: Duration::from_micros(
                match info.min_rtt_us {
                    0 => info.rtt_us,
                    min => min.min(info.rtt_us),
                }
                .into(),
            ),
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
/// can push out another's. One owner's hubs take at most `max / 256` places (at least 16), so
/// no owner can fill it either, whatever addresses and `User-Agent`s its token is sent with.
pub struct LinkMemory {
    links: DashMap<HubKey, (Link, Instant)>,
    /// Places taken, per owner.
    owners: DashMap<OwnerId, usize>,
    ttl: Duration,
    max: usize,
    per_owner: usize,
    last_sweep: std::sync::Mutex<Option<Instant>>,
}

impl LinkMemory {
    pub fn new(ttl: Duration, max: usize) -> LinkMemory {
        LinkMemory {
            links: DashMap::new(),
            owners: DashMap::new(),
            ttl,
            max,
            per_owner: (max / 256).max(16),
            last_sweep: std::sync::Mutex::new(None),
        }
    }

    /// Keeps `info`'s link for the hub's next connections, once it has settled.
    pub fn remember(&self, hub: HubKey, info: &TcpInfo) {
        let Some(link) = Link::measured(info).filter(|_| info.bytes_acked >= SETTLED_BYTES) else {
            return;
        };
        if !self.links.contains_key(&hub) {
            let full = || {
                self.links.len() >= self.max
                    || self
                        .owners
                        .get(&hub.owner)
                        .is_some_and(|n| *n >= self.per_owner)
            };
            if full() {
                self.sweep();
                if full() {
                    return;
                }
            }
        }
        let owner = hub.owner.clone();
        if self.links.insert(hub, (link, Instant::now())).is_none() {
            *self.owners.entry(owner).or_insert(0) += 1;
        }
    }

    /// Drops the expired entries, at most once a second.
    fn sweep(&self) {
        let mut last = self.last_sweep.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
            return;
        }
        *last = Some(Instant::now());
        self.links.retain(|hub, (_, at)| {
            let keep = at.elapsed() < self.ttl;
            if !keep {
                self.owners.remove_if_mut(&hub.owner, |_, n| {
                    *n = n.saturating_sub(1);
                    *n == 0
                });
            }
            keep
        });
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
    /// `tcpi_rtt`, µs: smoothed, queueing included.
    pub rtt_us: u32,
    /// `tcpi_min_rtt`, µs: the lowest seen on the connection (0: none yet).
    pub min_rtt_us: u32,
    /// `tcpi_bytes_acked`.
    pub bytes_acked: u64,
    /// `tcpi_busy_time`, µs.
    pub busy_time_us: u64,
    /// Bytes sent and not yet acknowledged, or not yet sent (`tcpi_unacked`,
    /// `tcpi_notsent_bytes`).
    pub outstanding: bool,
}

impl LinkMemory {
    /// The memory a proxy keeps: ten minutes, 65,536 hubs.
    pub fn for_hubs() -> LinkMemory {
        LinkMemory::new(MEMORY_TTL, MEMORY_MAX)
    }

    /// What is known of the link of `session`'s hub: the connection's own measurement, else
    /// what the same hub's last connection measured.
    pub fn known(&self, session: &Session, owner: &OwnerId) -> Option<(Link, Reason)> {
        if let Some(link) = tcp_info(session).as_ref().and_then(Link::measured) {
            return Some((link, Reason::Measured));
        }
        let link = self.recall(&hub_key(session, owner)?)?;
        Some((link, Reason::Remembered))
    }

    /// Waits (at most ten seconds, and not while the proxy shuts down) until the frame just
    /// written has been acknowledged, then keeps the link it measured for the hub's next
    /// connection. The frame may still sit in the kernel's send buffer; a hub reads it before
    /// it asks anything more of this connection, so the wait delays its next request by at
    /// most one check (≤ 50 ms), once per connection.
    pub async fn learn(&self, session: &Session, owner: &OwnerId) {
        let Some(hub) = hub_key(session, owner) else {
            return;
        };
        let started = Instant::now();
        let mut pause = Duration::from_millis(5);
        while let Some(info) = tcp_info(session) {
            if !info.outstanding
                || started.elapsed() >= LEARN_WAIT
                || session.is_process_shutting_down()
            {
                self.remember(hub, &info);
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

/// The hub connection's `TCP_INFO`, when the socket has one.
fn tcp_info(session: &Session) -> Option<TcpInfo> {
    let info = session.digest()?.socket_digest.as_ref()?.tcp_info()?;
    Some(TcpInfo {
        delivery_rate: info.tcpi_delivery_rate,
        rtt_us: info.tcpi_rtt,
        min_rtt_us: info.tcpi_min_rtt,
        bytes_acked: info.tcpi_bytes_acked,
        busy_time_us: info.tcpi_busy_time,
        outstanding: info.tcpi_unacked > 0 || info.tcpi_notsent_bytes > 0,
    })
}

/// What the kernel still holds for a hub connection, and what the hub has taken so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Bytes written and not yet sent (`tcpi_notsent_bytes`).
    pub unsent: u32,
    /// Bytes sent and not yet acknowledged, or not yet sent: the hub has something to take.
    pub outstanding: bool,
    /// Bytes the hub has acknowledged since the connection began (`tcpi_bytes_acked`).
    pub acked: u64,
    /// The connection is no longer established (the hub closed its side or reset it): the hub
    /// has gone, whatever is still unsent.
    pub closed: bool,
}

/// Linux's `TCP_ESTABLISHED` state; a hub's FIN or RST moves the socket out of it.
const TCP_ESTABLISHED: u8 = 1;

/// The hub connection's backlog, when the socket has `TCP_INFO`.
pub fn backlog(session: &Session) -> Option<Backlog> {
    let info = session.digest()?.socket_digest.as_ref()?.tcp_info()?;
    Some(Backlog {
        unsent: info.tcpi_notsent_bytes,
        outstanding: info.tcpi_unacked > 0 || info.tcpi_notsent_bytes > 0,
        acked: info.tcpi_bytes_acked,
        closed: info.tcpi_state != TCP_ESTABLISHED,
    })
}

/// Which hub the connection comes from, as far as can be told; `None` without an IP peer.
fn hub_key(session: &Session, owner: &OwnerId) -> Option<HubKey> {
    let addr: IpAddr = session.client_addr()?.as_inet()?.ip();
    let agent = session.req_header().headers.get(http::header::USER_AGENT);
    Some(HubKey::new(owner, addr, agent.map(|v| v.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            min_rtt_us: 0,
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
            min_rtt_us: 0,
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
        // One owner's hubs take at most their share, whatever addresses they come from.
        let shared = LinkMemory::new(Duration::from_secs(600), 256 * 20);
        for i in 0..=255u8 {
            shared.remember(hub(&alice, i), &info);
        }
        assert_eq!(shared.links.len(), 20, "alice's share of 5,120 places");
        shared.remember(hub(&bob, 1), &info);
        assert!(shared.recall(&hub(&bob, 1)).is_some());
        // Once expired, entries make room.
        let brief = LinkMemory::new(Duration::from_millis(1), 2);
        brief.remember(hub(&alice, 1), &info);
        brief.remember(hub(&alice, 2), &info);
        std::thread::sleep(Duration::from_millis(5));
        brief.remember(hub(&bob, 3), &info);
        assert!(brief.links.contains_key(&hub(&bob, 3)));
        assert_eq!(brief.links.len(), 1);
    }
}
