#!/usr/bin/env python3
"""Attacks on the edge at a low rate, beside k6 in the `soak` load test: what a hostile internet
sends a proxy for an hour, each answer judged against SPEC Part 2 "Limits".

    attacks.py --base-url URL --admin-url URL --camsim-url URL --secret-file PATH
               --config PATH --seconds S --out PATH [--attackers N]

The attackers are the last N (3) owners of camsim's topology, which the soak's hubs leave alone
(owner A, B, C from the third-last): so one owner's spent origin budget, or one camera's origin
requests, are the attacks' alone. Each attack is a bounded loop of rounds on its own thread,
spaced so the whole stays a low rate; none starts a round it could not finish by --seconds, so
the script stops by itself at the run's end.

  big_head       a request head larger than limits.header_bytes (one long field, or many
                 fields): 431, JSON error, connection closed.
  trickle        a head sent a byte a second, never finished: 408 (or a close) within
                 limits.header_timeout_ms of the connect.
  stuck_stream   MJPEG subscribers (owner A) on a 4 KiB receive buffer that never read: each is
                 dropped (its stream ends; framecache_hub_write_timeouts_total{route="stream"}
                 grows by at least as many).
  missing_hash   the same three missing frame hashes asked twice a second (owner B, on a camera
                 only B reads): 404 each time, and camsim sees at most one request per hash per
                 limits.not_found_ttl_ms (negative caching), besides those that failed (an
                 origin that times out has said nothing to remember; the hub got a 502/503/504).
  bad_token      no token, garbage, the wrong secret, expired, the wrong audience, alg none, a
                 tampered payload: 401 with WWW-Authenticate; a camera the token does not grant:
                 403.
  origin_burst   bursts of by-hash requests for fresh missing hashes (owner C), each an origin
                 request, 64 at once, past the owner's budget (limits.owner_origin_rps, burst
                 twice that): 404 or 429, some 429 in every burst, each with Retry-After; after
                 waiting it out, the owner's latest frame is served again (privacy-checked).

Where an answer depends on the origin, a gateway error (502, 503, 504) is also expected: the
soak's camera backend misbehaves on purpose, and an overloaded one times out.

Every error answer must be the JSON error format, and no answer may carry `Server: Pingora`. Each
attack records what it got; an answer other than the expected one is counted in `unexpected`
(the first few described), any exception in `errors`, and the exit status is then 1;
load-tests/report.py fails the run on them. Loopback only. Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import select
import socket
import sys
import threading
import time
import tomllib
import urllib.request
from collections import Counter
from urllib.parse import urlsplit

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
from slow_subscribers import Tally as PartsTally, check_parts, dechunk  # noqa: E402

# SPEC Part 2's defaults, for the keys the proxy's configuration leaves out.
LIMIT_DEFAULTS = {"header_bytes": 16384, "header_timeout_ms": 10000, "owner_origin_rps": 20,
                  "streams_per_owner": 16, "not_found_ttl_ms": 10000}
WRITE_TIMEOUT_DEFAULT_MS = 10000
WATERMARK = re.compile(rb"framecache-sim camera=([A-Za-z0-9._-]+) seq=(\d+)")
# How many notes of unexpected answers each attack keeps.
NOTES = 10


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(secret: bytes, claims: dict, header: dict | None = None) -> str:
    head = b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


class Record:
    """What the attacks got, shared by their threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.attacks: dict[str, dict] = {}
        self.errors = 0
        self.exceptions: list[str] = []
        # Frames the attacks received: privacy-checked like a hub's.
        self.parts = PartsTally()

    def attack(self, name: str) -> dict:
        with self.lock:
            return self.attacks.setdefault(
                name, {"rounds": 0, "answers": Counter(), "unexpected": 0, "notes": [], "figures": {}})

    def round(self, name: str):
        a = self.attack(name)
        with self.lock:
            a["rounds"] += 1

    def got(self, name: str, label: str, ok: bool = True, note: str = ""):
        """One answer of attack `name`, `label` naming it; `ok` false: not what was expected."""
        a = self.attack(name)
        with self.lock:
            a["answers"][label] += 1
            if not ok:
                a["unexpected"] += 1
                if len(a["notes"]) < NOTES:
                    a["notes"].append(f"{label}: {note}" if note else label)

    def figure(self, name: str, key: str, value):
        a = self.attack(name)
        with self.lock:
            a["figures"][key] = value

    def error(self, name: str, what: str):
        with self.lock:
            self.errors += 1
            if len(self.exceptions) < 20:
                self.exceptions.append(f"{name}: {what}")


