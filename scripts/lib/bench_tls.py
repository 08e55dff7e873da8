#!/usr/bin/env python3
"""Helpers of `scripts/bench tls`: one measured run, and the table of all of them.

  bench_tls.py measure --out FILE --round N --target NAME --workload NAME --pid PID
                       [--copies K] [--log LOG] -- COMMAND...
      Runs COMMAND (K copies at once, for openssl s_time), reads the server's CPU (utime +
      stime of PID and its descendants, from /proc) before and after, the load generator's
      CPU from its rusage, parses what h2load or s_time printed, and appends one JSON line
      to FILE. Exits non-zero when the run failed or answered other statuses than expected.
  bench_tls.py table FILE --command TEXT
      Prints the markdown tables: means per workload and target, then every round.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")

# Workloads in table order: (name, what one unit is, expected status class, label).
WORKLOADS = [
    ("h1", "requests", "2xx", "hits, HTTP/1.1 keep-alive"),
    ("h2", "requests", "2xx", "hits, HTTP/2"),
    ("h1-304", "requests", "3xx", "304 revalidations, HTTP/1.1 keep-alive"),
    ("h2-304", "requests", "3xx", "304 revalidations, HTTP/2"),
    ("reconnect", "requests", "2xx", "reconnect storm: a new connection (resumed session) per hit, HTTP/1.1"),
    ("full", "handshakes", None, "full handshakes (s_time -new)"),
    ("resumed", "handshakes", None, "resumed handshakes (s_time -reuse)"),
]


def cpu_seconds(pid: int) -> float:
    """utime + stime of PID and every descendant, in seconds."""
    parents = {}
    stats = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
        stats[int(entry.name)] = int(fields[11]) + int(fields[12])
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, 0)
        todo.extend(c for c, parent in parents.items() if parent == p)
    return total / TICKS


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, int(round(q * len(sorted_values) + 0.5)) - 1))
    return sorted_values[i]


def parse_h2load(text: str, log: str, expect: str) -> dict:
    """What h2load printed, and the p50/p99 of its per-request log (microseconds)."""
    out = {}
    m = re.search(r"finished in ([\d.]+)(ms|s), ([\d.]+) req/s", text)
    if not m:
        raise SystemExit("h2load printed no result:\n" + text[-2000:])
    out["seconds"] = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    m = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout",
        text,
    )
    out["done"], out["succeeded"], out["failed"] = int(m.group(3)), int(m.group(4)), int(m.group(5))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    out["status"] = {"2xx": int(m.group(1)), "3xx": int(m.group(2)), "4xx": int(m.group(3)), "5xx": int(m.group(4))}
    m = re.search(r"traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers .*?\((\d+)\) data", text)
    if m:
        out["bytes_total"], out["bytes_data"] = int(m.group(1)), int(m.group(3))
    m = re.search(r"Application protocol: (\S+)", text)
    out["protocol"] = m.group(1) if m else None
    m = re.search(r"TLS Protocol: (\S+)", text)
    out["tls"] = m.group(1) if m else None
    m = re.search(r"Cipher: (\S+)", text)
    if m and out["tls"]:
        out["tls"] += " " + m.group(1)
    m = re.search(r"Server Temp Key: (\S+)", text)
    if m and out["tls"]:
        out["tls"] += " " + m.group(1)
    durations = []
    with open(log) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1].startswith(expect[0]):
                durations.append(int(parts[2]))
    durations.sort()
    out["p50_ms"] = percentile(durations, 0.50) / 1000 if durations else None
    out["p99_ms"] = percentile(durations, 0.99) / 1000 if durations else None
    out["units"] = out["status"][expect]
    bad = out["done"] - out["units"] + out["failed"]
    out["unexpected"] = bad
    return out


def parse_s_time(texts) -> dict:
    """What the copies of openssl s_time printed: connections, and how many resumed."""
    total = reused = fresh = 0
    for text in texts:
        counts = re.findall(r"^(\d+) connections in [\d.]+s;", text, re.M)
        if not counts:
            raise SystemExit("openssl s_time printed no result:\n" + text[-2000:])
        total += int(counts[-1])
        for line in text.splitlines():
            if line and set(line) <= set("r*t3."):
                reused += line.count("r")
                fresh += len(line) - line.count("r")
    return {"units": total, "reused": reused, "fresh": fresh, "unexpected": 0}


def cmd_measure(args) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    loadavg = Path("/proc/loadavg").read_text().split()[0]
    cpu_before = cpu_seconds(args.pid)
    started = time.monotonic()
    outputs = [tempfile.TemporaryFile(mode="w+") for _ in range(args.copies)]
    procs = [subprocess.Popen(command, stdout=o, stderr=subprocess.STDOUT) for o in outputs]
    client_cpu, rc = 0.0, 0
    for p in procs:
        # os.wait4 rather than Popen.wait: the copy's own CPU (the load generator's).
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        rc = rc or p.returncode
        client_cpu += usage.ru_utime + usage.ru_stime
    wall = time.monotonic() - started
    texts = []
    for o in outputs:
        o.seek(0)
        texts.append(o.read())
        o.close()
    cpu_after = cpu_seconds(args.pid)
    if rc != 0:
        sys.stderr.write(f"{command[0]} exited {rc}:\n" + texts[0][-3000:])
        return 1
    if args.log:
        result = parse_h2load(texts[0], args.log, args.expect)
        os.unlink(args.log)
    else:
        result = parse_s_time(texts)
        result["seconds"] = wall
    result.update(
        round=args.round,
        target=args.target,
        workload=args.workload,
        wall=wall,
        server_cpu=cpu_after - cpu_before,
        client_cpu=client_cpu,
        loadavg=float(loadavg),
        rate=result["units"] / result["seconds"],
    )
    with open(args.out, "a") as f:
        f.write(json.dumps(result) + "\n")
    extra = ""
    if result.get("p99_ms") is not None:
        extra = f", p99 {result['p99_ms']:.2f} ms"
    if "reused" in result:
        extra = f", {result['reused']:,} resumed / {result['fresh']:,} full"
    print(
        f"  round {args.round} {args.target:<10} {args.workload:<9} {result['rate']:>9,.0f}/s{extra}, "
        f"server {1e6 * result['server_cpu'] / max(result['units'], 1):.1f} CPU-ms per 1,000, "
        f"server core {100 * result['server_cpu'] / wall:.0f} % busy, load generator {100 * client_cpu / wall:.0f} %"
        f" (load average {loadavg})",
        flush=True,
    )
    if result["unexpected"] > max(10, result["units"] // 1000):
        sys.stderr.write(
            f"{args.target} {args.workload}: {result['unexpected']} answers other than {args.expect}: "
            f"{result.get('status')}\n"
        )
        return 1
    return 0


def mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def fmt(v, spec, unit=""):
    return "—" if v is None else f"{v:{spec}}{unit}"


def cmd_table(args) -> int:
    rows = [json.loads(line) for line in open(args.file)]
    targets = ["framecache", "nginx"]
    rounds = sorted({r["round"] for r in rows})
    print(f"`{args.command}`\n")
    print(
        "| workload | framecache /s | p99 | server CPU-ms per 1,000 | per server CPU-second "
        "| nginx /s | p99 | server CPU-ms per 1,000 | per server CPU-second "
        "| framecache ÷ nginx per second | per server CPU-second |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, unit, _, label in WORKLOADS:
        cells, per = [label], {}
        for t in targets:
            sel = [r for r in rows if r["workload"] == name and r["target"] == t]
            if not sel:
                break
            units = sum(r["units"] for r in sel)
            cpu = sum(r["server_cpu"] for r in sel)
            rate = mean([r["rate"] for r in sel])
            p99 = mean([r.get("p99_ms") for r in sel])
            per_cpu = units / cpu if cpu > 0 else None
            per[t] = (rate, per_cpu)
            cells += [
                f"{rate:,.0f} {unit}",
                fmt(p99, ".2f", " ms"),
                fmt(1e6 * cpu / units if units else None, ".1f"),
                fmt(per_cpu, ",.0f"),
            ]
        if len(per) < 2:
            continue
        (fr, fc), (nr, nc) = per["framecache"], per["nginx"]
        cells += [f"**{fr / nr:.2f}×**", f"**{fc / nc:.2f}×**" if fc and nc else "—"]
        print("| " + " | ".join(cells) + " |")
    print()
    print("Every round (rate per second; in brackets the server core's busy share and the load generator's):\n")
    print("| workload | " + " | ".join(f"round {n}: framecache | nginx" for n in rounds) + " |")
    print("|---|" + "---|---|" * len(rounds))
    for name, _, _, label in WORKLOADS:
        cells = [name]
        for n in rounds:
            for t in targets:
                sel = [r for r in rows if r["workload"] == name and r["target"] == t and r["round"] == n]
                if not sel:
                    cells.append("—")
                    continue
                r = sel[0]
                cells.append(
                    f"{r['rate']:,.0f} ({100 * r['server_cpu'] / r['wall']:.0f} %, {100 * r['client_cpu'] / r['wall']:.0f} %)"
                )
        print("| " + " | ".join(cells) + " |")
    sizes = [r["bytes_data"] / r["done"] for r in rows if r["workload"] == "h1" and r.get("done")]
    load = [r["loadavg"] for r in rows]
    print()
    if sizes:
        print(f"Frame body bytes per HTTP/1.1 hit (h2load's data bytes ÷ requests): {mean(sizes):,.0f}.")
    print(f"Machine load average during the rounds: {min(load):.1f} to {max(load):.1f}.")
    negotiated = {}
    for r in rows:
        if r.get("tls"):
            negotiated.setdefault(r["workload"], set()).add(f"{r['tls']} {r.get('protocol')}")
    seen = [f"{w} {' / '.join(sorted(v))}" for w, v in negotiated.items()]
    print("Negotiated, as h2load reports it for both servers: " + "; ".join(seen) + ".")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="sub", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--out", required=True)
    m.add_argument("--round", type=int, required=True)
    m.add_argument("--target", required=True)
    m.add_argument("--workload", required=True)
    m.add_argument("--pid", type=int, required=True)
    m.add_argument("--copies", type=int, default=1)
    m.add_argument("--log")
    m.add_argument("--expect", default="2xx")
    m.add_argument("command", nargs=argparse.REMAINDER)
    t = sub.add_parser("table")
    t.add_argument("file")
    t.add_argument("--command", required=True)
    args = parser.parse_args()
    return cmd_measure(args) if args.sub == "measure" else cmd_table(args)


if __name__ == "__main__":
    sys.exit(main())
