//! The one typed hub request: built once by [`route`](crate::route) and
//! [`auth`](crate::auth), read by the cache, the origin, renditions, delivery and metrics.
//!
//! - [`FrameRef`]: which frame of a camera — its latest, or one by content address. The cache
//!   key, the origin path and the answer's headers all follow from it.
//! - [`Target`]: what a hub path names — one frame, or the MJPEG stream of latest frames.
//! - [`HubRequest`]: a parsed request line, not yet authorised (no owner).
//! - [`FrameRequest`]: a request whose token was verified and whose camera is granted: the only
//!   place an owner comes from.

use crate::cache::Via;
use crate::identity::{CameraId, ContentHash, OwnerId};
use crate::rendition::Rendition;

/// Which frame of a camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameRef {
    /// The camera's latest frame.
    Latest,
    /// One frame by its content address: blake3 of its bytes.
    ByHash(ContentHash),
}

impl FrameRef {
    /// For logs: `latest` or `by_hash` (never the hash itself).
    pub fn as_str(&self) -> &'static str {
        match self {
            FrameRef::Latest => "latest",
            FrameRef::ByHash(_) => "by_hash",
        }
    }
}

/// What a hub path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `/v1/cameras/{camera}/frame` (latest) or `/v1/cameras/{camera}/frames/{hash}`.
    Frame(FrameRef),
    /// `/v1/cameras/{camera}/stream`: the camera's latest frames, one after another.
    Stream,
    /// `POST /v1/cameras/{camera}/links`: access links to the camera's frame and stream.
    Links,
}

impl Target {
    /// The frame this target starts from: a stream follows the latest frame.
    pub fn frame(&self) -> FrameRef {
        match self {
            Target::Frame(frame) => *frame,
            Target::Stream | Target::Links => FrameRef::Latest,
        }
    }

    /// The `route` label of the request metrics.
    pub fn label(&self) -> RouteLabel {
        match self {
            Target::Frame(FrameRef::Latest) => RouteLabel::Frame,
            Target::Frame(FrameRef::ByHash(_)) => RouteLabel::FrameByHash,
            Target::Stream => RouteLabel::Stream,
            Target::Links => RouteLabel::Other,
        }
    }
}

/// A parsed hub request line, before its token is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRequest {
    pub camera: CameraId,
    pub target: Target,
    /// The rendition `variant=` asked for, if any.
    pub rendition: Option<Rendition>,
    /// An access link's `access=` value, if any (never logged).
    pub access: Option<String>,
    /// `HEAD`: headers only.
    pub head: bool,
}

impl HubRequest {
    /// The request made for `owner`, whose verified token grants the camera until
    /// `valid_until` (unix seconds); a miss is filled `via` the camera's home or the origin.
    pub fn authorised(self, owner: OwnerId, valid_until: u64, via: Via) -> FrameRequest {
        FrameRequest {
            owner,
            valid_until,
            via,
            camera: self.camera,
            target: self.target,
            rendition: self.rendition,
            head: self.head,
        }
    }
}

/// An authorised hub request: what every layer after authorisation works from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameRequest {
    /// From the verified token, never from a header or the path.
    pub owner: OwnerId,
    /// Unix seconds after which the token is no longer accepted: a stream ends then.
    pub valid_until: u64,
    /// Where a miss may be filled from: with the hub's token when another member may be the
    /// camera's home.
    pub via: Via,
    pub camera: CameraId,
    pub target: Target,
    /// The rendition `variant=` asked for, if any.
    pub rendition: Option<Rendition>,
    /// `HEAD`: headers only.
    pub head: bool,
}

/// The `route` label of `framecache_requests_total` and the request duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteLabel {
    Frame,
    FrameByHash,
    Stream,
    #[default]
    Other,
}

impl RouteLabel {
    pub const ALL: [RouteLabel; 4] = [
        RouteLabel::Frame,
        RouteLabel::FrameByHash,
        RouteLabel::Stream,
        RouteLabel::Other,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            RouteLabel::Frame => "frame",
            RouteLabel::FrameByHash => "frame_by_hash",
            RouteLabel::Stream => "stream",
            RouteLabel::Other => "other",
        }
    }
}
