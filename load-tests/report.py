#!/usr/bin/env python3
"""The load-test runner's arithmetic: configuration copies, /metrics diffs, summaries, reports.

    report.py config TEMPLATE OUT KEY=VALUE...      copy a framecache TOML with overrides
    report.py scenario --scenario S --dir D ...     one scenario's summary, report.json, report.md
    report.py compare --dir D                       the peers' table from the rounds in D

Python 3.11 standard library only. `scenario` exits 1 when an invariant fails: cross-owner hits
or key collisions counted, privacy checks failed or never run, a 200 on the frame routes that
the privacy checks did not see, any failed k6 threshold, (stream) slow subscribers that did not
report or hit an error, or (chaos) no origin answer rejected.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import re
import sys
import tomllib
from collections import defaultdict
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
    samples = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            continue
        labels = tuple(sorted(LABEL.findall(m.group(2) or "")))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples


class Diff:
    """Counters after minus before."""

    def __init__(self, before: Path, after: Path):
        self.before = parse_metrics(before)
        self.after = parse_metrics(after)

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
    diff = Diff(d / "metrics.before", d / "metrics.after")
    camsim_before = json.loads((d / "camsim.before.json").read_text())
    camsim_after = json.loads((d / "camsim.after.json").read_text())

    metrics = summary.get("metrics", {})
    k6_requests = metrics.get("http_reqs", {}).get("count", 0)
    k6_rate = metrics.get("http_reqs", {}).get("rate", 0.0)
    lookups = diff.by("framecache_cache_lookups_total", "result")
    lookup_total = sum(lookups.values())
    origin = diff.by("framecache_origin_requests_total", "outcome")
    origin_total = sum(origin.values())
    distinct = distinct_frames(d / "samples.json.gz")
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
        problems.extend(f"metric missing from /metrics: {name}" for name in USED_METRICS if name not in scraped)
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
        "problems": problems,
    }
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
    other = {n: c for n, c in r["checks"].items() if not n.startswith("privacy:")}
    if other:
        lines += ["", "| check | passes | fails |", "|---|---|---|"]
        lines += [f"| {n} | {fmt(c['passes'])} | {fmt(c['fails'])} |" for n, c in sorted(other.items())]
    lines.append("")
    lines.append("Result: " + ("**FAILED** — " + "; ".join(r["problems"]) if r["problems"] else "passed"))
    return "\n".join(lines) + "\n"


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
    cpu = sub.add_parser("cpu")
    cpu.add_argument("pid", type=int)
    cmp = sub.add_parser("compare")
    cmp.add_argument("--dir", required=True)
    cmp.add_argument("--rounds", type=int, default=6)
    cmp.add_argument("--profile", default="release")
    cmp.add_argument("--command", dest="run_command", default="load-tests/run compare")
    args = parser.parse_args()
    return {"config": cmd_config, "scenario": cmd_scenario, "cpu": cmd_cpu, "compare": cmd_compare}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
