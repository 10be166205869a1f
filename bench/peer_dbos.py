"""DBOS Transact: the same n no-op durable steps, system database on the same PostgreSQL.

A ``@DBOS.workflow`` calls a ``@DBOS.step`` n times; each step checks for its recorded output,
runs, and records its output (``operation_outputs``) before the next one starts. Called
directly, the workflow runs synchronously in this thread, like ``drive`` does for ours.
"""

from __future__ import annotations

import time
from typing import Any

from dbos import DBOS

from bench.common import measure_sizes


@DBOS.step()
def noop_step() -> None:
    return None


@DBOS.workflow()
def noop_workflow(n: int) -> int:
    for _ in range(n):
        noop_step()
    return n


def run(system_database_url: str, sizes: list[int], *, warmup: int) -> dict[str, Any]:
    DBOS(
        config={
            "name": "agentops-bench",
            "system_database_url": system_database_url,
            "log_level": "WARNING",
        }
    )
    DBOS.launch()
    try:
        noop_workflow(warmup)

        def run_n(n: int) -> float:
            t0 = time.perf_counter()
            done = noop_workflow(n)
            elapsed = time.perf_counter() - t0
            if done != n:
                raise RuntimeError(f"DBOS workflow returned {done}, expected {n}")
            return elapsed

        result: dict[str, Any] = {
            "version": _version(),
            "sizes": measure_sizes(run_n, sizes, label="dbos", pg_url=system_database_url),
        }
        # A check that the steps really were durable: one recorded output per step.
        result["recorded_steps"] = _recorded_steps()
        return result
    finally:
        DBOS.destroy()


def _version() -> str:
    from importlib.metadata import version

    return version("dbos")


def _recorded_steps() -> int:
    """How many step outputs DBOS wrote, over all its workflows in this database."""
    steps = 0
    for wf in DBOS.list_workflows():
        steps += len(DBOS.list_workflow_steps(wf.workflow_id, load_output=False))
    return steps
