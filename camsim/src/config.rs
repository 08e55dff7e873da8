//! What a camsim instance is started with, and the checks that keep it sane.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};

use crate::fault::Faults;

/// Largest picture side camsim renders (JPEG allows 65535; this keeps memory sane).
pub const MAX_SIDE: u32 = 8192;

/// Everything a camsim instance needs. `Default` gives the documented defaults.
#[derive(Clone)]
pub struct Config {
    /// Listener address; port 0 picks a free port. Default `127.0.0.1:9090`.
    pub listen: SocketAddr,
    /// Key for `X-Frame-Signature` (`blake3::keyed_hash`). Default: all zeros, for tests only.
    pub signing_key: [u8; 32],
    /// Number of owners, `owner-1` .. `owner-N`. Default 4.
    pub owners: usize,
    /// Cameras each owner owns. Default 2.
    pub cameras_per_owner: usize,
    /// Picture width in pixels. Default 1280.
    pub width: u32,
    /// Picture height in pixels. Default 720.
    pub height: u32,
    /// JPEG quality, 1..=100. Default 80.
    pub quality: u8,
    /// Frames per second each camera captures. Default 1.0; 0.0 freezes the cameras, so a
    /// camera's sequence number only moves with `Handle::advance` or `POST /control/advance`.
    pub fps: f64,
    /// Frames kept per camera for by-hash lookups. Default 16.
    pub retain_frames: usize,
    /// `Cache-Control` header sent with frames. Default none.
    pub cache_control: Option<String>,
    /// Faults injected from the start. Default none.
    pub faults: Faults,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 9090)),
            signing_key: [0; 32],
            owners: 4,
            cameras_per_owner: 2,
            width: 1280,
            height: 720,
            quality: 80,
            fps: 1.0,
            retain_frames: 16,
            cache_control: None,
            faults: Faults::default(),
        }
    }
}

// The signing key stays out of logs.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("signing_key", &"<redacted>")
            .field("owners", &self.owners)
            .field("cameras_per_owner", &self.cameras_per_owner)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("quality", &self.quality)
            .field("fps", &self.fps)
            .field("retain_frames", &self.retain_frames)
            .field("cache_control", &self.cache_control)
            .field("faults", &self.faults)
            .finish()
    }
}

impl Config {
    /// Every problem with this configuration, one line each, naming the key and the value.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.owners == 0 {
            problems.push("owners: must be > 0, got 0".to_owned());
        }
        if self.cameras_per_owner == 0 {
            problems.push("cameras_per_owner: must be > 0, got 0".to_owned());
        }
        for (key, side) in [("width", self.width), ("height", self.height)] {
            if !(16..=MAX_SIDE).contains(&side) {
                problems.push(format!("{key}: must be within 16..={MAX_SIDE}, got {side}"));
            }
        }
        if !(1..=100).contains(&self.quality) {
            problems.push(format!(
                "quality: must be within 1..=100, got {}",
                self.quality
            ));
        }
        if !self.fps.is_finite() || self.fps < 0.0 {
            problems.push(format!(
                "fps: must be a finite number >= 0, got {}",
                self.fps
            ));
        }
        if self.retain_frames == 0 {
            problems.push("retain_frames: must be > 0, got 0".to_owned());
        }
        if let Some(value) = &self.cache_control {
            if value.is_empty() || value.bytes().any(|b| b.is_ascii_control()) {
                problems.push(format!(
                    "cache_control: must be a non-empty header value, got {value:?}"
                ));
            }
        }
        problems.extend(
            self.faults
                .problems()
                .into_iter()
                .map(|p| format!("faults.{p}")),
        );
        problems
    }
}

/// Why a signing key text was refused.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum KeyError {
    #[error("signing key must be 64 hex chars, got {0} chars")]
    Length(usize),
    #[error("signing key must be hex: {0}")]
    NotHex(#[from] hex::FromHexError),
}

/// Parses a signing key written as 64 hex chars; whitespace around it is ignored.
pub fn parse_key_hex(text: &str) -> Result<[u8; 32], KeyError> {
    let text = text.trim();
    if text.len() != 64 {
        return Err(KeyError::Length(text.chars().count()));
    }
    let mut key = [0u8; 32];
    hex::decode_to_slice(text, &mut key)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hex_round_trips_and_ignores_surrounding_whitespace() {
        let text = format!("  {}\n", "ab".repeat(32));
        assert_eq!(parse_key_hex(&text), Ok([0xab; 32]));
    }

    #[test]
    fn key_hex_refuses_wrong_length_and_non_hex() {
        assert_eq!(parse_key_hex("abcd"), Err(KeyError::Length(4)));
        assert!(matches!(
            parse_key_hex(&"zz".repeat(32)),
            Err(KeyError::NotHex(_))
        ));
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::default().problems(), Vec::<String>::new());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let config = Config {
            owners: 0,
            width: 8,
            quality: 0,
            fps: f64::NAN,
            retain_frames: 0,
            faults: Faults {
                error_rate: 2.0,
                ..Faults::default()
            },
            ..Config::default()
        };
        let problems = config.problems();
        assert_eq!(problems.len(), 6, "{problems:?}");
        assert!(problems.contains(&"faults.error_rate: must be within 0..=1, got 2".to_owned()));
    }
}
