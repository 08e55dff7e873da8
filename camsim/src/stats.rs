//! What camsim has done: counters behind `GET /stats` and `Handle::stats`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::fault::Fault;

/// A snapshot of camsim's counters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Stats {
    /// Every request read, control requests and malformed ones included.
    pub requests_total: u64,
    /// Frame requests (latest and by-hash) per camera that passed the owner and camera checks.
    pub frame_requests: BTreeMap<String, u64>,
    /// Faults that changed an answer, by name (see [`Fault::as_str`]).
    pub faults_injected: BTreeMap<String, u64>,
    /// JPEG frames rendered (each (camera, seq) renders once while retained).
    pub frames_rendered: u64,
    /// Whole, undamaged frames sent (a frame sent again counts again; see below).
    pub frames_served: u64,
    /// Whole, undamaged frames sent to an owner that had already been sent the same frame of
    /// that camera (among the last [`SERVED_REMEMBERED`]): fetches a cache in front should
    /// have spared.
    pub frames_served_again: u64,
    /// Connections accepted so far.
    pub connections_accepted: u64,
    /// Connections open now.
    pub connections_open: u64,
}

impl Stats {
    /// How often `fault` was injected.
    pub fn fault(&self, fault: Fault) -> u64 {
        self.faults_injected
            .get(fault.as_str())
            .copied()
            .unwrap_or(0)
    }

    /// Frame requests for `camera`.
    pub fn frame_requests_for(&self, camera: &str) -> u64 {
        self.frame_requests.get(camera).copied().unwrap_or(0)
    }
}

/// How many recent frames per (owner, camera) are remembered to spot one served twice: as many
/// as camsim retains by default.
pub const SERVED_REMEMBERED: usize = 64;

/// The live counters. Every fault name and camera is present from the start, at 0.
#[derive(Debug)]
pub(crate) struct Recorder {
    stats: Mutex<Stats>,
    /// The seqs last served whole per (owner, camera), newest at the back.
    served: Mutex<HashMap<(String, String), VecDeque<u64>>>,
}

impl Recorder {
    pub fn new(cameras: &[String]) -> Self {
        let stats = Stats {
            frame_requests: cameras.iter().map(|c| (c.clone(), 0)).collect(),
            faults_injected: Fault::ALL
                .iter()
                .map(|f| (f.as_str().to_owned(), 0))
                .collect(),
            ..Stats::default()
        };
        Recorder {
            stats: Mutex::new(stats),
            served: Mutex::new(HashMap::new()),
        }
    }

    fn update(&self, change: impl FnOnce(&mut Stats)) {
        change(&mut self.stats.lock().unwrap_or_else(PoisonError::into_inner));
    }

    pub fn request(&self) {
        self.update(|s| s.requests_total += 1);
    }

    pub fn frame_request(&self, camera: &str) {
        self.update(|s| *s.frame_requests.entry(camera.to_owned()).or_default() += 1);
    }

    pub fn fault(&self, fault: Fault) {
        self.update(|s| {
            *s.faults_injected
                .entry(fault.as_str().to_owned())
                .or_default() += 1
        });
    }

    /// A whole, undamaged frame `seq` of `camera` was sent to `owner`.
    pub fn frame_served(&self, owner: &str, camera: &str, seq: u64) {
        let again = {
            let mut served = self.served.lock().unwrap_or_else(PoisonError::into_inner);
            let seqs = served
                .entry((owner.to_owned(), camera.to_owned()))
                .or_default();
            if seqs.contains(&seq) {
                true
            } else {
                if seqs.len() == SERVED_REMEMBERED {
                    seqs.pop_front();
                }
                seqs.push_back(seq);
                false
            }
        };
        self.update(|s| {
            s.frames_served += 1;
            s.frames_served_again += u64::from(again);
        });
    }

    pub fn rendered(&self) {
        self.update(|s| s.frames_rendered += 1);
    }

    pub fn connection_opened(&self) {
        self.update(|s| {
            s.connections_accepted += 1;
            s.connections_open += 1;
        });
    }

    pub fn connection_closed(&self) {
        self.update(|s| s.connections_open = s.connections_open.saturating_sub(1));
    }

    pub fn snapshot(&self) -> Stats {
        self.stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_served_twice_to_one_owner_is_counted_once_per_repeat() {
        let recorder = Recorder::new(&["cam-1".to_owned()]);
        recorder.frame_served("owner-1", "cam-1", 1);
        recorder.frame_served("owner-1", "cam-1", 2);
        // Another owner sharing the camera has its own cache entries: not a repeat.
        recorder.frame_served("owner-2", "cam-1", 2);
        assert_eq!(recorder.snapshot().frames_served_again, 0);
        recorder.frame_served("owner-1", "cam-1", 2);
        recorder.frame_served("owner-1", "cam-1", 1);
        assert_eq!(recorder.snapshot().frames_served_again, 2);
        // Only the last SERVED_REMEMBERED frames are remembered.
        for seq in 3..3 + SERVED_REMEMBERED as u64 {
            recorder.frame_served("owner-1", "cam-1", seq);
        }
        recorder.frame_served("owner-1", "cam-1", 1);
        let stats = recorder.snapshot();
        assert_eq!(stats.frames_served_again, 2);
        assert_eq!(stats.frames_served, 6 + SERVED_REMEMBERED as u64);
    }

    #[test]
    fn counters_start_at_zero_for_every_name_and_count_up() {
        let recorder = Recorder::new(&["cam-1".to_owned()]);
        let start = recorder.snapshot();
        assert_eq!(start.faults_injected.len(), Fault::ALL.len());
        assert_eq!(start.frame_requests_for("cam-1"), 0);

        recorder.request();
        recorder.frame_request("cam-1");
        recorder.fault(Fault::Leak);
        recorder.fault(Fault::Leak);
        recorder.connection_opened();
        recorder.connection_closed();
        let stats = recorder.snapshot();
        assert_eq!(stats.requests_total, 1);
        assert_eq!(stats.frame_requests_for("cam-1"), 1);
        assert_eq!(stats.fault(Fault::Leak), 2);
        assert_eq!((stats.connections_accepted, stats.connections_open), (1, 0));
    }
}
