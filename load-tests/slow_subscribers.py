#!/usr/bin/env python3
"""Slow MJPEG subscribers for the `stream` load test: what k6 cannot do (read slowly).

    slow_subscribers.py --base-url URL --camsim-url URL --secret-file PATH
                        [--count N] [--rate BYTES_PER_SEC] [--seconds S] --out PATH

Each subscriber is a hub of an owner in camsim's topology that watches one of its cameras
through a small receive buffer, reading at most --rate bytes a second; one in five also stalls
(reads nothing) for 8 s, longer than the load-test config's delivery.write_timeout_ms, so the
proxy should drop it. Every complete part is privacy-checked: its JPEG watermark names the
camera asked for, which the token grants, and its seq is the part's X-Frame-Seq. A slow link
would get the proxy to send renditions, which carry no watermark and, in a stream, name no
source frame to check them through: the subscribers ask for `variant=full`, and a part of
another variant fails the check. Writes a JSON
summary to --out. Anything else that goes wrong in a subscriber (a refused connection, an answer
other than 200, an answer it cannot parse, a stream that ends while the subscriber keeps
reading, any exception) is counted in `errors`, the first few described in `exceptions`, and so
is a subscriber still running when the others are done; the exit status is then 1, and
load-tests/report.py fails the run on them. Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import re
import socket
import sys
import threading
import time
import urllib.request
from urllib.parse import urlsplit

WATERMARK = re.compile(rb"framecache-sim camera=([A-Za-z0-9._-]+) seq=(\d+)")
PART_HEAD = re.compile(rb"--framecache-frame\r\n(.*?)\r\n\r\n", re.S)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(secret: bytes, owner: str, cams: list[str], audience: str = "framecache") -> str:
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sub": owner, "cams": cams, "aud": audience, "exp": int(time.time()) + 3600}).encode())
    signature = hmac.new(secret, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{b64(signature)}"


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.values = {"subscribers": 0, "parts": 0, "privacy_passes": 0, "privacy_fails": 0,
                       "dropped_by_proxy": 0, "bytes": 0, "errors": 0, "unfinished": 0,
                       "violations": [], "exceptions": []}

    def add(self, key, n=1):
        with self.lock:
            self.values[key] += n

    def error(self, camera: str, what: str):
        """Counts an error of the subscriber to `camera`; keeps the first few descriptions."""
        with self.lock:
            self.values["errors"] += 1
            if len(self.values["exceptions"]) < 20:
                self.values["exceptions"].append(f"{camera}: {what}")


def subscribe(url: str, token: str, camera: str, cams: list[str], rate: int, stall: bool,
              seconds: float, tally: Tally):
    """One subscriber; whatever it raises is counted as an error, never lost with its thread."""
    try:
        watch(url, token, camera, cams, rate, stall, seconds, tally)
    except Exception as e:  # noqa: BLE001 - every exception is a failure of the run
        tally.error(camera, f"{type(e).__name__}: {e}")


def watch(url: str, token: str, camera: str, cams: list[str], rate: int, stall: bool,
          seconds: float, tally: Tally):
    parts = urlsplit(url)
    deadline = time.monotonic() + seconds
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock.settimeout(10)
        sock.connect((parts.hostname, parts.port))
        sock.sendall(
            f"GET /v1/cameras/{camera}/stream?variant=full HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Authorization: Bearer {token}\r\n\r\n".encode()
        )
    except OSError as e:
        sock.close()
        tally.error(camera, f"connecting: {type(e).__name__}: {e}")
        return
    tally.add("subscribers")
    raw = b""  # bytes as received: the response head, then chunked framing
    body = b""  # the de-chunked multipart body
    head_done = False
    chunk = max(512, rate // 10)
    stalled = False
    try:
        while time.monotonic() < deadline:
            if stall and not stalled and time.monotonic() > deadline - seconds + 3:
                stalled = True
                time.sleep(8)
            data = sock.recv(chunk)
            if not data:
                dropped(camera, stalled, "the proxy closed the stream", tally)
                break
            tally.add("bytes", len(data))
            raw += data
            if not head_done:
                end = raw.find(b"\r\n\r\n")
                if end < 0:
                    continue
                if not raw.startswith(b"HTTP/1.1 200"):
                    tally.error(camera, f"answered {raw[:end].splitlines()[0]!r}")
                    break
                raw, head_done = raw[end + 4:], True
            raw, decoded = dechunk(raw)
            body = check_parts(body + decoded, camera, cams, tally)
            time.sleep(len(data) / rate)
    except OSError as e:
        # A reset or a timeout while reading.
        dropped(camera, stalled, f"{type(e).__name__}: {e}", tally)
    finally:
        sock.close()


def dropped(camera: str, stalled: bool, what: str, tally: Tally):
    """The stream ended before the subscriber hung up: the proxy's due for one that stalled
    longer than delivery.write_timeout_ms, an error for one that kept reading."""
    if stalled:
        tally.add("dropped_by_proxy")
    else:
        tally.error(camera, f"dropped while reading: {what}")


def dechunk(raw: bytes) -> tuple[bytes, bytes]:
    """Complete chunks of `raw` decoded; returns (the rest of raw, the decoded bytes)."""
    out = []
    while True:
        line_end = raw.find(b"\r\n")
        if line_end < 0:
            break
        size = int(raw[:line_end].split(b";")[0], 16)
        if len(raw) < line_end + 2 + size + 2:
            break
        out.append(raw[line_end + 2:line_end + 2 + size])
        raw = raw[line_end + 2 + size + 2:]
    return raw, b"".join(out)


def check_parts(buf: bytes, camera: str, cams: list[str], tally: Tally) -> bytes:
    """Checks every complete part in `buf`; returns what is left of it."""
    while True:
        m = PART_HEAD.search(buf)
        if not m:
            return buf
        head = m.group(1).decode("latin-1")
        length = re.search(r"(?i)content-length:\s*(\d+)", head)
        seq = re.search(r"(?i)x-frame-seq:\s*(\d+)", head)
        if not length or not seq:
            raise ValueError(f"a part head without Content-Length or X-Frame-Seq: {head!r}")
        length, seq = int(length.group(1)), seq.group(1)
        variant = re.search(r"(?i)x-frame-variant:\s*(\S+)", head)
        variant = variant.group(1) if variant else "full"
        body = buf[m.end():m.end() + length]
        if len(body) < length:
            return buf
        mark = WATERMARK.search(body)
        tally.add("parts")
        ok = variant == "full" and bool(mark) and mark.group(1).decode() == camera \
            and mark.group(1).decode() in cams and mark.group(2).decode() == seq
        tally.add("privacy_passes" if ok else "privacy_fails")
        if not ok:
            with tally.lock:
                tally.values["violations"].append({
                    "camera": camera, "seq": seq, "variant": variant,
                    "watermark": mark.group(0).decode() if mark else None,
                })
        buf = buf[m.end() + length:]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", required=True)
    p.add_argument("--camsim-url", required=True)
    p.add_argument("--secret-file", required=True)
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--rate", type=int, default=16384)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    secret = open(args.secret_file, "rb").read()
    if secret.endswith(b"\n"):
        secret = secret[:-1]
    with urllib.request.urlopen(f"{args.camsim_url}/topology", timeout=5) as r:
        topology = json.load(r)
    owners = sorted(topology, key=lambda o: int(re.sub(r"\D", "", o) or 0))
    tally = Tally()
    threads = []
    for i in range(args.count):
        owner = owners[i % len(owners)]
        cams = topology[owner]
        camera = cams[(i // len(owners)) % len(cams)]
        t = threading.Thread(
            target=subscribe,
            args=(args.base_url, mint(secret, owner, cams), camera, cams, args.rate, i % 5 == 4,
                  args.seconds, tally),
            daemon=True,
        )
        t.start()
        threads.append(t)
    give_up = time.monotonic() + args.seconds + 30
    for t in threads:
        t.join(max(0.0, give_up - time.monotonic()))
    unfinished = sum(t.is_alive() for t in threads)
    tally.add("unfinished", unfinished)
    with tally.lock:
        values = json.loads(json.dumps(tally.values))
    values.update(count=args.count, rate_bytes_per_sec=args.rate, seconds=args.seconds)
    with open(args.out, "w") as f:
        json.dump(values, f, indent=2)
    if values["errors"] or unfinished:
        print(f"slow_subscribers: {values['errors']} errors, {unfinished} unfinished: "
              f"{values['exceptions'][:5]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
