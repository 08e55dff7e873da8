//! From the file mirror to a validated [`Config`], collecting every problem on the way.
//!
//! One function per TOML table reads its keys; a key left out, or one with a problem, takes its
//! value from the section's `Default`, the one place defaults live. [`cross_checks`] then
//! compares keys with one another, once every table is read.

use std::io::Read;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use super::file::{self, Leaf, Unknown};
use super::{
    AdminConfig, AuthConfig, CacheConfig, ClusterConfig, Config, DeliveryConfig, LimitsConfig,
    Members, OriginConfig, Problem, Secret, ServerConfig, TlsConfig, TlsKey,
};
use crate::cache::store::ENTRY_OVERHEAD;
use crate::rendition::{Catalogue, Rendition, Variant, DEFAULT_QUALITY};

/// Largest secret or key file read. Real ones are tens of bytes; the cap keeps a wrong path
/// (a device such as `/dev/zero`, a log file) from hanging or exhausting `check-config`.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// Renditions one proxy may serve, `full` included.
const MAX_RENDITIONS: usize = 16;

pub(super) fn validate(file: &file::File, source: &Path) -> Result<Config, Vec<Problem>> {
    let mut c = Checker {
        dir: source.parent().unwrap_or(Path::new(".")),
        problems: Vec::new(),
    };
    c.unknown("", &file.unknown);
    // Fields are read in the order written, so problems come table by table.
    let config = Config {
        server: server(&mut c, &file.server),
        auth: auth(&mut c, &file.auth),
        admin: admin(&mut c, &file.admin),
        origin: origin(&mut c, &file.origin),
        cache: cache(&mut c, &file.cache),
        delivery: delivery(&mut c, &file.delivery),
        limits: limits(&mut c, &file.limits),
        tls: tls(&mut c, &file.tls),
        cluster: cluster(&mut c, &file.cluster),
    };
    cross_checks(&mut c, &config);
    if c.problems.is_empty() {
        Ok(config)
    } else {
        Err(c.problems)
    }
}

/// `[server]`
fn server(c: &mut Checker, leaf: &Leaf<file::Server>) -> ServerConfig {
    let t = c.table("server", leaf);
    c.unknown("server", &t.unknown);
    let d = ServerConfig::default();
    let tls_listen = c.addr("server.tls_listen", &t.tls_listen);
    // Left out, the plaintext listener takes its default, unless the TLS one is set.
    let listen = match (&t.listen, &t.tls_listen) {
        (Leaf::Absent, Leaf::Absent) => d.listen,
        (Leaf::Absent, _) => None,
        _ => c.addr("server.listen", &t.listen).or(d.listen),
    };
    ServerConfig {
        listen,
        tls_listen,
        h2: c.leaf("server.h2", &t.h2).unwrap_or(d.h2),
        admin_listen: c
            .addr("server.admin_listen", &t.admin_listen)
            .unwrap_or(d.admin_listen),
        threads: c
            .int("server.threads", &t.threads, 1..=1024)
            .map_or(d.threads, |v| v as usize),
        grace_period: c
            .secs("server.grace_period_secs", &t.grace_period_secs, 0..=3600)
            .unwrap_or(d.grace_period),
        upgrade_sock: c
            .leaf("server.upgrade_sock", &t.upgrade_sock)
            .map_or(d.upgrade_sock, |path| c.dir.join(path)),
        send_buffer: c
            .int(
                "server.send_buffer_bytes",
                &t.send_buffer_bytes,
                4096..=(64 << 20),
            )
            .map(|v| v as usize)
            .or(d.send_buffer),
    }
}

