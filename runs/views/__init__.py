"""Views of the runs app: the console's pages and the demo's local service."""

from __future__ import annotations

from runs.views.bulk import run_bulk
from runs.views.dashboard import dashboard, prometheus
from runs.views.demo import demo_flaky
from runs.views.runs import (
    run_cancel,
    run_cancel_confirm,
    run_detail,
    run_list,
    run_pause,
    run_raise_budget,
    run_resume,
    run_retry,
    run_signal,
    run_steps,
)
from runs.views.start import run_new

__all__ = [
    "dashboard",
    "demo_flaky",
    "prometheus",
    "run_bulk",
    "run_cancel",
    "run_cancel_confirm",
    "run_detail",
    "run_list",
    "run_new",
    "run_pause",
    "run_raise_budget",
    "run_resume",
    "run_retry",
    "run_signal",
    "run_steps",
]
