"""The console benchmark's clients: signed-in HTTP clients in threads, WebSocket viewers.

- ``http_load``: ``clients`` threads, each with its own keep-alive connection and its own
  signed-in session, request one page back to back (a closed loop, no think time), so the
  latency includes the queue at the server; every answer must be a 200 with the page's
  marker in it.
- ``viewers_main``: a child process (``bench/console.py --viewers …``) that opens WebSocket
  connections with ``websockets`` and asyncio, as a browser tab would (session cookie,
  ``Origin``), and records for every connection when each step of the watched run first
  showed up in a push. A step shows up as ``tick-<n>`` in the pushed timeline; a push that
  shows step n shows every step before it too.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

TICK = re.compile(r"tick-(\d+)")


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
async def _viewer(
    url: str,
    cookie: str,
    origin: str,
    firsts: dict[int, float],
    connected: asyncio.Semaphore,
    opened: list[int],
    stop: asyncio.Event,
    last: int,
    sockets: list[Any],
) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    seen = -1  # the highest step shown so far
    async with connected:
        ws = await connect(
            url,
            origin=origin,  # type: ignore[arg-type]
            additional_headers={"Cookie": cookie},
            open_timeout=120,
            ping_interval=None,  # a busy server must not be disconnected for a late pong
            max_size=2**24,
            compression=None,
        )
        await asyncio.wait_for(ws.recv(), 120)  # the partial sent on connect
    opened[0] += 1
    sockets.append(ws)
    try:
        # No timeout per message (``wait_for`` costs a task and a timer each): "stop" closes
        # the socket, which ends the loop. The client's own work per message is part of
        # what a crowd measures, so it is kept to reading the clock and one scan.
        async for msg in ws:
            at = time.time()
            found = TICK.findall(msg)
            top = max(map(int, found)) if found else -1
            for n in range(seen + 1, top + 1):
                firsts[n] = at
            seen = max(seen, top)
            if seen >= last or stop.is_set():
                break
    except ConnectionClosed:
        if not stop.is_set():
            raise
    finally:
        await ws.close()


async def _viewers(params: dict[str, Any]) -> dict[str, Any]:
    count = params["count"]
    cookies = params["cookies"]
    stop = asyncio.Event()
    connected = asyncio.Semaphore(params.get("connect_concurrency", 20))
    opened = [0]
    records: list[dict[int, float]] = [{} for _ in range(count)]
    sockets: list[Any] = []
    t0 = time.perf_counter()
    tasks = [
        asyncio.create_task(
            _viewer(
                params["url"],
                cookies[i % len(cookies)],
                params["origin"],
                records[i],
                connected,
                opened,
                stop,
                params["ticks"] - 1,
                sockets,
            )
        )
        for i in range(count)
    ]
    # Ready once every viewer has either connected or failed to (a refused one is counted).
    while opened[0] + sum(1 for t in tasks if t.done()) < count:
        await asyncio.sleep(0.05)
    if not opened[0]:
        raise RuntimeError(f"no viewer connected: {tasks[0].exception()!r}")
    ready_s = time.perf_counter() - t0
    print(f"ready {count} {ready_s:.2f}", flush=True)
    # Done when every viewer has seen the last step, or when the parent says "stop".
    loop = asyncio.get_running_loop()
    told = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), told.set)
    everyone = asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.wait(
        [everyone, asyncio.create_task(told.wait())], return_when=asyncio.FIRST_COMPLETED
    )
    loop.remove_reader(sys.stdin.fileno())
    stop.set()
    for ws in sockets:
        await ws.close()
    outcomes = await everyone
    failures = [repr(o) for o in outcomes if isinstance(o, BaseException)]
    return {
        "connect_s": ready_s,
        "connected": opened[0],
        "firsts": records,
        "failed": len(failures),
        "failures": failures[:5],
    }


def viewers_main(params: dict[str, Any], out: Path) -> None:
    result = asyncio.run(_viewers(params))
    out.write_text(json.dumps(result))
