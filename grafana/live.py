#!/usr/bin/env python3
"""The dashboards and alert rules against a real Prometheus scraping a real proxy.

Run by grafana/test after the promtool checks. It

1. checks every dashboard's JSON: unique panel ids, a datasource variable and no hard-coded
   datasource uid, a unit and thresholds on every panel;
2. starts camsim and framecache (the debug binaries `cargo build` made) and a Prometheus of its
   own on free loopback ports, with its own configuration and data folder, scraping the admin
   listener every second and evaluating grafana/alerts/*.rules.yml every second;
3. sends hub traffic: several owners, hits and misses, 304s, ranges, by-hash frames, an MJPEG
   subscriber, auth failures, unknown paths; then switches camsim's faults on (frames of another
   camera under the requested camera's headers, wrong cameras, errors) and purges an owner;
4. waits until the alert FramecacheOriginIdentityRejected fires, and checks the cross-owner and
   collision alerts stay silent;
5. evaluates every dashboard expression (template variables substituted) and every rule
   expression through /api/v1/query: each must parse, every dashboard target must return series,
   and the panels the traffic exercises must show a value above zero; every metric name used
   must be in the live scrape; every rule must evaluate without error; every label_values()
   variable must find the proxy's instance.

Everything it starts is stopped at the end, whatever happens. Python 3 standard library only.
"""

import base64
import glob
import hashlib
import hmac
import http.client
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
RULE_FILES = sorted(glob.glob(str(ROOT / "grafana" / "alerts" / "*.rules.yml")))
FRAMECACHE = ROOT / "target" / "debug" / "framecache"
CAMSIM = ROOT / "target" / "debug" / "camsim"

# Grafana's template variables as the test substitutes them. $__rate_interval is what Grafana
# computes for a 1 s scrape interval and a ~20 s step; wide enough that every rate panel sees
# the traffic.
RATE_INTERVAL = "20s"
INTERVAL = "10s"
RANGE = "5m"

# Panels whose value must be above zero under the generated traffic (title -> why).
EXERCISED = {
    "Origin identity rejections": "camsim leaks frames of another camera",
    "Auth failures": "bad tokens are sent",
    "Origin rejections by reason": "camsim leaks frames",
    "Auth failures by reason": "bad tokens are sent",
    "Hub requests by route": "hub traffic",
    "Hub requests by status": "hub traffic",
    "Error ratio (5xx)": "camsim errors and leaks give 502",
    "Cache answers by result": "hits and misses",
    "Served without an origin request": "repeated requests hit",
    "Origin offload": "repeated requests hit",
    "Cache memory": "frames are stored",
    "Budget used": "frames are stored",
    "Cache entries": "frames are stored",
    "Evictions and purges": "the budget holds only a few frames",
    "Hub frame latency": "hub traffic",
    "Hub p99 by route": "hub traffic",
    "Origin latency": "origin fetches",
    "Origin requests by outcome": "origin fetches",
    "Bytes sent by rendition": "frames are sent",
    "Bytes saved by 304 and ranges": "If-None-Match and Range requests",
    "Share of bytes saved": "If-None-Match and Range requests",
    "304 Not Modified by route": "If-None-Match requests",
    "Range requests by result": "Range requests",
    "Stream subscribers": "an MJPEG subscriber",
    "Stream frames": "an MJPEG subscriber",
    "Skipped share": "cameras faster than the stream interval",
    "Renditions by result": "thumbnails are asked for",
    "Rendering time": "thumbnails are rendered",
    "Renditions served, by reason": "variant= and Save-Data requests",
    "Resident memory": "the process runs",
    "File descriptors used": "the process runs",
    "Uptime": "the process runs",
    "Build": "framecache_build_info is 1",
}

# Every reason of framecache_auth_failures_total; the traffic provokes each.
AUTH_REASONS = ("missing", "malformed", "expired", "bad_signature", "wrong_audience", "camera_not_granted")

HUB_SECRET = secrets.token_hex(24).encode()
ADMIN_TOKEN = secrets.token_hex(16)
SIGNING_KEY = secrets.token_hex(32)

started_at = time.monotonic()


def log(message):
    print(f"[{time.monotonic() - started_at:5.1f}s] {message}", flush=True)


class Failed(Exception):
    pass


# --- static checks of the dashboards -----------------------------------------------------------


def walk_panels(panels):
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def walk_datasources(node, where):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield where, value
            yield from walk_datasources(value, where)
    elif isinstance(node, list):
        for value in node:
            yield from walk_datasources(value, where)


