//! The serde mirror of the TOML file, before any value is checked.
//!
//! Every table rejects unknown keys, as `deny_unknown_fields` would, but collects them instead
//! of stopping at the first, and every leaf is a [`Leaf`] that keeps a type error instead of
//! failing the whole parse: `check-config` reports every problem in one pass.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// A key's value: absent, well-typed, or of the wrong type (with the parser's message).
#[derive(Debug, Clone, Default)]
pub enum Leaf<T> {
    #[default]
    Absent,
    Value(T),
    Bad {
        value: toml::Value,
        error: String,
    },
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Leaf<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = toml::Value::deserialize(deserializer)?;
        Ok(match T::deserialize(value.clone()) {
            Ok(parsed) => Leaf::Value(parsed),
            Err(error) => Leaf::Bad {
                value,
                error: error.message().to_string(),
            },
        })
    }
}

/// Keys that no table knows, by name, with their values.
pub type Unknown = BTreeMap<String, toml::Value>;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
pub struct File {
    #[serde(default)]
    pub server: Leaf<Server>,
    #[serde(default)]
    pub auth: Leaf<Auth>,
    #[serde(default)]
    pub admin: Leaf<Admin>,
    #[serde(default)]
    pub origin: Leaf<Origin>,
    #[serde(default)]
    pub cache: Leaf<Cache>,
    #[serde(default)]
    pub delivery: Leaf<Delivery>,
    #[serde(default)]
    pub limits: Leaf<Limits>,
    #[serde(default)]
    pub tls: Leaf<Tls>,
    #[serde(default)]
    pub cluster: Leaf<Cluster>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `[server]`
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Server {
    #[serde(default)]
    pub listen: Leaf<String>,
    #[serde(default)]
    pub tls_listen: Leaf<String>,
    #[serde(default)]
    pub h2: Leaf<bool>,
    #[serde(default)]
    pub admin_listen: Leaf<String>,
    #[serde(default)]
    pub threads: Leaf<i64>,
    #[serde(default)]
    pub grace_period_secs: Leaf<i64>,
    #[serde(default)]
    pub send_buffer_bytes: Leaf<i64>,
    #[serde(default)]
    pub upgrade_sock: Leaf<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `[auth]`
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Auth {
    #[serde(default)]
    pub algorithm: Leaf<String>,
    #[serde(default)]
    pub secret_file: Leaf<String>,
    #[serde(default)]
    pub previous_secret_files: Leaf<Vec<Leaf<String>>>,
    #[serde(default)]
    pub audience: Leaf<String>,
    #[serde(default)]
    pub leeway_secs: Leaf<i64>,
    #[serde(default)]
    pub link_ttl_secs: Leaf<i64>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `[admin]`
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Admin {
    #[serde(default)]
    pub token_file: Leaf<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `[origin]`
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Origin {
    #[serde(default)]
    pub addresses: Leaf<Vec<String>>,
    #[serde(default)]
    pub connect_timeout_ms: Leaf<i64>,
    #[serde(default)]
    pub response_timeout_ms: Leaf<i64>,
    #[serde(default)]
    pub signing_key_file: Leaf<String>,
    #[serde(default)]
    pub previous_signing_key_files: Leaf<Vec<Leaf<String>>>,
    #[serde(default)]
    pub max_frame_bytes: Leaf<i64>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `[cache]`
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Cache {
    #[serde(default)]
    pub max_bytes: Leaf<i64>,
    #[serde(default)]
    pub latest_fresh_ms: Leaf<i64>,
    #[serde(default)]
    pub stale_if_error_secs: Leaf<i64>,
    #[serde(default)]
    pub coalesce_wait_ms: Leaf<i64>,
    #[serde(default)]
    pub stale_while_revalidate_ms: Leaf<i64>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `[delivery]`
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Delivery {
    #[serde(default)]
    pub stream_interval_ms: Leaf<i64>,
    #[serde(default)]
    pub write_timeout_ms: Leaf<i64>,
    #[serde(default)]
    pub idle_timeout_secs: Leaf<i64>,
    #[serde(default)]
    pub target_time_ms: Leaf<i64>,
    #[serde(default)]
    pub render_threads: Leaf<i64>,
    #[serde(default)]
    pub variants: Leaf<Vec<Leaf<Variant>>>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `[tls]`
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Tls {
    #[serde(default)]
    pub cert_file: Leaf<String>,
    #[serde(default)]
    pub key_file: Leaf<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `[cluster]`
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Cluster {
    #[serde(default)]
    pub node: Leaf<String>,
    #[serde(default)]
    pub peer_listen: Leaf<String>,
    #[serde(default)]
    pub peers: Leaf<Vec<Leaf<String>>>,
    #[serde(default)]
    pub peers_dns: Leaf<String>,
    #[serde(default)]
    pub peer_key_file: Leaf<String>,
    #[serde(default)]
    pub dns_refresh_secs: Leaf<i64>,
    #[serde(default)]
    pub health_check_ms: Leaf<i64>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `[limits]`
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Limits {
    #[serde(default)]
    pub max_connections: Leaf<i64>,
    #[serde(default)]
    pub max_connections_per_ip: Leaf<i64>,
    #[serde(default)]
    pub header_bytes: Leaf<i64>,
    #[serde(default)]
    pub header_timeout_ms: Leaf<i64>,
    #[serde(default)]
    pub owner_origin_rps: Leaf<i64>,
    #[serde(default)]
    pub streams_per_owner: Leaf<i64>,
    #[serde(default)]
    pub stream_max_secs: Leaf<i64>,
    #[serde(default)]
    pub not_found_ttl_ms: Leaf<i64>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// One `[[delivery.variants]]` table.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Variant {
    #[serde(default)]
    pub name: Leaf<String>,
    #[serde(default)]
    pub max_width: Leaf<i64>,
    #[serde(default)]
    pub quality: Leaf<i64>,
    #[serde(flatten)]
    pub unknown: Unknown,
}
