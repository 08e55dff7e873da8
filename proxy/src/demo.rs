//! `framecache demo`: a simulated camera backend and the proxy in one process on loopback, with
//! built-in keys, printing tokens and curl lines that work as pasted.
//!
//! The keys here are public: they exist for this demo only.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::app::Listeners;
use crate::config::{Config, Secret, TlsConfig, TlsKey};

/// Demo-only keys. Never used by `serve`.
pub const DEMO_HUB_SECRET: &[u8] = b"framecache-demo-dev-only-hub-token-secret";
pub const DEMO_ADMIN_TOKEN: &[u8] = b"framecache-demo-dev-only-admin-token";
pub const DEMO_SIGNING_KEY: [u8; 32] = *b"framecache-demo-dev-only-signkey";

/// Ports the demo prefers; any free port when they are taken.
const HUB_PORT: u16 = 8080;
const TLS_PORT: u16 = 8443;
const ADMIN_PORT: u16 = 9100;

/// Runs the demo until Ctrl-C.
pub fn run() -> ExitCode {
    match demo() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("framecache demo: {e:#}");
            ExitCode::from(crate::cli::EXIT_FAILURE)
        }
    }
}

fn demo() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("camsim")
        .enable_all()
        .build()?;
    let camera_backend = runtime.block_on(camsim::start(camsim::Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        signing_key: DEMO_SIGNING_KEY,
        owners: 2,
        cameras_per_owner: 2,
        ..camsim::Config::default()
    }))?;

    let mut config = Config::local(
        camera_backend.local_addr(),
        DEMO_HUB_SECRET,
        DEMO_ADMIN_TOKEN,
        DEMO_SIGNING_KEY,
    );
    let (tls, ca_file) = demo_certificate()?;
    config.tls = Some(tls);
    let preferred = |port| SocketAddr::from(([127, 0, 0, 1], port));
    config.server.listen = Some(preferred(HUB_PORT));
    config.server.tls_listen = Some(preferred(TLS_PORT));
    config.server.admin_listen = preferred(ADMIN_PORT);
    let listeners = Listeners::bind(&config).or_else(|_| {
        config.server.listen = Some(preferred(0));
        config.server.tls_listen = Some(preferred(0));
        config.server.admin_listen = preferred(0);
        Listeners::bind(&config)
    })?;

    print_banner(&config, &listeners, camera_backend.topology(), &ca_file)?;
    let shared = crate::app::Shared::new(&config);
    crate::app::run(
        config,
        shared,
        listeners,
        Box::new(pingora::server::UnixShutdownSignalWatch),
        None,
        false,
    );
    runtime.block_on(camera_backend.shutdown());
    // The terminal may be gone by now; a closed stdout is no reason to fail.
    let _ = writeln!(std::io::stdout(), "framecache demo stopped");
    Ok(())
}

/// A certificate authority made for this run, and a certificate it signed for `localhost` and
/// `127.0.0.1`; the authority's certificate is written to a file for `curl --cacert`.
fn demo_certificate() -> anyhow::Result<(TlsConfig, PathBuf)> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(
        rcgen::DnType::CommonName,
        "framecache demo CA (this run only)",
    );
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?
        .signed_by(&key, &issuer)?;
    let dir = std::env::temp_dir().join(format!("framecache-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ca_file = dir.join("demo-ca.pem");
    std::fs::write(&ca_file, ca_cert.pem())
        .with_context(|| format!("cannot write {}", ca_file.display()))?;
    let tls = TlsConfig {
        cert_file: dir.join("(made at start)"),
        key_file: dir.join("(made at start)"),
        chain: vec![leaf.der().to_vec()],
        key: TlsKey::Pkcs8(Secret(key.serialize_der())),
    };
    Ok((tls, ca_file))
}

fn print_banner(
    config: &Config,
    listeners: &Listeners,
    topology: &camsim::Topology,
    ca_file: &Path,
) -> anyhow::Result<()> {
    let hub = listeners.hub_addr();
    let ttl = Duration::from_secs(24 * 3600);
    println!(
        "framecache demo: hub API on http://{hub}, admin on http://{}",
        listeners.admin_addr()
    );
    let tls = listeners
        .tls_addr()
        .map(|a| format!("localhost:{}", a.port()));
    if let Some(tls) = &tls {
        println!(
            "TLS (HTTP/2 and HTTP/1.1) on https://{tls}, its certificate signed by a demo CA made now: {}",
            ca_file.display()
        );
    }
    println!("simulated cameras: {}", topology.cameras().join(", "));
    let mut first_token = None;
    for owner in topology.owners() {
        let cameras = topology.cameras_of(&owner);
        let token = crate::auth::mint(
            config.auth.secret.expose(),
            &config.auth.audience,
            &owner,
            &cameras,
            ttl,
        )?;
        println!("\n# {owner} may read {}", cameras.join(", "));
        println!("# token: {token}");
        for camera in &cameras {
            println!(
                "curl -sS -D - -o {owner}-{camera}.jpg -H 'Authorization: Bearer {token}' http://{hub}/v1/cameras/{camera}/frame"
            );
        }
        if let (Some(tls), Some(camera)) = (&tls, cameras.first()) {
            println!(
                "curl -sS --cacert {} -D - -o {owner}-{camera}-tls.jpg -H 'Authorization: Bearer {token}' https://{tls}/v1/cameras/{camera}/frame",
                ca_file.display()
            );
        }
        first_token.get_or_insert((owner, token));
    }
    if let Some((owner, token)) = first_token {
        let other = topology
            .cameras()
            .into_iter()
            .find(|c| !topology.owns(&owner, c));
        if let Some(camera) = other {
            println!("\n# {owner} asking for {camera}, which is not theirs: 403");
            println!(
                "curl -sS -H 'Authorization: Bearer {token}' http://{hub}/v1/cameras/{camera}/frame"
            );
        }
    }
    println!("\n# metrics");
    println!(
        "curl -sS http://{}/metrics | grep ^framecache_",
        listeners.admin_addr()
    );
    println!("\nCtrl-C stops the demo.");
    Ok(())
}
