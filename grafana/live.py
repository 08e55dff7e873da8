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
   camera under the requested camera's headers, wrong cameras, errors) and purges an owner.
   Every frame the hubs receive is checked as a hub would: a 200 must be an image/jpeg frame
   whose watermark (camsim's JPEG comment `framecache-sim camera={camera} seq={seq}`) names the
   camera asked for, granted by the token, with the seq of X-Frame-Seq; a rendition, which
   carries no watermark, through the source frame its Content-Location names; a range must be
   the bytes of the frame held; every stream part likewise; a refusal must be the refusal;
4. waits until the alert FramecacheOriginIdentityRejected fires, and checks the cross-owner and
   collision alerts stay silent;
5. evaluates every dashboard expression (template variables substituted) and every rule
   expression through /api/v1/query: each must parse, every dashboard target must return series,
   and the panels the traffic exercises must show a value above zero; every metric name used
   must be in the live scrape; every rule must evaluate without error; every label_values()
   variable must find the proxy's instance;
6. stops the traffic and, in a last scrape, requires framecache_cache_cross_owner_hits_total and
   framecache_cache_key_collisions_total to be there and 0 (an alert that did not happen to fire
   at the moment of looking proves nothing).

Any exception in a traffic thread, a frame that fails its checks, or a hub request that fails
fails the test. Everything it starts is stopped at the end, whatever happens. Python 3 standard
library only.
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
import traceback
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

# The privacy counters, required in the last scrape and 0.
PRIVACY_COUNTERS = ("framecache_cache_cross_owner_hits_total", "framecache_cache_key_collisions_total")

# camsim's watermark (camsim/src/jpeg.rs), and an MJPEG part's head (proxy/src/stream.rs).
WATERMARK = re.compile(rb"framecache-sim camera=([A-Za-z0-9._-]+) seq=(\d+)")
PART_HEAD = re.compile(rb"--framecache-frame\r\n(.*?)\r\n\r\n", re.S)

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
    """Hub requests in a loop until stopped; counts answers by status and checks every frame
    answer as a hub would (see `check_frame`). Anything a thread raises is an error too."""

    def __init__(self, hub, topology):
        self.hub = hub
        self.topology = topology
        self.stop = threading.Event()
        self.statuses = {}
        self.errors = []
        self.violations = []  # frames that failed their checks
        self.checked = {}  # kind -> frames that passed their checks
        self.lock = threading.Lock()

    def error(self, message):
        with self.lock:
            self.errors.append(message)

    def violation(self, message):
        with self.lock:
            self.violations.append(message)

    def passed(self, kind):
        with self.lock:
            self.checked[kind] = self.checked.get(kind, 0) + 1

    def get(self, path, headers):
        """GET `path`: (status, lower-cased headers, body), or (None, {}, b"") when the request
        failed (counted as an error)."""
        try:
            status, resp_headers, body = request(self.hub, "GET", path, headers)
        except (OSError, http.client.HTTPException) as e:
            self.error(f"GET {path}: {type(e).__name__}: {e}")
            return None, {}, b""
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
        return status, {k.lower(): v for k, v in resp_headers.items()}, body

    def check_frame(self, what, cameras, camera, h, body, auth):
        """The checks of a 200 frame answer `h`, `body` for `camera` under a token granting
        `cameras`: an image/jpeg frame; a full frame carries the watermark of `camera` with the
        seq of X-Frame-Seq; a rendition (no watermark) names its source frame in
        Content-Location, and that frame, fetched by hash, passes as a full frame with the same
        seq. Returns True when it passed."""
        if not h.get("content-type", "").startswith("image/jpeg"):
            self.violation(f"{what}: a 200 of Content-Type {h.get('content-type')!r}")
            return False
        variant = h.get("x-frame-variant", "full")
        if variant == "full":
            return self.check_watermark(what, cameras, camera, h.get("x-frame-seq"), body, "frame")
        location = h.get("content-location", "")
        m = re.fullmatch(rf"/v1/cameras/{re.escape(camera)}/frames/([0-9a-f]{{64}})\?variant={re.escape(variant)}",
                         location)
        if not m:
            self.violation(f"{what}: a {variant} rendition with Content-Location {location!r}")
            return False
        # The source may be gone from the small cache while camsim's faults make the origin fail:
        # a gateway error is tried again a few times. A rendition whose source cannot be had is
        # not a pass.
        for _ in range(5):
            status, sh, source = self.get(f"/v1/cameras/{camera}/frames/{m.group(1)}?variant=full", auth)
            if status not in (502, 503, 504):
                break
            time.sleep(0.1)
        if status is None:
            return False  # counted as an error
        if status != 200:
            self.violation(f"{what}: the source of a {variant} rendition answered {status}")
            return False
        if sh.get("x-frame-variant", "full") != "full" or not sh.get("content-type", "").startswith("image/jpeg"):
            self.violation(f"{what}: the source of a {variant} rendition is {sh.get('x-frame-variant')} "
                           f"{sh.get('content-type')}")
            return False
        if sh.get("x-frame-seq") != h.get("x-frame-seq"):
            self.violation(f"{what}: a {variant} rendition of seq {h.get('x-frame-seq')} names a source "
                           f"of seq {sh.get('x-frame-seq')}")
            return False
        if not self.check_watermark(f"{what} (source)", cameras, camera, sh.get("x-frame-seq"), source, "frame"):
            return False
        self.passed("rendition")
        return True

    def check_watermark(self, what, cameras, camera, seq, body, kind):
        """A whole JPEG whose watermark names `camera` (granted: in `cameras`) and `seq`."""
        mark = WATERMARK.search(body)
        found = (mark.group(1).decode(), mark.group(2).decode()) if mark else None
        if not (body.startswith(b"\xff\xd8") and body.endswith(b"\xff\xd9")):
            self.violation(f"{what}: not a whole JPEG ({len(body)} bytes)")
            return False
        if found is None or found[0] != camera or found[0] not in cameras or found[1] != seq:
            self.violation(f"{what}: asked for {camera} (X-Frame-Seq {seq}), the watermark says {found}")
            return False
        self.passed(kind)
        return True

    def check_range(self, what, h, body, held_etag, held_body, start):
        """A 206 of the frame held (its ETag, body): the bytes from `start` of that body."""
        if h.get("etag") != held_etag or body != held_body[start:start + len(body)] or not body:
            self.violation(f"{what}: a 206 ({h.get('content-range')}, ETag {h.get('etag')}) that is not "
                           f"part of the frame held (ETag {held_etag})")
            return
        self.passed("range")

    def frames(self):
        while not self.stop.is_set():
            for owner, cameras in self.topology.items():
                auth = {"Authorization": f"Bearer {token(owner, cameras)}"}
                for camera in cameras:
                    latest = f"/v1/cameras/{camera}/frame"
                    status, h, body = self.get(latest, auth)
                    if status == 200:
                        self.check_frame(f"{owner} GET {latest}", cameras, camera, h, body, auth)
                    again, h2, body2 = self.get(latest, auth)  # mostly a hit
                    if again == 200:
                        self.check_frame(f"{owner} GET {latest} (again)", cameras, camera, h2, body2, auth)
                    if status != 200:
                        continue
                    if "etag" not in h or "content-location" not in h:
                        self.violation(f"{owner} GET {latest}: a 200 without ETag or Content-Location: {h}")
                        continue
                    self.get(latest, {**auth, "If-None-Match": h["etag"]})
                    by_hash = h["content-location"]
                    part, hp, partial = self.get(by_hash, {**auth, "Range": "bytes=0-99"})
                    if part == 206:
                        self.check_range(f"{owner} GET {by_hash} (bytes=0-99)", hp, partial, h["etag"], body, 0)
                    elif part == 200:
                        self.check_frame(f"{owner} GET {by_hash} (bytes=0-99)", cameras, camera, hp, partial, auth)
                    self.get(by_hash, {**auth, "If-None-Match": h["etag"]})
                    self.get(by_hash, {**auth, "Range": "bytes=99999999-"})
                    for path, extra in ((f"{latest}?variant=thumb", {}), (latest, {"Save-Data": "on"})):
                        status, h3, body3 = self.get(path, {**auth, **extra})
                        if status == 200:
                            self.check_frame(f"{owner} GET {path} {extra}", cameras, camera, h3, body3, auth)
                if self.stop.wait(0.05):
                    return

    def refusals(self):
        owner, cameras = next(iter(self.topology.items()))
        camera = cameras[0]
        path = f"/v1/cameras/{camera}/frame"
        # Each with the answer it must get.
        bad = [
            ({}, 401),
            ({"Authorization": "Bearer not-a-token"}, 401),
            ({"Authorization": f"Bearer {token(owner, cameras, secret=b'another-secret-another-secret-00')}"}, 401),
            ({"Authorization": f"Bearer {token(owner, cameras, ttl=-3600)}"}, 401),
            ({"Authorization": f"Bearer {token(owner, cameras, audience='elsewhere')}"}, 401),
            ({"Authorization": f"Bearer {token(owner, ['cam-elsewhere'])}"}, 403),
        ]
        while not self.stop.is_set():
            for headers, expected in bad:
                status, _, _ = self.get(path, headers)
                if status is not None and status != expected:
                    self.violation(f"GET {path} with {headers or 'no Authorization'}: {status}, not {expected}")
            status, _, _ = self.get("/v1/cameras/../frame", {"Authorization": f"Bearer {token(owner, cameras)}"})
            if status is not None and status not in (400, 404):
                self.violation(f"GET /v1/cameras/../frame: {status}, not 400 or 404")
            if self.stop.wait(0.5):
                return

    def stream(self):
        """An MJPEG subscriber that checks every part. It asks for variant=full: a rendition
        part carries no watermark and names no source frame to check it through."""
        owner, cameras = next(iter(self.topology.items()))
        camera = cameras[0]
        host, port = self.hub
        path = f"/v1/cameras/{camera}/stream?variant=full"
        while not self.stop.is_set():
            # A new part at least every stream_interval_ms while camsim's frames get through;
            # 15 s without one is a failure, not a hiccup.
            conn = http.client.HTTPConnection(host, port, timeout=15)
            try:
                conn.request("GET", path, headers={"Authorization": f"Bearer {token(owner, cameras)}"})
                resp = conn.getresponse()
                if resp.status != 200:
                    self.violation(f"GET {path}: {resp.status}")
                    self.stop.wait(0.5)
                    continue
                buf = b""
                while not self.stop.is_set():
                    data = resp.read1(65536)
                    if not data:
                        break
                    buf = self.check_parts(path, cameras, camera, buf + data)
            except (OSError, http.client.HTTPException) as e:
                if not self.stop.is_set():
                    self.error(f"GET {path}: {type(e).__name__}: {e}")
                    self.stop.wait(0.5)
            finally:
                conn.close()

    def check_parts(self, what, cameras, camera, buf):
        """Checks every complete part at the start of `buf`; returns the rest."""
        while True:
            m = PART_HEAD.search(buf)
            if not m:
                return buf
            head = m.group(1).decode("latin-1")
            length = re.search(r"(?i)content-length:\s*(\d+)", head)
            seq = re.search(r"(?i)x-frame-seq:\s*(\d+)", head)
            variant = re.search(r"(?i)x-frame-variant:\s*(\S+)", head)
            if not length or not seq:
                raise ValueError(f"{what}: a part head without Content-Length or X-Frame-Seq: {head!r}")
            end = m.end() + int(length.group(1))
            if len(buf) < end:
                return buf
            if variant and variant.group(1) != "full":
                self.violation(f"{what}: a {variant.group(1)} part")
            else:
                self.check_watermark(what, cameras, camera, seq.group(1), buf[m.end():end], "stream part")
            buf = buf[end:]

    def guarded(self, work):
        """Runs `work`; whatever it raises is recorded as an error, never lost with the thread."""
        try:
            work()
        except Exception:  # noqa: BLE001 - every exception is a failure of the test
            self.error(f"traffic thread {work.__name__} died:\n{traceback.format_exc()}")

    def start(self):
        self.threads = [
            threading.Thread(target=self.guarded, args=(f,), name=f.__name__, daemon=True)
            for f in (self.frames, self.refusals, self.stream)
        ]
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=20)
        for t in self.threads:
            if t.is_alive():
                self.error(f"traffic thread {t.name} did not stop")
        self.threads = []


