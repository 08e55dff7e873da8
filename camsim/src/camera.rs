//! The cameras: capture clock, retained frames, and render-once per (camera, seq).
//!
//! A camera's seq is `1 + floor(elapsed_secs * fps) + advances`. A seq's capture time is the
//! moment it became current (its clock tick, or the advance that made it), so it is stable for
//! as long as the frame is retained. Frames are rendered lazily, on the first request for that
//! seq, on the blocking pool; concurrent requests wait for the same render.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::OnceCell;

use crate::frame::{Capture, Frame, RenderError};
use crate::stats::Recorder;

/// Wall-clock anchored, monotonic capture clock.
#[derive(Debug)]
struct Clock {
    start: Instant,
    start_ms: u64,
    fps: f64,
}

impl Clock {
    fn new(fps: f64) -> Self {
        let start_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            start: Instant::now(),
            start_ms,
            fps,
        }
    }

    /// Whole frame periods elapsed at `now`.
    fn ticks(&self, now: Instant) -> u64 {
        if self.fps > 0.0 {
            // `as` saturates, so an absurd fps cannot wrap.
            (now.duration_since(self.start).as_secs_f64() * self.fps) as u64
        } else {
            0
        }
    }

    /// When tick `k` began, ms since the epoch.
    fn tick_ms(&self, k: u64) -> u64 {
        if self.fps > 0.0 {
            self.start_ms + (k as f64 * 1000.0 / self.fps) as u64
        } else {
            self.start_ms
        }
    }

    fn epoch_ms(&self, at: Instant) -> u64 {
        self.start_ms + at.duration_since(self.start).as_millis() as u64
    }
}

type Slot = Arc<OnceCell<Arc<Frame>>>;

#[derive(Debug, Default)]
struct State {
    advances: u64,
    last_advance_ms: u64,
    /// The newest `retain` seqs asked for, rendered or rendering.
    slots: BTreeMap<u64, Slot>,
}

/// Every camera of the topology.
pub(crate) struct Cameras {
    clock: Clock,
    retain: usize,
    capture: Capture,
    by_id: HashMap<String, Mutex<State>>,
}

impl Cameras {
    pub fn new(ids: &[String], fps: f64, retain: usize, capture: Capture) -> Self {
        Cameras {
            clock: Clock::new(fps),
            retain: retain.max(1),
            capture,
            by_id: ids
                .iter()
                .map(|id| (id.clone(), Mutex::default()))
                .collect(),
        }
    }

    fn state(&self, camera: &str) -> Option<MutexGuard<'_, State>> {
        self.by_id
            .get(camera)
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The current (seq, captured_at_ms) of a camera.
    fn current(&self, state: &State) -> (u64, u64) {
        let k = self.clock.ticks(Instant::now());
        let seq = 1 + k + state.advances;
        (seq, self.clock.tick_ms(k).max(state.last_advance_ms))
    }

    /// Moves `camera` to its next frame now; the new seq, `None` for an unknown camera.
    pub fn advance(&self, camera: &str) -> Option<u64> {
        let mut state = self.state(camera)?;
        state.advances += 1;
        state.last_advance_ms = self.clock.epoch_ms(Instant::now());
        Some(self.current(&state).0)
    }

    /// The camera's current frame, rendered if nobody asked for it yet.
    pub async fn latest(
        &self,
        camera: &str,
        recorder: &Recorder,
    ) -> Result<Arc<Frame>, RenderError> {
        let (seq, captured_at_ms, slot) = {
            let mut state = self.state(camera).ok_or(RenderError::UnknownCamera)?;
            let (seq, captured_at_ms) = self.current(&state);
            let slot = state.slots.entry(seq).or_default().clone();
            while state.slots.len() > self.retain {
                state.slots.pop_first();
            }
            (seq, captured_at_ms, slot)
        };
        let frame = slot
            .get_or_try_init(|| async {
                let capture = self.capture;
                let id = camera.to_owned();
                let frame =
                    tokio::task::spawn_blocking(move || capture.frame(&id, seq, captured_at_ms))
                        .await??;
                recorder.rendered();
                Ok::<_, RenderError>(Arc::new(frame))
            })
            .await?;
        Ok(Arc::clone(frame))
    }

