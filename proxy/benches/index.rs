//! The cache index: the shipped `Store` (DashMap + S3-FIFO eviction over byte weights)
//! beside a plain `DashMap` as the peer, and the shipped eviction policy beside a plain LRU.
//!
//! `cargo bench -p framecache --bench index`
//!
//! Prints three tables, figures only (this machine is shared; nothing here asserts on them):
//!
//! 1. Key digest, lookup (hit) and insert, ns/op, on one thread and on two threads sharing one
//!    index. 100,000 entries with 1-byte bodies; key digests are computed up front, and the cost
//!    of computing one (blake3 of the identity's encoding) is its own row. Each figure is the
//!    median of five rounds of about 0.3 s after a warm-up. `Store::insert` evicts to stay
//!    within budget under its queue lock, as shipped, and that is timed with it.
//! 2. Heap bytes per cached entry beyond the body, from a counting global allocator: the bytes
//!    requested, the same as glibc malloc chunks would hold them (an estimate of the
//!    allocator's headers and rounding), and the number of live allocations.
//! 3. Hit ratio on Zipf traces (10,000 distinct frames of 60–80 KB, 1,000,000 requests, budget
//!    10% of the distinct bytes, fixed seed): the shipped store beside a plain LRU that charges
//!    the same weights against the same budget. The traces are fixed, so the figures
//!    repeat.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use lru::LruCache;
use prometheus::{IntCounter, IntGauge};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use framecache::cache::key::{Identity, KeyDigest};
use framecache::cache::store::{Entry, Store, StoredFrame, ENTRY_OVERHEAD};
use framecache::identity::{CameraId, ContentHash, OwnerId};
use framecache::request::FrameRef;

// ---- counting allocator -------------------------------------------------------------------

/// Counts live bytes (as requested, and as glibc malloc chunks) and allocations while
/// `COUNTING` is on. Off during the timed benches, so
/// that two threads do not contend on the counters; a free or resize seen while on is counted
/// whenever the block was allocated, so a window's difference is exact.
struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_ALLOCS: AtomicIsize = AtomicIsize::new(0);
static LIVE_CHUNKS: AtomicIsize = AtomicIsize::new(0);

/// What glibc's malloc takes for a request of `size` bytes (alignment ≤ 16): an 8-byte header,
/// rounded up to 16, at least 32. An estimate of the allocator's overhead on the Debian hosts
/// the proxy ships to, not a measurement.
fn chunk(size: usize) -> isize {
    ((size + 8 + 15) & !15).max(32) as isize
}

