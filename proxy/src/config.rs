//! Configuration: the TOML file of SPEC, validated into [`Config`].
//!
//! `file` mirrors the TOML with serde; `validate` turns it into typed values, reading the secret
//! files it names (relative to the configuration file's folder) and collecting every problem with
//! its key path, so an operator fixes a file in one round.
//!
//! Defaults live in one place: the `impl Default` of each section below. Validation takes from
//! it every key a file leaves out, and [`Config::local`] builds on it.

mod file;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::rendition::Catalogue;

pub use validate::{member_name, parse_signing_key};

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub admin: AdminConfig,
    pub origin: OriginConfig,
    pub cache: CacheConfig,
    pub delivery: DeliveryConfig,
    pub limits: LimitsConfig,
    /// `[tls]`: present exactly when `server.tls_listen` is set.
    pub tls: Option<TlsConfig>,
    /// `[cluster]`: present when this node is one member of an edge tier.
    pub cluster: Option<ClusterConfig>,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Plaintext hub listener (`listen`): HTTP/1.1, and h2c with prior knowledge when `h2` is on.
    /// Default `127.0.0.1:8080`; none when left out while `tls_listen` is set.
    pub listen: Option<SocketAddr>,
    /// TLS hub listener (`tls_listen`): ALPN `h2` (when `h2` is on) and `http/1.1`. Default none.
    pub tls_listen: Option<SocketAddr>,
    /// Offer HTTP/2 (`h2`): ALPN `h2` on TLS, h2c with prior knowledge on plaintext. Default on.
    pub h2: bool,
    /// `/metrics`, `/healthz`, `/readyz`, `/admin/*` (`admin_listen`). Default `127.0.0.1:9100`.
    pub admin_listen: SocketAddr,
    /// Worker threads of the hub listener (`threads`). Default 2.
    pub threads: usize,
    /// After SIGTERM, how long in-flight requests may finish (`grace_period_secs`). Default 5 s.
    pub grace_period: Duration,
    /// `SO_SNDBUF` of hub connections (`send_buffer_bytes`): bounds the kernel memory a hub
    /// that stops reading holds. Default 262144 (256 KiB; the kernel doubles it for its own
    /// bookkeeping): 40 Mbit/s at 50 ms of round trip. `None` (only in code) leaves the
    /// kernel's autotuning on.
    pub send_buffer: Option<usize>,
    /// Where a new instance started with `--upgrade` asks this one for its listening sockets
    /// (`upgrade_sock`; relative to the configuration's folder). Default
    /// `/tmp/framecache-upgrade.sock`.
    pub upgrade_sock: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            tls_listen: None,
            h2: true,
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9100)),
            threads: 2,
            grace_period: Duration::from_secs(5),
            send_buffer: Some(256 * 1024),
            upgrade_sock: PathBuf::from("/tmp/framecache-upgrade.sock"),
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// HS256 secret (`secret_file`): the file's bytes, one trailing newline dropped; at least 32
    /// bytes. Required: the default is empty, which validation never accepts.
    pub secret: Secret,
    /// HS256 secrets still accepted, after `secret`, while tokens minted with them expire
    /// (`previous_secret_files`), tried in order. Default none.
    pub previous_secrets: Vec<Secret>,
    /// Required `aud` claim (`audience`). Default `framecache`.
    pub audience: String,
    /// Clock skew allowed on `exp` (`leeway_secs`). Default 30 s.
    pub leeway: Duration,
    /// How long an access link lasts at most (`link_ttl_secs`). Default 300 s.
    pub link_ttl: Duration,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            secret: Secret::default(),
            previous_secrets: Vec::new(),
            audience: "framecache".to_string(),
            leeway: Duration::from_secs(30),
            link_ttl: Duration::from_secs(300),
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Bearer token for `/admin/*` (`token_file`): at least 16 printable bytes. Required.
    pub token: Secret,
}

