"""Budget checks: before every step, a run whose limit is reached stops (paused, resumable).

A check before each step means a run can overshoot by at most the one step that crossed it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.utils import timezone

if TYPE_CHECKING:
    from runs.models import Run

WARN_AT = 0.8
KINDS = ("usd", "tokens", "actions", "wall_seconds")


def _fmt(kind: str, value: Any) -> str:
    if kind == "usd":
        return f"${Decimal(value):.4f}"
    if kind == "wall_seconds":
        return f"{float(value):.0f}s"
    return str(value)


def wall_warning_at(started_at: datetime | None, limit_seconds: int | None) -> datetime | None:
    """When a run started at ``started_at`` passes ``WARN_AT`` of a wall-time limit."""
    if started_at is None or limit_seconds is None:
        return None
    return started_at + timedelta(seconds=limit_seconds * WARN_AT)


def has_limits(run: Run) -> bool:
    return (
        run.limit_usd is not None
        or run.limit_tokens is not None
        or run.limit_actions is not None
        or run.limit_wall_seconds is not None
    )


def exhausted_reason(run: Run, *, now: datetime | None = None) -> str:
    """Why the run may not take another step, or '' when it may."""
    if not has_limits(run) and run.team.daily_usd_limit is None:
        return ""
    usage = run.budget_usage(now=now)
    for kind in KINDS:
        spent, limit = usage[kind]["spent"], usage[kind]["limit"]
        if limit is not None and Decimal(str(spent)) >= Decimal(str(limit)):
            label = {"usd": "cost", "wall_seconds": "wall time"}.get(kind, kind)
            return f"{label} budget reached: {_fmt(kind, spent)} of {_fmt(kind, limit)}"
    team = run.team
    if team.daily_usd_limit is not None:
        today = team.spent_today(day=(now or timezone.now()).date())
        if today >= team.daily_usd_limit:
            return (
                f"team {team.slug} daily budget reached: {_fmt('usd', today)} of "
                f"{_fmt('usd', team.daily_usd_limit)}"
            )
    return ""


def new_warnings(run: Run) -> list[tuple[str, float]]:
    """Budget kinds that crossed 80 % and have not been warned about yet."""
    out = []
    for kind, fig in run.budget_usage().items():
        frac = fig["fraction"]
        if frac is not None and frac >= WARN_AT and kind not in run.budget_warned:
            out.append((kind, round(frac, 3)))
    return out