fn count(bytes: isize, chunks: isize, allocs: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE_BYTES.fetch_add(bytes, Ordering::Relaxed);
        LIVE_CHUNKS.fetch_add(chunks, Ordering::Relaxed);
        LIVE_ALLOCS.fetch_add(allocs, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed through to `System` unchanged; only counters are updated.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is `System::alloc`'s.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize, chunk(layout.size()), 1);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize, chunk(layout.size()), 1);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every path above).
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize), -chunk(layout.size()), -1);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`; `new_size` is checked by the caller.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(
                new_size as isize - layout.size() as isize,
                chunk(new_size) - chunk(layout.size()),
                0,
            );
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// Live bytes, chunks and allocations added while `f` ran.
fn allocated_by(f: impl FnOnce()) -> [isize; 3] {
    let live =
        || [&LIVE_BYTES, &LIVE_CHUNKS, &LIVE_ALLOCS].map(|counter| counter.load(Ordering::SeqCst));
    let before = live();
    COUNTING.store(true, Ordering::SeqCst);
    f();
    COUNTING.store(false, Ordering::SeqCst);
    let after = live();
    [0, 1, 2].map(|i| after[i] - before[i])
}

// ---- the two indexes ----------------------------------------------------------------------

/// Entries in the timed and memory benches.
const ENTRIES: usize = 100_000;
/// A 1-byte body, shared by every entry of the timed and memory benches (no allocation).
const BODY: &[u8] = b"x";
/// What the store's weigher charges for one of those entries.
const WEIGHT: u64 = (BODY.len() + ENTRY_OVERHEAD) as u64;

/// What the benches do to an index.
trait Index: Sync {
    fn get(&self, key: &KeyDigest) -> Option<Arc<Entry>>;
    fn insert(&self, key: KeyDigest, entry: Entry);
    /// Inserts a key that is not there into a full index. The store makes room by its own
    /// policy; the map, which has none, removes `oldest` (the least any bounded map must do).
    fn insert_new(&self, key: KeyDigest, entry: Entry, oldest: &KeyDigest);
}

impl Index for Store {
    fn get(&self, key: &KeyDigest) -> Option<Arc<Entry>> {
        Store::get(self, key)
    }

    fn insert(&self, key: KeyDigest, entry: Entry) {
        Store::insert(self, key, entry);
    }

    fn insert_new(&self, key: KeyDigest, entry: Entry, _oldest: &KeyDigest) {
        Store::insert(self, key, entry);
    }
}

type Map = DashMap<KeyDigest, Arc<Entry>>;

impl Index for Map {
    fn get(&self, key: &KeyDigest) -> Option<Arc<Entry>> {
        DashMap::get(self, key).map(|e| Arc::clone(e.value()))
    }

    fn insert(&self, key: KeyDigest, entry: Entry) {
        DashMap::insert(self, key, Arc::new(entry));
    }

    fn insert_new(&self, key: KeyDigest, entry: Entry, oldest: &KeyDigest) {
        DashMap::insert(self, key, Arc::new(entry));
        DashMap::remove(self, oldest);
    }
}

/// A store of `max_bytes` with unregistered metrics.
fn store(max_bytes: u64) -> Store {
    Store::new(
        max_bytes,
        IntGauge::new("bench_entries", "entries").expect("valid metric"),
        IntGauge::new("bench_stored_bytes", "bytes").expect("valid metric"),
        IntCounter::new("bench_evictions_total", "evictions").expect("valid metric"),
    )
}

// ---- identities, entries, keys ------------------------------------------------------------

/// Identity `i`: one of 1,000 owners, its own camera; half latest, half by-hash.
fn identity(owners: &[OwnerId], i: usize) -> Identity {
    Identity {
        owner: owners[i % owners.len()].clone(),
        camera: CameraId::parse(&format!("cam-{i:06}")).expect("valid camera id"),
        frame: if i % 2 == 0 {
            FrameRef::Latest
        } else {
            FrameRef::ByHash(ContentHash::of(&(i as u64).to_le_bytes()))
        },
        variant: framecache::rendition::Variant::FULL,
    }
}

fn owners(n: usize) -> Vec<OwnerId> {
    (0..n)
        .map(|i| OwnerId::parse(&format!("owner-{i:05}")).expect("valid owner id"))
        .collect()
}

/// A frame for `identity`; a by-hash identity names the frame's own hash, as in the cache.
fn frame(identity: &Identity, body: Bytes) -> Arc<StoredFrame> {
    let hash = match identity.frame {
        FrameRef::ByHash(hash) => hash,
        FrameRef::Latest => ContentHash::of(identity.camera.as_str().as_bytes()),
    };
    Arc::new(StoredFrame::new(hash, 1, 1_700_000_000_000, body))
}

/// What one thread inserts: an identity and a frame of its own, so that two threads do not
/// share reference counts that the index itself would not make them share.
#[derive(Clone)]
struct Template {
    identity: Identity,
    frame: Arc<StoredFrame>,
    stored_at: Instant,
}

impl Template {
    fn new(owners: &[OwnerId], i: usize) -> Template {
        let identity = identity(owners, i);
        let frame = frame(&identity, Bytes::from_static(BODY));
        Template {
            identity,
            frame,
            stored_at: Instant::now(),
        }
    }

    fn entry(&self) -> Entry {
        Entry::new(
            self.identity.clone(),
            Arc::clone(&self.frame),
            self.stored_at,
            Duration::from_secs(60),
        )
    }
}

/// A key that no identity digests to, distinct for each `n`: for the insert benches, which use
/// more keys than can be digested up front. A few ns, the same for both indexes.
fn synthetic_key(n: u64) -> KeyDigest {
    let mut out = [0u8; 32];
    let mut x = n;
    for chunk in out.chunks_exact_mut(8) {
        // splitmix64: a bijection, so the first word alone already differs for each `n`.
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    KeyDigest(out)
}

// ---- timing -------------------------------------------------------------------------------

const ROUNDS: usize = 5;
const ROUND: Duration = Duration::from_millis(300);
const WARMUP: Duration = Duration::from_millis(200);

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// ns/op of `op(i)` on this thread, `i` counting up from 0 across warm-up and rounds.
fn one_thread(mut op: impl FnMut(u64)) -> f64 {
    let mut i = 0u64;
    let start = Instant::now();
    while start.elapsed() < WARMUP {
        for _ in 0..64 {
            op(i);
            i += 1;
        }
    }
    let warm_ns = start.elapsed().as_nanos() as f64 / i as f64;
    let n = ((ROUND.as_nanos() as f64 / warm_ns) as u64).max(64);
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for _ in 0..n {
            op(i);
            i += 1;
        }
        rounds.push(start.elapsed().as_nanos() as f64 / n as f64);
    }
    median(rounds)
}

/// Two threads on one index.
struct Contended {
    /// Wall time per operation as each thread sees it.
    ns_per_op: f64,
    /// Operations per second of both threads together, in millions.
    mops: f64,
}

/// `op(thread, i)` on two threads at once, `i` counting up from 0 on each. Rounds are sized
/// from the one-thread figure; the first is a warm-up.
fn two_threads(single_ns: f64, op: impl Fn(usize, u64) + Sync) -> Contended {
    let n = ((ROUND.as_nanos() as f64 / (2.0 * single_ns)) as u64).max(64);
    let barrier = Barrier::new(2);
    let times: Vec<Vec<Duration>> = thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|t| {
                let (op, barrier) = (&op, &barrier);
                s.spawn(move || {
                    let mut i = 0u64;
                    let mut times = Vec::with_capacity(ROUNDS);
                    for round in 0..=ROUNDS {
                        barrier.wait();
                        let start = Instant::now();
                        for _ in 0..n {
                            op(t, i);
                            i += 1;
                        }
                        if round > 0 {
                            times.push(start.elapsed());
                        }
                    }
                    times
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("bench thread"))
            .collect()
    });
    let per_op = (0..ROUNDS)
        .map(|r| (times[0][r] + times[1][r]).as_nanos() as f64 / (2 * n) as f64)
        .collect();
    let mops = (0..ROUNDS)
        .map(|r| (2 * n) as f64 / times[0][r].max(times[1][r]).as_nanos() as f64 * 1e3)
        .collect();
    Contended {
        ns_per_op: median(per_op),
        mops: median(mops),
    }
}

/// One row of table 1 for one index.
struct Timed {
    single: f64,
    contended: Contended,
}

impl Timed {
    fn cells(&self) -> [String; 2] {
        [
            format!("{:.0}", self.single),
            format!(
                "{:.0} ({:.1} M/s)",
                self.contended.ns_per_op, self.contended.mops
            ),
        ]
    }
}

/// Random positions in `0..ENTRIES`, read in turn by the lookup and replace benches.
const ORDER_LEN: usize = 1 << 20;

fn timed(op: impl Fn(usize, u64) + Sync) -> Timed {
    let single = one_thread(|i| op(0, i));
    let contended = two_threads(single, &op);
    Timed { single, contended }
}

/// Lookup hits at random positions.
fn bench_hits(index: &impl Index, keys: &[KeyDigest], order: &[u32]) -> Timed {
    timed(|t, i| {
        // The second thread reads the same sequence from another place.
        let at = (i as usize + t * (ORDER_LEN / 2)) & (ORDER_LEN - 1);
        let hit = index.get(&keys[order[at] as usize]);
        debug_assert!(hit.is_some());
        black_box(hit);
    })
}

/// Inserts over keys that are there (a refreshed entry).
fn bench_replace(
    index: &impl Index,
    keys: &[KeyDigest],
    order: &[u32],
    templates: &[Template],
) -> Timed {
    timed(|t, i| {
        let at = (i as usize + t * (ORDER_LEN / 2)) & (ORDER_LEN - 1);
        index.insert(keys[order[at] as usize], templates[t].entry());
    })
}

/// Inserts of keys that are not there into a full index. Each bench gets a new index from
/// `fresh`, filled with the keys `synthetic_key(0..ENTRIES)`; a run with `threads` threads
/// inserts key `ENTRIES + i * threads + t`, and names key `i * threads + t` as the oldest.
fn bench_insert_new<I: Index>(fresh: impl Fn() -> I, templates: &[Template]) -> Timed {
    let fill = |index: &I| {
        for n in 0..ENTRIES as u64 {
            index.insert(synthetic_key(n), templates[0].entry());
        }
    };
    let index = fresh();
    fill(&index);
    let single = one_thread(|i| {
        let n = ENTRIES as u64 + i;
        index.insert_new(synthetic_key(n), templates[0].entry(), &synthetic_key(i));
    });
    drop(index);
    let index = fresh();
    fill(&index);
    let contended = two_threads(single, |t, i| {
        let old = i * 2 + t as u64;
        let n = ENTRIES as u64 + old;
        index.insert_new(synthetic_key(n), templates[t].entry(), &synthetic_key(old));
    });
    Timed { single, contended }
}

// ---- memory -------------------------------------------------------------------------------

/// Bytes requested, bytes as malloc chunks (estimated) and allocations, per entry.
struct PerEntry([f64; 3]);

impl PerEntry {
    fn of(counted: [isize; 3], n: usize) -> PerEntry {
        PerEntry(counted.map(|c| c as f64 / n as f64))
    }

    fn cell(&self) -> String {
        let [bytes, chunks, allocs] = self.0;
        format!("{bytes:.0} B ({chunks:.0} B), {allocs:.1} allocs")
    }
}

struct Footprint {
    /// `Arc<Entry>` and the map's own structures.
    index: PerEntry,
    /// What an entry owns besides: its identity's ids and its `StoredFrame`.
    records: PerEntry,
    total: PerEntry,
    kept: usize,
}

/// Inserts `ENTRIES` entries, each of its own identity (ids parsed, as a request's are) and its
/// own `StoredFrame` (whose ids are clones of those) over one shared 1-byte body, and counts
/// what was allocated to build the records and to index them.
fn footprint<I: Index>(index: &I, owners: &[OwnerId], len: impl Fn(&I) -> usize) -> Footprint {
    let mut records: Vec<(KeyDigest, Entry)> = Vec::with_capacity(ENTRIES);
    let stored_at = Instant::now();
    let built = allocated_by(|| {
        for i in 0..ENTRIES {
            let mut identity = identity(owners, i);
            identity.owner = OwnerId::parse(identity.owner.as_str()).expect("valid owner id");
            let frame = frame(&identity, Bytes::from_static(BODY));
            records.push((
                identity.digest(),
                Entry::new(identity, frame, stored_at, Duration::from_secs(60)),
            ));
        }
    });
    let indexed = allocated_by(|| {
        // `drain` keeps the vector's buffer, so that its release is not counted here.
        for (key, entry) in records.drain(..) {
            index.insert(key, entry);
        }
    });
    Footprint {
        index: PerEntry::of(indexed, ENTRIES),
        records: PerEntry::of(built, ENTRIES),
        total: PerEntry::of([0, 1, 2].map(|i| built[i] + indexed[i]), ENTRIES),
        kept: len(index),
    }
}

/// What the cache itself allocates per entry: fills store a latest and a by-hash entry that
/// share one `StoredFrame` and one pair of ids (parsed once from the request). Returns the
/// per-entry total of building and indexing `ENTRIES` entries that way.
fn footprint_as_filled(index: &Store, owners: &[OwnerId]) -> PerEntry {
    let stored_at = Instant::now();
    let mut records: Vec<(KeyDigest, Entry)> = Vec::with_capacity(ENTRIES);
    let built = allocated_by(|| {
        for i in 0..ENTRIES / 2 {
            let mut latest = identity(owners, 2 * i);
            latest.owner = OwnerId::parse(latest.owner.as_str()).expect("valid owner id");
            let hash = ContentHash::of(&(i as u64).to_le_bytes());
            let frame = Arc::new(StoredFrame::new(
                hash,
                1,
                1_700_000_000_000,
                Bytes::from_static(BODY),
            ));
            let by_hash = latest.with_frame(FrameRef::ByHash(hash));
            for id in [latest, by_hash] {
                let key = id.digest();
                records.push((
                    key,
                    Entry::new(id, Arc::clone(&frame), stored_at, Duration::from_secs(60)),
                ));
            }
        }
    });
    let indexed = allocated_by(|| {
        for (key, entry) in records.drain(..) {
            index.insert(key, entry);
        }
    });
    PerEntry::of([0, 1, 2].map(|i| built[i] + indexed[i]), ENTRIES)
}

// ---- eviction policy ----------------------------------------------------------------------

const FRAMES: usize = 10_000;
const REQUESTS: usize = 1_000_000;
const SEED: u64 = 0x0f7a_3ec4_c4e0;
/// Requests before the "warm" column starts counting.
const WARM_AFTER: usize = REQUESTS / 10;

/// `len` frame numbers drawn from Zipf(`s`) over `0..n` (rank 1 is frame 0), by inverse CDF.
fn zipf_trace(n: usize, s: f64, len: usize, rng: &mut StdRng) -> Vec<u32> {
    let mut cdf = Vec::with_capacity(n);
    let mut sum = 0.0;
    for rank in 1..=n {
        sum += (rank as f64).powf(-s);
        cdf.push(sum);
    }
    (0..len)
        .map(|_| {
            let u = rng.random::<f64>() * sum;
            cdf.partition_point(|&c| c < u).min(n - 1) as u32
        })
        .collect()
}

/// Hits over all requests, and over those after `WARM_AFTER`.
#[derive(Default)]
struct Hits {
    all: usize,
    warm: usize,
}

impl Hits {
    fn record(&mut self, request: usize) {
        self.all += 1;
        if request >= WARM_AFTER {
            self.warm += 1;
        }
    }

    fn cells(&self) -> [String; 2] {
        [
            format!("{:.1}%", 100.0 * self.all as f64 / REQUESTS as f64),
            format!(
                "{:.1}%",
                100.0 * self.warm as f64 / (REQUESTS - WARM_AFTER) as f64
            ),
        ]
    }
}

struct Frames {
    identities: Vec<Identity>,
    keys: Vec<KeyDigest>,
    frames: Vec<Arc<StoredFrame>>,
    /// What the store's weigher charges for each.
    weights: Vec<u64>,
}

/// `FRAMES` frames of 60–80 KB, whose bodies are slices of one shared buffer.
fn frames(owners: &[OwnerId], rng: &mut StdRng) -> Frames {
    let buffer = Bytes::from(vec![0u8; 80_000]);
    let identities: Vec<Identity> = (0..FRAMES).map(|i| identity(owners, i)).collect();
    let keys = identities.iter().map(Identity::digest).collect();
    let frames: Vec<Arc<StoredFrame>> = identities
        .iter()
        .map(|id| frame(id, buffer.slice(..rng.random_range(60_000..=80_000))))
        .collect();
    let weights = frames
        .iter()
        .map(|f| (f.body.len() + ENTRY_OVERHEAD) as u64)
        .collect();
    Frames {
        identities,
        keys,
        frames,
        weights,
    }
}

/// The shipped store: a miss stores the frame, as a fill does.
fn replay_store(frames: &Frames, trace: &[u32], budget: u64) -> Hits {
    let store = store(budget);
    let stored_at = Instant::now();
    let mut hits = Hits::default();
    for (request, &f) in trace.iter().enumerate() {
        let f = f as usize;
        if store.get(&frames.keys[f]).is_some() {
            hits.record(request);
        } else {
            store.insert(
                frames.keys[f],
                Entry::new(
                    frames.identities[f].clone(),
                    Arc::clone(&frames.frames[f]),
                    stored_at,
                    Duration::MAX,
                ),
            );
        }
    }
    hits
}

/// A plain LRU: every miss is admitted, least recently used frames leave until it fits.
fn replay_lru(frames: &Frames, trace: &[u32], budget: u64) -> Hits {
    let mut lru: LruCache<u32, u64> = LruCache::unbounded();
    let mut bytes = 0u64;
    let mut hits = Hits::default();
    for (request, &f) in trace.iter().enumerate() {
        if lru.get(&f).is_some() {
            hits.record(request);
            continue;
        }
        let weight = frames.weights[f as usize];
        lru.put(f, weight);
        bytes += weight;
        while bytes > budget {
            let (_, weight) = lru
                .pop_lru()
                .expect("invariant: over budget means not empty");
            bytes -= weight;
        }
    }
    hits
}

// ---- report -------------------------------------------------------------------------------

fn row(label: &str, cells: &[String]) {
    print!("  {label:<44}");
    for cell in cells {
        print!("{cell:>30}");
    }
    println!();
}

fn main() {
    let started = Instant::now();
    let owners = owners(1_000);
    let identities: Vec<Identity> = (0..ENTRIES).map(|i| identity(&owners, i)).collect();
    let keys: Vec<KeyDigest> = identities.iter().map(Identity::digest).collect();
    let mut rng = StdRng::seed_from_u64(SEED);
    let order: Vec<u32> = (0..ORDER_LEN)
        .map(|_| rng.random_range(0..ENTRIES as u32))
        .collect();
    let templates = [
        Template::new(&owners, ENTRIES),
        Template::new(&owners, ENTRIES + 1),
    ];

    // 1. Operations.
    let digest = one_thread(|i| {
        black_box(identities[i as usize % ENTRIES].digest());
    });

    let shipped = store(4 * ENTRIES as u64 * WEIGHT);
    let map = Map::new();
    for (key, identity) in keys.iter().zip(&identities) {
        let frame = frame(identity, Bytes::from_static(BODY));
        let entry = || {
            Entry::new(
                identity.clone(),
                Arc::clone(&frame),
                templates[0].stored_at,
                Duration::from_secs(60),
            )
        };
        shipped.insert(*key, entry());
        Index::insert(&map, *key, entry());
    }
    let store_hits = bench_hits(&shipped, &keys, &order);
    let map_hits = bench_hits(&map, &keys, &order);
    let store_replace = bench_replace(&shipped, &keys, &order, &templates);
    let map_replace = bench_replace(&map, &keys, &order, &templates);
    drop((shipped, map));
    let store_new = bench_insert_new(|| store(ENTRIES as u64 * WEIGHT), &templates);
    let map_new = bench_insert_new(Map::new, &templates);

    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    println!();
    println!(
        "1. Index operations, ns/op: {ENTRIES} entries, 1-byte bodies, keys digested up front; \
         median of {ROUNDS} rounds ({cores} cores)."
    );
    println!(
        "   2 threads: wall time per op on each thread sharing one index (both threads' ops/s)."
    );
    row("", &["Store (S3-FIFO)".to_string(), "DashMap".to_string()]);
    row(
        "key digest (Identity::digest, blake3)",
        &[format!("{digest:.0}"), format!("{digest:.0}")],
    );
    for (label, store, map) in [
        ("lookup, hit", &store_hits, &map_hits),
        (
            "insert, key present (replace)",
            &store_replace,
            &map_replace,
        ),
        ("insert, new key into a full index", &store_new, &map_new),
    ] {
        let (s, m) = (store.cells(), map.cells());
        row(&format!("{label}, 1 thread"), &[s[0].clone(), m[0].clone()]);
        row(
            &format!("{label}, 2 threads"),
            &[s[1].clone(), m[1].clone()],
        );
    }
    println!("   Store inserts evict under the queue lock to stay within budget each time, as");
    println!("   shipped. The full DashMap has no policy: it removes the oldest key per insert.");

    // 2. Memory.
    let shipped = store(ENTRIES as u64 * WEIGHT);
    let store_mem = footprint(&shipped, &owners, |s| s.usage().0 as usize);
    drop(shipped);
    let shipped = store(ENTRIES as u64 * WEIGHT);
    let as_filled = footprint_as_filled(&shipped, &owners);
    drop(shipped);
    let map = Map::new();
    let map_mem = footprint(&map, &owners, |m| m.len());
    drop(map);

    println!();
    println!(
        "2. Heap per cached entry beyond the body: {ENTRIES} entries over one shared 1-byte body,"
    );
    println!(
        "   bytes requested from the allocator (in parentheses: as glibc malloc chunks, \
         estimated), live allocations."
    );
    row("", &["Store (S3-FIFO)".to_string(), "DashMap".to_string()]);
    row(
        "index: Arc<Entry> + map structures",
        &[store_mem.index.cell(), map_mem.index.cell()],
    );
    row(
        "entry records: identity ids + StoredFrame",
        &[store_mem.records.cell(), map_mem.records.cell()],
    );
    row(
        "total beyond the body",
        &[store_mem.total.cell(), map_mem.total.cell()],
    );
    row(
        "entries kept",
        &[store_mem.kept.to_string(), map_mem.kept.to_string()],
    );
    row(
        "total, as fills store them (pairs share)",
        &[as_filled.cell(), "-".to_string()],
    );
    println!(
        "   The store's weigher charges ENTRY_OVERHEAD = {ENTRY_OVERHEAD} bytes per entry for this."
    );

    // 3. Eviction policy.
    let frames = frames(&owners, &mut rng);
    let distinct: u64 = frames.weights.iter().sum();
    let budget = distinct / 10;
    let mut results = Vec::new();
    for s in [0.9, 1.1] {
        let trace = zipf_trace(FRAMES, s, REQUESTS, &mut rng);
        let store_hits = replay_store(&frames, &trace, budget);
        let lru_hits = replay_lru(&frames, &trace, budget);
        results.push((s, store_hits, lru_hits));
    }

    println!();
    println!(
        "3. Hit ratio, Zipf traces: {FRAMES} frames of 60-80 KB ({:.0} MB weighted), {REQUESTS} \
         requests,",
        distinct as f64 / 1e6
    );
    println!(
        "   budget {:.1} MB (10%), weights body + {ENTRY_OVERHEAD} for both; seed {SEED:#x}. \
         \"warm\": after the first {WARM_AFTER} requests.",
        budget as f64 / 1e6
    );
    print!("  {:<44}", "");
    for header in ["Store (S3-FIFO)", "Store, warm", "LRU", "LRU, warm"] {
        print!("{header:>16}");
    }
    println!();
    for (s, store_hits, lru_hits) in &results {
        print!("  {:<44}", format!("Zipf exponent {s}"));
        for cell in store_hits.cells().iter().chain(lru_hits.cells().iter()) {
            print!("{cell:>16}");
        }
        println!();
    }
    println!();
    println!("Run took {:.0} s.", started.elapsed().as_secs_f64());
}
