"""The console benchmark's clients: signed-in HTTP clients in threads, WebSocket viewers.

- ``http_load``: ``clients`` threads, each with its own keep-alive connection and its own
  signed-in session, request one page back to back (a closed loop, no think time), so the
  latency includes the queue at the server; every answer must be a 200 with the page's
  marker in it.
- ``viewers_main``: a child process (``bench/console.py --viewers …``) that opens WebSocket
  connections as a browser tab would (session cookie, ``Origin``), reads them from a plain
  epoll loop, each parsing its frames itself (``_Viewer``: the least a client can do), and
  records for every connection when each step of the watched run first showed up in a
  push. A step shows up as ``tick-<n>`` in the pushed timeline; a push that shows step n
  shows every step before it too.

When a push arrived is the kernel's receive timestamp of its last bytes (``SO_TIMESTAMPNS``:
the moment the server's send put them in the viewer's socket), not the moment this process
got round to reading it. A browser reads its one socket on its own machine at once; here
500 viewers share a process and two cores with the server, and the time a viewer waits for
the process to reach its socket is the bench's, not the server's. When it was read is
recorded too, and reported beside it.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import http.client
import json
import os
import re
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

TICK = re.compile(rb"tick-(\d+)")
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux's value; Python may lack it
STAMP = struct.Struct("@qq")  # struct timespec: seconds, nanoseconds
STAMP_SPACE = socket.CMSG_SPACE(STAMP.size)


# ----------------------------------------------------------------------------- HTTP
def http_load(
    ports: list[int],
    path: str,
    cookies: list[str],
    *,
    requests: int,
    warmup: int,
    marker: str,
) -> dict[str, Any]:
    """``len(cookies)`` clients, client i on ``ports[i % len(ports)]``, ``requests`` each."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(len(cookies) + 1)

    def client(i: int, cookie: str) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", ports[i % len(ports)], timeout=60)
        headers = {"Cookie": cookie, "Host": "127.0.0.1"}
        mine: list[float] = []

        def get() -> float:
            t0 = time.perf_counter()
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            elapsed = (time.perf_counter() - t0) * 1000
            if resp.status != 200 or marker.encode() not in body:
                raise RuntimeError(f"GET {path}: {resp.status}, {len(body)} bytes")
            return elapsed

        try:
            for _ in range(warmup):
                get()
            start.wait()
            for _ in range(requests):
                mine.append(get())
        except Exception as exc:  # reported with the figures, never swallowed
            with lock:
                errors.append(repr(exc))
            start.abort()
        finally:
            conn.close()
        with lock:
            latencies.extend(mine)

    threads = [
        threading.Thread(target=client, args=(i, c), daemon=True) for i, c in enumerate(cookies)
    ]
    for t in threads:
        t.start()
    try:
        start.wait()
    except threading.BrokenBarrierError:
        pass
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"latencies_ms": latencies, "wall_s": wall, "errors": errors}


# ----------------------------------------------------------------------------- WebSockets
class _Viewer:
    """One viewer of a run's page: the WebSocket handshake a browser tab makes (session
    cookie, ``Origin``), then, for every message, the time it arrived and the highest step
    it shows.

    A browser receives on its own machine; here 1,000 clients share the server's two cores,
    so each does the least a client can: one ``recv`` per readable socket from a plain epoll
    loop (no event-loop callbacks, tasks or queues per message), a frame header, one scan of
    the payload. What the crowd costs the server is what is measured, not what a client
    library costs the bench. Pings are answered, so the server keeps it."""

    def __init__(
        self, sock: socket.socket, firsts: dict[int, float], reads: dict[int, float], last: int
    ) -> None:
        self.sock, self.firsts, self.reads, self.last = sock, firsts, reads, last
        self.buf = bytearray()
        self.fragments = bytearray()
        self.opened = False  # the first push (sent on connect) arrived
        self.done = False  # saw the last step
        self.closed = False
        self.seen = -1  # the highest step shown so far

    def feed(self, data: bytes | memoryview, at: float, read: float) -> None:
        """``data`` arrived at ``at`` and was read at ``read`` (epoch seconds)."""
        buf = self.buf
        buf += data
        while len(buf) >= 2:
            size, start = buf[1] & 0x7F, 2
            if size == 126:
                size, start = int.from_bytes(buf[2:4], "big"), 4
            elif size == 127:
                size, start = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < start + size:
                return
            fin, opcode = buf[0] & 0x80, buf[0] & 0x0F
            payload = bytes(buf[start : start + size])
            del buf[: start + size]
            if opcode == 0x9 and size < 126:  # ping: a masked pong (a zero mask) with its data
                with contextlib.suppress(OSError):
                    self.sock.send(bytes((0x8A, 0x80 | size)) + bytes(4) + payload)
            elif opcode == 0x8:
                self.closed = True
                return
            elif opcode in (0x0, 0x1, 0x2):
                if not fin:
                    self.fragments += payload
                    continue
                if self.fragments:
                    payload, self.fragments = bytes(self.fragments) + payload, bytearray()
                self._message(payload, at, read)

    def _message(self, payload: bytes, at: float, read: float) -> None:
        if not self.opened:
            self.opened = True  # the partial sent on connect
            return
        found = TICK.findall(payload)
        top = max(map(int, found)) if found else -1
        for n in range(self.seen + 1, top + 1):
            self.firsts[n] = at
            self.reads[n] = read
        self.seen = max(self.seen, top)
        if self.seen >= self.last:
            self.done = True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.send(b"\x88\x80" + bytes(4))  # close, masked, no code
        self.sock.close()


