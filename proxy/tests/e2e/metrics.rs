//! The metrics catalogue: `docs/metrics.md` against a live scrape, and a scrape whose size does
//! not grow with owners or cameras.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::common::Stack;

/// One metric family: its type and label names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Family {
    kind: String,
    labels: BTreeSet<String>,
}

/// The families of `docs/metrics.md`: every table row whose first cell is a `` `name` ``.
fn catalogue() -> BTreeMap<String, Family> {
    let text = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"));
    let mut families = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "| `name` | type | labels | meaning |" splits into ["", name, type, labels, meaning, ""].
        let [_, name, kind, labels, ..] = cells.as_slice() else {
            continue;
        };
        let Some(name) = name.strip_prefix('`').and_then(|n| n.strip_suffix('`')) else {
            continue;
        };
        let labels = labels
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        let family = Family {
            kind: kind.to_string(),
            labels,
        };
        assert!(
            families.insert(name.to_string(), family).is_none(),
            "docs/metrics.md lists {name} twice"
        );
    }
    families
}

/// The families of a scrape: `# TYPE` lines, and the label names of their samples (`le` of
/// histogram buckets excluded).
fn families_in(scrape: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for line in scrape.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .expect("a TYPE line has a name and type");
            families.insert(
                name.to_string(),
                Family {
                    kind: kind.to_string(),
                    labels: BTreeSet::new(),
                },
            );
        }
    }
    for line in scrape.lines().filter(|l| !l.starts_with('#')) {
        let (sample, labels) = match line.split_once('{') {
            Some((name, rest)) => (name, rest.split_once('}').map_or("", |(l, _)| l)),
            None => (line.split_once(' ').map_or(line, |(name, _)| name), ""),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| sample.strip_suffix(suffix))
            .find(|base| families.get(*base).is_some_and(|f| f.kind == "histogram"))
            .unwrap_or(sample);
        let entry = families
            .get_mut(family)
            .unwrap_or_else(|| panic!("sample {sample} has no # TYPE line"));
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (name, _) = pair.split_once('=').expect("a label is name=value");
            if name != "le" {
                entry.labels.insert(name.to_string());
            }
        }
    }
    families
}

#[test]
fn catalogue_matches_the_scrape() {
    let stack = Stack::start();
    // framecache_requests_total gets its series with the first answered request.
    let reply = stack.get_as("owner-1", &["cam-1"], "/v1/cameras/cam-1/frame");
    assert_eq!(reply.status, 200);
    let scraped = families_in(&stack.scrape());
    let documented = catalogue();
    assert!(documented.len() >= 20, "{documented:?}");

    let mut problems = Vec::new();
    for (name, family) in &scraped {
        match documented.get(name) {
            None => problems.push(format!(
                "{name} ({family:?}) is scraped but not in docs/metrics.md"
            )),
            Some(doc) if doc != family => {
                problems.push(format!("{name}: scraped {family:?}, documented {doc:?}"))
            }
            Some(_) => {}
        }
    }
    for name in documented.keys().filter(|n| !scraped.contains_key(*n)) {
        problems.push(format!("{name} is in docs/metrics.md but not scraped"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn names_follow_the_conventions() {
    for (name, family) in catalogue() {
        assert!(
            name.starts_with("framecache_") || name.starts_with("process_"),
            "{name}"
        );
        match family.kind.as_str() {
            "counter" => assert!(name.ends_with("_total"), "{name}"),
            "histogram" => assert!(name.ends_with("_seconds"), "{name}"),
            "gauge" => assert!(!name.ends_with("_total"), "{name}"),
            other => panic!("{name}: unexpected type {other}"),
        }
        for label in &family.labels {
            assert!(
                !["owner", "camera", "hash", "path", "error"].contains(&label.as_str()),
                "{name} has an unbounded label {label}"
            );
        }
    }
}

#[test]
fn purges_are_counted() {
    let stack = Stack::start();
    let reply = stack.get_as("owner-1", &["cam-1"], "/v1/cameras/cam-1/frame");
    assert_eq!(reply.status, 200);
    let reply = stack.admin("POST", "/admin/purge", r#"{"owner": "owner-1"}"#, None);
    assert_eq!(reply.status, 200, "{}", reply.text());
    // The latest and the by-hash entry of the frame.
    assert_eq!(reply.json()["purged"], 2);
    let scrape = stack.scrape();
    let metric = |series| crate::common::metric_in(&scrape, series);
    assert_eq!(metric("framecache_cache_purges_total"), 1.0);
    assert_eq!(metric("framecache_cache_purged_entries_total"), 2.0);
    assert_eq!(metric("framecache_cache_entries"), 0.0);
}

/// The series of a scrape (sample names with their labels), without values.
fn series(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series.to_string()))
        .collect()
}

/// Scrapes 21 times: the last scrape and the median time.
fn scrape_timed(stack: &Stack) -> (String, Duration) {
    let mut times = Vec::new();
    let mut scrape = String::new();
    for _ in 0..21 {
        let started = Instant::now();
        scrape = stack.scrape();
        times.push(started.elapsed());
    }
    times.sort();
    (scrape, times[times.len() / 2])
}

/// What the figures compare: a scrape's bytes, series and median time.
struct Figures {
    bytes: usize,
    series: usize,
    median: Duration,
}

impl Figures {
    fn of((scrape, median): (String, Duration)) -> Figures {
        Figures {
            bytes: scrape.len(),
            series: series(&scrape).len(),
            median,
        }
    }
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes, {} series, median {:.2} ms over 21 scrapes",
            self.bytes,
            self.series,
            self.median.as_secs_f64() * 1e3
        )
    }
}

/// Fills the cache with the latest frames of `owners` owners' own cameras (a latest and a
/// by-hash entry each), scraping before (2 owners) and after: the set of series must stay the
/// same. Returns the figures before and after.
fn fill_and_scrape(owners: usize) -> (Figures, Figures) {
    let stack = Stack::with(
        |_| {},
        |c| {
            c.owners = owners;
            c.cameras_per_owner = 1;
            c.width = 16;
            c.height = 16;
        },
    );
    let get = |i: usize| {
        let (owner, camera) = (format!("owner-{i}"), format!("cam-{i}"));
        let reply = stack.get_as(&owner, &[&camera], &format!("/v1/cameras/{camera}/frame"));
        assert_eq!(reply.status, 200, "{}", reply.text());
    };
    // Every series a frame request can add is there after the first two requests.
    get(1);
    get(2);
    let (first, first_time) = scrape_timed(&stack);
    let before = series(&first);
    for i in 3..=owners {
        get(i);
    }
    let (scrape, median) = scrape_timed(&stack);
    assert_eq!(
        series(&scrape),
        before,
        "the set of series changed with the number of owners and cameras"
    );
    assert_eq!(
        crate::common::metric_in(&scrape, "framecache_cache_entries"),
        (2 * owners) as f64
    );
    (
        Figures::of((first, first_time)),
        Figures::of((scrape, median)),
    )
}

#[test]
fn series_do_not_grow_with_owners_or_cameras() {
    fill_and_scrape(100);
}

/// The figure in docs/benchmarks.md: scrape size and time with 10,000 cached entries (5,000
/// owners, one camera each). `cargo test -p framecache --test e2e -- --ignored --nocapture
/// scrape_figures`
#[test]
#[ignore = "a figure, not a check: fills 10,000 entries"]
fn scrape_figures_at_10000_entries() {
    let (before, after) = fill_and_scrape(5000);
    println!("scrape at 4 entries (2 owners): {before}");
    println!("scrape at 10,000 entries (5,000 owners): {after}");
}