/// `[origin]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginConfig {
    /// Camera backends, tried in turn when one cannot be reached (`addresses`). Required: the
    /// default is empty, which validation never accepts.
    pub addresses: Vec<SocketAddr>,
    /// How long connecting to one address may take before the next is tried
    /// (`connect_timeout_ms`). Default 500 ms.
    pub connect_timeout: Duration,
    /// The whole response, request sent to last byte (`response_timeout_ms`). Default 3000 ms.
    pub response_timeout: Duration,
    /// Key of the frames' keyed blake3 signatures (`signing_key_file`). Required: the default,
    /// all zeros, is a placeholder that validation and [`Config::local`] always replace.
    pub signing_key: [u8; 32],
    /// Frame-signing keys still accepted after `signing_key` (`previous_signing_key_files`),
    /// tried in order. Default none.
    pub previous_signing_keys: Vec<[u8; 32]>,
    /// Largest acceptable frame body (`max_frame_bytes`). Default 4194304 (4 MiB).
    pub max_frame_bytes: usize,
}

impl Default for OriginConfig {
    fn default() -> OriginConfig {
        OriginConfig {
            addresses: Vec::new(),
            connect_timeout: Duration::from_millis(500),
            response_timeout: Duration::from_millis(3000),
            signing_key: [0; 32],
            previous_signing_keys: Vec::new(),
            max_frame_bytes: 4 << 20,
        }
    }
}

/// `[cluster]`: this node's place in an edge tier. Every member must be given the same members
/// and the same peer key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's name (`node`): what the ring hashes, so it must stay the same across
    /// restarts. Default: the host's name (a StatefulSet pod's stable name).
    pub node: String,
    /// Where other members ask this one for frames (`peer_listen`). Required.
    pub peer_listen: SocketAddr,
    /// The members, this node included (`peers` or `peers_dns`). Required: one of the two.
    pub members: Members,
    /// The shared secret of peer credentials (`peer_key_file`): at least 32 bytes. Required.
    pub peer_key: Secret,
    /// How often `peers_dns` is looked up again (`dns_refresh_secs`). Default 10 s.
    pub dns_refresh: Duration,
    /// How often each member's peer port is checked (`health_check_ms`). Default 1000 ms.
    pub health_check: Duration,
}

/// Where the members of a tier come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Members {
    /// `peers = ["name=ip:port", ...]`
    Static(Vec<(String, SocketAddr)>),
    /// `peers_dns = "host:port"`: the host's A/AAAA records are the members' addresses, the
    /// PTR record of each address its name (the first label).
    Dns { host: String, port: u16 },
}

impl ClusterConfig {
    /// Defaults of the optional keys.
    pub const DNS_REFRESH: Duration = Duration::from_secs(10);
    pub const HEALTH_CHECK: Duration = Duration::from_millis(1000);
}

/// `[cache]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Memory budget for frame bodies (`max_bytes`). Default 268435456 (256 MiB).
    pub max_bytes: u64,
    /// How long a latest frame is served without asking the origin (`latest_fresh_ms`).
    /// Default 1000 ms.
    pub latest_fresh: Duration,
    /// How long a latest frame may be served when the origin fails (`stale_if_error_secs`).
    /// Default 30 s.
    pub stale_if_error: Duration,
    /// Longest a request waits for another request's origin fetch (`coalesce_wait_ms`).
    /// Default 3000 ms.
    pub coalesce_wait: Duration,
    /// How long after a latest frame goes stale it is still served at once while one
    /// background fetch refreshes it (`stale_while_revalidate_ms`; 0: never). Default 1000 ms.
    pub stale_while_revalidate: Duration,
}

impl Default for CacheConfig {
    fn default() -> CacheConfig {
        CacheConfig {
            max_bytes: 256 << 20,
            latest_fresh: Duration::from_millis(1000),
            stale_if_error: Duration::from_secs(30),
            coalesce_wait: Duration::from_millis(3000),
            stale_while_revalidate: Duration::from_millis(1000),
        }
    }
}

/// `[delivery]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// How often an MJPEG stream looks for a newer frame (`stream_interval_ms`). Default
    /// 1000 ms.
    pub stream_interval: Duration,
    /// A hub must take at least 16 KiB per this long, or it is dropped (`write_timeout_ms`).
    /// Default 10000 ms.
    pub write_timeout: Duration,
    /// A kept-alive hub connection idle this long between requests is closed
    /// (`idle_timeout_secs`). Default 60 s.
    pub idle_timeout: Duration,
    /// Automatic choice picks the largest rendition expected to arrive within this
    /// (`target_time_ms`). Default 1000 ms.
    pub target_time: Duration,
    /// Renditions rendered at once, off the async workers (`render_threads`). Default: the
    /// cores, at most 4 (2 when the count cannot be read).
    pub render_threads: usize,
    /// `full` and the renditions it may be made into (`[[delivery.variants]]` redefine or join
    /// them). Default [`Catalogue::built_in`]: `medium` and `thumb`.
    pub renditions: Catalogue,
}

