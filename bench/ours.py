"""Our engine in-process: a no-op workflow of n durable steps, driven by ``runs.engine.drive``.

Per-step overhead is (wall time from ``Run.start`` to a terminal status) / n. The run is one
slice (``AGENTOPS_SLICE_SECONDS=3600``), so this is the live path: per step one check of the
run row, then one transaction with the lease guard, the checkpoint row and its audit event.
"""

from __future__ import annotations

import cProfile
import pstats
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import ROOT, measure_sizes, setup_django


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def drive_to_end(n: int) -> tuple[float, int, Any]:
    """Start a ``bench-noop`` run of n steps and drive it in-process until it is terminal.

    Returns (seconds, slices, run id).
    """
    from runs import engine
    from runs.models import TERMINAL, Run, Step

    t0 = time.perf_counter()
    run, _ = Run.start("bench-noop", {"n": n}, actor="bench")
    slices = 0
    while True:
        engine.drive(run.pk)
        slices += 1
        status = Run.objects.filter(pk=run.pk).values_list("status", flat=True).get()
        if status in TERMINAL:
            break
        if slices > 10_000:
            raise RuntimeError(f"run {run.pk} is still {status} after {slices} slices")
    elapsed = time.perf_counter() - t0
    if status != "succeeded":
        raise RuntimeError(f"run {run.pk} ended {status}: {Run.objects.get(pk=run.pk).error}")
    steps = Step.objects.filter(run_id=run.pk).count()
    if steps != n:
        raise RuntimeError(f"run {run.pk} recorded {steps} steps, expected {n}")
    return elapsed, slices, run.pk


def replay_cost(run_id: Any) -> dict[str, float]:
    """Load a finished run's checkpoints and replay its workflow over them in memory.

    This is what a recovery or a new slice pays before its first live step: it must be
    linear in the number of recorded steps. Nothing is written (every call hits a checkpoint).
    """
    from runs.context import Context, Flags
    from runs.engine import load_checkpoints
    from runs.models import Run
    from runs.workflow import get_workflow

    run = Run.objects.select_related("team").get(pk=run_id)
    wf = get_workflow(run.workflow)
    t0 = time.perf_counter()
    checkpoints, attempts = load_checkpoints(run.pk)
    t1 = time.perf_counter()
    ctx = Context(
        run,
        wf,
        worker="bench-replay",
        actor="bench",
        checkpoints=checkpoints,
        failed_attempts=attempts,
        flags=Flags(),
    )
    wf.fn(ctx, wf.parse_input(run.input))
    t2 = time.perf_counter()
    return {"steps": len(checkpoints), "load_s": t1 - t0, "replay_s": t2 - t1}


def _normalise(sql: str) -> str:
    """A short label for a statement: verb + table (+ the columns of a narrow SELECT)."""
    sql = " ".join(sql.split())
    verb = sql.split(" ", 1)[0].upper()
    table = re.search(r'(?:FROM|INTO|UPDATE)\s+"?(\w+)"?', sql, re.I)
    return f"{verb} {table.group(1) if table else '?'}"


def query_mix(n: int) -> dict[str, Any]:
    """Where one step's time goes: statements and commits per step, timed around the driver.

    A separate run (the wrappers cost a little), so the headline figures stay unwrapped.
    Time outside these calls is Python: the ORM building queries, the engine, hashing, JSON.
    """
    from django.db import connection

    counts: Counter[str] = Counter()
    spent: Counter[str] = Counter()

    def wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool, ctx: Any) -> Any:
        kind = _normalise(sql)
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, ctx)
        finally:
            spent[kind] += time.perf_counter() - t0
            counts[kind] += 1

    original = connection._commit

    def timed_commit() -> Any:
        t0 = time.perf_counter()
        try:
            return original()
        finally:
            spent["COMMIT"] += time.perf_counter() - t0
            counts["COMMIT"] += 1

    connection._commit = timed_commit  # measurement only: times the transactions' commits
    try:
        with connection.execute_wrapper(wrapper):
            elapsed, _, _ = drive_to_end(n)
    finally:
        del connection._commit
    in_db = sum(spent.values())
    return {
        "n": n,
        "per_step_us": elapsed / n * 1e6,
        "statements_per_step": (sum(counts.values()) - counts["COMMIT"]) / n,
        "commits_per_step": counts["COMMIT"] / n,
        "db_share": in_db / elapsed,
        "python_us_per_step": (elapsed - in_db) / n * 1e6,
        "by_kind": {
            k: {"per_step": counts[k] / n, "us_each": spent[k] / counts[k] * 1e6}
            for k, _ in spent.most_common()
            if counts[k] / n >= 0.05
        },
    }


def _where(path: str) -> str:
    """A frame's file, short: ``runs/context.py`` or ``django/db/models/query.py``."""
    for marker in ("site-packages/", f"{ROOT}/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return Path(path).name if path.startswith("/") else path


def profile(n: int) -> str:
    """cProfile of an n-step run, per step: the engine's frames by cumulative time, then
    the hottest functions anywhere by own time."""
    prof = cProfile.Profile()
    prof.enable()
    elapsed, _, _ = drive_to_end(n)
    prof.disable()
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    rows = [
        (_where(file), line, func, calls / n, own / n * 1e6, cum / n * 1e6)
        for (file, line, func), (_, calls, own, cum, _) in raw.items()
    ]
    out = [
        f"one {n}-step run on PostgreSQL: {elapsed / n * 1e6:,.0f} us/step under cProfile "
        "(profiling inflates Python time; the unprofiled split is above)",
        f"  {'engine frames (runs/), by cumulative time':62}{'calls':>7}{'cum us':>9}",
    ]
    engine = sorted((r for r in rows if r[0].startswith("runs/")), key=lambda r: -r[5])
    for file, line, func, calls, _, cum in engine[:16]:
        out.append(f"    {f'{file}:{line} {func}':60}{calls:7.2f}{cum:9.0f}")
    out.append(f"  {'hottest functions, by own time':62}{'calls':>7}{'own us':>9}")
    for file, line, func, calls, own, _ in sorted(rows, key=lambda r: -r[4])[:14]:
        out.append(f"    {f'{file}:{line} {func}'[:60]:60}{calls:7.2f}{own:9.0f}")
    return "\n".join(out)


def run(database_url: str, sizes: list[int], *, warmup: int, label: str) -> dict[str, Any]:
    setup_django(database_url)
    from django.db import connection

    _log(f"[ours {label}] warm-up: {warmup} steps")
    drive_to_end(warmup)
    last: dict[str, Any] = {}

    def run_n(n: int) -> float:
        elapsed, slices, last["run"] = drive_to_end(n)
        if slices != 1:
            raise RuntimeError(f"the {n}-step run took {slices} slices; expected one")
        return elapsed

    result: dict[str, Any] = {
        "vendor": connection.vendor,
        "sizes": measure_sizes(
            run_n,
            sizes,
            label=f"ours {label}",
            pg_url=database_url if connection.vendor == "postgresql" else None,
        ),
    }
    result["replay"] = replay_cost(last["run"])
    result["queries"] = query_mix(min(sizes[0], 500))
    return result


def run_profile(database_url: str, n: int) -> dict[str, Any]:
    setup_django(database_url, migrate=False)
    drive_to_end(50)
    return {"text": profile(n)}