def _arrival(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    """The kernel's receive timestamp among a ``recvmsg``'s ancillary data (None if none)."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanoseconds = STAMP.unpack_from(data)
            return seconds + nanoseconds * 1e-9
    return None


def _open(
    params: dict[str, Any], cookie: str, firsts: dict[int, float], reads: dict[int, float]
) -> _Viewer:
    """Connect and send the handshake (the answer is read with the others')."""
    url = urlsplit(params["url"])
    key = base64.b64encode(os.urandom(16)).decode()
    sock = socket.create_connection((url.hostname, url.port), timeout=120)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.sendall(
        f"GET {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Origin: {params['origin']}\r\nCookie: {cookie}\r\n\r\n".encode()
    )
    return _Viewer(sock, firsts, reads, params["ticks"] - 1)


def _upgrade(viewer: _Viewer) -> None:
    """Read the handshake's answer and the push sent on connect (blocking, with a timeout)."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = viewer.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    status, _, rest = head.partition(b"\r\n\r\n")
    line = status.split(b"\r\n", 1)[0]
    if b" 101 " not in line:
        raise ConnectionError(f"refused: {line!r}")
    now = time.time()
    viewer.feed(rest, now, now)
    while not viewer.opened:
        chunk = viewer.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the first push")
        now = time.time()
        viewer.feed(chunk, now, now)


def _viewers(params: dict[str, Any]) -> dict[str, Any]:
    count = params["count"]
    cookies = params["cookies"]
    batch = params.get("connect_concurrency", 20)
    records: list[dict[int, float]] = [{} for _ in range(count)]  # arrived, by step
    reads: list[dict[int, float]] = [{} for _ in range(count)]  # read, by step
    opened: list[_Viewer] = []
    failures: list[str] = []
    t0 = time.perf_counter()
    for first in range(0, count, batch):  # handshakes in batches, as a crowd arrives
        pending = []
        for i in range(first, min(first + batch, count)):
            try:
                pending.append(_open(params, cookies[i % len(cookies)], records[i], reads[i]))
            except OSError as exc:
                failures.append(repr(exc))
        for viewer in pending:
            try:
                _upgrade(viewer)
                viewer.sock.setblocking(False)
                opened.append(viewer)
            except OSError as exc:
                failures.append(repr(exc))
                viewer.sock.close()
    if not opened:
        raise RuntimeError(f"no viewer connected: {failures[:1]}")
    ready_s = time.perf_counter() - t0
    # What the viewers hold lives until the end: no collection pauses receiving meanwhile.
    gc.collect()
    gc.freeze()
    cpu0 = time.process_time()
    print(f"ready {count} {ready_s:.2f}", flush=True)
    poller = select.epoll()
    by_fd = {v.sock.fileno(): v for v in opened}
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    stdin = sys.stdin.fileno()
    poller.register(stdin, select.EPOLLIN)
    scratch = bytearray(256 * 1024)
    view = memoryview(scratch)
    buffers = [scratch]
    unstamped = 0  # reads the kernel gave no arrival time for (their read time stands in)
    waiting = len(opened)  # viewers yet to see the last step
    told = False
    lost: list[str] = []
    while waiting and not told:
        for fd, _ in poller.poll(1.0):
            if fd == stdin:
                told = True
                continue
            viewer = by_fd[fd]
            stamps: list[tuple[int, int, bytes]] = []
            try:
                n, stamps, _, _ = viewer.sock.recvmsg_into(buffers, STAMP_SPACE)
            except BlockingIOError:
                continue
            except OSError as exc:
                n, viewer.closed = 0, True
                lost.append(repr(exc))
            read = time.time()
            arrived = _arrival(stamps)
            if n and arrived is None:
                unstamped += 1
            was_done = viewer.done
            if n:
                viewer.feed(view[:n], read if arrived is None else arrived, read)
            else:
                viewer.closed = True
            if viewer.closed:
                poller.unregister(fd)
                if not was_done:
                    lost.append("closed by the server")
            if (viewer.done and not was_done) or (viewer.closed and not viewer.done):
                waiting -= 1
    cpu_s = time.process_time() - cpu0
    if not told:
        # Hang up only when told: viewers leaving while others are still being handed the
        # last step would slow those down, which no crowd of real pages does at once.
        print("seen", flush=True)
        sys.stdin.readline()
    for viewer in opened:
        viewer.close()
    return {
        "cpu_s": cpu_s,  # the clients' own CPU while receiving
        "connect_s": ready_s,
        "connected": len(opened),
        "firsts": records,
        "reads": reads,
        "unstamped": unstamped,
        "failed": len(failures) + len(lost),
        "failures": (failures + lost)[:5],
    }


def viewers_main(params: dict[str, Any], out: Path) -> None:
    result = _viewers(params)
    out.write_text(json.dumps(result))


#: wrk's script: each of its threads (one connection each) signs in with a cookie of its
#: own, and the figures come back as one JSON line (latencies in ms).
WRK_SCRIPT = """
local count = 0
function setup(thread)
  count = count + 1
  thread:set("index", count)
end
function init(args)
  local cookies = {}
  for c in string.gmatch(os.getenv("WRK_COOKIES"), "[^|]+") do table.insert(cookies, c) end
  wrk.headers["Cookie"] = cookies[index]
  wrk.headers["Host"] = "127.0.0.1"
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"p50": %f, "p95": %f, "max": %f, "requests": %d, "seconds": %f, "errors": %d}\\n',
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency.max / 1000,
    summary.requests, summary.duration / 1e6,
    e.connect + e.read + e.write + e.timeout + e.status))