def check_dashboard(path):
    problems = []
    try:
        dash = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        return [f"{path.name}: not valid JSON: {e}"], None
    panels = list(walk_panels(dash.get("panels", [])))
    ids = [p.get("id") for p in panels]
    if None in ids or len(set(ids)) != len(ids):
        problems.append(f"{path.name}: panel ids missing or not unique: {ids}")
    variables = dash.get("templating", {}).get("list", [])
    if not any(v.get("type") == "datasource" and v.get("query") == "prometheus" for v in variables):
        problems.append(f"{path.name}: no Prometheus datasource variable")
    for where, ds in walk_datasources(dash, path.name):
        uid = ds.get("uid") if isinstance(ds, dict) else ds
        if uid not in ("${datasource}", "$datasource"):
            problems.append(f"{where}: hard-coded datasource {ds!r}")
    for v in variables:
        if v.get("type") == "query" and not re.fullmatch(r"label_values\(\w+, *\w+\)", query_text(v)):
            problems.append(f"{path.name}: variable {v.get('name')}: expected label_values(metric, label)")
    for p in panels:
        if p.get("type") == "row":
            continue
        name = f"{path.name}: panel {p.get('id')} {p.get('title')!r}"
        defaults = p.get("fieldConfig", {}).get("defaults", {})
        if not defaults.get("unit"):
            problems.append(f"{name}: no unit")
        if not defaults.get("thresholds", {}).get("steps"):
            problems.append(f"{name}: no thresholds")
        if not p.get("targets") or not all(t.get("expr") for t in p["targets"]):
            problems.append(f"{name}: no PromQL targets")
    return problems, dash


def query_text(variable):
    """A query variable's query: a string, or {"query": string} in newer Grafana versions."""
    query = variable.get("query", "")
    return query.get("query", "") if isinstance(query, dict) else query


def substitute(expr, instance_regex):
    for name, value in (
        ("__rate_interval", RATE_INTERVAL),
        ("__interval", INTERVAL),
        ("__range", RANGE),
        ("instance", instance_regex),
    ):
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    if "$" in expr:
        raise Failed(f"unsubstituted template variable in {expr}")
    return expr


# --- processes ---------------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """Everything started here, stopped by process group at the end."""

    def __init__(self, folder):
        self.folder = folder
        self.running = []

    def start(self, name, argv):
        out = open(self.folder / f"{name}.log", "wb")
        proc = subprocess.Popen(
            [str(a) for a in argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.running.append((name, proc, out))
        return proc

    def check_alive(self):
        for name, proc, _ in self.running:
            if proc.poll() is not None:
                raise Failed(f"{name} exited with {proc.returncode}; log:\n{self.tail(name)}")

    def tail(self, name, lines=30):
        path = self.folder / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self):
        for name, proc, out in reversed(self.running):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            out.close()
        self.running.clear()


def request(addr, method, path, headers=None, body=None, timeout=10, read=True):
    host, port = addr
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read() if read else b""
        return resp.status, dict(resp.getheaders()), data
    finally:
        conn.close()


def wait_for(what, check, limit=30.0, processes=None):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if processes:
            processes.check_alive()
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise Failed(f"gave up waiting for {what} after {limit:.0f} s")


# --- hub traffic -------------------------------------------------------------------------------


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(owner, cameras, secret=HUB_SECRET, audience="framecache", ttl=3600):
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"sub": owner, "cams": cameras, "aud": audience, "exp": int(time.time()) + ttl}
    payload = b64(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


class Traffic:
    """Hub requests in a loop until stopped; counts answers by status."""

    def __init__(self, hub, topology):
        self.hub = hub
        self.topology = topology
        self.stop = threading.Event()
        self.statuses = {}
        self.errors = []
        self.lock = threading.Lock()

    def get(self, path, headers):
        try:
            status, resp_headers, _ = request(self.hub, "GET", path, headers)
        except OSError as e:
            with self.lock:
                self.errors.append(f"GET {path}: {e}")
            return None, {}
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
        return status, {k.lower(): v for k, v in resp_headers.items()}

    def frames(self):
        while not self.stop.is_set():
            for owner, cameras in self.topology.items():
                auth = {"Authorization": f"Bearer {token(owner, cameras)}"}
                for camera in cameras:
                    latest = f"/v1/cameras/{camera}/frame"
                    status, h = self.get(latest, auth)
                    self.get(latest, auth)  # mostly a hit
                    if status != 200:
                        continue
                    self.get(latest, {**auth, "If-None-Match": h["etag"]})
                    by_hash = h["content-location"]
                    self.get(by_hash, {**auth, "Range": "bytes=0-99"})
                    self.get(by_hash, {**auth, "If-None-Match": h["etag"]})
                    self.get(by_hash, {**auth, "Range": "bytes=99999999-"})
                    self.get(f"{latest}?variant=thumb", auth)
                    self.get(latest, {**auth, "Save-Data": "on"})
                if self.stop.wait(0.05):
                    return

    def refusals(self):
        owner, cameras = next(iter(self.topology.items()))
        camera = cameras[0]
        path = f"/v1/cameras/{camera}/frame"
        bad = [
            {},
            {"Authorization": "Bearer not-a-token"},
            {"Authorization": f"Bearer {token(owner, cameras, secret=b'another-secret-another-secret-00')}"},
            {"Authorization": f"Bearer {token(owner, cameras, ttl=-3600)}"},
            {"Authorization": f"Bearer {token(owner, cameras, audience='elsewhere')}"},
            {"Authorization": f"Bearer {token(owner, ['cam-elsewhere'])}"},
        ]
        while not self.stop.is_set():
            for headers in bad:
                self.get(path, headers)
            self.get("/v1/cameras/../frame", {"Authorization": f"Bearer {token(owner, cameras)}"})
            if self.stop.wait(0.5):
                return

    def stream(self):
        owner, cameras = next(iter(self.topology.items()))
        host, port = self.hub
        while not self.stop.is_set():
            conn = http.client.HTTPConnection(host, port, timeout=5)
            try:
                conn.request(
                    "GET",
                    f"/v1/cameras/{cameras[0]}/stream",
                    headers={"Authorization": f"Bearer {token(owner, cameras)}"},
                )
                resp = conn.getresponse()
                while not self.stop.is_set() and resp.read1(65536):
                    pass
            except OSError:
                self.stop.wait(0.5)
            finally:
                conn.close()

    def start(self):
        self.threads = [
            threading.Thread(target=f, daemon=True) for f in (self.frames, self.refusals, self.stream)
        ]
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)