    /// A retained frame of `camera` whose body hashes to `hash`.
    pub fn by_hash(&self, camera: &str, hash: &str) -> Option<Arc<Frame>> {
        let state = self.state(camera)?;
        state
            .slots
            .values()
            .filter_map(|slot| slot.get())
            .find(|frame| frame.hash == hash)
            .cloned()
    }

    /// A valid frame of `camera` other than the one hashing to `hash`: the latest, or else the
    /// newest other retained frame.
    pub async fn other_than(
        &self,
        camera: &str,
        hash: &str,
        recorder: &Recorder,
    ) -> Result<Option<Arc<Frame>>, RenderError> {
        let latest = self.latest(camera, recorder).await?;
        if latest.hash != hash {
            return Ok(Some(latest));
        }
        let state = self.state(camera).ok_or(RenderError::UnknownCamera)?;
        Ok(state
            .slots
            .values()
            .rev()
            .filter_map(|slot| slot.get())
            .find(|frame| frame.hash != hash)
            .cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cameras(retain: usize) -> (Cameras, Recorder) {
        let ids = ["cam-1".to_owned(), "cam-2".to_owned()];
        let capture = Capture {
            key: [3; 32],
            width: 32,
            height: 24,
            quality: 80,
        };
        (
            Cameras::new(&ids, 0.0, retain, capture),
            Recorder::new(&ids),
        )
    }

    #[tokio::test]
    async fn a_frozen_camera_moves_only_with_advance() {
        let (cams, rec) = cameras(4);
        let first = cams.latest("cam-1", &rec).await.unwrap();
        assert_eq!(first.seq, 1);
        assert_eq!(cams.latest("cam-1", &rec).await.unwrap(), first);
        assert_eq!(cams.advance("cam-1"), Some(2));
        let second = cams.latest("cam-1", &rec).await.unwrap();
        assert_eq!(second.seq, 2);
        assert!(second.captured_at_ms >= first.captured_at_ms);
        assert_eq!(cams.advance("cam-9"), None);
        assert!(matches!(
            cams.latest("cam-9", &rec).await,
            Err(RenderError::UnknownCamera)
        ));
        assert_eq!(rec.snapshot().frames_rendered, 2);
    }

    #[tokio::test]
    async fn concurrent_requests_render_once() {
        let (cams, rec) = cameras(4);
        let (a, b, c) = tokio::join!(
            cams.latest("cam-2", &rec),
            cams.latest("cam-2", &rec),
            cams.latest("cam-2", &rec)
        );
        assert_eq!(a.unwrap(), b.unwrap());
        assert_eq!(c.unwrap().seq, 1);
        assert_eq!(rec.snapshot().frames_rendered, 1);
    }

    #[tokio::test]
    async fn only_the_newest_frames_are_found_by_hash() {
        let (cams, rec) = cameras(2);
        let one = cams.latest("cam-1", &rec).await.unwrap();
        cams.advance("cam-1");
        let two = cams.latest("cam-1", &rec).await.unwrap();
        assert_eq!(cams.by_hash("cam-1", &one.hash), Some(one.clone()));
        assert_eq!(cams.by_hash("cam-2", &one.hash), None);
        cams.advance("cam-1");
        cams.latest("cam-1", &rec).await.unwrap();
        assert_eq!(cams.by_hash("cam-1", &one.hash), None);
        assert_eq!(cams.by_hash("cam-1", &two.hash), Some(two));
    }

    #[tokio::test]
    async fn other_than_prefers_the_latest_then_older_frames() {
        let (cams, rec) = cameras(4);
        let one = cams.latest("cam-1", &rec).await.unwrap();
        assert_eq!(
            cams.other_than("cam-1", &one.hash, &rec).await.unwrap(),
            None
        );
        cams.advance("cam-1");
        let two = cams.latest("cam-1", &rec).await.unwrap();
        let other = cams.other_than("cam-1", &one.hash, &rec).await.unwrap();
        assert_eq!(other, Some(two.clone()));
        let other = cams.other_than("cam-1", &two.hash, &rec).await.unwrap();
        assert_eq!(other, Some(one));
    }

    #[test]
    fn the_clock_ticks_with_fps() {
        let clock = Clock::new(2.0);
        let later = clock.start + std::time::Duration::from_millis(1600);
        assert_eq!(clock.ticks(later), 3);
        assert_eq!(clock.tick_ms(3), clock.start_ms + 1500);
        assert_eq!(Clock::new(0.0).ticks(later), 0);
    }
}