end
"""


def wrk_load(
    ports: list[int], path: str, cookies: list[str], *, seconds: float, workdir: Path
) -> dict[str, Any]:
    """The same closed loop as ``http_load`` (``len(cookies)`` connections, one request in
    flight each) from wrk, a load generator in C: its clients cost the shared cores little
    and time each answer as it arrives, where 20 Python threads queue for one interpreter
    before they can. Connections are split over ``ports`` by one wrk per port; the p95
    returned is the worst of theirs (the combined one is no higher)."""
    script = workdir / "wrk.lua"
    script.write_text(WRK_SCRIPT)
    share = [cookies[i :: len(ports)] for i in range(len(ports))]
    procs = []
    for port, mine in zip(ports, share, strict=True):
        n = str(len(mine))
        command = ["wrk", "-t", n, "-c", n, "-d", f"{seconds:g}s", "--timeout", "30s"]
        command += ["-s", str(script), f"http://127.0.0.1:{port}{path}"]
        env = {**os.environ, "WRK_COOKIES": "|".join(mine)}
        procs.append(
            subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
            )
        )
    figures = []
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 60)
        line = next((ln for ln in out.splitlines() if ln.startswith("WRK ")), None)
        if line is None:
            raise RuntimeError(f"wrk gave no figures: {out[-500:]}")
        figures.append(json.loads(line[4:]))
    return {
        "p50": max(f["p50"] for f in figures),
        "p95": max(f["p95"] for f in figures),
        "max": max(f["max"] for f in figures),
        "throughput": sum(f["requests"] / f["seconds"] for f in figures),
        "errors": sum(f["errors"] for f in figures),
    }
