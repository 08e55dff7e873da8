//! The members on a Ketama ring, placed by name.
//!
//! pingora-load-balancing's `KetamaHashing` places a backend by its address, so a member that
//! comes back with a new address (a rescheduled pod) would take other members' cameras and give
//! up its own. [`NameRing`] is the same pingora-ketama continuum, built from the members'
//! names: each name stands on the ring as an address made from the name alone. Every member
//! with the same member list computes the same home for every camera, whatever the addresses.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use pingora::lb::selection::{BackendIter, BackendSelection};
use pingora::lb::Backend;
use pingora_ketama::{Bucket, Continuum};

/// A member's name, carried in its [`Backend`]'s extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(pub Arc<str>);

/// The backend of the member `name` at `addr`.
pub fn member(name: &str, addr: SocketAddr) -> Backend {
    let mut backend = Backend {
        addr: pingora::protocols::l4::socket::SocketAddr::Inet(addr),
        weight: 1,
        ext: Default::default(),
    };
    backend.ext.insert(Name(name.into()));
    backend
}

/// The name of a member's backend (its address when it has none, which [`member`] never makes).
pub fn name_of(backend: &Backend) -> Arc<str> {
    match backend.ext.get::<Name>() {
        Some(name) => name.0.clone(),
        None => backend.addr.to_string().into(),
    }
}

/// The member's address.
pub fn addr_of(backend: &Backend) -> Option<SocketAddr> {
    backend.addr.as_inet().copied()
}

/// Where a name stands on the ring: pingora-ketama hashes a bucket's address, so each name is
/// given an address of its own, the first 16 bytes of its blake3 hash as an IPv6 address.
fn point(name: &str) -> SocketAddr {
    let hash = blake3::hash(name.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.as_bytes()[..16]);
    SocketAddr::new(IpAddr::V6(Ipv6Addr::from(bytes)), 0)
}

/// Ketama over the members' names.
pub struct NameRing {
    ring: Continuum,
    /// The member each name's point stands for, in the points' order: the continuum is built
    /// from them in that order, the same on every member (should two points collide, each
    /// member keeps the same one).
    members: BTreeMap<SocketAddr, Backend>,
}

impl BackendSelection for NameRing {
    type Iter = Members;
    type Config = ();

    fn build(backends: &BTreeSet<Backend>) -> NameRing {
        let members: BTreeMap<SocketAddr, Backend> = backends
            .iter()
            .map(|b| (point(&name_of(b)), b.clone()))
            .collect();
        let buckets: Vec<Bucket> = members.keys().map(|p| Bucket::new(*p, 1)).collect();
        NameRing {
            ring: Continuum::new(&buckets),
            members,
        }
    }

    fn iter(self: &Arc<Self>, key: &[u8]) -> Members {
        Members {
            idx: self.ring.node_idx(key),
            ring: Arc::clone(self),
        }
    }
}

/// The members in ring order from a key's point: the home first, then who stands in for it.
pub struct Members {
    idx: usize,
    ring: Arc<NameRing>,
}

impl BackendIter for Members {
    fn next(&mut self) -> Option<&Backend> {
        let point = self.ring.ring.get_addr(&mut self.idx)?;
        self.ring.members.get(point)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn ring(members: &[(&str, &str)]) -> Arc<NameRing> {
        let set = members
            .iter()
            .map(|(name, addr)| member(name, addr.parse().unwrap()))
            .collect();
        Arc::new(NameRing::build(&set))
    }

    fn home(ring: &Arc<NameRing>, camera: &str) -> Arc<str> {
        name_of(ring.iter(camera.as_bytes()).next().expect("a member"))
    }

    const CAMERAS: usize = 3000;

    fn cameras() -> impl Iterator<Item = String> {
        (0..CAMERAS).map(|i| format!("cam-{i}"))
    }

    #[test]
    fn homes_follow_names_not_addresses() {
        let a = ring(&[
            ("edge-a", "10.0.0.1:7443"),
            ("edge-b", "10.0.0.2:7443"),
            ("edge-c", "10.0.0.3:7443"),
        ]);
        // edge-b restarted with a new address; the list is given in another order.
        let b = ring(&[
            ("edge-c", "10.0.0.3:7443"),
            ("edge-b", "10.0.9.9:7000"),
            ("edge-a", "10.0.0.1:7443"),
        ]);
        for camera in cameras() {
            assert_eq!(home(&a, &camera), home(&b, &camera), "{camera}");
        }
    }

    #[test]
    fn every_member_is_home_to_a_fair_share() {
        let r = ring(&[
            ("edge-a", "10.0.0.1:7443"),
            ("edge-b", "10.0.0.2:7443"),
            ("edge-c", "10.0.0.3:7443"),
        ]);
        let mut counts: HashMap<Arc<str>, usize> = HashMap::new();
        for camera in cameras() {
            *counts.entry(home(&r, &camera)).or_default() += 1;
        }
        assert_eq!(counts.len(), 3);
        for (name, n) in counts {
            // 160 points per member: each share is within a few percent of a third.
            assert!((800..=1200).contains(&n), "{name}: {n} of {CAMERAS}");
        }
    }

    #[test]
    fn a_member_leaving_moves_only_its_own_cameras() {
        let three = ring(&[
            ("edge-a", "10.0.0.1:7443"),
            ("edge-b", "10.0.0.2:7443"),
            ("edge-c", "10.0.0.3:7443"),
        ]);
        let two = ring(&[("edge-a", "10.0.0.1:7443"), ("edge-c", "10.0.0.3:7443")]);
        let mut moved = 0;
        for camera in cameras() {
            let before = home(&three, &camera);
            let after = home(&two, &camera);
            if &*before != "edge-b" {
                assert_eq!(before, after, "{camera} moved although its home stayed");
            } else {
                moved += 1;
                // Its stand-in on the full ring is its home on the smaller one.
                let mut order = three.iter(camera.as_bytes());
                let stand_in = loop {
                    let name = name_of(order.next().unwrap());
                    if &*name != "edge-b" {
                        break name;
                    }
                };
                assert_eq!(stand_in, after);
            }
        }
        assert!(moved > 0);
    }
}
