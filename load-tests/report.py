#!/usr/bin/env python3
"""The load-test runner's arithmetic: configuration copies, /metrics diffs, summaries, reports.

    report.py config TEMPLATE OUT KEY=VALUE...      copy a framecache TOML with overrides
    report.py scenario --scenario S --dir D ...     one scenario's summary, report.json, report.md
    report.py compare --dir D                       the peers' table from the rounds in D
    report.py sample --pid P --metrics URL --every S --out F   (soak) the proxy's figures every S
                                                    seconds until SIGTERM, a row printed each time
    report.py counters --camsim-url U --admin-url U --out F --first-metrics F
                                                    camsim's and the proxy's counters every second

Python 3.11 standard library only. `scenario` exits 1 when an invariant fails: cross-owner hits
or key collisions counted, privacy checks failed or never run, a 200 on the frame routes that
the privacy checks did not see, any failed k6 threshold, (stream) slow subscribers that did not
report or hit an error, (chaos) no origin answer rejected, or (upgrade) a hub request failed
after its retry, a hub connection refused, an old instance that did not exit or not with 0, or
a new instance that did not take over; in soak also when the proxy died,
when the attacks got an answer other than the expected one (or broke, or did not report), when a
refusal the attacks met was not counted, and when the soak did not do what it is for (no
eviction: the churn stayed within the cache budget; no leaked frame injected or refused).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import re
import sys
import tomllib
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

# --- configuration ------------------------------------------------------------------------------


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def parse_override(text: str, old):
    if isinstance(old, list):
        return [item for item in text.split(",") if item]
    if isinstance(old, bool):
        return text == "true"
    if isinstance(old, int):
        return int(text)
    return text


def cmd_config(args) -> int:
    template = Path(args.template).resolve()
    config = tomllib.loads(template.read_text())
    for item in args.overrides:
        key, _, text = item.partition("=")
        table, _, name = key.partition(".")
        if table not in config or name not in config[table]:
            raise SystemExit(f"report.py config: no key {key} in {template.name}")
        config[table][name] = parse_override(text, config[table][name])
    # The copy lives elsewhere: make the key files' paths absolute.
    for table in config.values():
        for name, value in table.items():
            if name.endswith("_file") and isinstance(value, str):
                table[name] = str((template.parent / value).resolve())
    lines = [f"# generated from {template.name} by load-tests/run"]
    for table, values in config.items():
        lines.append(f"\n[{table}]")
        lines.extend(f"{name} = {toml_value(value)}" for name, value in values.items())
    Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


# --- Prometheus text ----------------------------------------------------------------------------

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(path: Path) -> dict[tuple[str, tuple], float]:
    return parse_metrics_text(path.read_text() if path.exists() else "")


def parse_metrics_text(text: str) -> dict[tuple[str, tuple], float]:
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            continue
        labels = tuple(sorted(LABEL.findall(m.group(2) or "")))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples


class Diff:
    """Counters after minus before. With `also_after`, the after figures are summed over those
    scrapes too: in `upgrade` the old instance's last scrape and the new one's (whose counters
    started at 0)."""

    def __init__(self, before: Path, after: Path, also_after: tuple[Path, ...] = ()):
        self.before = parse_metrics(before)
        self.after = parse_metrics(after)
        for path in also_after:
            for key, value in parse_metrics(path).items():
                self.after[key] = self.after.get(key, 0.0) + value

    def by(self, name: str, label: str | None = None) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for (metric, labels), value in self.after.items():
            if metric != name:
                continue
            key = dict(labels).get(label, "") if label else ""
            out[key] += value - self.before.get((metric, labels), 0.0)
        return dict(out)

    def total(self, name: str) -> float:
        return sum(self.by(name).values())

    def absolute(self, name: str) -> float:
        return sum(v for (metric, _), v in self.after.items() if metric == name)


# --- k6 summaries -------------------------------------------------------------------------------


def k6_checks(summary: dict) -> dict[str, dict[str, int]]:
    """Every check of every group: name -> {passes, fails}."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"passes": 0, "fails": 0})

    def walk(group):
        checks = group.get("checks") or {}
        items = checks.values() if isinstance(checks, dict) else checks
        for c in items:
            out[c["name"]]["passes"] += c.get("passes", 0)
            out[c["name"]]["fails"] += c.get("fails", 0)
        groups = group.get("groups") or {}
        for g in groups.values() if isinstance(groups, dict) else groups:
            walk(g)

    walk(summary.get("root_group", {}))
    return dict(out)


def trend(summary: dict, metric: str) -> dict | None:
    m = summary.get("metrics", {}).get(metric)
    if not m or "med" not in m or m.get("max", 0) == 0:
        return None  # no samples
    return {"p50": m["med"], "p95": m["p(95)"], "p99": m["p(99)"], "max": m["max"]}


def failed_thresholds(summary: dict) -> list[str]:
    failed = []
    for metric, values in summary.get("metrics", {}).items():
        for expr, ok in (values.get("thresholds") or {}).items():
            # In k6's summary export a threshold maps to true when it FAILED.
            if ok:
                failed.append(f"{metric}: {expr}")
    return failed


# The frame routes, on which every 200 goes through privacy_checked_answers (lib/scenario.js).
FRAME_ROUTES = ("frame", "frame_by_hash")


def answers_seen(summary: dict) -> tuple[int, int, int]:
    """(200s k6 counted on the frame routes, of them privacy-checked, of them discarded unread)
    from the `http_reqs{route:R,status:200}` sub-metrics and the privacy_checked_answers rate."""
    metrics = summary.get("metrics", {})
    answered = sum(
        int(metrics.get(f"http_reqs{{route:{route},status:200}}", {}).get("count", 0)) for route in FRAME_ROUTES
    )
    rate = metrics.get("privacy_checked_answers", {})
    return answered, int(rate.get("passes", 0)), int(rate.get("fails", 0))


def distinct_frames(path: Path) -> int | None:
    """Distinct (owner, camera, seq) frames hubs received, from k6's `frames_received` samples."""
    if not path.exists():
        return None
    seen = set()
    with gzip.open(path, "rt") as f:
        for line in f:
            if '"frames_received"' not in line or '"Point"' not in line:
                continue
            point = json.loads(line)
            frame = point.get("data", {}).get("tags", {}).get("frame")
            if frame:
                seen.add(frame)
    return len(seen)


# --- one scenario -------------------------------------------------------------------------------


def ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def fmt(value, digits=2, suffix="") -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isnan(value):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{suffix}"
    return f"{value:,}{suffix}"


def pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


# Every framecache metric this report reads (SPEC's names plus the delivery ones).
USED_METRICS = [
    "framecache_requests_total",
    "framecache_cache_lookups_total",
    "framecache_origin_requests_total",
    "framecache_origin_rejections_total",
    "framecache_auth_failures_total",
    "framecache_response_bytes_total",
    "framecache_cache_cross_owner_hits_total",
    "framecache_cache_key_collisions_total",
    "framecache_not_modified_total",
    "framecache_partial_responses_total",
    "framecache_stream_frames_sent_total",
    "framecache_stream_frames_skipped_total",
]