/// `[auth]`
fn auth(c: &mut Checker, leaf: &Leaf<file::Auth>) -> AuthConfig {
    let t = c.table("auth", leaf);
    c.unknown("auth", &t.unknown);
    let d = AuthConfig::default();
    if let Some(algorithm) = c.leaf("auth.algorithm", &t.algorithm) {
        if algorithm != "HS256" {
            c.problem(
                "auth.algorithm",
                format!("must be \"HS256\", got {algorithm:?}"),
            );
        }
    }
    let audience = c.leaf("auth.audience", &t.audience).unwrap_or(d.audience);
    if audience.is_empty() || audience.len() > 256 {
        c.problem(
            "auth.audience",
            format!("must be 1 to 256 characters, got {audience:?}"),
        );
    }
    AuthConfig {
        // RFC 7518 §3.2: an HS256 key must be at least as long as the hash output.
        secret: c.secret("auth.secret_file", &t.secret_file, 32),
        previous_secrets: c
            .list("auth.previous_secret_files", &t.previous_secret_files)
            .into_iter()
            .map(|(key, leaf)| c.secret(&key, &leaf, 32))
            .collect(),
        audience,
        leeway: c
            .secs("auth.leeway_secs", &t.leeway_secs, 0..=300)
            .unwrap_or(d.leeway),
        link_ttl: c
            .secs("auth.link_ttl_secs", &t.link_ttl_secs, 1..=86_400)
            .unwrap_or(d.link_ttl),
    }
}

/// `[admin]`
fn admin(c: &mut Checker, leaf: &Leaf<file::Admin>) -> AdminConfig {
    let t = c.table("admin", leaf);
    c.unknown("admin", &t.unknown);
    let token = c.secret("admin.token_file", &t.token_file, 16);
    if !token.0.iter().all(|b| b.is_ascii_graphic()) {
        c.problem(
            "admin.token_file",
            "must hold printable ASCII without spaces (it is sent in a header)",
        );
    }
    AdminConfig { token }
}

/// `[origin]`
fn origin(c: &mut Checker, leaf: &Leaf<file::Origin>) -> OriginConfig {
    let t = c.table("origin", leaf);
    c.unknown("origin", &t.unknown);
    let d = OriginConfig::default();
    let mut addresses = Vec::new();
    if let Some(list) = c.required("origin.addresses", &t.addresses) {
        if list.is_empty() {
            c.problem("origin.addresses", "must name at least one address, got []");
        }
        for (i, text) in list.iter().enumerate() {
            addresses.extend(c.socket_addr(&format!("origin.addresses[{i}]"), text));
        }
    }
    let signing_key = c
        .signing_key("origin.signing_key_file", &t.signing_key_file)
        .unwrap_or(d.signing_key);
    let previous_signing_keys = c
        .list(
            "origin.previous_signing_key_files",
            &t.previous_signing_key_files,
        )
        .into_iter()
        .filter_map(|(key, leaf)| c.signing_key(&key, &leaf))
        .collect();
    OriginConfig {
        addresses,
        signing_key,
        previous_signing_keys,
        connect_timeout: c
            .millis(
                "origin.connect_timeout_ms",
                &t.connect_timeout_ms,
                1..=60_000,
            )
            .unwrap_or(d.connect_timeout),
        response_timeout: c
            .millis(
                "origin.response_timeout_ms",
                &t.response_timeout_ms,
                1..=600_000,
            )
            .unwrap_or(d.response_timeout),
        max_frame_bytes: c
            .int(
                "origin.max_frame_bytes",
                &t.max_frame_bytes,
                1..=(256 << 20),
            )
            .map_or(d.max_frame_bytes, |v| v as usize),
    }
}

/// `[cache]`
fn cache(c: &mut Checker, leaf: &Leaf<file::Cache>) -> CacheConfig {
    let t = c.table("cache", leaf);
    c.unknown("cache", &t.unknown);
    let d = CacheConfig::default();
    CacheConfig {
        max_bytes: c
            .int("cache.max_bytes", &t.max_bytes, 1..=(1 << 40))
            .map_or(d.max_bytes, |v| v as u64),
        latest_fresh: c
            .millis("cache.latest_fresh_ms", &t.latest_fresh_ms, 0..=3_600_000)
            .unwrap_or(d.latest_fresh),
        stale_if_error: c
            .secs(
                "cache.stale_if_error_secs",
                &t.stale_if_error_secs,
                0..=86_400,
            )
            .unwrap_or(d.stale_if_error),
        coalesce_wait: c
            .millis("cache.coalesce_wait_ms", &t.coalesce_wait_ms, 0..=60_000)
            .unwrap_or(d.coalesce_wait),
        stale_while_revalidate: c
            .millis(
                "cache.stale_while_revalidate_ms",
                &t.stale_while_revalidate_ms,
                0..=3_600_000,
            )
            .unwrap_or(d.stale_while_revalidate),
    }
}

