//! `framecache demo`: a simulated camera backend and the proxy in one process on loopback, with
//! built-in keys, printing tokens and curl lines that work as pasted.
//!
//! The keys here are public: they exist for this demo only.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use crate::app::Listeners;
use crate::config::Config;

/// Demo-only keys. Never used by `serve`.
pub const DEMO_HUB_SECRET: &[u8] = b"framecache-demo-dev-only-hub-token-secret";
pub const DEMO_ADMIN_TOKEN: &[u8] = b"framecache-demo-dev-only-admin-token";
pub const DEMO_SIGNING_KEY: [u8; 32] = *b"framecache-demo-dev-only-signkey";

/// Ports the demo prefers; any free port when they are taken.
const HUB_PORT: u16 = 8080;
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
    let preferred = |port| SocketAddr::from(([127, 0, 0, 1], port));
    config.server.listen = Some(preferred(HUB_PORT));
    config.server.admin_listen = preferred(ADMIN_PORT);
    let listeners = Listeners::bind(&config).or_else(|_| {
        config.server.listen = Some(preferred(0));
        config.server.admin_listen = preferred(0);
        Listeners::bind(&config)
    })?;

    print_banner(&config, &listeners, camera_backend.topology())?;
    let shared = crate::app::Shared::new(&config);
    crate::app::run(
        config,
        shared,
        listeners,
        Box::new(pingora::server::UnixShutdownSignalWatch),
    );
    runtime.block_on(camera_backend.shutdown());
    // The terminal may be gone by now; a closed stdout is no reason to fail.
    let _ = writeln!(std::io::stdout(), "framecache demo stopped");
    Ok(())
}

fn print_banner(
    config: &Config,
    listeners: &Listeners,
    topology: &camsim::Topology,
) -> anyhow::Result<()> {
    let hub = listeners.hub_addr();
    let ttl = Duration::from_secs(24 * 3600);
    println!(
        "framecache demo: hub API on http://{hub}, admin on http://{}",
        listeners.admin_addr()
    );
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
