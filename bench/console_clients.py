"""The console benchmark's clients: signed-in HTTP clients in threads, WebSocket viewers.

- ``http_load``: ``clients`` threads, each with its own keep-alive connection and its own
  signed-in session, request one page back to back (a closed loop, no think time), so the
  latency includes the queue at the server; every answer must be a 200 with the page's
  marker in it.
- ``viewers_main``: a child process (``bench/console.py --viewers …``) that opens WebSocket
  connections on asyncio, as a browser tab would (session cookie, ``Origin``), each parsing
  its frames itself (``_Viewer``: the least a client can do), and records for every
  connection when each step of the watched run first showed up in a push. A step shows up
  as ``tick-<n>`` in the pushed timeline; a push that shows step n shows every step before
  it too.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import http.client
import json
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

TICK = re.compile(rb"tick-(\d+)")


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
class _Viewer(asyncio.BufferedProtocol):
    """One viewer of a run's page: the WebSocket handshake a browser tab makes (session
    cookie, ``Origin``), then, for every message, the time it arrived and the highest step
    it shows.

    A browser receives on its own machine; here 1,000 clients share the server's two cores,
    so each does the least a client can (a frame header, one scan of the payload, no
    per-message task or queue): what the crowd costs the server is what is measured, not
    what a client library costs the bench. Pings are answered, so the server keeps it."""

    def __init__(self, request: bytes, firsts: dict[int, float], last: int) -> None:
        loop = asyncio.get_running_loop()
        self.request, self.firsts, self.last = request, firsts, last
        self.opened: asyncio.Future[None] = loop.create_future()  # the first push arrived
        self.finished: asyncio.Future[None] = loop.create_future()  # saw the last, or closed
        self.buf = bytearray()
        self.fragments = bytearray()
        self.upgraded = False
        self.seen = -1  # the highest step shown so far
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = ConnectionError(f"closed by the server ({exc!r})")
        for fut in (self.opened, self.finished):
            if not fut.done():
                fut.set_exception(reason)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _SCRATCH  # read into one buffer (asyncio's default allocates 256 KiB a read)

    def buffer_updated(self, nbytes: int) -> None:
        at = time.time()
        buf = self.buf
        buf += _SCRATCH[:nbytes]
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            if b" 101 " not in status:
                self.opened.set_exception(ConnectionError(f"refused: {status!r}"))
                self.transport.close()
                return
            del buf[: end + 4]
            self.upgraded = True
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
                self.transport.write(bytes((0x8A, 0x80 | size)) + bytes(4) + payload)
            elif opcode == 0x8:
                self.transport.close()
                return
            elif opcode in (0x0, 0x1, 0x2):
                if not fin:
                    self.fragments += payload
                    continue
                if self.fragments:
                    payload, self.fragments = bytes(self.fragments) + payload, bytearray()
                self._message(payload, at)

    def _message(self, payload: bytes, at: float) -> None:
        if not self.opened.done():
            self.opened.set_result(None)  # the partial sent on connect
            return
        found = TICK.findall(payload)
        top = max(map(int, found)) if found else -1
        for n in range(self.seen + 1, top + 1):
            self.firsts[n] = at
        self.seen = max(self.seen, top)
        if self.seen >= self.last and not self.finished.done():
            self.finished.set_result(None)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"\x88\x80" + bytes(4))  # close, masked, no code
            self.transport.close()


_SCRATCH = memoryview(bytearray(256 * 1024))


async def _viewer(
    params: dict[str, Any],
    cookie: str,
    firsts: dict[int, float],
    connected: asyncio.Semaphore,
    viewers: list[_Viewer],
) -> _Viewer:
    url = urlsplit(params["url"])
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Origin: {params['origin']}\r\nCookie: {cookie}\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    async with connected:
        _, viewer = await loop.create_connection(
            lambda: _Viewer(request, firsts, params["ticks"] - 1),
            url.hostname,
            url.port,
        )
        viewers.append(viewer)
        await asyncio.wait_for(asyncio.shield(viewer.opened), 120)
    return viewer


async def _viewers(params: dict[str, Any]) -> dict[str, Any]:
    count = params["count"]
    cookies = params["cookies"]
    connected = asyncio.Semaphore(params.get("connect_concurrency", 20))
    records: list[dict[int, float]] = [{} for _ in range(count)]
    viewers: list[_Viewer] = []
    t0 = time.perf_counter()
    opening = await asyncio.gather(
        *(
            _viewer(params, cookies[i % len(cookies)], records[i], connected, viewers)
            for i in range(count)
        ),
        return_exceptions=True,
    )
    opened = [v for v in opening if isinstance(v, _Viewer)]
    failures = [repr(v) for v in opening if isinstance(v, BaseException)]
    if not opened:
        raise RuntimeError(f"no viewer connected: {failures[:1]}")
    ready_s = time.perf_counter() - t0
    # What the viewers hold lives until the end: no collection pauses receiving meanwhile.
    gc.collect()
    gc.freeze()
    cpu0 = time.process_time()
    print(f"ready {count} {ready_s:.2f}", flush=True)
    # Done when every viewer has seen the last step, or when the parent says "stop".
    loop = asyncio.get_running_loop()
    told = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), told.set)
    everyone = asyncio.gather(*(v.finished for v in opened), return_exceptions=True)
    await asyncio.wait(
        [everyone, asyncio.create_task(told.wait())], return_when=asyncio.FIRST_COMPLETED
    )
    if everyone.done():
        # Hang up only when told: viewers leaving while others are still being handed the
        # last step would slow those down, which no crowd of real pages does at once.
        print("seen", flush=True)
        await told.wait()
    loop.remove_reader(sys.stdin.fileno())
    for viewer in viewers:
        viewer.close()
    everyone.cancel()
    lost = [
        repr(v.finished.exception())
        for v in opened
        if v.finished.done() and not v.finished.cancelled() and v.finished.exception()
    ]
    return {
        "cpu_s": time.process_time() - cpu0,  # the clients' own CPU while receiving
        "connect_s": ready_s,
        "connected": len(opened),
        "firsts": records,
        "failed": len(failures) + len(lost),
        "failures": (failures + lost)[:5],
    }


def viewers_main(params: dict[str, Any], out: Path) -> None:
    result = asyncio.run(_viewers(params))
    out.write_text(json.dumps(result))