/// `[delivery]`
fn delivery(c: &mut Checker, leaf: &Leaf<file::Delivery>) -> DeliveryConfig {
    let t = c.table("delivery", leaf);
    c.unknown("delivery", &t.unknown);
    let d = DeliveryConfig::default();
    DeliveryConfig {
        stream_interval: c
            .millis(
                "delivery.stream_interval_ms",
                &t.stream_interval_ms,
                10..=60_000,
            )
            .unwrap_or(d.stream_interval),
        write_timeout: c
            .millis(
                "delivery.write_timeout_ms",
                &t.write_timeout_ms,
                1..=600_000,
            )
            .unwrap_or(d.write_timeout),
        idle_timeout: c
            .secs("delivery.idle_timeout_secs", &t.idle_timeout_secs, 1..=3600)
            .unwrap_or(d.idle_timeout),
        target_time: c
            .millis("delivery.target_time_ms", &t.target_time_ms, 50..=60_000)
            .unwrap_or(d.target_time),
        render_threads: c
            .int("delivery.render_threads", &t.render_threads, 1..=64)
            .map_or(d.render_threads, |v| v as usize),
        renditions: renditions(c, &t.variants, &d.renditions),
    }
}

/// Largest certificate chain or key file read.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// `[tls]`: the certificate chain and key, parsed and checked against each other now, so that a
/// bad pair is reported with its key path rather than found when the listener starts.
fn tls(c: &mut Checker, leaf: &Leaf<file::Tls>) -> Option<TlsConfig> {
    if matches!(leaf, Leaf::Absent) {
        return None;
    }
    let t = c.table("tls", leaf);
    c.unknown("tls", &t.unknown);
    let cert_file = c.path("tls.cert_file", &t.cert_file);
    let key_file = c.path("tls.key_file", &t.key_file);
    let chain = c.file_capped("tls.cert_file", &t.cert_file, MAX_PEM_BYTES);
    let key = c.file_capped("tls.key_file", &t.key_file, MAX_PEM_BYTES);
    let (cert_file, key_file, chain, key) = (cert_file?, key_file?, chain?, key?);
    let chain = match pem_chain(&chain) {
        Ok(chain) => chain,
        Err(why) => {
            c.problem("tls.cert_file", why);
            return None;
        }
    };
    let key = match pem_key(&key) {
        Ok(key) => key,
        Err(why) => {
            c.problem("tls.key_file", why);
            return None;
        }
    };
    let config = TlsConfig {
        cert_file,
        key_file,
        chain,
        key,
    };
    if let Err(why) = crate::tls::check(&config) {
        c.problem("tls.key_file", why);
        return None;
    }
    Some(config)
}

/// The certificates of a PEM file, DER, in order.
fn pem_chain(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let chain = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate in it (a PEM chain, leaf first)".into());
    }
    Ok(chain)
}

/// The private key of a PEM file: PKCS#8, PKCS#1 or SEC1.
fn pem_key(pem: &[u8]) -> Result<TlsKey, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    let key = PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| format!("no PEM private key (PKCS#8, PKCS#1 or SEC1) in it: {e}"))?;
    let der = Secret(key.secret_der().to_vec());
    Ok(match key {
        PrivateKeyDer::Pkcs1(_) => TlsKey::Pkcs1(der),
        PrivateKeyDer::Sec1(_) => TlsKey::Sec1(der),
        _ => TlsKey::Pkcs8(der),
    })
}

/// `[cluster]`: absent for a node that works alone.
fn cluster(c: &mut Checker, leaf: &Leaf<file::Cluster>) -> Option<ClusterConfig> {
    if matches!(leaf, Leaf::Absent) {
        return None;
    }
    let t = c.table("cluster", leaf);
    c.unknown("cluster", &t.unknown);
    let node = match c.leaf("cluster.node", &t.node) {
        Some(name) => name,
        None => host_name(),
    };
    if let Err(why) = member_name(&node) {
        c.problem("cluster.node", why);
    }
    let peer_listen = c.required("cluster.peer_listen", &t.peer_listen);
    let peer_listen = peer_listen.and_then(|text| c.socket_addr("cluster.peer_listen", &text));
    let peers = c.list("cluster.peers", &t.peers);
    let dns = c
        .leaf("cluster.peers_dns", &t.peers_dns)
        .filter(|d| !d.is_empty());
    let members = match (peers.is_empty(), dns) {
        (false, Some(_)) => {
            c.problem(
                "cluster.peers_dns",
                "give cluster.peers or cluster.peers_dns, not both",
            );
            None
        }
        (true, None) => {
            c.problem("cluster.peers", "give cluster.peers or cluster.peers_dns");
            None
        }
        (true, Some(dns)) => dns_members(c, &dns),
        (false, None) => static_members(c, &node, peers),
    };
    let peer_key = c.secret("cluster.peer_key_file", &t.peer_key_file, 32);
    let dns_refresh = c.secs("cluster.dns_refresh_secs", &t.dns_refresh_secs, 1..=3600);
    let health_check = c.millis("cluster.health_check_ms", &t.health_check_ms, 100..=60_000);
    Some(ClusterConfig {
        node,
        peer_listen: peer_listen?,
        members: members?,
        peer_key,
        dns_refresh: dns_refresh.unwrap_or(ClusterConfig::DNS_REFRESH),
        health_check: health_check.unwrap_or(ClusterConfig::HEALTH_CHECK),
    })
}

