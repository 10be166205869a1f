"""The other figures: LangGraph with PostgresSaver, the INSERT+COMMIT floor, raw Celery.

LangGraph's unit of durability is the super-step: with ``durability="sync"`` its checkpoint is
written before the next super-step starts. A graph of one node that increments a counter and
loops through a conditional edge until n is therefore n durable steps, each recording its
state, as a DBOS step or one of ours does (n distinct nodes would add graph-compile cost that
is not per-step overhead).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, TypedDict

from bench.common import ROOT, PgCounters, libpq, measure_sizes, percentile, wait_until


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- LangGraph
class CounterState(TypedDict):
    i: int
    n: int


def _increment(state: CounterState) -> dict[str, int]:
    return {"i": state["i"] + 1}


def _route(state: CounterState) -> str:
    from langgraph.graph import END

    return END if state["i"] >= state["n"] else "step"


def run_langgraph(database_url: str, sizes: list[int], *, warmup: int) -> dict[str, Any]:
    from importlib.metadata import version

    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.graph import END, START, StateGraph

    builder = StateGraph(CounterState)
    builder.add_node("step", _increment)
    builder.add_edge(START, "step")
    builder.add_conditional_edges("step", _route, ["step", END])

    result: dict[str, Any] = {"version": version("langgraph"), "sizes": {}}
    with PostgresSaver.from_conn_string(libpq(database_url)) as saver:
        saver.setup()
        graph = builder.compile(checkpointer=saver)

        checkpoints: dict[int, int] = {}

        def invoke(n: int) -> float:
            thread = uuid.uuid4().hex
            config: Any = {"configurable": {"thread_id": thread}, "recursion_limit": n + 10}
            t0 = time.perf_counter()
            out = graph.invoke({"i": 0, "n": n}, config, durability="sync")
            elapsed = time.perf_counter() - t0
            if out["i"] != n:
                raise RuntimeError(f"LangGraph counted to {out['i']}, expected {n}")
            with saver.conn.cursor() as cur:
                cur.execute("SELECT count(*) AS c FROM checkpoints WHERE thread_id = %s", (thread,))
                row: Any = cur.fetchone()
            checkpoints[n] = row["c"]  # a check: one checkpoint per super-step (+ input, end)
            return elapsed

        invoke(warmup)
        result["sizes"] = measure_sizes(invoke, sizes, label="langgraph", pg_url=database_url)
        for n in sizes:
            result["sizes"][str(n)]["checkpoints"] = checkpoints[n]
    return result


# ---------------------------------------------------------------------------- the floor
def run_floor(database_url: str, n: int) -> dict[str, Any]:
    """One single-row INSERT + COMMIT per repetition: what one durable write costs here."""
    import psycopg

    with psycopg.connect(libpq(database_url)) as conn:
        settings = {
            name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method")
        }
        conn.execute(
            "CREATE TABLE IF NOT EXISTS floor (id bigserial PRIMARY KEY, v integer NOT NULL, "
            "at timestamptz NOT NULL DEFAULT now())"
        )
        conn.commit()
        for i in range(50):  # warm-up (and past psycopg's prepare threshold)
            conn.execute("INSERT INTO floor (v) VALUES (%s)", (i,))
            conn.commit()
        counters = PgCounters(database_url)
        wal0, xid0 = counters.read()
        t0 = time.perf_counter()
        for i in range(n):
            conn.execute("INSERT INTO floor (v) VALUES (%s)", (i,))
            conn.commit()
        elapsed = time.perf_counter() - t0
        wal1, xid1 = counters.read()
        counters.close()
    _log(f"[floor] {n} INSERT+COMMIT: {elapsed:.2f} s, {elapsed / n * 1e6:.0f} µs each")
    return {
        "n": n,
        "seconds": elapsed,
        "per_commit_us": elapsed / n * 1e6,
        "wal_bytes_per_step": (wal1 - wal0) / n,
        "write_xacts_per_step": (xid1 - xid0) / n,
        "pg": settings,
    }


# ---------------------------------------------------------------------------- raw Celery
def start_worker(
    app: str, queues: str, env: dict[str, str], log: Path, *, concurrency: int
) -> subprocess.Popen[bytes]:
    """A real ``celery worker`` process (threads pool), logging to ``log``."""
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        "-P",
        "threads",
        "-c",
        str(concurrency),
        "-Q",
        queues,
        "-l",
        "WARNING",
        "--without-gossip",
        "--without-mingle",
        "-n",
        f"bench-{uuid.uuid4().hex[:6]}@%h",
    ]
    with log.open("ab") as fh:
        return subprocess.Popen(cmd, env=env, cwd=str(log.parent), stdout=fh, stderr=fh)


def stop_process(proc: subprocess.Popen[bytes], *, timeout: float = 20) -> None:
    """Warm shutdown (SIGTERM), then SIGKILL if it does not go; only this one process."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def run_celery_raw(
    broker_url: str, workdir: Path, *, tasks: int, samples: int, concurrency: int
) -> dict[str, Any]:
    import redis

    from bench import celery_raw

    env = {
        **os.environ,
        "BENCH_RAW_BROKER_URL": broker_url,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    celery_raw.app.conf.broker_url = broker_url
    r = redis.Redis.from_url(broker_url)
    r.flushdb()
    log = workdir / "celery-raw.log"
    proc = start_worker("bench.celery_raw", celery_raw.QUEUE, env, log, concurrency=concurrency)
    try:

        def done() -> list[list[float]]:
            return [json.loads(x) for x in r.lrange(celery_raw.DONE_KEY, 0, -1)]

        # Ready when it has run a task.
        celery_raw.noop.delay(time.time())
        wait_until(lambda: r.llen(celery_raw.DONE_KEY) >= 1, timeout=60, what="raw worker")
        r.delete(celery_raw.DONE_KEY)

        # Latency: one task at a time, send → task body starts.
        lat: list[float] = []
        for _ in range(samples):
            celery_raw.noop.delay(time.time())
            item = r.blpop([celery_raw.DONE_KEY], timeout=30)
            if item is None:
                raise TimeoutError("raw Celery task did not run within 30 s")
            sent, started, _ = json.loads(item[1])
            lat.append((started - sent) * 1000)

        # Throughput: send them all, wait for the last one.
        t0 = time.time()
        for _ in range(tasks):
            celery_raw.noop.delay(time.time())
        sent_s = time.time() - t0
        wait_until(
            lambda: r.llen(celery_raw.DONE_KEY) >= tasks,
            timeout=300,
            every=0.02,
            what="raw Celery tasks",
        )
        finished = max(x[2] for x in done())
        total = finished - t0
    finally:
        stop_process(proc)
    result = {
        "tasks": tasks,
        "concurrency": concurrency,
        "send_s": sent_s,
        "total_s": total,
        "tasks_per_s": tasks / total,
        "per_task_us": total / tasks * 1e6,
        "latency_ms": {"p50": percentile(lat, 50), "p95": percentile(lat, 95), "n": len(lat)},
    }
    _log(
        f"[celery] {tasks} no-op tasks: {total:.2f} s ({tasks / total:.0f}/s); "
        f"latency p50 {result['latency_ms']['p50']:.2f} ms"
    )
    return result
