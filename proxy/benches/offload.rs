//! Origin offload: 1,000 hubs polling 100 cameras; origin requests per distinct frame.
//!
//! `cargo bench -p framecache --bench offload [-- SECONDS HUBS]`
//!
//! Ten hubs of the same owner watch each camera, each polling the latest frame about once a
//! second (with jitter), as home dashboards do. Cameras capture one frame a second. A proxy that
//! fetches each frame once makes 1.00 origin requests per distinct frame served.

mod load;

use std::collections::HashSet;
use std::time::{Duration, Instant};

fn main() {
    let arg = load::arg;
    let (seconds, hubs) = (arg(0, 20.0), arg(1, 1000.0) as usize);

    let stack = load::Stack::start(
        |o| {
            o.owners = 50;
            o.cameras_per_owner = 2;
            o.width = 320;
            o.height = 240;
            o.fps = 1.0;
        },
        |_| {},
    );
    let (runtime, backend, proxy) = (&stack.runtime, &stack.backend, &stack.proxy);
    let hub_addr = proxy.hub_addr;

    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let origin_before = backend.stats().requests_total;
    let tasks: Vec<_> = (0..hubs)
        .map(|i| {
            let camera_index = i % 100;
            let owner = format!("owner-{}", camera_index / 2 + 1);
            let camera = format!("cam-{}", camera_index + 1);
            let request = stack.hub_request(&owner, &camera);
            runtime.spawn(async move {
                // Hubs start spread over the first second and poll every 0.9–1.1 s.
                let period = Duration::from_millis(900 + (i as u64 * 37) % 200);
                tokio::time::sleep(Duration::from_millis((i as u64 * 7919) % 1000)).await;
                let mut conn = load::Conn::connect(hub_addr).await.unwrap();
                let mut seen = Vec::new();
                let mut next = tokio::time::Instant::now();
                while Instant::now() < deadline {
                    let answer = conn.exchange(request.as_bytes()).await.unwrap();
                    let seq: u64 = answer.header("x-frame-seq").unwrap().parse().unwrap();
                    seen.push((camera.clone(), seq));
                    next += period;
                    tokio::time::sleep_until(next).await;
                }
                seen
            })
        })
        .collect();
    let mut requests = 0usize;
    let mut distinct = HashSet::new();
    for task in tasks {
        let seen = runtime.block_on(task).unwrap();
        requests += seen.len();
        distinct.extend(seen);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let origin = backend.stats().requests_total - origin_before;
    let lookups = |r: &str| {
        proxy
            .shared
            .metrics
            .cache
            .lookups
            .with_label_values(&[r])
            .get()
    };
    println!("{hubs} hubs polling 100 cameras (1 frame/s each) for {seconds} s");
    println!(
        "hub requests: {requests} ({:.0}/s); hits {}, coalesced {}, misses {}, stale {}",
        requests as f64 / elapsed,
        lookups("hit"),
        lookups("coalesced"),
        lookups("miss"),
        lookups("stale")
    );
    println!(
        "distinct frames served: {}; origin requests: {origin}; origin requests per distinct frame: {:.2}; hub requests per origin request: {:.1}",
        distinct.len(),
        origin as f64 / distinct.len() as f64,
        requests as f64 / origin as f64
    );
    stack.stop();
}