# Scenarios whose k6 samples (samples.json.gz) tag the frames hubs received (RECORD_FRAMES).
RECORDS_FRAMES = {"fleet", "herd"}

# Scenarios `load-tests/run` starts slow_subscribers.py beside (it writes slow.json).
SLOW_SUBSCRIBER_SCENARIOS = {"stream"}


def cmd_scenario(args) -> int:
    d = Path(args.dir)
    summary = json.loads((d / "k6.summary.json").read_text())
    proxy = args.target == "framecache"
    if not proxy:
        # A peer has no /metrics: its figures read as absent, k6's stand.
        (d / "metrics.before").write_text("")
        (d / "metrics.after").write_text("")
    upgrade = json.loads((d / "upgrade.json").read_text()) if args.scenario == "upgrade" else None
    # In upgrade, metrics.after is the new instance's; metrics.old the old one's last scrape.
    also = (d / "metrics.old",) if upgrade is not None and (d / "metrics.old").exists() else ()
    diff = Diff(d / "metrics.before", d / "metrics.after", also)
    camsim_before = json.loads((d / "camsim.before.json").read_text())
    camsim_after = json.loads((d / "camsim.after.json").read_text())

    metrics = summary.get("metrics", {})
    k6_requests = metrics.get("http_reqs", {}).get("count", 0)
    k6_rate = metrics.get("http_reqs", {}).get("rate", 0.0)
    lookups = diff.by("framecache_cache_lookups_total", "result")
    lookup_total = sum(lookups.values())
    origin = diff.by("framecache_origin_requests_total", "outcome")
    origin_total = sum(origin.values())
    # Only where the runner has k6 record the frames received (upgrade's samples carry none).
    distinct = distinct_frames(d / "samples.json.gz") if args.scenario in RECORDS_FRAMES else None
    rejections = {k: int(v) for k, v in diff.by("framecache_origin_rejections_total", "reason").items() if v}
    auth_failures = {k: int(v) for k, v in diff.by("framecache_auth_failures_total", "reason").items() if v}
    statuses = {
        f"{dict(labels).get('route')} {dict(labels).get('status')}": int(v - diff.before.get((m, labels), 0))
        for (m, labels), v in diff.after.items()
        if m == "framecache_requests_total" and v - diff.before.get((m, labels), 0)
    }
    variant_bytes = {k: int(v) for k, v in diff.by("framecache_response_bytes_total", "variant").items() if v}
    cross_owner = diff.absolute("framecache_cache_cross_owner_hits_total")
    collisions = diff.absolute("framecache_cache_key_collisions_total")
    faults = {
        k: v - camsim_before.get("faults_injected", {}).get(k, 0)
        for k, v in camsim_after.get("faults_injected", {}).items()
        if v - camsim_before.get("faults_injected", {}).get(k, 0)
    }
    camsim_frame_requests = sum(camsim_after.get("frame_requests", {}).values()) - sum(
        camsim_before.get("frame_requests", {}).values()
    )
    # Whole frames camsim sent to an owner that had already been sent them: fetches a cache in
    # front should have spared (distinct from frames fetched that no hub asked for before the
    # run ended, which also count against origin requests per distinct frame received).
    served_again = (
        camsim_after["frames_served_again"] - camsim_before.get("frames_served_again", 0)
        if "frames_served_again" in camsim_after else None
    )
    # Distinct (owner, camera, seq) frames the origin sent whole: the frames the cache fetched.
    # Origin requests per distinct frame fetched is the coalescing figure: 1.00 when no frame
    # was fetched twice and no origin request failed.
    fetched = (
        camsim_after["frames_served"] - camsim_before.get("frames_served", 0) - served_again
        if "frames_served" in camsim_after and served_again is not None else None
    )

    # The scenarios the runner starts slow subscribers for: their report must be there.
    slow_expected = args.scenario in SLOW_SUBSCRIBER_SCENARIOS
    slow = json.loads((d / "slow.json").read_text()) if (d / "slow.json").exists() else None

    checks = k6_checks(summary)
    privacy = {n: c for n, c in checks.items() if n.startswith("privacy:")}
    privacy_passes = sum(c["passes"] for c in privacy.values())
    privacy_fails = sum(c["fails"] for c in privacy.values())
    checked_frames = metrics.get("privacy_checked_frames", {}).get("count", 0)
    answered, answers_checked, answers_unread = answers_seen(summary)

    latency = {"all": trend(summary, "http_req_duration")}
    for metric in metrics:
        m = re.fullmatch(r"http_req_duration\{route:(\w+)\}", metric)
        if m:
            latency[m.group(1)] = trend(summary, metric)

    problems = []
    # A metric missing from the scrape would read as 0 above: every one used must exist.
    scraped = {metric for metric, _ in diff.after}
    if proxy:
        used = USED_METRICS + (SOAK_METRICS if args.scenario == "soak" else [])
        problems.extend(f"metric missing from /metrics: {name}" for name in used if name not in scraped)
    if cross_owner:
        problems.append(f"cross-owner hits counted: {int(cross_owner)}")
    if collisions:
        problems.append(f"cache key collisions counted: {int(collisions)}")
    if proxy and args.scenario == "chaos" and not sum(rejections.values()):
        problems.append("chaos: the proxy rejected no origin answer (the faults did not reach it)")
    if slow_expected and slow is None:
        problems.append("slow subscribers wrote no slow.json (they did not run, or crashed; see slow.log)")
    if slow is not None:
        privacy_passes += slow["privacy_passes"]
        privacy_fails += slow["privacy_fails"]
        checked_frames += slow["parts"]
        if slow["privacy_fails"]:
            problems.append(f"slow subscribers: privacy violations {slow['violations'][:5]}")
        if not slow["parts"]:
            problems.append("slow subscribers received no frame")
        if slow.get("errors", 0):
            problems.append(f"slow subscribers: {slow['errors']} errors {slow.get('exceptions', [])[:5]}")
        if slow.get("unfinished", 0):
            problems.append(f"slow subscribers: {slow['unfinished']} did not finish in time")
    # The soak's attackers privacy-check the frames they receive too.
    attacks_file = d / "attacks.json"
    if args.scenario == "soak" and attacks_file.exists():
        attacked = json.loads(attacks_file.read_text())
        privacy_passes += attacked["privacy_passes"]
        privacy_fails += attacked["privacy_fails"]
        checked_frames += attacked["frames_checked"]
    # Every 200 on the frame routes must have gone through the checks' own count, checked or
    # (where a script samples) discarded unread: one that reached neither went unchecked.
    if answered != answers_checked + answers_unread:
        problems.append(
            f"200 answers on the frame routes: k6 counted {answered}, the privacy checks saw "
            f"{answers_checked + answers_unread}"
        )
    if privacy_fails:
        problems.append(f"privacy checks failed: {privacy_fails}")
    if not privacy_passes:
        problems.append("no privacy check ran")
    thresholds = failed_thresholds(summary)
    problems.extend(f"k6 threshold failed: {t}" for t in thresholds)
    upgrade_figures = None
    if upgrade is not None:
        upgrade_figures = upgrade_report(d, upgrade, summary)
        problems.extend(upgrade_figures["problems"])

    report = {
        "scenario": args.scenario,
        "target": args.target,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed_secs": args.elapsed,
        "k6_exit": args.k6_exit,
        "requests": k6_requests,
        "requests_per_sec": k6_rate,
        "proxy_requests_by_route_status": statuses,
        "cache_lookups": {k: int(v) for k, v in lookups.items()},
        "hit_ratio": ratio(lookups.get("hit", 0), lookup_total),
        "coalesced_ratio": ratio(lookups.get("coalesced", 0), lookup_total),
        "stale_ratio": ratio(lookups.get("stale", 0), lookup_total),
        "origin_requests": {k: int(v) for k, v in origin.items() if v},
        "origin_requests_total": int(origin_total),
        "camsim_frame_requests": camsim_frame_requests,
        "distinct_frames": distinct,
        "origin_requests_per_distinct_frame": ratio(origin_total, distinct) if distinct else None,
        "origin_frames_served_again": served_again,
        "distinct_frames_fetched": fetched,
        "origin_requests_per_distinct_frame_fetched": ratio(origin_total, fetched) if fetched else None,
        "latency_ms": latency,
        "response_bytes_by_variant": variant_bytes,
        "not_modified": int(diff.total("framecache_not_modified_total")),
        "partial_responses": {k: int(v) for k, v in diff.by("framecache_partial_responses_total", "result").items() if v},
        "stream_frames_sent": int(diff.total("framecache_stream_frames_sent_total")),
        "stream_frames_skipped": int(diff.total("framecache_stream_frames_skipped_total")),
        "origin_rejections": rejections,
        "auth_failures": auth_failures,
        "camsim_faults_injected": faults,
        "cross_owner_hits": int(cross_owner),
        "key_collisions": int(collisions),
        "privacy_checks": {"passes": privacy_passes, "fails": privacy_fails, "frames": int(checked_frames)},
        "frame_answers_200": {"answered": answered, "checked": answers_checked, "unread": answers_unread},
        "checks": checks,
        "slow_subscribers": slow,
        "failed_thresholds": thresholds,
        "upgrade": upgrade_figures,
        "problems": problems,
    }
    if args.scenario == "soak":
        report["sample_secs"] = args.sample_secs
        report["cache_max_bytes"] = args.cache_max_bytes
        soak_problems = soak_checks(args, d, diff, report)
        problems.extend(soak_problems)
    (d / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    text = render_scenario(report)
    (d / "report.md").write_text(text)
    print()
    print(text, end="")
    print(f"\nreports: {d / 'report.md'}, {d / 'report.json'}")
    if problems:
        print("\nFAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    return 0


def render_scenario(r: dict) -> str:
    lines = [f"# Load test `{r['scenario']}` against {r['target']} — {r['date']}", ""]
    if r["target"] != "framecache":
        lines += ["(a peer: no /metrics, so the proxy's own figures below are empty)", ""]
    row = lambda k, v: lines.append(f"| {k} | {v} |")  # noqa: E731
    lines += ["| figure | value |", "|---|---|"]
    row("hub requests (k6)", f"{fmt(r['requests'])} in {r['elapsed_secs']} s")
    row("requests/s (k6)", fmt(r["requests_per_sec"], 1))
    row("answers by route and status", ", ".join(f"{k}: {fmt(v)}" for k, v in sorted(r["proxy_requests_by_route_status"].items())) or "–")
    row("cache lookups", ", ".join(f"{k} {fmt(v)}" for k, v in sorted(r["cache_lookups"].items()) if v) or "–")
    row("hit / coalesced / stale ratio", f"{pct(r['hit_ratio'])} / {pct(r['coalesced_ratio'])} / {pct(r['stale_ratio'])}")
    row("origin requests", f"{fmt(r['origin_requests_total'])} ({', '.join(f'{k} {v}' for k, v in sorted(r['origin_requests'].items())) or '–'})")
    if r.get("distinct_frames_fetched") is not None and r["distinct_frames"] is not None:
        row("distinct frames fetched from the origin (owner, camera, seq)", fmt(r["distinct_frames_fetched"]))
        row("origin requests per distinct frame fetched", fmt(r["origin_requests_per_distinct_frame_fetched"]))
    if r["distinct_frames"] is not None:
        row("distinct frames received by hubs (owner, camera, seq)", fmt(r["distinct_frames"]))
        row("origin requests per distinct frame received", fmt(r["origin_requests_per_distinct_frame"]))
    if r.get("origin_frames_served_again") is not None:
        row("frames the origin sent the same owner twice", fmt(r["origin_frames_served_again"]))
    for route, t in r["latency_ms"].items():
        if t:
            row(f"latency {route} p50 / p95 / p99", f"{t['p50']:.2f} / {t['p95']:.2f} / {t['p99']:.2f} ms")
    row("body bytes by rendition", ", ".join(f"{k} {fmt(v)}" for k, v in sorted(r["response_bytes_by_variant"].items())) or "–")
    row("304 Not Modified", fmt(r["not_modified"]))
    if r["partial_responses"]:
        row("range requests", ", ".join(f"{k} {fmt(v)}" for k, v in sorted(r["partial_responses"].items())))
    if r["stream_frames_sent"] or r["stream_frames_skipped"]:
        row("stream frames sent / skipped", f"{fmt(r['stream_frames_sent'])} / {fmt(r['stream_frames_skipped'])}")
    if r.get("slow_subscribers"):
        s = r["slow_subscribers"]
        row("slow subscribers (python, beside k6)", f"{s['subscribers']} at {fmt(s['rate_bytes_per_sec'])} B/s (1 in 5 stalls 8 s): {fmt(s['parts'])} frames, {s['dropped_by_proxy']} dropped by the proxy")
    row("origin rejections by reason", ", ".join(f"{k} {fmt(v)}" for k, v in sorted(r["origin_rejections"].items())) or "0")
    row("auth failures by reason", ", ".join(f"{k} {fmt(v)}" for k, v in sorted(r["auth_failures"].items())) or "0")
    if r["camsim_faults_injected"]:
        row("faults camsim injected", ", ".join(f"{k} {fmt(v)}" for k, v in sorted(r["camsim_faults_injected"].items())))
    p = r["privacy_checks"]
    row("privacy checks passed / failed (frames checked)", f"{fmt(p['passes'])} / {fmt(p['fails'])} ({fmt(p['frames'])})")
    a = r["frame_answers_200"]
    row("200s on the frame routes: privacy-checked / answered", f"{fmt(a['checked'])} / {fmt(a['answered'])}")
    if r["target"] == "framecache":
        row("cross-owner hits / key collisions", f"{r['cross_owner_hits']} / {r['key_collisions']}")
    if r.get("upgrade"):
        lines += ["", *render_upgrade(r["upgrade"])]
    other = {n: c for n, c in r["checks"].items() if not n.startswith("privacy:")}
    if other:
        lines += ["", "| check | passes | fails |", "|---|---|---|"]
        lines += [f"| {n} | {fmt(c['passes'])} | {fmt(c['fails'])} |" for n, c in sorted(other.items())]
    if r["scenario"] == "soak":
        lines += render_soak(r)
    lines.append("")
    lines.append("Result: " + ("**FAILED** — " + "; ".join(r["problems"]) if r["problems"] else "passed"))
    return "\n".join(lines) + "\n"


# --- soak ---------------------------------------------------------------------------------------

# The routes whose latency the soak's p99 column reads (a stream lasts as long as it is watched,
# and route "other" holds the trickled heads the proxy waits out).
P99_ROUTES = ("frame", "frame_by_hash")

# Metrics the soak reads besides USED_METRICS.
SOAK_METRICS = [
    "framecache_sealed_bodies",
    "framecache_cache_entries",
    "framecache_cache_stored_bytes",
    "framecache_cache_evictions_total",
    "framecache_request_duration_seconds_bucket",
    "framecache_hub_write_timeouts_total",
    "framecache_limited_total",
]


def process_state(pid: int) -> str | None:
    """The state letter of process `pid` (`R`, `S`, `Z`...), or None when there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()[0]


def alive(pid: int) -> bool:
    """Whether `pid` runs: a zombie (dead, not yet waited for by its parent) does not."""
    return process_state(pid) not in (None, "Z", "X")


def proc_figures(pid: int) -> dict:
    """RSS (KiB) and open file descriptors of `pid`; absent when it cannot be read."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss_kib"] = int(line.split()[1])
        out["fds"] = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    except OSError:
        pass
    return out


def tcp_mem_pages() -> int | None:
    """The host's kernel TCP memory in pages (/proc/net/sockstat `TCP: ... mem N`)."""
    try:
        for line in Path("/proc/net/sockstat").read_text().splitlines():
            if line.startswith("TCP:"):
                words = line.split()
                return int(words[words.index("mem") + 1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def histogram_buckets(samples: dict, name: str, routes) -> dict[float, float]:
    """Cumulative bucket counts by upper bound, summed over `routes`."""
    out: dict[float, float] = defaultdict(float)
    for (metric, labels), value in samples.items():
        if metric != f"{name}_bucket":
            continue
        labels = dict(labels)
        if labels.get("route") in routes:
            out[float(labels["le"])] += value
    return dict(out)


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile of cumulative `buckets` (Prometheus's histogram_quantile: linear within a
    bucket); +inf when it lies past the last finite bound; None without observations."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return math.inf
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return math.inf


def metric_sum(samples: dict, name: str, **labels) -> float | None:
    """The sum of `name`'s samples whose labels include `labels`; None when there is none."""
    found = [v for (metric, ls), v in samples.items()
             if metric == name and all(dict(ls).get(k) == w for k, w in labels.items())]
    return sum(found) if found else None


def cmd_sample(args) -> int:
    """Every --every seconds: the proxy's RSS and file descriptors, the host's TCP memory, and
    from /metrics the sealed bodies, cache entries and bytes, requests and the frame routes'
    p99 since the last sample (histogram deltas). One JSON line each to --out, a row printed;
    the last scrape kept in --last. On SIGTERM a last (partial) sample; when the proxy dies, a
    line saying so, then it stops."""
    import signal
    import time
    import urllib.request

    stop = False

    def on_term(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    out = open(args.out, "a")
    started = time.monotonic()
    previous = {}
    print(SAMPLE_HEADER, flush=True)

    def take(final=False):
        nonlocal previous
        t = time.monotonic() - started
        row = {"t": round(t), "final": final}
        row.update(proc_figures(args.pid))
        row["tcp_mem_pages"] = tcp_mem_pages()
        try:
            with urllib.request.urlopen(args.metrics, timeout=10) as r:
                text = r.read().decode()
            Path(args.last).write_text(text)
            samples = parse_metrics_text(text)
        except OSError as e:
            row["scrape_error"] = str(e)
            samples = None
        if samples is not None:
            get = lambda name, **labels: metric_sum(samples, name, **labels)  # noqa: E731
            row.update(
                sealed_bodies=get("framecache_sealed_bodies"),
                cache_entries=get("framecache_cache_entries"),
                cache_stored_bytes=get("framecache_cache_stored_bytes"),
                requests=get("framecache_requests_total"),
                stream_subscribers=get("framecache_stream_subscribers"),
                stream_write_timeouts=get("framecache_hub_write_timeouts_total", route="stream"),
                evictions=get("framecache_cache_evictions_total"),
                cross_owner_hits=get("framecache_cache_cross_owner_hits_total"),
                key_collisions=get("framecache_cache_key_collisions_total"),
            )
            buckets = histogram_buckets(samples, "framecache_request_duration_seconds", P99_ROUTES)
            if previous.get("buckets") is not None and previous.get("requests") is not None:
                delta = {le: c - previous["buckets"].get(le, 0.0) for le, c in buckets.items()}
                p99 = quantile(0.99, delta)
                row["p99_ms"] = None if p99 is None else (p99 * 1000 if math.isfinite(p99) else "inf")
                row["frame_requests_period"] = int(delta.get(math.inf, 0))
                row["requests_period"] = int((row["requests"] or 0) - previous["requests"])
            previous = {"buckets": buckets, "requests": row["requests"]}
        out.write(json.dumps(row) + "\n")
        out.flush()
        print(sample_line(row), flush=True)
        return t

    last = take()
    next_at = args.every
    while not stop:
        time.sleep(0.5)
        if not alive(args.pid):
            t = round(time.monotonic() - started)
            out.write(json.dumps({"t": t, "died": True}) + "\n")
            out.flush()
            print(f"{fmt_secs(t):>8}  the proxy (pid {args.pid}) is gone", flush=True)
            return 0
        if time.monotonic() - started >= next_at:
            last = take()
            next_at += args.every
    if time.monotonic() - started - last >= 5:
        take(final=True)
    return 0


def fmt_secs(t) -> str:
    t = int(t)
    return f"{t // 3600}:{t // 60 % 60:02d}:{t % 60:02d}" if t >= 3600 else f"{t // 60}:{t % 60:02d}"


SAMPLE_COLUMNS = [
    # (heading, width, row -> text)
    ("at", 8, lambda r: fmt_secs(r["t"]) + ("*" if r.get("final") else "")),
    ("RSS MiB", 8, lambda r: fmt(r["rss_kib"] / 1024, 1) if r.get("rss_kib") is not None else "–"),
    ("fds", 6, lambda r: fmt(r.get("fds"))),
    ("TCP mem pages", 13, lambda r: fmt(r.get("tcp_mem_pages"))),
    ("sealed bodies", 13, lambda r: fmt(int_or_none(r.get("sealed_bodies")))),
    ("cache entries", 13, lambda r: fmt(int_or_none(r.get("cache_entries")))),
    ("cached MiB", 10, lambda r: fmt(r["cache_stored_bytes"] / 2**20, 2) if r.get("cache_stored_bytes") is not None else "–"),
    ("hub requests", 12, lambda r: fmt(r.get("requests_period"))),
    ("p99 frame ms", 12, lambda r: p99_text(r.get("p99_ms"))),
    ("streams", 7, lambda r: fmt(int_or_none(r.get("stream_subscribers")))),
    ("stream drops", 12, lambda r: fmt(int_or_none(r.get("stream_write_timeouts")))),
    ("cross-owner / coll.", 19, lambda r: f"{fmt(int_or_none(r.get('cross_owner_hits')))} / {fmt(int_or_none(r.get('key_collisions')))}"),
]
SAMPLE_HEADER = "  ".join(f"{h:>{w}}" for h, w, _ in SAMPLE_COLUMNS)


def int_or_none(v):
    return None if v is None else int(v)


def p99_text(v) -> str:
    if v is None:
        return "–"
    if v == "inf":
        return "> 10,000"
    return f"{v:,.1f}"


def sample_line(row: dict) -> str:
    if row.get("died"):
        return f"{fmt_secs(row['t']):>8}  the proxy is gone"
    line = "  ".join(f"{f(row):>{w}}" for _, w, f in SAMPLE_COLUMNS)
    return line + (f"  (scrape failed: {row['scrape_error']})" if row.get("scrape_error") else "")


def read_samples(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def soak_checks(args, d: Path, diff: Diff, report: dict) -> list[str]:
    """The soak's own figures into `report`, and its problems."""
    problems = []
    samples = read_samples(d / "samples.jsonl")
    died = [s for s in samples if s.get("died")]
    rows = [s for s in samples if not s.get("died")]
    attacks = json.loads((d / "attacks.json").read_text()) if (d / "attacks.json").exists() else None
    report["samples"] = rows
    report["attacks"] = attacks
    if args.proxy_alive == "no" or died:
        at = f" about {fmt_secs(died[0]['t'])} into the run" if died else ""
        problems.append(f"the proxy died{at} (see framecache.log)")
    # Counted at any sample: the last one may be all there is of a proxy that died.
    for s in rows:
        if s.get("cross_owner_hits") or s.get("key_collisions"):
            problems.append(f"at {fmt_secs(s['t'])}: cross-owner hits {int(s['cross_owner_hits'] or 0)}, "
                            f"key collisions {int(s['key_collisions'] or 0)}")
            break
    if not rows:
        problems.append("no sample of the proxy's figures was taken (see sampler output)")
    if attacks is None:
        problems.append("the attacks wrote no attacks.json (they did not run, or crashed; see attacks.log)")
    else:
        for name, a in attacks["attacks"].items():
            if a["unexpected"]:
                problems.append(f"attack {name}: {a['unexpected']} unexpected answers: {'; '.join(a['notes'][:3])}")
        if attacks["errors"]:
            problems.append(f"attacks: {attacks['errors']} errors {attacks['exceptions'][:3]}")
        if attacks["privacy_fails"]:
            problems.append(f"attacks: privacy violations {attacks['violations'][:3]}")
        # Every refusal is counted (SPEC Part 2): at least as many as the attackers met.
        limited = diff.by("framecache_limited_total", "limit")
        met = Counter()
        for name, a in attacks["attacks"].items():
            for label, n in a["answers"].items():
                # Labels of answers end in their status ("one_long_field 431", "after retry 200").
                status = label.rsplit(" ", 1)[-1]
                if name in ("big_head", "trickle", "origin_burst") and status in ("431", "408", "429"):
                    met[status] += n
        for status, limit in (("431", "header_bytes"), ("408", "header_timeout"), ("429", "owner_origin_rps")):
            # A dead proxy's last counters are those of the last sample, before its last answers.
            if limited.get(limit, 0) < met[status] and args.proxy_alive == "yes" and not died:
                problems.append(f"framecache_limited_total{{limit=\"{limit}\"}} grew by {int(limited.get(limit, 0))}, "
                                f"the attacks were answered {met[status]} × {status}")
        report["limited"] = {k: int(v) for k, v in limited.items() if v}
    # What the order checks saw (soak.js logs it; a check's count alone cannot say).
    log = d / "k6.k6.log"
    report["order_warnings"] = [
        m.group(1) for m in re.finditer(r'msg="((?:stream|latest) of [^"]*)" source=console',
                                        log.read_text() if log.exists() else "")][:10]
    # What the soak is for.
    report["evictions"] = int(diff.total("framecache_cache_evictions_total"))
    if rows and not report["evictions"]:
        problems.append("no cache eviction: the churn stayed within cache.max_bytes, so the soak did not go past the budget")
    if not report["camsim_faults_injected"].get("leak"):
        problems.append("camsim injected no leaked frame: the chaos did not run")
    elif not sum(report["origin_rejections"].values()):
        problems.append("the proxy rejected no origin answer though camsim injected faults")
    return problems


def render_soak(r: dict) -> list[str]:
    lines = ["", f"## The proxy over time (every {fmt_secs(r['sample_secs'])}; * a last, shorter period)", "",
             "| " + " | ".join(h for h, _, _ in SAMPLE_COLUMNS) + " |",
             "|" + "---|" * len(SAMPLE_COLUMNS)]
    for row in r["samples"]:
        lines.append("| " + " | ".join(f(row) for _, _, f in SAMPLE_COLUMNS) + " |")
    lines += ["", "RSS and open file descriptors are the proxy's; TCP memory is the host's (/proc/net/sockstat, "
              "pages), shared with k6, camsim and whatever else runs; hub requests and p99 (frame and by-hash "
              "routes, from the proxy's histogram) are per period; streams, stream drops (write timeouts) and "
              "cross-owner hits / key collisions are as counted at the time. The kernel counts TCP memory in "
              "per-CPU batches (net.core.mem_pcpu_rsv), so a few hundred pages or less can read as 0."]
    rows = r["samples"]
    if rows:
        peak = lambda k: max((s[k] for s in rows if s.get(k) is not None), default=None)  # noqa: E731
        lines += ["", "| peak | value |", "|---|---|",
                  f"| RSS | {fmt(peak('rss_kib') / 1024 if peak('rss_kib') else None, 1)} MiB "
                  f"(first sample {fmt(rows[0]['rss_kib'] / 1024 if rows[0].get('rss_kib') else None, 1)} MiB) |",
                  f"| open file descriptors | {fmt(peak('fds'))} (first sample {fmt(rows[0].get('fds'))}) |",
                  f"| host TCP memory | {fmt(peak('tcp_mem_pages'))} pages |",
                  f"| cached bytes | {fmt(peak('cache_stored_bytes') / 2**20 if peak('cache_stored_bytes') else None, 2)} MiB "
                  f"(cache.max_bytes {fmt(r['cache_max_bytes'] / 2**20 if r.get('cache_max_bytes') else None, 2)} MiB); "
                  f"{fmt(r['evictions'])} evictions |"]
    if r.get("order_warnings"):
        lines += ["", "Frames that went back to an older seq (from k6's log):", ""]
        lines += [f"- {w}" for w in r["order_warnings"]]
    a = r.get("attacks")
    if a:
        lines += ["", f"## Attacks (load-tests/attacks.py; owners {', '.join(f'{v} ({k})' for k, v in a['owners'].items())})",
                  "", "| attack | rounds | answers | unexpected | figures |", "|---|---|---|---|---|"]
        for name, at in a["attacks"].items():
            answers = ", ".join(f"{k} × {fmt(v)}" for k, v in sorted(at["answers"].items()))
            figures = ", ".join(f"{k} {fmt(v) if not isinstance(v, float) else fmt(v, 2)}" for k, v in at["figures"].items())
            lines.append(f"| {name} | {at['rounds']} | {answers} | {at['unexpected']} | {figures or '–'} |")
        lines += ["", f"Refusals counted by the proxy (framecache_limited_total): "
                  f"{', '.join(f'{k} {fmt(v)}' for k, v in sorted(r.get('limited', {}).items())) or '–'}. "
                  f"Frames the attackers received, privacy-checked: {a['privacy_passes']} passed, {a['privacy_fails']} failed."]
    return lines

# --- upgrade ------------------------------------------------------------------------------------


def cmd_counters(args) -> int:
    """Until stopped, every --interval seconds one JSON line: camsim's counters (/stats) and the
    proxy's (/metrics of whichever instance accepts the connection: during an upgrade both
    accept on the same socket), each with the time it was asked. The whole scrape of the first
    instance seen is kept in --first-metrics, overwritten while it answers: at the end, the old
    instance's last figures."""
    import time
    import urllib.request

    def get(url: str) -> bytes:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.read()

    first = None
    with open(args.out, "a", buffering=1) as out:
        while True:
            began = time.time()
            line = {"t": began, "camsim": None, "proxy": None}
            try:
                t = time.time()
                stats = json.loads(get(f"{args.camsim_url}/stats"))
                line["camsim"] = {
                    "t": t,
                    "requests_total": stats.get("requests_total", 0),
                    "frame_requests": sum(stats.get("frame_requests", {}).values()),
                }
            except (OSError, ValueError) as e:
                line["camsim_error"] = str(e)
            try:
                t = time.time()
                text = get(f"{args.admin_url}/metrics").decode()
                m = parse_metrics_text(text)
                start = m.get(("process_start_time_seconds", ()))

                def total(name: str) -> float:
                    return sum(v for (metric, _), v in m.items() if metric == name)

                line["proxy"] = {
                    "t": t,
                    "start": start,
                    "origin_requests": total("framecache_origin_requests_total"),
                    "hub_requests": total("framecache_requests_total"),
                }
                if first is None:
                    first = start
                if start == first:
                    tmp = Path(args.first_metrics + ".tmp")
                    tmp.write_text(text)
                    tmp.replace(args.first_metrics)
            except (OSError, ValueError) as e:
                line["proxy_error"] = str(e)
            out.write(json.dumps(line) + "\n")
            time.sleep(max(0.0, args.interval - (time.time() - began)))


def interpolate(series: list[tuple[float, float]], t: float) -> float | None:
    """The value of a counter at time t, linear between the samples around it (None outside)."""
    if not series or t < series[0][0] or t > series[-1][0]:
        return None
    for (t0, v0), (t1, v1) in zip(series, series[1:]):
        if t0 <= t <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return series[-1][1]


def k6_request_times(path: Path) -> list[float] | None:
    """When k6 made each request on the frame routes (seconds since the epoch), from its JSON
    samples (`--out json`); None without them."""
    if not path.exists():
        return None
    times = []
    with gzip.open(path, "rt") as f:
        for line in f:
            if '"http_reqs"' not in line or '"Point"' not in line:
                continue
            data = json.loads(line).get("data", {})
            if data.get("tags", {}).get("route") in FRAME_ROUTES:
                times.append(datetime.fromisoformat(data["time"]).timestamp())
    return sorted(times)


WINDOW_SECS = 10
RETRY_KINDS = ["refused", "dial", "reset", "broken_pipe", "eof", "timeout", "other"]


def upgrade_report(d: Path, u: dict, summary: dict) -> dict:
    """The upgrade's figures from upgrade.json (the runner's timeline), samples.jsonl (the
    sampler's) and k6's summary, with the problems that fail the run."""
    metrics = summary.get("metrics", {})
    failed = metrics.get("http_req_failed", {})
    retried = int(metrics.get("hub_retries", {}).get("count", 0))
    retried_ok = int(metrics.get("hub_retries_ok", {}).get("count", 0))
    kinds = {k: int(metrics.get(f"hub_retries{{kind:{k}}}", {}).get("count", 0)) for k in RETRY_KINDS}
    samples = []
    if (d / "samples.jsonl").exists():
        samples = [json.loads(line) for line in (d / "samples.jsonl").read_text().splitlines() if line.strip()]
    camsim = [(s["camsim"]["t"], s["camsim"]["frame_requests"]) for s in samples if s.get("camsim")]
    hub_times = k6_request_times(d / "samples.json.gz")
    # The proxy's counters in the report: the old instance's as of its last answer to the sampler.
    starts = [s["proxy"]["start"] for s in samples if s.get("proxy") and s["proxy"].get("start") is not None]
    old_seen = [s["proxy"]["t"] for s in samples if starts and s.get("proxy") and s["proxy"].get("start") == min(starts)]

    t = u.get("sigquit")
    out = {
        "upgrade_at_secs": t - u["k6_start"] if t else None,
        "upgrade_planned_secs": u["upgrade_planned_secs"],
        "warmup_secs": u["warmup_secs"],
        "measured_secs": u["measured_secs"],
        "old_exited": u["old_exited"],
        "old_exit_code": u["old_exit_code"],
        "old_exit_secs": u["old_exit"] - t if u.get("old_exit") and t else None,
        "old_last_scraped_secs": old_seen[-1] - t if old_seen and t else None,
        "exit_expected_secs": u["exit_expected_secs"],
        "exit_bound_secs": u["exit_bound_secs"],
        "grace_period_secs": u["grace_period_secs"],
        "new_serving": u["new_serving"],
        "requests": int(metrics.get("http_reqs", {}).get("count", 0)),
        # In http_req_failed a sample is true when the request failed: "passes" counts failures.
        "failed_after_retry": int(failed.get("passes", 0)),
        "retried": retried,
        "retried_ok": retried_ok,
        "retried_by_kind": {k: v for k, v in kinds.items() if v},
        "connections_refused": kinds["refused"],
        "window_secs": WINDOW_SECS,
    }

    def window(at) -> tuple[float | None, float | None]:
        if at is None or not t:
            return None, None
        a, b, c = at(t - WINDOW_SECS), at(t), at(t + WINDOW_SECS)
        return (b - a if a is not None and b is not None else None,
                c - b if b is not None and c is not None else None)

    before, after = window(lambda x: interpolate(camsim, x))
    out["origin_requests_before"], out["origin_requests_after"] = before, after
    out["origin_ratio"] = after / before if before and after is not None else None
    if hub_times is not None and t:
        out["hub_requests_before"] = sum(1 for x in hub_times if t - WINDOW_SECS <= x < t)
        out["hub_requests_after"] = sum(1 for x in hub_times if t <= x < t + WINDOW_SECS)
    else:
        out["hub_requests_before"] = out["hub_requests_after"] = None
    out["origin_per_hub_request_before"] = ratio(before, out["hub_requests_before"]) if before is not None else None
    out["origin_per_hub_request_after"] = ratio(after, out["hub_requests_after"]) if after is not None else None
    per_second = []
    if t:
        for k in range(-WINDOW_SECS, WINDOW_SECS):
            a, b = interpolate(camsim, t + k), interpolate(camsim, t + k + 1)
            per_second.append(round(b - a) if a is not None and b is not None else None)
    out["origin_requests_per_second"] = per_second

    problems = []
    if not t:
        problems.append("upgrade: the upgrade did not happen (k6 ended first)")
    else:
        if not u["old_exited"]:
            problems.append(f"upgrade: the old instance did not exit within {u['exit_bound_secs']} s of SIGQUIT")
        elif u["old_exit_code"] != 0:
            problems.append(f"upgrade: the old instance exited {u['old_exit_code']}")
        if not u["new_serving"]:
            problems.append("upgrade: the new instance was not serving after the upgrade")
        if before is None or after is None:
            problems.append(f"upgrade: camsim was not sampled {WINDOW_SECS} s either side of the upgrade")
    if out["failed_after_retry"]:
        problems.append(f"upgrade: hub requests failed after one retry: {out['failed_after_retry']}")
    if out["connections_refused"]:
        problems.append(f"upgrade: hub connections refused: {out['connections_refused']}")
    out["problems"] = problems
    return out


def render_upgrade(u: dict) -> list[str]:
    lines = ["| upgrade | value |", "|---|---|"]
    row = lambda k, v: lines.append(f"| {k} | {v} |")  # noqa: E731
    w = u["window_secs"]
    if u["upgrade_at_secs"] is None:
        row("upgrade (SIGQUIT to the old instance)", "did not happen")
    else:
        row("upgrade (SIGQUIT to the old instance)",
            f"{u['upgrade_at_secs']:.1f} s into the k6 run ({u['warmup_secs']} s warm-up, then a third of {u['measured_secs']} s)")
        expected = (f"expected within {u['exit_expected_secs']} s: 5 s accepting, the grace period of "
                    f"{u['grace_period_secs']} s, as long again for its runtimes")
        if u["old_exited"]:
            late = " — slower than expected" if u["old_exit_secs"] > u["exit_expected_secs"] + 0.5 else ""
            row("old instance", f"exited {u['old_exit_code']}, {u['old_exit_secs']:.1f} s after SIGQUIT ({expected}){late}")
        else:
            row("old instance", f"**did not exit** within {u['exit_bound_secs']} s ({expected})")
        row("new instance", "serving after the upgrade" if u["new_serving"] else "**not serving**")
    row("hub requests failed after one retry (k6 http_req_failed)", f"{fmt(u['failed_after_retry'])} of {fmt(u['requests'])}")
    kinds = ", ".join(f"{k} {v}" for k, v in u["retried_by_kind"].items())
    row("hub requests retried after a connection error / the retry succeeded",
        f"{fmt(u['retried'])} / {fmt(u['retried_ok'])}{f' ({kinds})' if kinds else ''}")
    row("hub connections refused", fmt(u["connections_refused"]))
    row(f"origin requests (camsim), {w} s before / {w} s after the upgrade",
        f"{fmt(u['origin_requests_before'], 0)} / {fmt(u['origin_requests_after'], 0)}")
    ratio_text = "–"
    if u["origin_ratio"] is not None:
        ratio_text = f"{u['origin_ratio']:.2f}"
        if u["hub_requests_after"] == 0:
            ratio_text += " (no hub request was answered after the upgrade)"
        elif u["origin_ratio"] <= 1.2:
            ratio_text += " (within the goal)"
        else:
            ratio_text += " — **above the goal**: the new instance starts with an empty cache (not a failure of the run)"
    row("origin requests after / before (goal ≤ 1.20)", ratio_text)
    row(f"hub requests on the frame routes (k6), {w} s before / after",
        f"{fmt(u['hub_requests_before'])} / {fmt(u['hub_requests_after'])}")
    row("origin requests per hub request, before / after",
        f"{fmt(u['origin_per_hub_request_before'])} / {fmt(u['origin_per_hub_request_after'])}")
    per = u["origin_requests_per_second"]
    if per:
        show = lambda xs: " ".join("–" if x is None else str(x) for x in xs)  # noqa: E731
        row("origin requests per second around the upgrade (camsim)",
            f"−{w}…−1 s: {show(per[:w])}; 0…{w - 1} s: {show(per[w:])}")
    if u["old_last_scraped_secs"] is not None:
        when = u["old_last_scraped_secs"]
        when = f"{when:.1f} s after SIGQUIT" if when >= 0 else f"{-when:.1f} s before SIGQUIT"
        row("the proxy's figures above",
            f"the old instance's as of its last scrape, {when} (what it answered later is not in them), "
            "plus the new instance's")
    return lines


# --- compare ------------------------------------------------------------------------------------


def cmd_cpu(args) -> int:
    """CPU seconds (utime + stime) of PID and every descendant, from /proc."""
    import os

    ticks = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields follow the last ")".
        fields = text[text.rindex(")") + 2:].split()
        ppid, utime, stime = int(fields[1]), int(fields[11]), int(fields[12])
        stats[int(entry.name)] = (ppid, utime + stime)
    tree, frontier = set(), {args.pid}
    while frontier:
        tree |= frontier
        frontier = {pid for pid, (ppid, _) in stats.items() if ppid in frontier and pid not in tree}
    print(f"{sum(stats[pid][1] for pid in tree if pid in stats) / ticks:.2f}")
    return 0


TARGETS = ["framecache", "nginx", "varnish"]
NAMES = {"framecache": "framecache", "nginx": "nginx proxy_cache", "varnish": "Varnish"}


def children_cpu(before: Path, after: Path) -> float | None:
    """CPU seconds (user + system) of a shell's waited-for children between two `times`
    outputs (second line: children's user and system time, as `1m2.345s 0m0.678s`), or None
    when either is missing or unreadable."""
    def read(path: Path) -> float | None:
        if not path.exists():
            return None
        lines = path.read_text().splitlines()
        if len(lines) < 2:
            return None
        total = 0.0
        for field in lines[1].split():
            # The decimal separator is the locale's.
            m = re.fullmatch(r"(\d+)m(\d+)[.,](\d+)s", field)
            if not m:
                return None
            total += 60 * int(m.group(1)) + float(f"{m.group(2)}.{m.group(3)}")
        return total
    b, a = read(before), read(after)
    return a - b if a is not None and b is not None else None


def cmd_compare(args) -> int:
    d = Path(args.dir)
    # The measured runs as they ran (load-tests/peers/compare.sh's `measure`).
    order_file = d / "run-order"
    ran = order_file.read_text().split() if order_file.exists() else []
    rows = []
    for workload in ("hit", "miss"):
        for rnd in range(1, args.rounds + 1):
            for target in TARGETS:
                name = f"{workload}-{rnd}-{target}"
                if not (d / f"{name}.summary.json").exists():
                    continue
                summary = json.loads((d / f"{name}.summary.json").read_text())
                m = summary["metrics"]
                before, after = (float(x) for x in (d / f"{name}.cpu").read_text().split())
                sb = json.loads((d / f"{name}.camsim.before.json").read_text())
                sa = json.loads((d / f"{name}.camsim.after.json").read_text())
                k6_cpu = children_cpu(d / f"{name}.k6times.before", d / f"{name}.k6times.after")
                checks = k6_checks(summary)
                privacy = [c for n, c in checks.items() if n.startswith("privacy:")]
                answered, answers_checked, answers_unread = answers_seen(summary)
                requests = m["http_reqs{route:frame}"]["count"]
                rows.append({
                    "workload": workload,
                    "round": rnd,
                    "position": ran.index(name) if name in ran else len(ran),
                    "target": target,
                    "requests": requests,
                    "rps": m["http_reqs{route:frame}"]["rate"],
                    "p50_ms": m["http_req_duration{route:frame}"]["med"],
                    "p99_ms": m["http_req_duration{route:frame}"]["p(99)"],
                    "cpu_secs": after - before,
                    "cpu_secs_per_1000": 1000 * (after - before) / requests if requests else None,
                    "k6_cpu_secs_per_1000": 1000 * k6_cpu / requests if requests and k6_cpu is not None else None,
                    "origin_requests": sum(sa["frame_requests"].values()) - sum(sb["frame_requests"].values()),
                    "privacy_passes": sum(c["passes"] for c in privacy),
                    "privacy_fails": sum(c["fails"] for c in privacy),
                    "answers_200": answered,
                    "answers_checked": answers_checked,
                    "answers_unread": answers_unread,
                })
    rows.sort(key=lambda r: (r["workload"] != "hit", r["round"], r["position"]))
    means = {}
    for workload in ("hit", "miss"):
        for target in TARGETS:
            rs = [r for r in rows if r["workload"] == workload and r["target"] == target]
            if not rs:
                continue
            avg = lambda k: sum(r[k] for r in rs) / len(rs) if all(r[k] is not None for r in rs) else None  # noqa: E731
            means[(workload, target)] = {k: avg(k) for k in ("rps", "p50_ms", "p99_ms", "cpu_secs_per_1000", "k6_cpu_secs_per_1000", "origin_requests", "requests")}
            # The machine is shared and noisy: each round's ratio to framecache in the same
            # round shows how far one run can be trusted.
            base = {r["round"]: r for r in rows if r["workload"] == workload and r["target"] == "framecache"}
            per_round = [r["rps"] / base[r["round"]]["rps"] for r in rs if r["round"] in base and base[r["round"]]["rps"]]
            means[(workload, target)]["rps_ratio_min"] = min(per_round) if per_round else None
            means[(workload, target)]["rps_ratio_max"] = max(per_round) if per_round else None
    report = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": "2-core development machine",
        "command": args.run_command,
        "profile": args.profile,
        "rounds": rows,
        "means": [{"workload": w, "target": t, **v} for (w, t), v in means.items()],
    }
    (d / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    text = render_compare(report, means)
    (d / "report.md").write_text(text)
    print()
    print(text, end="")
    print(f"\nreports: {d / 'report.md'}, {d / 'report.json'}")
    fails = sum(r["privacy_fails"] for r in rows)
    unseen = [f"{r['workload']} round {r['round']} {r['target']}" for r in rows
              if r["answers_200"] != r["answers_checked"] + r["answers_unread"]]
    if fails:
        print(f"FAILED: {fails} privacy checks failed", file=sys.stderr)
    if unseen:
        print(f"FAILED: 200 answers the privacy checks did not see in {', '.join(unseen)}", file=sys.stderr)
    return 1 if fails or unseen else 0


def render_compare(report: dict, means: dict) -> str:
    lines = [
        f"Compare — {report['date']}, {report['machine']}, `{report['command']}` ({report['profile']} build).",
        "",
        "| workload | target | req/s | p99 ms | CPU s / 1,000 req | k6's CPU s / 1,000 req | origin requests | req/s vs framecache | (rounds) | p99 vs framecache |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for workload, label in (("hit", "hit-heavy"), ("miss", "miss-heavy")):
        base = means.get((workload, "framecache"))
        for target in TARGETS:
            m = means.get((workload, target))
            if not m:
                continue
            rps_ratio = f"{m['rps'] / base['rps']:.2f}×" if base and base["rps"] else "–"
            p99_ratio = f"{m['p99_ms'] / base['p99_ms']:.2f}×" if base and base["p99_ms"] else "–"
            spread = (f"{m['rps_ratio_min']:.2f}–{m['rps_ratio_max']:.2f}×"
                      if m.get("rps_ratio_min") is not None and target != "framecache" else "–")
            lines.append(
                f"| {label} | {NAMES[target]} | {m['rps']:,.0f} | {m['p99_ms']:.2f} | "
                f"{fmt(m['cpu_secs_per_1000'], 3)} | {fmt(m['k6_cpu_secs_per_1000'], 3)} | {m['origin_requests']:,.0f} | "
                f"{rps_ratio} | {spread} | {p99_ratio} |"
            )
    lines += ["", "Rounds, in the order they ran (round by round, the six orders of the three targets in turn):", "",
              "| workload | round | target | requests | req/s | p50 ms | p99 ms | CPU s | origin requests | privacy checks failed |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rounds"]:
        lines.append(
            f"| {r['workload']} | {r['round']} | {NAMES[r['target']]} | {r['requests']:,} | {r['rps']:,.0f} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['cpu_secs']:.2f} | {r['origin_requests']:,} | {r['privacy_fails']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("config")
    c.add_argument("template")
    c.add_argument("out")
    c.add_argument("overrides", nargs="*")
    s = sub.add_parser("scenario")
    s.add_argument("--scenario", required=True)
    s.add_argument("--dir", required=True)
    s.add_argument("--target", default="framecache")
    s.add_argument("--k6-exit", type=int, default=0)
    s.add_argument("--elapsed", type=int, default=0)
    s.add_argument("--proxy-alive", choices=["yes", "no"], default="yes")
    s.add_argument("--sample-secs", type=int, default=300)
    s.add_argument("--cache-max-bytes", type=int, default=0)
    smp = sub.add_parser("sample")
    smp.add_argument("--pid", type=int, required=True)
    smp.add_argument("--metrics", required=True, help="the proxy's /metrics URL")
    smp.add_argument("--every", type=float, required=True, help="seconds between samples")
    smp.add_argument("--out", required=True, help="JSON lines, appended")
    smp.add_argument("--last", required=True, help="where the last scrape is kept")
    cpu = sub.add_parser("cpu")
    cpu.add_argument("pid", type=int)
    cnt = sub.add_parser("counters")
    cnt.add_argument("--camsim-url", required=True)
    cnt.add_argument("--admin-url", required=True)
    cnt.add_argument("--out", required=True)
    cnt.add_argument("--first-metrics", required=True)
    cnt.add_argument("--interval", type=float, default=1.0)
    cmp = sub.add_parser("compare")
    cmp.add_argument("--dir", required=True)
    cmp.add_argument("--rounds", type=int, default=6)
    cmp.add_argument("--profile", default="release")
    cmp.add_argument("--command", dest="run_command", default="load-tests/run compare")
    args = parser.parse_args()
    commands = {"config": cmd_config, "scenario": cmd_scenario, "cpu": cmd_cpu,
                "compare": cmd_compare, "sample": cmd_sample, "counters": cmd_counters}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