/// `cluster.peers`: `name=ip:port` each, names and addresses unique, this node among them.
fn static_members(
    c: &mut Checker,
    node: &str,
    peers: Vec<(String, Leaf<String>)>,
) -> Option<Members> {
    let mut members: Vec<(String, SocketAddr)> = Vec::new();
    for (key, leaf) in peers {
        let Some(text) = c.leaf(&key, &leaf) else {
            continue;
        };
        let Some((name, addr)) = text.split_once('=') else {
            c.problem(&key, format!("must be \"name=ip:port\", got {text:?}"));
            continue;
        };
        if let Err(why) = member_name(name) {
            c.problem(&key, why);
            continue;
        }
        let Some(addr) = c.socket_addr(&key, addr) else {
            continue;
        };
        if members.iter().any(|(n, a)| n == name || *a == addr) {
            c.problem(&key, format!("names a member twice: {text:?}"));
            continue;
        }
        members.push((name.to_string(), addr));
    }
    if !members.iter().any(|(name, _)| name == node) {
        c.problem(
            "cluster.peers",
            format!("must list this node, {node:?} (cluster.node)"),
        );
    }
    Some(Members::Static(members))
}

/// `cluster.peers_dns`: `host:port`.
fn dns_members(c: &mut Checker, text: &str) -> Option<Members> {
    let parsed = text
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
        .filter(|(host, port)| !host.is_empty() && *port != 0 && host.len() <= 253);
    match parsed {
        Some((host, port))
            if host
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-._".contains(ch)) =>
        {
            Some(Members::Dns {
                host: host.to_string(),
                port,
            })
        }
        _ => {
            c.problem(
                "cluster.peers_dns",
                format!("must be a DNS name and port like \"peers.example:7443\", got {text:?}"),
            );
            None
        }
    }
}

/// A member's name: 1 to 63 letters, digits, `-`, `.` or `_` (a host or pod name).
pub fn member_name(name: &str) -> Result<(), String> {
    let ok = (1..=63).contains(&name.len())
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-._".contains(ch));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be 1 to 63 letters, digits, '-', '.' or '_', got {name:?}"
        ))
    }
}

/// This host's name, the default of `cluster.node`.
fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// `[limits]`
fn limits(c: &mut Checker, leaf: &Leaf<file::Limits>) -> LimitsConfig {
    let t = c.table("limits", leaf);
    c.unknown("limits", &t.unknown);
    let d = LimitsConfig::default();
    let count = |c: &mut Checker, key: &str, leaf: &Leaf<i64>, range, default: usize| {
        c.int(key, leaf, range).map_or(default, |v| v as usize)
    };
    LimitsConfig {
        max_connections: count(
            c,
            "limits.max_connections",
            &t.max_connections,
            1..=10_000_000,
            d.max_connections,
        ),
        max_connections_per_ip: count(
            c,
            "limits.max_connections_per_ip",
            &t.max_connections_per_ip,
            1..=10_000_000,
            d.max_connections_per_ip,
        ),
        header_bytes: count(
            c,
            "limits.header_bytes",
            &t.header_bytes,
            1024..=(1 << 20),
            d.header_bytes,
        ),
        header_timeout: c
            .millis(
                "limits.header_timeout_ms",
                &t.header_timeout_ms,
                100..=600_000,
            )
            .unwrap_or(d.header_timeout),
        owner_origin_rps: c
            .int(
                "limits.owner_origin_rps",
                &t.owner_origin_rps,
                1..=1_000_000,
            )
            .map_or(d.owner_origin_rps, |v| v as u32),
        streams_per_owner: count(
            c,
            "limits.streams_per_owner",
            &t.streams_per_owner,
            1..=100_000,
            d.streams_per_owner,
        ),
        stream_max: c
            .secs("limits.stream_max_secs", &t.stream_max_secs, 1..=604_800)
            .unwrap_or(d.stream_max),
        not_found_ttl: c
            .millis(
                "limits.not_found_ttl_ms",
                &t.not_found_ttl_ms,
                0..=3_600_000,
            )
            .unwrap_or(d.not_found_ttl),
    }
}

