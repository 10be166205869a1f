"""The distributed deployment: a real ``celery worker`` on Redis and the bench PostgreSQL.

1. Submit-to-first-step latency: ``Run.start`` here, the doorbell goes through Redis, the
   worker takes the lease and runs step 1. Measured from the rows: first
   ``Step.started_at`` - ``Run.created_at`` (one clock: same machine), one run at a time.
2. Waiting runs: N runs of ``bench-sleep`` (a durable one-hour sleep) are started here and
   driven to ``waiting`` by the worker through the normal path. Then, with ``celery beat``
   ringing the sweeps: how many runs hold a lease, how many messages sit in Redis, how many
   tasks the worker is executing, the plan of the timers sweep's query, and its time.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import django_env, percentile, setup_django, wait_until
from bench.peers import start_worker, stop_process


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _latency(samples: int, label: str) -> dict[str, Any]:
    from runs.models import Run, Step

    first_step: list[float] = []
    to_lease: list[float] = []
    end_to_end: list[float] = []
    for _ in range(samples):
        t0 = time.perf_counter()
        run, _ = Run.start("bench-noop", {"n": 1}, actor="bench")
        wait_until(
            lambda pk=run.pk: Run.objects.filter(pk=pk, status="succeeded").exists(),
            timeout=60,
            # The figure comes from the rows' timestamps, so polling need not be tight; on two
            # cores a tighter loop measurably slows the worker it is waiting for.
            every=0.01,
            what=f"run {run.pk} to succeed",
        )
        end_to_end.append((time.perf_counter() - t0) * 1000)
        started_at = Run.objects.filter(pk=run.pk).values_list("started_at", flat=True).get()
        step_at = Step.objects.filter(run_id=run.pk, seq=1).values_list("started_at", flat=True)
        first_step.append((step_at.get() - run.created_at).total_seconds() * 1000)
        to_lease.append((started_at - run.created_at).total_seconds() * 1000)

    def figures(values: list[float]) -> dict[str, float]:
        return {"p50": percentile(values, 50), "p95": percentile(values, 95), "max": max(values)}

    out = {
        "n": samples,
        "first_step_ms": figures(first_step),
        "lease_ms": figures(to_lease),
        "end_to_end_ms": figures(end_to_end),
    }
    _log(
        f"[distributed {label}] submit→first step p50 {out['first_step_ms']['p50']:.2f} ms, "
        f"p95 {out['first_step_ms']['p95']:.2f} ms over {samples} runs"
    )
    return out


def _start_many(count: int, threads: int) -> None:
    """``Run.start`` ``count`` times from ``threads`` threads (each has its own connection)."""
    from django.db import connection

    from runs.models import Run

    def chunk(k: int) -> None:
        try:
            for i in range(k, count, threads):
                Run.start("bench-sleep", {"seconds": 3600, "i": i}, actor="bench")
        finally:
            connection.close()

    with ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(chunk, k) for k in range(threads)]:
            f.result()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _fill_waiting(count: int, *, timeout: float, worker_pid: int) -> dict[str, Any]:
    from django.db.models import Count

    from runs.models import Run

    sleepers = Run.objects.filter(workflow="bench-sleep")
    cpu0 = _cpu_seconds(worker_pid)
    t0 = time.perf_counter()
    _start_many(count, threads=8)
    submitted = time.perf_counter() - t0
    _log(f"[distributed] {count} runs submitted in {submitted:.1f} s; waiting for `waiting`")
    last_log = time.monotonic()

    def all_waiting() -> bool:
        nonlocal last_log
        n = sleepers.filter(status="waiting").count()
        if time.monotonic() - last_log > 10:
            last_log = time.monotonic()
            _log(f"[distributed]   {n}/{count} waiting after {time.perf_counter() - t0:.0f} s")
        return n >= count

    wait_until(all_waiting, timeout=timeout, every=0.25, what=f"{count} runs to wait")
    elapsed = time.perf_counter() - t0
    worker_cpu = _cpu_seconds(worker_pid) - cpu0
    statuses = dict(sleepers.values_list("status").annotate(c=Count("id")).order_by())
    _log(f"[distributed] {count} runs waiting after {elapsed:.1f} s ({count / elapsed:.0f}/s)")
    return {
        "count": count,
        "submit_s": submitted,
        "seconds": elapsed,
        "statuses": statuses,
        "worker_cpu_ms_per_run": worker_cpu / count * 1000,
    }


def _queue_depths(r: Any) -> dict[str, int]:
    """Messages in the ``runs`` and ``sweeps`` queues (all priority sub-lists) and unacked."""
    depth = {"runs": 0, "sweeps": 0}
    for q in depth:
        for key in r.scan_iter(match=f"{q}*"):
            if r.type(key) == b"list":
                depth[q] += r.llen(key)
    depth["unacked"] = r.hlen("unacked")
    return depth


def _observe(r: Any, seconds: float) -> dict[str, Any]:
    """Sample the queues while beat rings the sweeps; the worst sample counts."""
    worst = {"runs": 0, "sweeps": 0, "unacked": 0}
    samples = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for k, v in _queue_depths(r).items():
            worst[k] = max(worst[k], v)
        samples += 1
        time.sleep(0.1)
    return {"max": worst, "samples": samples, "final": _queue_depths(r)}


def _active_tasks() -> int | None:
    from agentops.celery import app

    try:
        active = app.control.inspect(timeout=2.0).active()
    except Exception:
        return None
    if active is None:
        return None
    return sum(len(tasks) for tasks in active.values())


def _explain_timers_sweep() -> dict[str, Any]:
    """The plan of the exact query ``wake_due_timers`` runs (captured, then EXPLAINed)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from runs.sweeps import wake_due_timers

    with CaptureQueriesContext(connection) as captured:
        wake_due_timers()
    sql = captured.captured_queries[0]["sql"]

    def plan(options: str) -> str:
        with connection.cursor() as cur:
            cur.execute(f"EXPLAIN ({options}) {sql}")
            return "\n".join(row[0] for row in cur.fetchall())

    before = plan("COSTS OFF")
    with connection.cursor() as cur:
        cur.execute("ANALYZE runs_run")
    after = plan("ANALYZE, BUFFERS, COSTS OFF")
    return {
        "sql": sql,
        "uses_index_before_analyze": "run_due_timers" in before,
        "plan_before_analyze": before,
        "uses_index": "run_due_timers" in after,
        "plan": after,
    }


