"""Helpers shared by the benchmark phases: database URLs, Django set-up, statistics.

Every phase runs in its own process (``bench/engine.py --phase …``), because Django's
settings, DBOS's global instance and Celery's app cannot be switched inside one process.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "agentops_bench"
DBOS_DB = "dbos_bench"
LANGGRAPH_DB = "langgraph_bench"
FLOOR_DB = "floor_bench"
ALL_DBS = (BENCH_DB, DBOS_DB, LANGGRAPH_DB, FLOOR_DB)


def with_database(url: str, name: str) -> str:
    """``url`` with its database path replaced by ``name``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def with_redis_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def libpq(url: str) -> str:
    """psycopg wants ``postgresql://`` (``postgres://`` works too, SQLAlchemy does not)."""
    return "postgresql://" + url.split("://", 1)[1]


def recreate_databases(server_url: str, names: Iterable[str]) -> None:
    """Drop and create each database on the server, so every run starts from empty tables."""
    import psycopg

    with psycopg.connect(libpq(server_url), autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')


def django_env(database_url: str, *, broker: str = "memory://") -> dict[str, str]:
    """The environment our engine reads (settings are environment variables only)."""
    data_dir = Path(tempfile.gettempdir()) / "agentops-bench-data"
    return {
        "DJANGO_SETTINGS_MODULE": "agentops.settings",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker,
        "CHANNEL_LAYER_URL": "memory://",
        "AGENTOPS_APPS": "bench",
        "AGENTOPS_DATA_DIR": str(data_dir),
        # One slice drives the whole run: the benchmark measures steps, not re-queues.
        "AGENTOPS_SLICE_SECONDS": "3600",
        "AGENTOPS_LOG_LEVEL": "WARNING",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }


def setup_django(database_url: str, *, broker: str = "memory://", migrate: bool = True) -> None:
    os.environ.update(django_env(database_url, broker=broker))
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django
    from django.core.management import call_command

    django.setup()
    if migrate:
        call_command("migrate", verbosity=0, interactive=False)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0 to 100) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    cuts = statistics.quantiles(sorted(values), n=100, method="inclusive")
    if q <= 0:
        return min(values)
    if q >= 100:
        return max(values)
    return cuts[int(q) - 1]


class PgCounters:
    """Cluster-wide write counters, read from a connection of their own.

    ``pg_current_wal_lsn()`` gives the WAL bytes written and ``pg_current_xact_id()`` the
    transaction ids handed out, i.e. the transactions that wrote (each one a durable commit,
    with fsync on). Both are exact at once, unlike the cumulative statistics views.
    """

    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(libpq(url), autocommit=True)

    def read(self) -> tuple[int, int]:
        row = self.conn.execute(
            "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint, "
            "pg_current_xact_id()::text::bigint"
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1]) - 1  # reading the xid used one up

    def close(self) -> None:
        self.conn.close()


def measure_sizes(
    run_n: Callable[[int], float],
    sizes: list[int],
    *,
    label: str,
    reps_small: int = 3,
    pg_url: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Per-step figures of ``run_n(n)`` (seconds for n steps) for each size.

    Every size but the largest is repeated ``reps_small`` times and the median kept: short
    runs are noisy (a PostgreSQL checkpoint, autovacuum). The largest runs once; it is long
    enough to average that out. The same rule applies to ours and to every peer. With
    ``pg_url``, the largest run also records write transactions and WAL bytes per step.
    """
    counters = PgCounters(pg_url) if pg_url else None
    out: dict[str, dict[str, Any]] = {}
    for n in sizes:
        before = counters.read() if counters and n == max(sizes) else None
        reps = [run_n(n) for _ in range(1 if n == max(sizes) else reps_small)]
        seconds = statistics.median(reps)
        out[str(n)] = {
            "seconds": seconds,
            "per_step_us": seconds / n * 1e6,
            "reps_us": [r / n * 1e6 for r in reps],
        }
        if counters and before:
            wal, xid = counters.read()
            out[str(n)]["wal_bytes_per_step"] = (wal - before[0]) / n
            out[str(n)]["write_xacts_per_step"] = (xid - before[1]) / n
        spread = ", ".join(f"{r / n * 1e6:.0f}" for r in reps)
        print(
            f"[{label}] {n} steps: {seconds:.2f} s, {seconds / n * 1e6:.0f} µs/step "
            f"(runs: {spread} µs/step)",
            file=sys.stderr,
            flush=True,
        )
    if counters:
        counters.close()
    return out


def wait_until(
    pred: Callable[[], bool], *, timeout: float, every: float = 0.05, what: str = ""
) -> None:
    """Poll ``pred`` until it holds (the benchmark, like the tests, waits by polling)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what or pred}")
        time.sleep(every)