# --- Prometheus --------------------------------------------------------------------------------


class Prometheus:
    def __init__(self, addr):
        self.addr = addr

    def api(self, path, **params):
        query = urllib.parse.urlencode(params)
        status, _, body = request(self.addr, "GET", f"/api/v1/{path}?{query}")
        data = json.loads(body)
        if status != 200 or data.get("status") != "success":
            raise Failed(f"/api/v1/{path} {params}: {status} {data.get('error', body[:300])}")
        return data["data"]

    def query(self, expr):
        return self.api("query", query=expr)["result"]

    def firing(self):
        return [a for a in self.api("alerts")["alerts"] if a["state"] == "firing"]


def unknown_metrics(expr, scraped):
    """The framecache_* and process_* names in `expr` that are not families of the scrape (a
    histogram's _bucket, _sum and _count belong to their family)."""
    names = set(re.findall(r"\b((?:framecache|process)_[a-z_]+)\b", expr))
    return sorted(
        n for n in names if n not in scraped and re.sub(r"_(bucket|sum|count)$", "", n) not in scraped
    )


def main():
    problems = []

    # 1. The dashboards as files.
    if not DASHBOARDS:
        raise Failed("no dashboards in grafana/dashboards/")
    targets = []  # (dashboard, panel title, expr)
    variables = []  # (dashboard, name, metric, label) of label_values(metric, label) variables
    panel_count = 0
    for path in DASHBOARDS:
        found, dash = check_dashboard(path)
        problems += found
        if dash is None:
            continue
        for v in dash.get("templating", {}).get("list", []):
            m = re.fullmatch(r"label_values\((\w+), *(\w+)\)", query_text(v))
            if v.get("type") == "query" and m:
                variables.append((path.name, v["name"], m.group(1), m.group(2)))
        for panel in walk_panels(dash.get("panels", [])):
            if panel.get("type") == "row":
                continue
            panel_count += 1
            for target in panel.get("targets", []):
                targets.append((path.name, panel["title"], target["expr"]))
    if problems:
        raise Failed("\n".join(problems))
    log(f"{len(DASHBOARDS)} dashboard(s), {panel_count} panels, {len(targets)} expressions: files ok")

    for binary in (FRAMECACHE, CAMSIM):
        if not binary.exists():
            raise Failed(f"{binary.relative_to(ROOT)} is missing: run cargo build first")

    folder = Path(tempfile.mkdtemp(prefix="framecache-observability-"))
    procs = Processes(folder)
    traffic = None
    ok = False
    try:
        # 2. camsim, framecache, Prometheus.
        (folder / "signing.key").write_text(SIGNING_KEY + "\n")
        (folder / "hub.secret").write_bytes(HUB_SECRET)
        (folder / "admin.token").write_text(ADMIN_TOKEN)
        origin = ("127.0.0.1", free_port())
        hub = ("127.0.0.1", free_port())
        admin = ("127.0.0.1", free_port())
        prom_addr = ("127.0.0.1", free_port())
        procs.start("camsim", [
            CAMSIM, "--listen", f"{origin[0]}:{origin[1]}", "--signing-key-file", folder / "signing.key",
            "--owners", 4, "--cameras-per-owner", 2, "--width", 320, "--height", 240, "--fps", 4,
        ])
        (folder / "framecache.toml").write_text(f"""
[server]
listen = "{hub[0]}:{hub[1]}"
admin_listen = "{admin[0]}:{admin[1]}"
threads = 2
grace_period_secs = 0

[auth]
secret_file = "hub.secret"

[admin]
token_file = "admin.token"

[origin]
addresses = ["{origin[0]}:{origin[1]}"]
response_timeout_ms = 2000
signing_key_file = "signing.key"
max_frame_bytes = 65536

[cache]
# Room for a handful of frames only, so that evictions happen.
max_bytes = 200000
latest_fresh_ms = 1000

[delivery]
stream_interval_ms = 1000
""")
        procs.start("framecache", [FRAMECACHE, "serve", "--config", folder / "framecache.toml"])
        instance = f"{admin[0]}:{admin[1]}"
        rule_list = "\n".join(f"  - {json.dumps(f)}" for f in RULE_FILES)
        (folder / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
{rule_list}
scrape_configs:
  - job_name: framecache
    static_configs:
      - targets: ["{instance}"]
""")
        procs.start("prometheus", [
            "prometheus", "--config.file", folder / "prometheus.yml",
            "--storage.tsdb.path", folder / "data", "--storage.tsdb.retention.time", "1h",
            "--web.listen-address", f"{prom_addr[0]}:{prom_addr[1]}", "--log.level", "warn",
        ])
        prom = Prometheus(prom_addr)
        wait_for("camsim", lambda: request(origin, "GET", "/topology")[0] == 200, processes=procs)
        wait_for("framecache /readyz", lambda: request(admin, "GET", "/readyz")[0] == 200, processes=procs)
        wait_for("Prometheus /-/ready", lambda: request(prom_addr, "GET", "/-/ready")[0] == 200, processes=procs)
        log(f"camsim {origin[1]}, framecache hub {hub[1]} admin {admin[1]}, Prometheus {prom_addr[1]}: up")

        # 3. Traffic, clean first, then with faults.
        topology = json.loads(request(origin, "GET", "/topology")[2])
        traffic = Traffic(hub, topology)
        traffic.start()
        wait_for(
            "Prometheus to scrape framecache",
            lambda: prom.query(f'up{{job="framecache",instance="{instance}"}} == 1'),
            processes=procs,
        )
        time.sleep(8)
        faults = {"leak_rate": 0.2, "wrong_camera_rate": 0.1, "error_rate": 0.05}
        status, _, body = request(origin, "PUT", "/control/faults", {"Content-Type": "application/json"}, json.dumps(faults))
        if status != 200:
            raise Failed(f"camsim refused the faults: {status} {body!r}")
        log(f"camsim faults on: {faults}")
        # The budget holds only a few frames and other owners' traffic evicts, so the purged
        # owner's frame is fetched just before each try; a try that finds nothing is repeated.
        purge_owner, purge_cameras = list(topology.items())[-1]
        for _ in range(20):
            request(hub, "GET", f"/v1/cameras/{purge_cameras[0]}/frame",
                    {"Authorization": f"Bearer {token(purge_owner, purge_cameras)}"})
            status, _, body = request(
                admin, "POST", "/admin/purge",
                {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
                json.dumps({"owner": purge_owner}),
            )
            if status != 200:
                raise Failed(f"purge refused: {status} {body!r}")
            if json.loads(body)["purged"] > 0:
                break
        else:
            raise Failed(f"20 purges of {purge_owner} found nothing cached")

        # 4. The rejection alert fires while camsim leaks; the privacy alerts stay silent.
        def identity_alert():
            return [a for a in prom.firing() if a["labels"]["alertname"] == "FramecacheOriginIdentityRejected"]

        wait_for("FramecacheOriginIdentityRejected to fire", identity_alert, limit=45, processes=procs)
        reasons = sorted({a["labels"].get("reason") for a in identity_alert()})
        log(f"FramecacheOriginIdentityRejected firing for {reasons}")
        if not set(reasons) <= {"camera_mismatch", "bad_signature", "owner_mismatch"}:
            problems.append(f"identity alert fired with unexpected reasons {reasons}")
        time.sleep(3)  # a few more scrapes with faults, so every rate window sees them
        procs.check_alive()

        # 5. Every expression through Prometheus.
        scrape = request(admin, "GET", "/metrics")[2].decode()
        scraped = set(re.findall(r"^# TYPE (\S+) ", scrape, re.M))
        instance_regex = re.escape(instance).replace("\\", "\\\\")
        for dashboard, name, metric, label in variables:
            values = {r["metric"].get(label) for r in prom.query(metric)} - {None}
            if label == "instance" and instance not in values:
                problems.append(f"{dashboard} variable {name}: {instance} not among {values}")
            elif not values:
                problems.append(f"{dashboard} variable {name}: no {label} values of {metric}")
        exercised_seen = set()
        for dashboard, title, expr in targets:
            try:
                result = prom.query(substitute(expr, instance_regex))
            except Failed as e:
                problems.append(f"{dashboard} {title!r}: {e}")
                continue
            if not result:
                problems.append(f"{dashboard} {title!r}: no series for {expr}")
            values = [float(r["value"][1]) for r in result]
            if title in EXERCISED and any(v > 0 and v == v for v in values):
                exercised_seen.add(title)
            for name in unknown_metrics(expr, scraped):
                problems.append(f"{dashboard} {title!r}: {name} is not in the scrape")
        for title in sorted(set(EXERCISED) - exercised_seen):
            problems.append(f"panel {title!r} shows nothing above zero although {EXERCISED[title]}")

        # The traffic's own events, one by one, as Prometheus stored them.
        for series in [
            *(f'framecache_auth_failures_total{{reason="{r}"}}' for r in AUTH_REASONS),
            'framecache_origin_rejections_total{reason="camera_mismatch"}',
            'framecache_origin_rejections_total{reason="bad_signature"}',
            'framecache_cache_lookups_total{result="hit"}',
            'framecache_not_modified_total{route="frame_by_hash"}',
            'framecache_partial_responses_total{result="unsatisfiable"}',
            'framecache_requests_total{route="other",status="400"}',
            'framecache_cache_purged_entries_total',
        ]:
            if not any(float(r["value"][1]) > 0 for r in prom.query(series)):
                problems.append(f"{series} is not above zero in Prometheus")

        groups = prom.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        expected = sum(
            len(re.findall(r"^\s*- (?:alert|record):", Path(f).read_text(), re.M)) for f in RULE_FILES
        )
        if len(rules) != expected:
            problems.append(f"Prometheus loaded {len(rules)} rules, the files hold {expected}")
        for rule in rules:
            name = rule["name"]
            try:
                prom.query(rule["query"])
            except Failed as e:
                problems.append(f"rule {name}: {e}")
            if rule.get("health") != "ok":
                problems.append(f"rule {name}: health {rule.get('health')}: {rule.get('lastError')}")
            for metric in unknown_metrics(rule["query"], scraped):
                problems.append(f"rule {name}: {metric} is not in the scrape")
        for alert in prom.firing():
            if alert["labels"]["alertname"] in ("FramecacheCrossOwnerHit", "FramecacheKeyCollision"):
                problems.append(f"{alert['labels']['alertname']} fired: the proxy served no such thing")
        log(
            f"{len(targets)} dashboard expressions and {len(rules)} rule expressions evaluated; "
            f"hub answers by status: {dict(sorted(traffic.statuses.items()))}"
        )
        if traffic.errors:
            problems.append(f"{len(traffic.errors)} hub requests failed, e.g. {traffic.errors[:3]}")
        procs.check_alive()
        if problems:
            raise Failed("\n".join(problems))
        ok = True
    finally:
        if traffic:
            traffic.finish()
        procs.stop()
        if ok:
            for path in sorted(folder.rglob("*"), reverse=True):
                path.rmdir() if path.is_dir() else path.unlink()
            folder.rmdir()
        else:
            for name in ("camsim", "framecache", "prometheus"):
                print(f"--- last lines of {name}'s log ({folder}):\n{procs.tail(name)}", file=sys.stderr)


if __name__ == "__main__":
    # A SIGTERM (a CI timeout) unwinds through main's cleanup like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        main()
    except Failed as e:
        print(f"FAILED:\n{e}", file=sys.stderr)
        log("observability test failed")
        sys.exit(1)
    log("observability test passed")
