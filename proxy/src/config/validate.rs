//! From the file mirror to a validated [`Config`], collecting every problem on the way.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::{self, Leaf, Unknown};
use crate::rendition::{Catalogue, Rendition, Variant, DEFAULT_QUALITY};

use super::{
    AdminConfig, AuthConfig, CacheConfig, Config, DeliveryConfig, OriginConfig, Problem, Secret,
    ServerConfig,
};

/// Largest secret or key file read. Real ones are tens of bytes; the cap keeps a wrong path
/// (a device such as `/dev/zero`, a log file) from hanging or exhausting `check-config`.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// Collects problems while values are read.
struct Checker<'a> {
    dir: &'a Path,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn unknown(&mut self, table: &str, unknown: &Unknown) {
        for (name, value) in unknown {
            let key = if table.is_empty() {
                name.clone()
            } else {
                format!("{table}.{name}")
            };
            self.problem(&key, format!("unknown key (value {value})"));
        }
    }

    /// A table: its fields, or an empty default (so its own required keys are reported).
    fn table<T: Default + Clone>(&mut self, key: &str, leaf: &Leaf<T>) -> T {
        match leaf {
            Leaf::Value(v) => v.clone(),
            Leaf::Absent => T::default(),
            Leaf::Bad { value, .. } => {
                self.problem(key, format!("must be a table, got {value}"));
                T::default()
            }
        }
    }

    fn leaf<T: Clone>(&mut self, key: &str, leaf: &Leaf<T>) -> Option<T> {
        match leaf {
            Leaf::Value(v) => Some(v.clone()),
            Leaf::Absent => None,
            Leaf::Bad { value, error } => {
                self.problem(key, format!("{error}, got {value}"));
                None
            }
        }
    }

    fn required<T: Clone>(&mut self, key: &str, leaf: &Leaf<T>) -> Option<T> {
        if matches!(leaf, Leaf::Absent) {
            self.problem(key, "required key is missing");
        }
        self.leaf(key, leaf)
    }

    fn int(&mut self, key: &str, leaf: &Leaf<i64>, default: i64, min: i64, max: i64) -> i64 {
        let Some(v) = self.leaf(key, leaf) else {
            return default;
        };
        if v < min || v > max {
            self.problem(key, format!("must be between {min} and {max}, got {v}"));
            return default;
        }
        v
    }

    fn millis(
        &mut self,
        key: &str,
        leaf: &Leaf<i64>,
        default: i64,
        min: i64,
        max: i64,
    ) -> Duration {
        Duration::from_millis(self.int(key, leaf, default, min, max) as u64)
    }

    fn secs(&mut self, key: &str, leaf: &Leaf<i64>, default: i64, min: i64, max: i64) -> Duration {
        Duration::from_secs(self.int(key, leaf, default, min, max) as u64)
    }

    fn socket_addr(&mut self, key: &str, text: &str) -> Option<SocketAddr> {
        match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.problem(
                    key,
                    format!("must be an IP address and port like \"127.0.0.1:8080\", got {text:?}"),
                );
                None
            }
        }
    }

    fn addr(&mut self, key: &str, leaf: &Leaf<String>, default: &str) -> SocketAddr {
        let text = self.leaf(key, leaf).unwrap_or_else(|| default.to_string());
        self.socket_addr(key, &text)
            .unwrap_or_else(|| default.parse().expect("invariant: defaults parse"))
    }

    /// Reads a file named by a required key, relative to the configuration's folder, at most
    /// [`MAX_FILE_BYTES`] of it.
    fn file(&mut self, key: &str, leaf: &Leaf<String>) -> Option<(PathBuf, Vec<u8>)> {
        let name = self.required(key, leaf)?;
        let path = self.dir.join(&name);
        match read_capped(&path, MAX_FILE_BYTES) {
            Ok(Some(bytes)) => Some((path, bytes)),
            Ok(None) => {
                self.problem(
                    key,
                    format!("{name:?} is larger than {MAX_FILE_BYTES} bytes"),
                );
                None
            }
            Err(error) => {
                self.problem(key, format!("cannot read {name:?}: {error}"));
                None
            }
        }
    }

    /// A secret file: its bytes with one trailing newline dropped (SPEC: just the `\n`; a `\r`
    /// before it stays part of the secret), at least `min` bytes long.
    fn secret(&mut self, key: &str, leaf: &Leaf<String>, min: usize) -> Secret {
        let Some((_, mut bytes)) = self.file(key, leaf) else {
            return Secret::default();
        };
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        if bytes.len() < min {
            self.problem(
                key,
                format!("must hold at least {min} bytes, got {}", bytes.len()),
            );
        }
        Secret(bytes)
    }
}

