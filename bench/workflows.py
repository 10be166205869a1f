"""The benchmark workflows, registered like any app's (``AGENTOPS_APPS=bench``).

- ``bench-noop``: ``n`` durable no-op steps; measures the engine's per-step overhead.
- ``bench-sleep``: a durable one-hour sleep, then one step; fills the table with waiting runs.
"""

from __future__ import annotations

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
