//! camsim: the simulated camera backend of framecache, for the demo, integration tests and load
//! tests.
//!
//! It speaks the camera-backend protocol of the SPEC: every camera captures signed JPEG frames
//! (`X-Frame-Owner`, `X-Frame-Camera`, `X-Frame-Seq`, `X-Frame-Captured-At`,
//! `X-Frame-Signature`), readable by the owners it belongs or is shared to, latest or by content
//! address among the recently captured frames. Each frame carries a JPEG comment
//! `framecache-sim camera={camera} seq={seq}` so a client can check what it really received.
//! It injects, on demand, the faults of a poor network (latency, throttling, resets, truncation,
//! errors, hangs) and of a buggy backend cache (wrong owner, wrong camera, another camera's frame
//! under the requested camera's headers, bad or missing signatures, wrong content type or hash).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let camsim = camsim::start(camsim::Config {
//!     listen: "127.0.0.1:0".parse()?,
//!     fps: 0.0, // frozen: frames move only with advance()
//!     ..camsim::Config::default()
//! })
//! .await?;
//! let origin = camsim.local_addr();
//! camsim.set_faults(camsim::Faults { leak_rate: 1.0, ..camsim::Faults::default() });
//! # let _ = origin;
//! camsim.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - `server`: the listener, the keep-alive loop per connection, dispatch, [`Handle`].
//! - `http`: request parsing (httparse) and hand-written responses, so faults can be exact.
//! - `route`: method and path to a typed route; its docs hold the route table.
//! - `delivery`: a frame answer: owner and camera checks, then the request's faults applied.
//! - `control`: fault settings, advance, stats and topology endpoints.
//! - `camera`: the capture clock, retained frames, render-once per (camera, seq).
//! - [`frame`]: a captured frame and its signature.
//! - `scene`: the picture's pixels; [`jpeg`]: encoding with the watermark, reading it back.
//! - [`fault`]: fault settings, names, and one request's draw.
//! - [`stats`]: counters. [`topology`]: who reads which camera. [`config`]: settings.
//! - [`cli`]: the command line of the `camsim` binary.
//!
//! # Request path
//!
//! 1. `server` accepts a connection and loops on it; `http::read_request` reads one request
//!    (head at most 16 KiB; parse errors get 400 and the connection closes).
//! 2. `route` maps it: a frame route goes to `delivery`, the rest to `control`.
//! 3. `delivery` checks `X-Framecache-Owner` (400), the camera (404) and access in [`topology`]
//!    (403), then asks `camera` for the frame: the latest is rendered once per (camera, seq) by
//!    [`frame`] on the blocking pool; by-hash looks among the retained frames (404).
//! 4. `delivery` draws a [`fault`] plan, builds the answer with its content faults (other
//!    frames, other headers, damaged signature), waits out latency, writes the head, and writes
//!    the body throttled, cut short, or reset, as planned.
//! 5. Back in `server`, the connection serves the next request, closes, or is dropped.
//!    [`stats`] has counted the request, the frame request and every fault applied.

mod camera;
pub mod cli;
pub mod config;
mod control;
mod delivery;
pub mod fault;
pub mod frame;
mod http;
pub mod jpeg;
mod route;
mod scene;
mod server;
pub mod stats;
pub mod topology;

pub use config::{parse_key_hex, Config, KeyError};
pub use fault::{Fault, Faults};
pub use frame::Frame;
pub use server::{run, start, Handle};
pub use stats::Stats;
pub use topology::Topology;