/// The file's bytes, or `None` when it holds more than `cap` bytes. Reads at most `cap + 1`, so
/// an endless file ends the read too.
fn read_capped(path: &Path, cap: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(cap + 1)
        .read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= cap).then_some(bytes))
}

/// Whether two listeners would compete for one socket: the same non-zero port on the same
/// address, or on any address when either is the unspecified one (`0.0.0.0`, `::`), which
/// covers every address (on Linux `[::]` covers IPv4 too, so the families are not told apart).
fn listeners_conflict(a: SocketAddr, b: SocketAddr) -> bool {
    let (ip_a, ip_b) = (a.ip().to_canonical(), b.ip().to_canonical());
    a.port() == b.port()
        && a.port() != 0
        && (ip_a == ip_b || ip_a.is_unspecified() || ip_b.is_unspecified())
}

/// Parses a signing key: 64 hex characters, whitespace around ignored.
pub fn parse_signing_key(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    let mut key = [0u8; 32];
    if text.len() != 64 {
        return Err(format!("must be 64 hex characters, got {}", text.len()));
    }
    hex::decode_to_slice(text, &mut key).map_err(|_| "must be 64 hex characters".to_string())?;
    Ok(key)
}

pub(super) fn validate(file: &file::File, source: &Path) -> Result<Config, Vec<Problem>> {
    let dir = source.parent().unwrap_or(Path::new("."));
    let mut c = Checker {
        dir,
        problems: Vec::new(),
    };
    c.unknown("", &file.unknown);

    let s = c.table("server", &file.server);
    c.unknown("server", &s.unknown);
    let server = ServerConfig {
        listen: c.addr("server.listen", &s.listen, "127.0.0.1:8080"),
        admin_listen: c.addr("server.admin_listen", &s.admin_listen, "127.0.0.1:9100"),
        threads: c.int("server.threads", &s.threads, 2, 1, 1024) as usize,
        grace_period: c.secs("server.grace_period_secs", &s.grace_period_secs, 5, 0, 3600),
        send_buffer: matches!(s.send_buffer_bytes, Leaf::Value(_) | Leaf::Bad { .. }).then(|| {
            c.int(
                "server.send_buffer_bytes",
                &s.send_buffer_bytes,
                0,
                4096,
                64 << 20,
            ) as usize
        }),
    };
    if listeners_conflict(server.listen, server.admin_listen) {
        c.problem(
            "server.admin_listen",
            format!(
                "must not share a port with server.listen ({}), got {}",
                server.listen, server.admin_listen
            ),
        );
    }

    let a = c.table("auth", &file.auth);
    c.unknown("auth", &a.unknown);
    if let Some(algorithm) = c.leaf("auth.algorithm", &a.algorithm) {
        if algorithm != "HS256" {
            c.problem(
                "auth.algorithm",
                format!("must be \"HS256\", got {algorithm:?}"),
            );
        }
    }
    let audience = c
        .leaf("auth.audience", &a.audience)
        .unwrap_or_else(|| "framecache".to_string());
    if audience.is_empty() || audience.len() > 256 {
        c.problem(
            "auth.audience",
            format!("must be 1 to 256 characters, got {audience:?}"),
        );
    }
    let auth = AuthConfig {
        // RFC 7518 §3.2: an HS256 key must be at least as long as the hash output.
        secret: c.secret("auth.secret_file", &a.secret_file, 32),
        audience,
        leeway: c.secs("auth.leeway_secs", &a.leeway_secs, 30, 0, 300),
    };

    let m = c.table("admin", &file.admin);
    c.unknown("admin", &m.unknown);
    let admin = AdminConfig {
        token: c.secret("admin.token_file", &m.token_file, 16),
    };
    if !admin.token.0.iter().all(|b| b.is_ascii_graphic()) {
        c.problem(
            "admin.token_file",
            "must hold printable ASCII without spaces (it is sent in a header)",
        );
    }

    let o = c.table("origin", &file.origin);
    c.unknown("origin", &o.unknown);
    let mut addresses = Vec::new();
    if let Some(list) = c.required("origin.addresses", &o.addresses) {
        if list.is_empty() {
            c.problem("origin.addresses", "must name at least one address, got []");
        }
        for (i, text) in list.iter().enumerate() {
            if let Some(addr) = c.socket_addr(&format!("origin.addresses[{i}]"), text) {
                addresses.push(addr);
            }
        }
    }
    let signing_key = match c.file("origin.signing_key_file", &o.signing_key_file) {
        Some((_, bytes)) => match parse_signing_key(&String::from_utf8_lossy(&bytes)) {
            Ok(key) => key,
            Err(message) => {
                c.problem("origin.signing_key_file", message);
                [0; 32]
            }
        },
        None => [0; 32],
    };
    let origin = OriginConfig {
        addresses,
        connect_timeout: c.millis(
            "origin.connect_timeout_ms",
            &o.connect_timeout_ms,
            500,
            1,
            60_000,
        ),
        response_timeout: c.millis(
            "origin.response_timeout_ms",
            &o.response_timeout_ms,
            3000,
            1,
            600_000,
        ),
        signing_key,
        max_frame_bytes: c.int(
            "origin.max_frame_bytes",
            &o.max_frame_bytes,
            4 << 20,
            1,
            256 << 20,
        ) as usize,
    };

    let k = c.table("cache", &file.cache);
    c.unknown("cache", &k.unknown);
    let cache = CacheConfig {
        max_bytes: c.int("cache.max_bytes", &k.max_bytes, 256 << 20, 1, 1 << 40) as u64,
        latest_fresh: c.millis(
            "cache.latest_fresh_ms",
            &k.latest_fresh_ms,
            1000,
            0,
            3_600_000,
        ),
        stale_if_error: c.secs(
            "cache.stale_if_error_secs",
            &k.stale_if_error_secs,
            30,
            0,
            86_400,
        ),
        coalesce_wait: c.millis(
            "cache.coalesce_wait_ms",
            &k.coalesce_wait_ms,
            3000,
            0,
            60_000,
        ),
        stale_while_revalidate: c.millis(
            "cache.stale_while_revalidate_ms",
            &k.stale_while_revalidate_ms,
            1000,
            0,
            3_600_000,
        ),
    };

    let d = c.table("delivery", &file.delivery);
    c.unknown("delivery", &d.unknown);
    let delivery = DeliveryConfig {
        stream_interval: c.millis(
            "delivery.stream_interval_ms",
            &d.stream_interval_ms,
            1000,
            10,
            60_000,
        ),
        write_timeout: c.millis(
            "delivery.write_timeout_ms",
            &d.write_timeout_ms,
            10_000,
            1,
            600_000,
        ),
        idle_timeout: c.secs(
            "delivery.idle_timeout_secs",
            &d.idle_timeout_secs,
            60,
            1,
            3600,
        ),
        target_time: c.millis(
            "delivery.target_time_ms",
            &d.target_time_ms,
            1000,
            50,
            60_000,
        ),
        render_threads: c.int(
            "delivery.render_threads",
            &d.render_threads,
            std::thread::available_parallelism().map_or(2, |n| n.get().min(4)) as i64,
            1,
            64,
        ) as usize,
        renditions: renditions(&mut c, &d.variants),
    };

    // The largest frame the origin may send must fit the cache twice over (its latest and its
    // by-hash entry, each charged its body and overhead), or such frames are fetched, served
    // and never kept. Only compared when both values were read without a problem of their own.
    let read_ok = |key: &str| !c.problems.iter().any(|p| p.key == key);
    let needed = 2 * (origin.max_frame_bytes as u64 + crate::cache::store::ENTRY_OVERHEAD as u64);
    if read_ok("cache.max_bytes") && read_ok("origin.max_frame_bytes") && cache.max_bytes < needed {
        c.problem(
            "cache.max_bytes",
            format!(
                "must be at least twice origin.max_frame_bytes ({}) plus entry overhead, {needed}, got {}",
                origin.max_frame_bytes, cache.max_bytes
            ),
        );
    }

    if c.problems.is_empty() {
        Ok(Config {
            server,
            auth,
            admin,
            origin,
            cache,
            delivery,
        })
    } else {
        Err(c.problems)
    }
}