def _time_sweeps() -> dict[str, Any]:
    from runs import sweeps

    def ms(fn: Any) -> tuple[float, Any]:
        t0 = time.perf_counter()
        out = fn()
        return (time.perf_counter() - t0) * 1000, out

    timer_runs = [ms(sweeps.wake_due_timers) for _ in range(5)]
    return {
        "timers_ms_first": timer_runs[0][0],
        "timers_ms_median": statistics.median(t for t, _ in timer_runs),
        "timers_woken": sum(w for _, w in timer_runs),
        "leases_ms": ms(sweeps.requeue_expired_leases)[0],
        "orphans_ms": ms(sweeps.requeue_orphans)[0],
        "deadlines_ms": ms(sweeps.enforce_deadlines)[0],
    }


def run(
    database_url: str,
    redis_url: str,
    workdir: Path,
    *,
    samples: int,
    waiting: int,
    concurrency: int,
    observe_s: float,
    fill_timeout: float,
) -> dict[str, Any]:
    import redis

    setup_django(database_url, broker=redis_url)
    from django.db.models import Q

    from runs.models import Run, RunStatus

    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    env = {**os.environ, **django_env(database_url, broker=redis_url)}
    result: dict[str, Any] = {"worker_concurrency": concurrency}

    def worker(settings_module: str, log: str) -> subprocess.Popen[bytes]:
        proc = start_worker(
            "agentops",
            "runs,sweeps",
            {**env, "DJANGO_SETTINGS_MODULE": settings_module},
            workdir / log,
            concurrency=concurrency,
        )
        t0 = time.perf_counter()
        try:
            warm, _ = Run.start("bench-noop", {"n": 1}, actor="bench")
            wait_until(
                lambda: Run.objects.filter(pk=warm.pk, status="succeeded").exists(),
                timeout=90,
                what="the worker to drive a first run",
            )
        except BaseException:
            stop_process(proc)
            raise
        _log(f"[distributed] worker ({settings_module}) ready in {time.perf_counter() - t0:.1f} s")
        return proc

    # 1. Latency as shipped, then with database connections kept between tasks.
    proc = worker("agentops.settings", "worker.log")
    try:
        result["latency"] = _latency(samples, "as shipped")
    finally:
        stop_process(proc)
    proc = worker("bench.settings_reuse", "worker-reuse.log")
    try:
        result["latency_reuse"] = _latency(samples, "CELERY_DB_REUSE_MAX")
    finally:
        stop_process(proc)

    # 2. Waiting runs, as shipped.
    proc = worker("agentops.settings", "worker.log")
    beat: subprocess.Popen[bytes] | None = None
    try:
        result["fill"] = _fill_waiting(waiting, timeout=fill_timeout, worker_pid=proc.pid)
        beat_log = workdir / "beat.log"
        with beat_log.open("ab") as fh:
            beat = subprocess.Popen(
                [
                    *(sys.executable, "-m", "celery", "-A", "agentops", "beat", "-S", "django"),
                    *("-l", "INFO", "--pidfile", str(workdir / "beat.pid")),
                ],
                env=env,
                cwd=str(workdir),
                stdout=fh,
                stderr=fh,
            )
        _log(f"[distributed] beat started; observing {observe_s:g} s")
        result["observe"] = _observe(r, observe_s)
        result["beat_sent"] = beat_log.read_text(errors="replace").count("Sending due task")
        result["active_tasks"] = _active_tasks()
        sleepers = Run.objects.filter(workflow="bench-sleep")
        result["held"] = {
            "leased": sleepers.filter(
                Q(lease_expires_at__isnull=False) | ~Q(lease_owner="")
            ).count(),
            "running": Run.objects.filter(status=RunStatus.RUNNING).count(),
            "waiting": sleepers.filter(status=RunStatus.WAITING).count(),
        }
        result["explain"] = _explain_timers_sweep()
        result["sweeps"] = _time_sweeps()
        _log(
            f"[distributed] timers sweep over {result['held']['waiting']} waiting runs: "
            f"{result['sweeps']['timers_ms_median']:.2f} ms, "
            f"index used: {result['explain']['uses_index']}"
        )
    finally:
        if beat is not None:
            stop_process(beat)
        stop_process(proc)
    return result