/// `[[delivery.variants]]`: the default renditions, redefined or joined by the tables.
fn renditions(
    c: &mut Checker,
    leaf: &Leaf<Vec<Leaf<file::Variant>>>,
    defaults: &Catalogue,
) -> Catalogue {
    let tables = c.leaf("delivery.variants", leaf).unwrap_or_default();
    let mut configured: Vec<Rendition> = Vec::new();
    for (i, table) in tables.iter().enumerate() {
        let at = format!("delivery.variants[{i}]");
        let Some(rendition) = variant(c, &at, table) else {
            continue;
        };
        if configured.iter().any(|r| r.variant == rendition.variant) {
            let name = rendition.variant.as_str();
            c.problem(&format!("{at}.name"), format!("{name:?} is defined twice"));
            continue;
        }
        configured.push(rendition);
    }
    let kept: Vec<Rendition> = defaults
        .all()
        .iter()
        .filter(|built_in| !configured.iter().any(|r| r.variant == built_in.variant))
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

/// One `[[delivery.variants]]` table, at key path `at`; `None` when it has a problem.
fn variant(c: &mut Checker, at: &str, leaf: &Leaf<file::Variant>) -> Option<Rendition> {
    let Leaf::Value(t) = leaf else {
        // Not a table: say so, without also reporting its keys missing.
        c.table(at, leaf);
        return None;
    };
    c.unknown(at, &t.unknown);
    let name_key = format!("{at}.name");
    let name = c.required(&name_key, &t.name)?;
    let well_formed = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !well_formed {
        let message = format!("must be 1 to 32 of a-z, 0-9, - and _, got {name:?}");
        c.problem(&name_key, message);
        return None;
    }
    if name == "full" {
        let message = "\"full\" is the verified original and cannot be redefined";
        c.problem(&name_key, message);
        return None;
    }
    let width_key = format!("{at}.max_width");
    let max_width = c.required(&width_key, &t.max_width)?;
    if !(16..=8192).contains(&max_width) {
        let message = format!("must be between 16 and 8192, got {max_width}");
        c.problem(&width_key, message);
        return None;
    }
    let quality = c
        .int(&format!("{at}.quality"), &t.quality, 1..=100)
        .map_or(DEFAULT_QUALITY, |v| v as u8);
    let Some(variant) = Variant::intern(&name) else {
        c.problem(
            &name_key,
            "too many distinct rendition names in this process",
        );
        return None;
    };
    Some(Rendition {
        variant,
        max_width: max_width as u32,
        quality,
    })
}

/// Checks that compare keys with one another, once every table is read.
fn cross_checks(c: &mut Checker, config: &Config) {
    let Config {
        server,
        origin,
        cache,
        ..
    } = config;
    let listeners = [
        ("server.listen", server.listen),
        ("server.tls_listen", server.tls_listen),
        ("server.admin_listen", Some(server.admin_listen)),
        (
            "cluster.peer_listen",
            config.cluster.as_ref().map(|c| c.peer_listen),
        ),
    ];
    for (i, (key, addr)) in listeners.iter().enumerate() {
        for (other, other_addr) in &listeners[..i] {
            if let (Some(a), Some(b)) = (addr, other_addr) {
                if listeners_conflict(*a, *b) {
                    c.problem(
                        key,
                        format!("must not share a port with {other} ({b}), got {a}"),
                    );
                }
            }
        }
    }
    if server.listen.is_none() && server.tls_listen.is_none() {
        c.problem(
            "server.listen",
            "give server.listen, server.tls_listen or both",
        );
    }
    match (server.tls_listen, &config.tls) {
        (Some(_), None) if read_ok_all(c, "tls.") => c.problem(
            "tls",
            "server.tls_listen needs a [tls] table with cert_file and key_file",
        ),
        (None, Some(_)) => c.problem("tls", "[tls] is set but server.tls_listen is not"),
        _ => {}
    }
    // The largest frame the origin may send must fit the cache twice over (its latest and its
    // by-hash entry, each charged its body and overhead), or such frames are fetched, served
    // and never kept. Only compared when both values were read without a problem of their own.
    let read_ok = |key: &str| !c.problems.iter().any(|p| p.key == key);
    let needed = 2 * (origin.max_frame_bytes as u64 + ENTRY_OVERHEAD as u64);
    if read_ok("cache.max_bytes") && read_ok("origin.max_frame_bytes") && cache.max_bytes < needed {
        c.problem(
            "cache.max_bytes",
            format!(
                "must be at least twice origin.max_frame_bytes ({}) plus entry overhead, {needed}, got {}",
                origin.max_frame_bytes, cache.max_bytes
            ),
        );
    }
}

/// Whether no problem has been found under `prefix` yet (so a missing table is not reported on
/// top of the problem that left it out).
fn read_ok_all(c: &Checker, prefix: &str) -> bool {
    !c.problems.iter().any(|p| p.key.starts_with(prefix))
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

/// Collects problems while values are read. Each reader reports what is wrong with a key and
/// returns `None` for a key absent or wrong, which then takes its default.
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
            let name = key_name(name);
            let key = if table.is_empty() {
                name
            } else {
                format!("{table}.{name}")
            };
            self.problem(&key, format!("unknown key (value {})", shown(value)));
        }
    }

    /// A table: its fields, or an empty default (so its own required keys are reported).
    fn table<T: Default + Clone>(&mut self, key: &str, leaf: &Leaf<T>) -> T {
        match leaf {
            Leaf::Value(v) => v.clone(),
            Leaf::Absent => T::default(),
            Leaf::Bad { value, .. } => {
                self.problem(key, format!("must be a table, got {}", shown(value)));
                T::default()
            }
        }
    }

    fn leaf<T: Clone>(&mut self, key: &str, leaf: &Leaf<T>) -> Option<T> {
        match leaf {
            Leaf::Value(v) => Some(v.clone()),
            Leaf::Absent => None,
            Leaf::Bad { value, error } => {
                self.problem(key, format!("{error}, got {}", shown(value)));
                None
            }
        }
    }

    /// The items of an optional list, each with its key path (`key[i]`); none when absent.
    fn list<T: Clone>(&mut self, key: &str, leaf: &Leaf<Vec<Leaf<T>>>) -> Vec<(String, Leaf<T>)> {
        self.leaf(key, leaf)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, item)| (format!("{key}[{i}]"), item))
            .collect()
    }

    /// A frame-signing key file: 64 hex characters.
    fn signing_key(&mut self, key: &str, leaf: &Leaf<String>) -> Option<[u8; 32]> {
        let bytes = self.file(key, leaf)?;
        parse_signing_key(&String::from_utf8_lossy(&bytes))
            .map_err(|message| self.problem(key, message))
            .ok()
    }

    fn required<T: Clone>(&mut self, key: &str, leaf: &Leaf<T>) -> Option<T> {
        if matches!(leaf, Leaf::Absent) {
            self.problem(key, "required key is missing");
        }
        self.leaf(key, leaf)
    }

    fn int(&mut self, key: &str, leaf: &Leaf<i64>, range: RangeInclusive<i64>) -> Option<i64> {
        let v = self.leaf(key, leaf)?;
        if !range.contains(&v) {
            let (min, max) = range.into_inner();
            self.problem(key, format!("must be between {min} and {max}, got {v}"));
            return None;
        }
        Some(v)
    }

    /// Milliseconds; `range` is never negative.
    fn millis(
        &mut self,
        key: &str,
        leaf: &Leaf<i64>,
        range: RangeInclusive<i64>,
    ) -> Option<Duration> {
        let v = self.int(key, leaf, range)?;
        Some(Duration::from_millis(v as u64))
    }

    /// Seconds; `range` is never negative.
    fn secs(
        &mut self,
        key: &str,
        leaf: &Leaf<i64>,
        range: RangeInclusive<i64>,
    ) -> Option<Duration> {
        let v = self.int(key, leaf, range)?;
        Some(Duration::from_secs(v as u64))
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

    fn addr(&mut self, key: &str, leaf: &Leaf<String>) -> Option<SocketAddr> {
        let text = self.leaf(key, leaf)?;
        self.socket_addr(key, &text)
    }

    /// Reads a file named by a required key, relative to the configuration's folder, at most
    /// [`MAX_FILE_BYTES`] of it.
    fn file(&mut self, key: &str, leaf: &Leaf<String>) -> Option<Vec<u8>> {
        self.file_capped(key, leaf, MAX_FILE_BYTES)
    }

    /// The path a required key names, relative to the configuration's folder (not read).
    fn path(&mut self, key: &str, leaf: &Leaf<String>) -> Option<std::path::PathBuf> {
        let name = self.leaf(key, leaf)?;
        Some(self.dir.join(name))
    }

    /// Reads a file named by a required key, at most `cap` bytes of it.
    fn file_capped(&mut self, key: &str, leaf: &Leaf<String>, cap: u64) -> Option<Vec<u8>> {
        let name = self.required(key, leaf)?;
        match read_capped(&self.dir.join(&name), cap) {
            Ok(Some(bytes)) => Some(bytes),
            Ok(None) => {
                self.problem(key, format!("{name:?} is larger than {cap} bytes"));
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
        let Some(mut bytes) = self.file(key, leaf) else {
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

/// A key as a key path names it: bare when TOML allows it bare, else quoted with its escapes,
/// so that an empty key, or one holding a dot, a space or a line break, is still one visible
/// segment of one line.
fn key_name(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

/// A value as inline TOML on one line. TOML's own printer writes a string holding a line break
/// as a multi-line string, which would split a problem over several lines.
fn shown(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => format!("{text:?}"),
        toml::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(shown).collect();
            format!("[{}]", items.join(", "))
        }
        toml::Value::Table(table) if table.is_empty() => "{}".to_string(),
        toml::Value::Table(table) => {
            let pairs: Vec<String> = table
                .iter()
                .map(|(name, value)| format!("{} = {}", key_name(name), shown(value)))
                .collect();
            format!("{{ {} }}", pairs.join(", "))
        }
        other => other.to_string(),
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

    /// Found by fuzzing (fuzz target `config`): a string value holding a line break was
    /// printed as a TOML multi-line string, and a key that is not bare (empty, or holding a
    /// line break) was printed as it is, so one problem spread over several lines or named no
    /// key. Every problem is one line and names a key path.
    #[test]
    fn problems_are_one_line_and_name_their_key() {
        let dir = std::env::temp_dir();
        let problems = |text: &str| {
            let parsed: file::File = toml::from_str(text).unwrap();
            let problems = validate(&parsed, &dir.join("framecache.toml")).unwrap_err();
            problems
                .into_iter()
                .map(|p| (p.key.clone(), p.to_string()))
                .collect::<Vec<_>>()
        };
        for (text, key) in [
            (
                "[ormgin]\nsigning_key_file = \"dev/fr'='a\\nme.key\"\n",
                "ormgin",
            ),
            ("\"\" = 1\n", "\"\""),
            ("\"a\\nb\" = 1\n", "\"a\\nb\""),
            ("[server]\n\"a.b c\" = 1\n", "server.\"a.b c\""),
            (
                "[server]\nthreads = \"\"\"two\nthreads\"\"\"\n",
                "server.threads",
            ),
            ("server = \"\"\"a\nb\"\"\"\n", "server"),
            ("x = [{ \"k\\n\" = \"\"\"v\nw\"\"\" }]\n", "x"),
        ] {
            let problems = problems(text);
            let found = problems.iter().find(|(k, _)| k == key);
            let (_, line) = found.unwrap_or_else(|| panic!("{key} in {problems:?}"));
            for (_, line) in &problems {
                assert!(!line.contains('\n'), "{text:?}: {line:?}");
            }
            assert!(line.starts_with(&format!("{key}: ")), "{line:?}");
        }
        assert_eq!(
            problems("x = { a = \"1\\n2\", \"b c\" = [1, \"z\"] }\n")[0].1,
            "x: unknown key (value { a = \"1\\n2\", \"b c\" = [1, \"z\"] })"
        );
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
