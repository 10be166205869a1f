"""The benchmark workflows, registered like any app's (``AGENTOPS_APPS=bench``).

- ``bench-noop``: ``n`` durable no-op steps; measures the engine's per-step overhead.
- ``bench-sleep``: a durable one-hour sleep, then one step; fills the table with waiting runs.
- ``bench-ticker``: ``warm`` no-op steps first (so the run's page starts at its full size,
  the latest 50 steps and events, as a run of hours shows it), then waits for the signal
  ``go``, then ``n`` steps ``interval`` seconds apart; the console benchmark times each
  step's push to the browsers watching the run.
"""

from __future__ import annotations

import time
from typing import Any

from runs.workflow import workflow


def noop() -> None:
    """The step's work: nothing, so what is measured is the engine."""
    return None


@workflow(name="bench-noop", description="n durable no-op steps (benchmark).")
def bench_noop(ctx: Any, data: dict[str, Any]) -> dict[str, int]:
    n = int(data.get("n", 1))
    for i in range(n):
        ctx.step(f"s{i}", noop)
    return {"steps": n}


@workflow(name="bench-sleep", description="A durable sleep, then one step (benchmark).")
def bench_sleep(ctx: Any, data: dict[str, Any]) -> dict[str, bool]:
    ctx.sleep("nap", float(data.get("seconds", 3600)))
    ctx.step("after", noop)
    return {"woke": True}


def tick(seconds: float) -> float:
    """The step's work: wait, then say when it ended."""
    time.sleep(seconds)
    return time.time()


@workflow(name="bench-ticker", description="On `go`, n steps interval seconds apart (benchmark).")
def bench_ticker(ctx: Any, data: dict[str, Any]) -> dict[str, int]:
    for i in range(int(data.get("warm", 0))):
        ctx.step(f"warm-{i}", noop)
    # Parked until the viewers are connected, so no step finishes before they watch.
    ctx.wait_for_event("go", timeout=3600)
    n, interval = int(data.get("n", 10)), float(data.get("interval", 0.25))
    for i in range(n):
        ctx.step(f"tick-{i}", tick, interval)
    return {"ticks": n}
