//! Uncached frames through the proxy against the camera backend directly, side by side.
//!
//! `cargo bench -p framecache --bench passthrough [-- SECONDS CONNECTIONS ROUNDS]`
//!
//! Starts camsim (1280×720 frames, frozen so that the backend serves the same bytes from
//! memory) and the proxy in this process, then drives keep-alive connections at each in turn,
//! alternating rounds so that both see the same machine state, and prints requests per second
//! and latency percentiles. Every proxied request is a full origin fetch with attestation: the
//! difference is the proxy's cost. Figures, not assertions: this machine is shared.

mod load;

use std::time::Duration;

use load::round;

fn main() {
    let arg = load::arg;
    let (seconds, connections, rounds) = (arg(0, 5.0), arg(1, 16.0) as usize, arg(2, 3.0) as usize);

    let stack = load::Stack::start(
        |o| {
            o.owners = 8;
            o.cameras_per_owner = 2;
            o.fps = 0.0;
        },
        // Every request revalidates: each one is an origin fetch. One (owner, camera) per
        // connection, so requests never coalesce.
        |c| {
            c.cache.latest_fresh = Duration::ZERO;
            c.cache.stale_while_revalidate = Duration::ZERO;
        },
    );
    let (runtime, backend, proxy) = (&stack.runtime, &stack.backend, &stack.proxy);
    let pairs = stack.pairs();
    let direct: Vec<String> = (0..connections)
        .map(|i| {
            let (owner, camera) = &pairs[i % pairs.len()];
            format!("GET /cameras/{camera}/frame HTTP/1.1\r\nHost: b\r\nX-Framecache-Owner: {owner}\r\n\r\n")
        })
        .collect();
    let proxied: Vec<String> = (0..connections)
        .map(|i| {
            let (owner, camera) = &pairs[i % pairs.len()];
            stack.hub_request(owner, camera)
        })
        .collect();

    // Warm both (renders each camera's frame once, fills connection pools).
    runtime.block_on(round(backend.local_addr(), direct.clone(), 0.5));
    runtime.block_on(round(proxy.hub_addr, proxied.clone(), 0.5));

    println!(
        "uncached frames, {connections} keep-alive connections, {seconds} s rounds, {rounds} rounds each, alternating"
    );
    let targets = [
        load::Target {
            name: "camsim direct",
            addr: backend.local_addr(),
            requests: direct,
        },
        load::Target {
            name: "framecache → camsim",
            addr: proxy.hub_addr,
            requests: proxied,
        },
    ];
    let means = load::compare(runtime, &targets, seconds, rounds);
    println!(
        "mean: direct {:.0} req/s p99 {:.2} ms; proxied {:.0} req/s p99 {:.2} ms; proxied/direct throughput {:.2}×",
        means[0].0,
        means[0].1,
        means[1].0,
        means[1].1,
        means[1].0 / means[0].0
    );
    stack.stop();
}