def privacy_counters(scrape):
    """Problems with the privacy counters in a /metrics text: each must be there, and 0."""
    problems = []
    for name in PRIVACY_COUNTERS:
        values = [float(v) for v in re.findall(rf"^{name}(?:\{{[^}}]*\}})?\s+(\S+)", scrape, re.M)]
        if not values:
            problems.append(f"{name} is missing from the last scrape")
        elif sum(values) != 0:
            problems.append(f"{name} is {sum(values):g} in the last scrape: the proxy served such a thing")
    return problems


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
        purge_auth = {"Authorization": f"Bearer {token(purge_owner, purge_cameras)}"}
        for _ in range(20):
            path = f"/v1/cameras/{purge_cameras[0]}/frame"
            status, h, body = traffic.get(path, purge_auth)
            if status == 200:
                traffic.check_frame(f"{purge_owner} GET {path}", purge_cameras, purge_cameras[0], h, body, purge_auth)
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

        # 6. The traffic stopped, the privacy counters in a last scrape; the traffic's own checks.
        traffic.finish()
        procs.check_alive()
        problems += privacy_counters(request(admin, "GET", "/metrics")[2].decode())
        log(f"frames that passed their checks: {dict(sorted(traffic.checked.items()))}; "
            f"failed: {len(traffic.violations)}")
        if traffic.violations:
            problems.append(f"{len(traffic.violations)} frame answers failed their checks, e.g.\n  "
                            + "\n  ".join(traffic.violations[:5]))
        for kind in ("frame", "rendition", "range", "stream part"):
            if not traffic.checked.get(kind):
                problems.append(f"no {kind} passed its checks: the traffic did not exercise them")
        if traffic.errors:
            problems.append(f"{len(traffic.errors)} errors in the hub traffic, e.g.\n  "
                            + "\n  ".join(traffic.errors[:3]))
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
