//! Coalescing: concurrent misses for one key make one origin request (and concurrent requests
//! for one rendition of one frame, one rendering).
//!
//! The first request for a key becomes the leader of a flight; the fetch itself runs in its own
//! task, so a leader whose hub disconnects or times out strands nobody. Later requests for the
//! same key join as waiters if, and only if, their full identity equals the flight's: requests of
//! different owners never share a fetch, even when their digests collide.

use std::sync::Arc;

use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;
use tokio::sync::watch;

use super::key::{Identity, KeyDigest};
use super::Fetched;
use crate::origin::OriginError;

/// What an origin fetch ends with.
pub type FlightResult = Result<Fetched, OriginError>;

/// One fetch (or rendering) in progress, ending with an `R`.
pub struct Flight<R = FlightResult> {
    identity: Identity,
    done: watch::Sender<Option<R>>,
}

impl<R> Flight<R> {
    pub fn subscribe(&self) -> watch::Receiver<Option<R>> {
        self.done.subscribe()
    }
}

/// How a request takes part in a fetch.
pub enum Join<R = FlightResult> {
    /// Start the fetch; others may wait on it.
    Leader(Arc<Flight<R>>),
    /// Wait for the fetch already under way.
    Waiter(watch::Receiver<Option<R>>),
    /// A flight with this digest is under way for another identity: fetch alone.
    Collision,
}

/// The flights under way, by key.
pub struct Flights<R = FlightResult> {
    map: DashMap<KeyDigest, Arc<Flight<R>>>,
}

impl<R> Default for Flights<R> {
    fn default() -> Self {
        Flights {
            map: DashMap::new(),
        }
    }
}

impl<R> Flights<R> {
    pub fn join(&self, key: KeyDigest, identity: &Identity) -> Join<R> {
        match self.map.entry(key) {
            MapEntry::Occupied(flight) if flight.get().identity == *identity => {
                Join::Waiter(flight.get().subscribe())
            }
            MapEntry::Occupied(_) => Join::Collision,
            MapEntry::Vacant(slot) => {
                let (done, _) = watch::channel(None);
                let flight = Arc::new(Flight {
                    identity: identity.clone(),
                    done,
                });
                slot.insert(flight.clone());
                Join::Leader(flight)
            }
        }
    }

    /// Publishes the result to every waiter and retires the flight.
    pub fn finish(&self, key: &KeyDigest, flight: &Arc<Flight<R>>, result: R) {
        self.map.remove_if(key, |_, f| Arc::ptr_eq(f, flight));
        flight.done.send_replace(Some(result));
    }

    /// Removes the flights whose identity matches from the map: later requests start their
    /// own. Requests already waiting on them still get their result.
    pub fn retire(&self, matches: impl Fn(&Identity) -> bool) {
        self.map.retain(|_, flight| !matches(&flight.identity));
    }

    /// Flights under way.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