impl Default for DeliveryConfig {
    fn default() -> DeliveryConfig {
        DeliveryConfig {
            stream_interval: Duration::from_millis(1000),
            write_timeout: Duration::from_millis(10_000),
            idle_timeout: Duration::from_secs(60),
            target_time: Duration::from_millis(1000),
            render_threads: std::thread::available_parallelism().map_or(2, |n| n.get().min(4)),
            renditions: Catalogue::built_in(),
        }
    }
}

/// `[tls]`: the hub TLS listener's certificate and key, read and checked when the file is
/// validated (a bad certificate or key is a configuration problem, never a panic later).
#[derive(Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM chain, leaf first (`cert_file`).
    pub cert_file: PathBuf,
    /// PEM private key: PKCS#8, PKCS#1 or SEC1 (`key_file`).
    pub key_file: PathBuf,
    /// The chain, DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The private key, DER, in the format the file had.
    pub key: TlsKey,
}

/// A private key as its file had it.
#[derive(Clone, PartialEq, Eq)]
pub enum TlsKey {
    Pkcs8(Secret),
    Pkcs1(Secret),
    Sec1(Secret),
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// `[limits]`: what one client, one owner or the whole internet may hold of the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Hub connections open at once; beyond it new ones are refused (`max_connections`).
    /// Default 20000.
    pub max_connections: usize,
    /// Hub connections open at once from one client address (`max_connections_per_ip`).
    /// Default 512.
    pub max_connections_per_ip: usize,
    /// Largest request head; a larger one gets 431 and the connection is closed
    /// (`header_bytes`). Default 16384.
    pub header_bytes: usize,
    /// The whole request head must arrive within this, or the connection is closed
    /// (`header_timeout_ms`); a trickle of bytes does not extend it. Default 10000 ms.
    pub header_timeout: Duration,
    /// Origin requests one owner may cause per second, with a burst of twice that; beyond it
    /// 429 with `Retry-After` (`owner_origin_rps`). Default 20.
    pub owner_origin_rps: u32,
    /// MJPEG streams open at once per owner; beyond it 429 (`streams_per_owner`). Default 16.
    pub streams_per_owner: usize,
    /// A stream ends after this, and when its token expires (`stream_max_secs`). Default 3600 s.
    pub stream_max: Duration,
    /// How long an origin 404 for a frame by hash is remembered, per owner
    /// (`not_found_ttl_ms`; 0: never). Default 10000 ms.
    pub not_found_ttl: Duration,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            max_connections: 20_000,
            max_connections_per_ip: 512,
            header_bytes: 16 * 1024,
            header_timeout: Duration::from_millis(10_000),
            owner_origin_rps: 20,
            streams_per_owner: 16,
            stream_max: Duration::from_secs(3600),
            not_found_ttl: Duration::from_millis(10_000),
        }
    }
}