class Ctx:
    def __init__(self, args):
        base = urlsplit(args.base_url)
        for url in (args.base_url, args.admin_url, args.camsim_url):
            host = urlsplit(url).hostname
            if host not in ("127.0.0.1", "localhost", "::1"):
                raise SystemExit(f"attacks.py: {url} is not on loopback; refusing to attack it")
        self.host, self.port, self.netloc = base.hostname, base.port, base.netloc
        self.admin_url = args.admin_url.rstrip("/")
        self.camsim_url = args.camsim_url.rstrip("/")
        secret = open(args.secret_file, "rb").read()
        self.secret = secret[:-1] if secret.endswith(b"\n") else secret
        config = tomllib.loads(open(args.config).read())
        limits = config.get("limits", {})
        self.limits = {k: limits.get(k, v) for k, v in LIMIT_DEFAULTS.items()}
        self.write_timeout = config.get("delivery", {}).get("write_timeout_ms", WRITE_TIMEOUT_DEFAULT_MS) / 1000
        self.audience = config.get("auth", {}).get("audience", "framecache")
        topology = json.loads(self.get_url(f"{self.camsim_url}/topology"))
        owners = sorted(topology, key=lambda o: int(re.sub(r"\D", "", o) or 0))
        if len(owners) < args.attackers + 1 or args.attackers < 3:
            raise SystemExit(f"attacks.py: {len(owners)} owners in camsim's topology, need more than {args.attackers}")
        self.topology = topology
        # The attackers' owners, and for each the camera only it reads (the one it owns that
        # is not shared with its neighbour: the last of its own).
        self.owner_a, self.owner_b, self.owner_c = owners[-args.attackers:][:3]
        self.started = time.monotonic()
        self.deadline = self.started + args.seconds
        self.stopping = threading.Event()
        self.record = Record()

    def own_camera(self, owner: str) -> str:
        return sorted(self.topology[owner], key=lambda c: int(re.sub(r"\D", "", c) or 0))[-1]

    def token(self, owner: str, **overrides) -> str:
        claims = {"sub": owner, "cams": self.topology[owner], "aud": self.audience,
                  "exp": int(time.time()) + 3600}
        claims.update(overrides)
        return jwt(self.secret, claims)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def wait(self, seconds: float):
        """Sleeps `seconds`, or until the run's end."""
        self.stopping.wait(max(0.0, min(seconds, self.remaining())))

    @staticmethod
    def get_url(url: str) -> bytes:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.read()

    def metric(self, name: str, labels: str = "") -> float:
        """A sample of the proxy's /metrics (`labels` as written there, e.g. `route="stream"`)."""
        text = self.get_url(f"{self.admin_url}/metrics").decode()
        want = f"{name}{{{labels}}}" if labels else name
        for line in text.splitlines():
            if line.startswith(want + " "):
                return float(line.split()[-1])
        raise ValueError(f"/metrics has no {want}")

    def camsim_frame_requests(self, camera: str) -> int:
        return json.loads(self.get_url(f"{self.camsim_url}/stats"))["frame_requests"].get(camera, 0)

    def request(self, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
        """One GET on a connection of its own: status, headers (lower-case names), body."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=20)
        try:
            conn.request("GET", path, headers=headers or {})
            res = conn.getresponse()
            body = res.read()
            return res.status, {k.lower(): v for k, v in res.getheaders()}, body
        finally:
            conn.close()

    def connect(self, rcvbuf: int | None = None) -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(10)
        sock.connect((self.host, self.port))
        return sock


# --- answers ------------------------------------------------------------------------------------


def answer_problems(status: int, headers: dict, body: bytes) -> list[str]:
    """What is wrong with any answer of the proxy, whatever its status: a Pingora Server
    header; an error not in the JSON error format."""
    problems = []
    if "pingora" in headers.get("server", "").lower():
        problems.append(f"Server: {headers['server']}")
    if status >= 400:
        try:
            error = json.loads(body).get("error")
        except (ValueError, AttributeError):
            error = None
        if not headers.get("content-type", "").startswith("application/json") or not error:
            problems.append(f"{status} not in the JSON error format: {body[:80]!r}")
    return problems


def parse_head(raw: bytes) -> tuple[int, dict, int] | None:
    """(status, headers, end of head) of a response head in `raw`, or None while incomplete."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = raw[:end].decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
    if not m:
        raise ValueError(f"not an HTTP response: {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(m.group(1)), headers, end + 4


def read_answer(sock: socket.socket, within: float) -> tuple[int, dict, bytes] | None:
    """A whole answer with a Content-Length body (a refusal) read from `sock` within `within`
    seconds; None when the connection closed first."""
    raw = b""
    until = time.monotonic() + within
    while True:
        head = parse_head(raw)
        if head:
            status, headers, end = head
            length = int(headers.get("content-length", "0"))
            if len(raw) >= end + length:
                return status, headers, raw[end:end + length]
        sock.settimeout(max(0.05, until - time.monotonic()))
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            if raw:
                raise ValueError(f"connection closed inside an answer: {raw[:80]!r}")
            return None
        raw += data


def closes(sock: socket.socket, within: float) -> bool:
    """Whether the peer closes `sock` within `within` seconds (what it still sends is dropped)."""
    until = time.monotonic() + within
    while time.monotonic() < until:
        sock.settimeout(max(0.05, until - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
    return False


def check_frame(ctx: Ctx, name: str, camera: str, cams: list[str], headers: dict, body: bytes):
    """The privacy checks of a frame an attacker received."""
    mark = WATERMARK.search(body)
    seq = headers.get("x-frame-seq")
    ok = (headers.get("content-type", "").startswith("image/jpeg") and body[:2] == b"\xff\xd8"
          and body[-2:] == b"\xff\xd9" and bool(mark) and mark.group(1).decode() == camera
          and mark.group(1).decode() in cams and mark.group(2).decode() == seq)
    tally = ctx.record.parts
    tally.add("parts")
    tally.add("privacy_passes" if ok else "privacy_fails")
    if not ok:
        with tally.lock:
            tally.values["violations"].append({"attack": name, "camera": camera, "seq": seq,
                                               "watermark": mark.group(0).decode() if mark else None})


# --- the attacks --------------------------------------------------------------------------------


def big_head(ctx: Ctx):
    """Every 20 s a head past limits.header_bytes: one long field, or many fields."""
    name, limit = "big_head", ctx.limits["header_bytes"]
    camera = ctx.own_camera(ctx.owner_a)
    n = 0
    while ctx.remaining() > 10:
        ctx.record.round(name)
        start = (f"GET /v1/cameras/{camera}/frame HTTP/1.1\r\nHost: {ctx.netloc}\r\n"
                 f"Authorization: Bearer {ctx.token(ctx.owner_a)}\r\n")
        if n % 2 == 0:
            label, fields = "one_long_field", f"X-Pad: {'a' * (limit + 512)}\r\n"
        else:
            label, fields = "many_fields", "".join(f"X-Pad-{i}: {'b' * 180}\r\n" for i in range(limit // 190 + 8))
        n += 1
        head = (start + fields + "\r\n").encode()
        assert len(head) > limit
        sock = ctx.connect()
        try:
            try:
                sock.sendall(head)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before all of it was sent; the answer may still be there
            answer = read_answer(sock, 10)
            if answer is None:
                ctx.record.got(name, f"{label} closed", False, "closed without an answer, 431 expected")
            else:
                status, headers, body = answer
                problems = answer_problems(status, headers, body)
                if status != 431:
                    problems.append(f"answered {status}, 431 expected")
                if not closes(sock, 5):
                    problems.append("the connection stayed open after the 431")
                ctx.record.got(name, f"{label} {status}", not problems, "; ".join(problems))
        finally:
            sock.close()
        ctx.wait(20)


def trickle(ctx: Ctx):
    """Every 30 s two heads sent a byte a second, never finished."""
    name = "trickle"
    timeout = ctx.limits["header_timeout_ms"] / 1000
    # The proxy shares two cores with k6, camsim and this script: a little slack.
    allowed = timeout + 5
    camera = ctx.own_camera(ctx.owner_a)
    times = []

    def one():
        sock = ctx.connect()
        t0 = time.monotonic()
        try:
            sock.sendall(f"GET /v1/cameras/{camera}/frame HTTP/1.1\r\n".encode())
            pending = f"Host: {ctx.netloc}\r\nX-Trickle: ".encode() + b"t" * 4096
            sent = 0
            while True:
                elapsed = time.monotonic() - t0
                if elapsed > allowed:
                    ctx.record.got(name, "still open", False,
                                   f"no answer and not closed {elapsed:.1f} s after the connect "
                                   f"(limits.header_timeout_ms {timeout * 1000:.0f})")
                    return
                readable, _, _ = select.select([sock], [], [], 1.0)
                if readable:
                    answer = read_answer(sock, 5)
                    elapsed = time.monotonic() - t0
                    with ctx.record.lock:
                        times.append(elapsed)
                    if answer is None:
                        ctx.record.got(name, "closed")
                    else:
                        status, headers, body = answer
                        problems = answer_problems(status, headers, body)
                        if status != 408:
                            problems.append(f"answered {status}, 408 expected")
                        ctx.record.got(name, str(status), not problems, "; ".join(problems))
                    return
                try:
                    sock.send(pending[sent:sent + 1])
                    sent += 1
                except (BrokenPipeError, ConnectionResetError):
                    with ctx.record.lock:
                        times.append(time.monotonic() - t0)
                    ctx.record.got(name, "closed")
                    return
        finally:
            sock.close()

    while ctx.remaining() > allowed + 2:
        ctx.record.round(name)
        run_all(ctx, name, [one, one])
        ctx.wait(30 - allowed)
    if times:
        ctx.record.figure(name, "seconds_to_close_min", round(min(times), 2))
        ctx.record.figure(name, "seconds_to_close_max", round(max(times), 2))


def stuck_stream(ctx: Ctx):
    """Every minute four subscribers that never read; each must be dropped."""
    name, owner = "stuck_stream", ctx.owner_a
    cams = ctx.topology[owner]
    hold = 3 * ctx.write_timeout + 10
    dropped = 0
    before = ctx.metric("framecache_hub_write_timeouts_total", 'route="stream"')

    def one(camera):
        nonlocal dropped
        sock = ctx.connect(rcvbuf=4096)
        try:
            sock.sendall(f"GET /v1/cameras/{camera}/stream?variant=full HTTP/1.1\r\nHost: {ctx.netloc}\r\n"
                         f"Authorization: Bearer {ctx.token(owner)}\r\n\r\n".encode())
            ctx.stopping.wait(hold)  # never read
            # Then read what is left: the answer, and whether the proxy ended it.
            raw, ended, taken = b"", False, 0
            until = time.monotonic() + 15
            while time.monotonic() < until and taken < 16 << 20:
                sock.settimeout(max(0.05, until - time.monotonic()))
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    ended = True
                    break
                except TimeoutError:
                    break
                if not data:
                    ended = True
                    break
                taken += len(data)
                raw += data
            head = parse_head(raw)
            if head is None:
                ctx.record.got(name, "no answer", False, f"{len(raw)} bytes, no response head")
                return
            status, headers, end = head
            if status != 200:
                problems = answer_problems(status, headers, raw[end:])
                ctx.record.got(name, str(status), status in GATEWAY and not problems,
                               "; ".join(problems) or "200 or a gateway error expected")
                return
            # The frames it got before it stalled are privacy-checked like any.
            rest, body = dechunk(raw[end:])
            check_parts(body, camera, cams, ctx.record.parts)
            if not ended:
                ctx.record.got(name, "200 kept open", False,
                               f"still streaming {hold + 15:.0f} s after the subscriber stopped reading")
                return
            with ctx.record.lock:
                dropped += 1
            ctx.record.got(name, "200 dropped")
        finally:
            sock.close()

    while ctx.remaining() > hold + 20:
        ctx.record.round(name)
        run_all(ctx, name, [lambda c=c: one(c) for c in (cams * 2)[:4]])
        ctx.wait(60 - hold)
    grew = ctx.metric("framecache_hub_write_timeouts_total", 'route="stream"') - before
    ctx.record.figure(name, "dropped", dropped)
    ctx.record.figure(name, "write_timeouts_stream_delta", grew)
    if grew < dropped:
        ctx.record.got(name, "write timeouts counted", False,
                       f"framecache_hub_write_timeouts_total{{route=\"stream\"}} grew by {grew:.0f} "
                       f"for {dropped} subscribers dropped")


def missing_hash(ctx: Ctx):
    """Twice a second one of three missing hashes, owner B, on the camera only B reads."""
    name, owner = "missing_hash", ctx.owner_b
    camera = ctx.own_camera(owner)
    hashes = [os.urandom(32).hex() for _ in range(3)]
    ttl = ctx.limits["not_found_ttl_ms"] / 1000
    before = ctx.camsim_frame_requests(camera)
    t0 = time.monotonic()
    asked = failed = 0
    while ctx.remaining() > 3:
        ctx.record.round(name)
        status, headers, body = ctx.request(f"/v1/cameras/{camera}/frames/{hashes[asked % len(hashes)]}",
                                            {"Authorization": f"Bearer {ctx.token(owner)}"})
        asked += 1
        failed += status in GATEWAY
        problems = answer_problems(status, headers, body)
        if status != 404 and status not in GATEWAY:
            problems.append("404 (or a gateway error) expected")
        ctx.record.got(name, str(status), not problems, "; ".join(problems))
        ctx.wait(0.5)
    elapsed = time.monotonic() - t0
    origin = ctx.camsim_frame_requests(camera) - before
    ctx.record.figure(name, "hub_requests", asked)
    ctx.record.figure(name, "origin_requests", origin)
    if ttl > 0:
        # Each hash is asked of the origin once, then again only after the TTL; an origin request
        # that failed left nothing to remember, and its hub saw a gateway error.
        bound = len(hashes) * (int(elapsed / ttl) + 2) + failed
        ctx.record.figure(name, "origin_requests_allowed", bound)
        if origin > bound:
            ctx.record.got(name, "origin requests", False,
                           f"{origin} origin requests for {asked} requests of {len(hashes)} missing "
                           f"hashes in {elapsed:.0f} s ({failed} failed); at most {bound} with "
                           f"limits.not_found_ttl_ms")


def bad_token(ctx: Ctx):
    """Every 5 s one bad or expired token, or a camera not granted."""
    name, owner = "bad_token", ctx.owner_a
    camera = ctx.own_camera(owner)
    others = [c for cams in ctx.topology.values() for c in cams if c not in ctx.topology[owner]]
    now = lambda: int(time.time())  # noqa: E731
    cases = [
        ("missing", lambda: None, 401),
        ("garbage", lambda: "not-a-token", 401),
        ("wrong_secret", lambda: jwt(b"not the secret", {"sub": owner, "cams": [camera], "aud": ctx.audience,
                                                          "exp": now() + 600}), 401),
        ("expired", lambda: ctx.token(owner, exp=now() - 3600), 401),
        ("wrong_audience", lambda: ctx.token(owner, aud="elsewhere"), 401),
        ("alg_none", lambda: unsigned(ctx.token(owner)), 401),
        ("tampered", lambda: tamper(ctx.token(owner)), 401),
        ("not_granted", lambda: ctx.token(owner), 403),
    ]
    i = 0
    while ctx.remaining() > 3:
        ctx.record.round(name)
        label, make, expected = cases[i % len(cases)]
        i += 1
        token = make()
        target = others[i % len(others)] if label == "not_granted" else camera
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        status, answer_headers, body = ctx.request(f"/v1/cameras/{target}/frame", headers)
        problems = answer_problems(status, answer_headers, body)
        if status != expected:
            problems.append(f"{expected} expected")
        if expected == 401 and 'error="invalid_token"' not in answer_headers.get("www-authenticate", ""):
            problems.append(f"WWW-Authenticate: {answer_headers.get('www-authenticate')!r}")
        ctx.record.got(name, f"{label} {status}", not problems, "; ".join(problems))
        ctx.wait(5)


def unsigned(token: str) -> str:
    """The token's claims under `alg: none`, without a signature."""
    body = token.split(".")[1]
    return f"{b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{body}."


def tamper(token: str) -> str:
    """The token with another owner in its payload and its signature kept."""
    head, body, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["sub"] = "owner-1"
    return f"{head}.{b64(json.dumps(claims).encode())}.{signature}"


def origin_burst(ctx: Ctx):
    """Every minute a burst of by-hash requests for fresh missing hashes (each an origin
    request), owner C, 64 at once, until ten 429s or 400 requests. 64 in flight at once are past
    the bucket's burst however slowly the origin answers."""
    name, owner = "origin_burst", ctx.owner_c
    camera = ctx.own_camera(owner)
    cams = ctx.topology[owner]
    budget = 2 * ctx.limits["owner_origin_rps"]
    most = max(400, 10 * budget)
    retry_max = []

    while ctx.remaining() > 30:
        ctx.record.round(name)
        lock = threading.Lock()
        tally = {"sent": 0, "429": 0, "retry_after": 0}

        def worker():
            token = ctx.token(owner)
            while True:
                with lock:
                    if tally["sent"] >= most or tally["429"] >= 10:
                        return
                    tally["sent"] += 1
                status, headers, body = ctx.request(f"/v1/cameras/{camera}/frames/{os.urandom(32).hex()}",
                                                    {"Authorization": f"Bearer {token}"})
                problems = answer_problems(status, headers, body)
                if status == 429:
                    retry = headers.get("retry-after", "")
                    if not retry.isdigit() or not 1 <= int(retry) <= 60:
                        problems.append(f"Retry-After {retry!r}, whole seconds expected")
                    else:
                        with lock:
                            tally["retry_after"] = max(tally["retry_after"], int(retry))
                    with lock:
                        tally["429"] += 1
                elif status != 404 and status not in GATEWAY:
                    problems.append("404 or 429 (or a gateway error) expected")
                ctx.record.got(name, str(status), not problems, "; ".join(problems))

        run_all(ctx, name, [worker] * 64)
        if not tally["429"]:
            ctx.record.got(name, "burst not refused", False,
                           f"{tally['sent']} origin requests in a burst, none refused (budget {budget})")
        retry_max.append(tally["retry_after"])
        # Waited out, the owner is served again.
        ctx.wait(max(1, tally["retry_after"]))
        status, headers, body = ctx.request(f"/v1/cameras/{camera}/frame", {"Authorization": f"Bearer {ctx.token(owner)}"})
        problems = answer_problems(status, headers, body)
        if status == 200:
            check_frame(ctx, name, camera, cams, headers, body)
        elif status not in GATEWAY:
            problems.append("after Retry-After: a frame (or a gateway error) expected")
        ctx.record.got(name, f"after retry {status}", not problems, "; ".join(problems))
        ctx.wait(60)
    if retry_max:
        ctx.record.figure(name, "retry_after_max_secs", max(retry_max))


def run_all(ctx: Ctx, name: str, jobs):
    """Runs `jobs` on threads of their own and waits for them; an exception is an error."""
    threads = [threading.Thread(target=guarded, args=(ctx, name, job), daemon=True) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def guarded(ctx: Ctx, name: str, job):
    try:
        job()
    except Exception as e:  # noqa: BLE001 - every exception is a failure of the run
        ctx.record.error(name, f"{type(e).__name__}: {e}")


GATEWAY = (502, 503, 504)

ATTACKS = [big_head, trickle, stuck_stream, missing_hash, bad_token, origin_burst]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", required=True)
    p.add_argument("--admin-url", required=True)
    p.add_argument("--camsim-url", required=True)
    p.add_argument("--secret-file", required=True)
    p.add_argument("--config", required=True, help="the proxy's configuration (its [limits] and [delivery])")
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--attackers", type=int, default=3)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    ctx = Ctx(args)
    threads = [threading.Thread(target=guarded, args=(ctx, a.__name__, lambda a=a: a(ctx)), daemon=True)
               for a in ATTACKS]
    for t in threads:
        t.start()
    # Every round fits before the deadline; a thread still running well after it is stuck.
    give_up = ctx.deadline + 60
    for t in threads:
        t.join(max(0.0, give_up - time.monotonic()))
    ctx.stopping.set()
    unfinished = [a.__name__ for a, t in zip(ATTACKS, threads) if t.is_alive()]
    for attack in unfinished:
        ctx.record.error(attack, "still running 60 s after the run's end")
    r = ctx.record
    with r.lock, r.parts.lock:
        out = {
            "owners": {"streams_and_tokens": ctx.owner_a, "missing_hash": ctx.owner_b, "origin_burst": ctx.owner_c},
            "limits": ctx.limits,
            "write_timeout_ms": ctx.write_timeout * 1000,
            "seconds": args.seconds,
            "attacks": {k: dict(v, answers=dict(v["answers"])) for k, v in sorted(r.attacks.items())},
            "unexpected": sum(v["unexpected"] for v in r.attacks.values()),
            "errors": r.errors,
            "exceptions": r.exceptions,
            "frames_checked": r.parts.values["parts"],
            "privacy_passes": r.parts.values["privacy_passes"],
            "privacy_fails": r.parts.values["privacy_fails"],
            "violations": r.parts.values["violations"][:20],
        }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    if out["errors"] or out["unexpected"] or out["privacy_fails"]:
        print(f"attacks: {out['errors']} errors, {out['unexpected']} unexpected answers, "
              f"{out['privacy_fails']} privacy failures; see {args.out}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