/// Renditions one proxy may serve, `full` included.
const MAX_RENDITIONS: usize = 16;

/// The built-in renditions, redefined or joined by `[[delivery.variants]]`.
fn renditions(c: &mut Checker, leaf: &Leaf<Vec<Leaf<file::Variant>>>) -> Catalogue {
    let tables = c.leaf("delivery.variants", leaf).unwrap_or_default();
    let mut configured: Vec<Rendition> = Vec::new();
    for (i, table) in tables.iter().enumerate() {
        let at = format!("delivery.variants[{i}]");
        if matches!(table, Leaf::Bad { .. }) {
            c.table(&at, table);
            continue;
        }
        let t = c.table(&at, table);
        c.unknown(&at, &t.unknown);
        let key = format!("{at}.name");
        let Some(name) = c.required(&key, &t.name) else {
            continue;
        };
        let well_formed = (1..=32).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !well_formed {
            c.problem(
                &key,
                format!("must be 1 to 32 of a-z, 0-9, - and _, got {name:?}"),
            );
            continue;
        }
        if name == "full" {
            c.problem(
                &key,
                "\"full\" is the verified original and cannot be redefined",
            );
            continue;
        }
        let max_width_key = format!("{at}.max_width");
        let Some(max_width) = c.required(&max_width_key, &t.max_width) else {
            continue;
        };
        if !(16..=8192).contains(&max_width) {
            c.problem(
                &max_width_key,
                format!("must be between 16 and 8192, got {max_width}"),
            );
            continue;
        }
        let quality = c.int(
            &format!("{at}.quality"),
            &t.quality,
            DEFAULT_QUALITY.into(),
            1,
            100,
        );
        let Some(variant) = Variant::intern(&name) else {
            c.problem(&key, "too many distinct rendition names in this process");
            continue;
        };
        if configured.iter().any(|r| r.variant == variant) {
            c.problem(&key, format!("{name:?} is defined twice"));
            continue;
        }
        configured.push(Rendition {
            variant,
            max_width: max_width as u32,
            quality: quality as u8,
        });
    }
    let built_in = Catalogue::built_in();
    let kept: Vec<Rendition> = built_in
        .all()
        .iter()
        .filter(|r| !configured.iter().any(|c| c.variant == r.variant))
        .copied()
        .collect();
    let catalogue = Catalogue::new(kept.into_iter().chain(configured));
    if catalogue.all().len() > MAX_RENDITIONS {
        c.problem(
            "delivery.variants",
            format!(
                "at most {MAX_RENDITIONS} renditions in all (full and the built-ins count), got {}",
                catalogue.all().len()
            ),
        );
    }
    catalogue
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn listeners_conflict_on_a_shared_port() {
        for (a, b) in [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("127.0.0.1:8080", "0.0.0.0:8080"),
            ("[::]:8080", "127.0.0.1:8080"),
            ("10.0.0.1:8080", "[::]:8080"),
            ("[::1]:8080", "[::1]:8080"),
            ("[::ffff:127.0.0.1]:8080", "127.0.0.1:8080"),
        ] {
            assert!(listeners_conflict(addr(a), addr(b)), "{a} {b}");
        }
        for (a, b) in [
            ("127.0.0.1:8080", "127.0.0.1:9100"),
            ("0.0.0.0:8080", "0.0.0.0:9100"),
            ("127.0.0.1:8080", "127.0.0.2:8080"),
            ("127.0.0.1:8080", "[::1]:8080"),
            // Port 0: each listener gets its own free port.
            ("0.0.0.0:0", "127.0.0.1:0"),
        ] {
            assert!(!listeners_conflict(addr(a), addr(b)), "{a} {b}");
        }
    }

    #[test]
    fn reads_are_capped() {
        let dir = std::env::temp_dir().join(format!("framecache-capped-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("file");
        std::fs::write(&path, [b'x'; 10]).unwrap();
        assert_eq!(read_capped(&path, 10).unwrap(), Some(vec![b'x'; 10]));
        assert_eq!(read_capped(&path, 9).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
        // An endless file ends at the cap.
        #[cfg(unix)]
        assert_eq!(read_capped(Path::new("/dev/zero"), 64).unwrap(), None);
    }
}