/// Secret bytes; never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl Secret {
    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Whether the secret is one of the development keys shipped in `config/dev/`.
    pub fn is_dev_only(&self) -> bool {
        self.0.windows(8).any(|w| w == b"dev-only")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, like `origin.addresses[1]`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a configuration file could not be used: every problem found in it.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {problem}", self.path.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let fail = |key: &str, message: String| ConfigError {
            path: path.to_path_buf(),
            problems: vec![Problem {
                key: key.to_string(),
                message,
            }],
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail("(file)", e.to_string()))?;
        Self::parse(&text, path)
    }

    /// Validates configuration text as if it were read from `path` (relative paths in it
    /// resolve against `path`'s folder).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError {
            path: path.to_path_buf(),
            problems,
        };
        let parsed: file::File = toml::from_str(text).map_err(|e| {
            let key = e
                .span()
                .map(|s| format!("(line {})", line_of(text, s.start)))
                .unwrap_or_else(|| "(syntax)".to_string());
            fail(vec![Problem {
                key,
                message: e.message().to_string(),
            }])
        })?;
        validate::validate(&parsed, path).map_err(fail)
    }

    /// A configuration for running on loopback with keys given in code: the demo and tests.
    ///
    /// The defaults, except: both listeners on `127.0.0.1:0` (each gets a free port), no grace
    /// period, 2 render threads on every machine, and the origin address and keys given here.
    pub fn local(
        origin: SocketAddr,
        hub_secret: &[u8],
        admin_token: &[u8],
        signing_key: [u8; 32],
    ) -> Config {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Config {
            server: ServerConfig {
                listen: Some(loopback),
                admin_listen: loopback,
                grace_period: Duration::ZERO,
                ..ServerConfig::default()
            },
            auth: AuthConfig {
                secret: Secret(hub_secret.to_vec()),
                ..AuthConfig::default()
            },
            admin: AdminConfig {
                token: Secret(admin_token.to_vec()),
            },
            origin: OriginConfig {
                addresses: vec![origin],
                signing_key,
                ..OriginConfig::default()
            },
            cache: CacheConfig::default(),
            delivery: DeliveryConfig {
                render_threads: 2,
                ..DeliveryConfig::default()
            },
            limits: LimitsConfig::default(),
            tls: None,
            cluster: None,
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    // Counted over bytes, so an offset inside a multi-byte character (or past the end) is
    // still a line number, never a panic.
    let before = text.as_bytes().get(..offset).unwrap_or(text.as_bytes());
    before.iter().filter(|b| **b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir = std::env::temp_dir()
                .join(format!("framecache-config-{name}-{}", std::process::id()));
            std::fs::create_dir_all(dir.join("keys")).unwrap();
            std::fs::write(dir.join("keys/hub.secret"), [b'h'; 40]).unwrap();
            std::fs::write(dir.join("keys/admin.token"), "admin-token-0123456789\n").unwrap();
            std::fs::write(
                dir.join("keys/signing.key"),
                format!("  {}\n", "ab".repeat(32)),
            )
            .unwrap();
            Dir(dir)
        }
        fn config(&self) -> PathBuf {
            self.0.join("framecache.toml")
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:9100"
threads = 2
[auth]
algorithm = "HS256"
secret_file = "keys/hub.secret"
audience = "framecache"
leeway_secs = 30
[admin]
token_file = "keys/admin.token"
[origin]
addresses = ["127.0.0.1:9090", "127.0.0.1:9091"]
connect_timeout_ms = 500
response_timeout_ms = 3000
signing_key_file = "keys/signing.key"
max_frame_bytes = 4194304
[cache]
max_bytes = 268435456
latest_fresh_ms = 1000
stale_if_error_secs = 30
coalesce_wait_ms = 3000
"#;

    fn keys(err: ConfigError) -> Vec<String> {
        err.problems.into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn good_file_loads_with_paths_relative_to_it() {
        let dir = Dir::new("good");
        let config = Config::parse(GOOD, &dir.config()).expect("valid");
        assert_eq!(config.auth.secret.expose(), &[b'h'; 40]);
        assert_eq!(config.admin.token.expose(), b"admin-token-0123456789");
        assert_eq!(config.origin.signing_key, [0xab; 32]);
        assert_eq!(config.origin.addresses.len(), 2);
        assert_eq!(config.cache.latest_fresh, Duration::from_millis(1000));
    }

    #[test]
    fn defaults_fill_optional_keys() {
        let dir = Dir::new("defaults");
        let text = REQUIRED_ONLY;
        let config = Config::parse(text, &dir.config()).expect("valid");
        assert_eq!(
            config.server.listen,
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(config.server.threads, 2);
        assert_eq!(config.auth.audience, "framecache");
        assert_eq!(config.origin.max_frame_bytes, 4 << 20);
        assert_eq!(config.cache.max_bytes, 256 << 20);
        assert_eq!(config.server.send_buffer, Some(256 * 1024));
        assert_eq!(config.delivery.target_time, Duration::from_secs(1));
        let text = format!("{text}[server]\nsend_buffer_bytes = 65536\n");
        let config = Config::parse(&text, &dir.config()).expect("valid");
        assert_eq!(config.server.send_buffer, Some(65536));
        let text = text.replace("65536", "12");
        let err = Config::parse(&text, &dir.config()).expect_err("too small");
        assert_eq!(keys(err), ["server.send_buffer_bytes"]);
    }

    /// Only the keys without a default.
    const REQUIRED_ONLY: &str = r#"
[auth]
secret_file = "keys/hub.secret"
[admin]
token_file = "keys/admin.token"
[origin]
addresses = ["127.0.0.1:9090"]
signing_key_file = "keys/signing.key"
"#;

    /// Asserts that every key of `config` a file may leave out holds its section's default.
    fn assert_defaults(config: &Config) {
        assert_eq!(config.server, ServerConfig::default());
        let auth = AuthConfig {
            secret: config.auth.secret.clone(),
            ..AuthConfig::default()
        };
        assert_eq!(config.auth, auth);
        let origin = OriginConfig {
            addresses: config.origin.addresses.clone(),
            signing_key: config.origin.signing_key,
            ..OriginConfig::default()
        };
        assert_eq!(config.origin, origin);
        assert_eq!(config.cache, CacheConfig::default());
        assert_eq!(config.delivery, DeliveryConfig::default());
        assert_eq!(config.limits, LimitsConfig::default());
    }

    #[test]
    fn left_out_keys_take_the_section_defaults() {
        let dir = Dir::new("required-only");
        let config = Config::parse(REQUIRED_ONLY, &dir.config()).expect("valid");
        assert_defaults(&config);
        assert_eq!(config.auth.secret, Secret(vec![b'h'; 40]));
        let origin = SocketAddr::from(([127, 0, 0, 1], 9090));
        assert_eq!(config.origin.addresses, [origin]);
        assert_eq!(config.origin.signing_key, [0xab; 32]);
    }

    #[test]
    fn local_differs_from_the_defaults_only_as_documented() {
        let dir = Dir::new("local");
        let mut expected = Config::parse(REQUIRED_ONLY, &dir.config()).expect("valid");
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        expected.server.listen = Some(any_port);
        expected.server.admin_listen = any_port;
        expected.server.grace_period = Duration::ZERO;
        expected.delivery.render_threads = 2;
        let local = Config::local(
            SocketAddr::from(([127, 0, 0, 1], 9090)),
            &[b'h'; 40],
            b"admin-token-0123456789",
            [0xab; 32],
        );
        assert_eq!(local, expected);
    }

    #[test]
    fn a_cluster_table_names_this_node_its_members_and_key() {
        let dir = Dir::new("cluster");
        std::fs::write(dir.0.join("keys/peer.key"), [b'p'; 32]).unwrap();
        let text = format!(
            "{REQUIRED_ONLY}[cluster]\nnode = \"edge-b\"\npeer_listen = \"0.0.0.0:7443\"\n\
             peers = [\"edge-a=10.0.0.1:7443\", \"edge-b=10.0.0.2:7443\"]\n\
             peer_key_file = \"keys/peer.key\"\n"
        );
        let config = Config::parse(&text, &dir.config()).expect("valid");
        let cluster = config.cluster.expect("a cluster");
        assert_eq!(cluster.node, "edge-b");
        assert_eq!(
            cluster.members,
            Members::Static(vec![
                ("edge-a".into(), "10.0.0.1:7443".parse().unwrap()),
                ("edge-b".into(), "10.0.0.2:7443".parse().unwrap()),
            ])
        );
        assert_eq!(cluster.dns_refresh, ClusterConfig::DNS_REFRESH);
        assert_eq!(cluster.health_check, ClusterConfig::HEALTH_CHECK);
        let dns = text.replace(
            "peers = [\"edge-a=10.0.0.1:7443\", \"edge-b=10.0.0.2:7443\"]",
            "peers_dns = \"peers.example:7443\"\ndns_refresh_secs = 5",
        );
        let config = Config::parse(&dns, &dir.config()).expect("valid");
        let cluster = config.cluster.expect("a cluster");
        let host = "peers.example".to_string();
        assert_eq!(cluster.members, Members::Dns { host, port: 7443 });
        assert_eq!(cluster.dns_refresh, Duration::from_secs(5));
        // Left out, the node is this host's name.
        let unnamed = dns.replace("node = \"edge-b\"\n", "");
        let config = Config::parse(&unnamed, &dir.config()).expect("valid");
        assert!(!config.cluster.unwrap().node.is_empty());
        assert!(Config::parse(REQUIRED_ONLY, &dir.config())
            .unwrap()
            .cluster
            .is_none());
    }

    #[test]
    fn a_bad_cluster_table_names_every_problem() {
        let dir = Dir::new("bad-cluster");
        std::fs::write(dir.0.join("keys/short.key"), "too short").unwrap();
        let cases: [(&str, &[&str]); 9] = [
            ("node = \"edge a\"\npeer_listen = \"0.0.0.0:7443\"\npeers_dns = \"p:1\"\npeer_key_file = \"keys/hub.secret\"", &["cluster.node"]),
            ("node = \"a\"\npeers_dns = \"p:1\"\npeer_key_file = \"keys/hub.secret\"", &["cluster.peer_listen"]),
            ("node = \"a\"\npeer_listen = \"0.0.0.0:7443\"\npeer_key_file = \"keys/hub.secret\"", &["cluster.peers"]),
            ("node = \"a\"\npeer_listen = \"0.0.0.0:7443\"\npeers = [\"a=1.2.3.4:1\"]\npeers_dns = \"p:1\"\npeer_key_file = \"keys/hub.secret\"", &["cluster.peers_dns"]),
            ("node = \"a\"\npeer_listen = \"0.0.0.0:7443\"\npeers = [\"b=1.2.3.4:1\"]\npeer_key_file = \"keys/hub.secret\"", &["cluster.peers"]),
            ("node = \"a\"\npeer_listen = \"0.0.0.0:7443\"\npeers = [\"a=1.2.3.4:1\", \"a=1.2.3.5:1\", \"c\", \"d=host:1\"]\npeer_key_file = \"keys/hub.secret\"", &["cluster.peers[1]", "cluster.peers[2]", "cluster.peers[3]"]),
            ("node = \"a\"\npeer_listen = \"0.0.0.0:7443\"\npeers_dns = \"no-port\"\npeer_key_file = \"keys/hub.secret\"", &["cluster.peers_dns"]),
            ("node = \"a\"\npeer_listen = \"0.0.0.0:7443\"\npeers_dns = \"p:1\"\npeer_key_file = \"keys/short.key\"\nhealth_check_ms = 5", &["cluster.peer_key_file", "cluster.health_check_ms"]),
            ("node = \"a\"\npeer_listen = \"127.0.0.1:9100\"\npeers_dns = \"p:1\"\npeer_key_file = \"keys/hub.secret\"\nextra = 1", &["cluster.extra", "cluster.peer_listen"]),
        ];
        for (table, expected) in cases {
            let text = format!("{REQUIRED_ONLY}[cluster]\n{table}\n");
            let err = Config::parse(&text, &dir.config()).expect_err(table);
            assert_eq!(keys(err), *expected, "{table}");
        }
    }

    #[test]
    fn the_shipped_file_shows_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/framecache.toml");
        assert_defaults(&Config::load(&path).expect("valid"));
    }

    #[test]
    fn renditions_are_built_in_redefinable_and_checked() {
        let dir = Dir::new("variants");
        let config = Config::parse(GOOD, &dir.config()).expect("valid");
        let names = |c: &Config| -> Vec<(String, u32)> {
            c.delivery
                .renditions
                .all()
                .iter()
                .map(|r| (r.variant.as_str().to_string(), r.max_width))
                .collect()
        };
        assert_eq!(
            names(&config),
            [
                ("thumb".into(), 320),
                ("medium".into(), 640),
                ("full".into(), 0)
            ]
        );
        let text = format!(
            "{GOOD}[delivery]\n[[delivery.variants]]\nname = \"thumb\"\nmax_width = 240\n\
             [[delivery.variants]]\nname = \"hd\"\nmax_width = 1280\nquality = 90\n"
        );
        let config = Config::parse(&text, &dir.config()).expect("valid");
        assert_eq!(
            names(&config),
            [
                ("thumb".into(), 240),
                ("medium".into(), 640),
                ("hd".into(), 1280),
                ("full".into(), 0)
            ]
        );
        assert_eq!(config.delivery.renditions.find("hd").unwrap().quality, 90);

        let bad = format!(
            "{GOOD}[delivery]\n\
             [[delivery.variants]]\nname = \"full\"\nmax_width = 100\n\
             [[delivery.variants]]\nname = \"Big One\"\nmax_width = 100\n\
             [[delivery.variants]]\nname = \"a\"\nmax_width = 8\n\
             [[delivery.variants]]\nname = \"b\"\nmax_width = 100\nquality = 0\ncolour = 1\n\
             [[delivery.variants]]\nmax_width = 100\n\
             [[delivery.variants]]\nname = \"c\"\n\
             [[delivery.variants]]\nname = \"d\"\nmax_width = 100\n\
             [[delivery.variants]]\nname = \"d\"\nmax_width = 200\n"
        );
        let err = Config::parse(&bad, &dir.config()).expect_err("invalid");
        assert_eq!(
            keys(err),
            [
                "delivery.variants[0].name",
                "delivery.variants[1].name",
                "delivery.variants[2].max_width",
                "delivery.variants[3].colour",
                "delivery.variants[3].quality",
                "delivery.variants[4].name",
                "delivery.variants[5].max_width",
                "delivery.variants[7].name",
            ]
        );
        let not_tables = format!("{GOOD}[delivery]\nvariants = [1, \"x\"]\n");
        let err = Config::parse(&not_tables, &dir.config()).expect_err("invalid");
        assert_eq!(keys(err), ["delivery.variants[0]", "delivery.variants[1]"]);
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let dir = Dir::new("bad");
        let text = r#"
colour = "blue"
[server]
listen = "localhost"
threads = 0
bogus = 1
[auth]
algorithm = "RS256"
secret_file = "keys/missing.secret"
leeway_secs = "thirty"
[origin]
addresses = ["127.0.0.1:9090", "nowhere"]
connect_timeout_ms = -5
signing_key_file = "keys/admin.token"
[cache]
max_bytes = 0
"#;
        let err = Config::parse(text, &dir.config()).expect_err("invalid");
        let mut keys = keys(err);
        keys.sort();
        assert_eq!(
            keys,
            [
                "admin.token_file",
                "auth.algorithm",
                "auth.leeway_secs",
                "auth.secret_file",
                "cache.max_bytes",
                "colour",
                "origin.addresses[1]",
                "origin.connect_timeout_ms",
                "origin.signing_key_file",
                "server.bogus",
                "server.listen",
                "server.threads",
            ]
        );
    }

    #[test]
    fn messages_name_the_offending_value() {
        let dir = Dir::new("messages");
        let text = GOOD.replace("threads = 2", "threads = 5000");
        let err = Config::parse(&text, &dir.config()).expect_err("invalid");
        assert_eq!(err.problems.len(), 1);
        assert_eq!(
            err.problems[0].to_string(),
            "server.threads: must be between 1 and 1024, got 5000"
        );
        let text = GOOD.replace("threads = 2", "threads = \"two\"");
        let err = Config::parse(&text, &dir.config()).expect_err("invalid");
        assert!(err.problems[0].message.contains("\"two\""), "{err}");
    }

    #[test]
    fn wrong_shapes_and_syntax_do_not_panic() {
        let dir = Dir::new("shapes");
        for text in [
            "server = 5",
            "[origin]\naddresses = \"127.0.0.1:1\"",
            "[[cache]]\nmax_bytes = 1",
            "this is not toml",
            "[server\n",
            "\u{0}",
        ] {
            let err = Config::parse(text, &dir.config()).expect_err(text);
            assert!(!err.problems.is_empty());
        }
    }

    #[test]
    fn short_secrets_and_bad_keys_are_refused() {
        let dir = Dir::new("secrets");
        std::fs::write(dir.0.join("keys/hub.secret"), "short\n").unwrap();
        std::fs::write(dir.0.join("keys/signing.key"), "xyz").unwrap();
        let err = Config::parse(GOOD, &dir.config()).expect_err("invalid");
        let keys = keys(err);
        assert_eq!(keys, ["auth.secret_file", "origin.signing_key_file"]);
    }

    #[test]
    fn only_the_trailing_newline_is_dropped() {
        let dir = Dir::new("crlf");
        let mut secret = vec![b'h'; 40];
        secret.extend_from_slice(b"\r\n");
        std::fs::write(dir.0.join("keys/hub.secret"), &secret).unwrap();
        std::fs::write(dir.0.join("keys/admin.token"), "admin-token-0123456789\r\n").unwrap();
        let err = Config::parse(GOOD, &dir.config()).expect_err("invalid");
        // The admin token keeps its "\r", which a header cannot carry.
        assert_eq!(keys(err), ["admin.token_file"]);
        std::fs::write(dir.0.join("keys/admin.token"), "admin-token-0123456789\n\n").unwrap();
        let err = Config::parse(GOOD, &dir.config()).expect_err("invalid");
        assert_eq!(keys(err), ["admin.token_file"]);
        std::fs::write(dir.0.join("keys/admin.token"), "admin-token-0123456789\n").unwrap();
        let config = Config::parse(GOOD, &dir.config()).expect("valid");
        secret.pop();
        assert_eq!(config.auth.secret.expose(), secret.as_slice());
    }

    #[test]
    fn oversized_and_endless_files_are_refused() {
        let dir = Dir::new("big");
        std::fs::write(dir.0.join("keys/hub.secret"), vec![b'h'; 65537]).unwrap();
        let err = Config::parse(GOOD, &dir.config()).expect_err("invalid");
        assert_eq!(err.problems.len(), 1);
        assert_eq!(err.problems[0].key, "auth.secret_file");
        assert!(
            err.problems[0].message.contains("larger than 65536 bytes"),
            "{err}"
        );
        // Exactly at the cap is fine.
        std::fs::write(dir.0.join("keys/hub.secret"), vec![b'h'; 65536]).unwrap();
        assert!(Config::parse(GOOD, &dir.config()).is_ok());
        #[cfg(unix)]
        {
            let text = GOOD.replace("keys/signing.key", "/dev/zero");
            let err = Config::parse(&text, &dir.config()).expect_err("invalid");
            assert_eq!(keys(err), ["origin.signing_key_file"]);
        }
    }

    #[test]
    fn listeners_sharing_a_port_are_refused() {
        let dir = Dir::new("listeners");
        for (listen, admin) in [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("127.0.0.1:8080", "[::]:8080"),
        ] {
            let text = GOOD
                .replace("127.0.0.1:8080", listen)
                .replace("127.0.0.1:9100", admin);
            let err = Config::parse(&text, &dir.config()).expect_err(listen);
            assert_eq!(keys(err), ["server.admin_listen"], "{listen} {admin}");
        }
        let text = GOOD.replace("127.0.0.1:8080", "0.0.0.0:8080");
        assert!(Config::parse(&text, &dir.config()).is_ok());
    }

    #[test]
    fn the_cache_must_hold_one_frame() {
        let dir = Dir::new("budget");
        let text = GOOD.replace("max_bytes = 268435456", "max_bytes = 1000");
        let err = Config::parse(&text, &dir.config()).expect_err("invalid");
        assert_eq!(
            err.problems[..]
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["cache.max_bytes: must be at least twice origin.max_frame_bytes (4194304) plus entry overhead, 8389376, got 1000"]
        );
        let text = text.replace("max_frame_bytes = 4194304", "max_frame_bytes = 100");
        assert!(Config::parse(&text, &dir.config()).is_ok());
        // An out-of-range frame limit is its own problem, not also a budget one.
        let text = GOOD.replace("max_frame_bytes = 4194304", "max_frame_bytes = 1000000000");
        let err = Config::parse(&text, &dir.config()).expect_err("invalid");
        assert_eq!(keys(err), ["origin.max_frame_bytes"]);
    }

    #[test]
    fn line_numbers_never_panic() {
        assert_eq!(line_of("a\nb", 2), 2);
        // Offset 1 falls inside "é" (two bytes).
        assert_eq!(line_of("é\nx", 1), 1);
        assert_eq!(line_of("é\nx", 3), 2);
        assert_eq!(line_of("a\n", 99), 2);
        let err = Config::parse("k = \"é\n", Path::new("x.toml")).expect_err("invalid");
        assert!(err.problems[0].key.starts_with("(line"), "{err}");
    }

    #[test]
    fn secrets_are_not_printed() {
        let secret = Secret(b"very-secret".to_vec());
        assert_eq!(format!("{secret:?}"), "Secret(11 bytes)");
        assert!(Secret(b"framecache-dev-only-x".to_vec()).is_dev_only());
    }
}
