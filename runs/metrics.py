"""The operating figures of the dashboard and of ``/metrics`` (Prometheus), per team.

Every query is bounded by a time window on an indexed column (``created_at``, event ids) or
reads the in-flight statuses through the (team, status) index, so the cost follows the
window's activity, not the table's history.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connections
from django.db.models import Aggregate, Count, F, FloatField, Q, QuerySet, Value
from django.db.models.functions import Extract
from django.utils import timezone

from runs.audit import Event
from runs.console import derived_condition
from runs.models import TERMINAL, Run, RunStatus, StepAttempt, Team, TeamDailySpend

ACTIVE = [s for s in RunStatus if s not in TERMINAL]
#: The failed attempts that were retried: only these outcomes schedule another attempt of the
#: step (``retry_at``). ``exhausted`` and ``permanent`` end the step (or hand it to a fallback
#: service), so counting them would report every failure as a retry.
RETRIED = [StepAttempt.Outcome.RETRYABLE, StepAttempt.Outcome.TIMEOUT]
#: The duration quantiles shown (as ``quantile="0.5"`` and ``"0.95"`` on /metrics).
MEDIAN, P95 = 0.5, 0.95


# --- duration quantiles: one definition, PostgreSQL's percentile_cont ---------------------
class PercentileCont(Aggregate):
    """PostgreSQL's ``percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)``."""

    function = "percentile_cont"
    name = "PercentileCont"
    # Func joins its arguments with ``arg_joiner``: this puts the fraction (a bound parameter)
    # in the call and the expression in the ordered-set clause.
    template = "%(function)s(%(expressions)s)"
    arg_joiner = ") WITHIN GROUP (ORDER BY "
    arity = 2
    output_field = FloatField()

    def __init__(self, fraction: float, expression: Any, **extra: Any) -> None:
        super().__init__(Value(fraction), expression, **extra)


def percentile_cont(ordered: Sequence[float], fraction: float) -> float | None:
    """The value ``fraction`` (0 to 1) of the way through ``ordered`` (sorted ascending),
    interpolated linearly between its two nearest neighbours: PostgreSQL's ``percentile_cont``
    step for step, so both databases give the same figure for the same runs (the median of an
    even count is the mean of the middle two). ``statistics.quantiles(method="inclusive")`` is
    the same rule but needs two values and whole-number cut points, hence this."""
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    below, above = ordered[math.floor(position)], ordered[math.ceil(position)]
    return below + (above - below) * (position - math.floor(position))


def duration_quantiles(runs: QuerySet[Run]) -> tuple[float | None, float | None]:
    """Median and p95 of ``finished_at - started_at`` in seconds over every finished run of
    ``runs``, exactly (no sample). PostgreSQL computes them itself; on SQLite (the embedded,
    small deployment) the durations are read, one float per run, and interpolated the same way.
    """
    finished = runs.filter(finished_at__isnull=False, started_at__isnull=False).order_by()
    if connections[finished.db].vendor == "postgresql":
        seconds = Extract(F("finished_at") - F("started_at"), "epoch")
        row = finished.aggregate(
            median=PercentileCont(MEDIAN, seconds), p95=PercentileCont(P95, seconds)
        )
        return row["median"], row["p95"]
    spans = sorted(
        (end - start).total_seconds()
        for start, end in finished.values_list("started_at", "finished_at").iterator(
            chunk_size=5000
        )
    )
    return percentile_cont(spans, MEDIAN), percentile_cont(spans, P95)


@dataclass
class Window:
    label: str
    since: datetime
    by_status: dict[str, int] = field(default_factory=dict)
    completion_rate: float | None = None
    median_seconds: float | None = None
    p95_seconds: float | None = None
    retries_by_service: list[tuple[str, int]] = field(default_factory=list)
    recoveries: int = 0

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


def window(teams: list[Team], *, label: str, since: datetime) -> Window:
    """The figures of ``teams``' runs created since ``since``: counts by status, completion
    rate, exact median and p95 duration of those that finished, recoveries, and the retried
    attempts per external service (attempts that started since ``since``)."""
    w = Window(label=label, since=since)
    runs = Run.objects.filter(team__in=teams, created_at__gte=since).order_by()
    w.by_status = {row["status"]: row["n"] for row in runs.values("status").annotate(n=Count("id"))}
    finished = sum(n for s, n in w.by_status.items() if s in TERMINAL)
    if finished:
        w.completion_rate = w.by_status.get(RunStatus.SUCCEEDED, 0) / finished
    w.median_seconds, w.p95_seconds = duration_quantiles(runs)
    retries = (
        StepAttempt.objects.filter(run__team__in=teams, started_at__gte=since, outcome__in=RETRIED)
        .exclude(service="")
        .order_by()
        .values("service")
        .annotate(n=Count("id"))
    )
    w.retries_by_service = sorted(
        ((r["service"], r["n"]) for r in retries), key=lambda x: (-x[1], x[0])
    )
    w.recoveries = Event.objects.filter(
        kind="run.recovered", team__in=teams, created_at__gte=since
    ).count()
    return w


@dataclass
class TeamSpend:
    team: Team
    usd: Decimal
    limit: Decimal | None

    @property
    def fraction(self) -> float | None:
        return float(self.usd / self.limit) if self.limit else None


def spend_today(teams: list[Team]) -> list[TeamSpend]:
    today = timezone.now().date()
    spent = dict(
        TeamDailySpend.objects.filter(team__in=teams, day=today).values_list("team_id", "usd")
    )
    return [TeamSpend(t, spent.get(t.pk, Decimal(0)), t.daily_usd_limit) for t in teams]


#: The runs list's views of runs that need a person (``runs.console.derived_condition``).
ATTENTION_VIEWS = ("waiting-person", "retrying", "stalled", "over-budget")


def attention_condition(now: datetime) -> Q:
    """Unfinished runs a person should look at now: paused, or in one of the list's views of
    runs waiting on a person, retrying, stalled, or past 80 % of a budget."""
    wanted = Q(status=RunStatus.PAUSED)
    for view in ATTENTION_VIEWS:
        wanted |= derived_condition(view, now)
    return Q(status__in=ACTIVE) & wanted


def needs_attention(teams: list[Team], *, limit: int = 20) -> list[Run]:
    """The latest ``limit`` runs of ``attention_condition``, most recently changed first."""
    return list(
        Run.objects.filter(team__in=teams)
        .filter(attention_condition(timezone.now()))
        .select_related("team")
        .order_by("-updated_at")[:limit]
    )


def dashboard(teams: list[Team]) -> dict[str, Any]:
    now = timezone.now()
    return {
        "windows": [
            window(teams, label="24 hours", since=now - timedelta(hours=24)),
            window(teams, label="7 days", since=now - timedelta(days=7)),
        ],
        "spend": spend_today(teams),
        "attention": needs_attention(teams),
    }


# --- Prometheus text format ---------------------------------------------------------------
def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus(teams: list[Team]) -> str:
    """The figures in the Prometheus text exposition format, one series per team."""
    now = timezone.now()
    since = now - timedelta(hours=24)
    slug = {t.pk: t.slug for t in teams}
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[dict[str, Any], Any]]):
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{text}}} {value}")

    active = Counter(
        {
            (r["team_id"], r["status"]): r["n"]
            for r in Run.objects.filter(team__in=teams, status__in=ACTIVE)
            .order_by()
            .values("team_id", "status")
            .annotate(n=Count("id"))
        }
    )
    metric(
        "agentops_runs_in_flight",
        "gauge",
        "Runs not yet finished, by status.",
        [({"team": slug[t], "status": s}, active[(t, s)]) for t in slug for s in ACTIVE],
    )
    recent: dict[tuple[int, str], int] = defaultdict(int)
    for r in (
        Run.objects.filter(team__in=teams, created_at__gte=since, status__in=list(TERMINAL))
        .order_by()
        .values("team_id", "status")
        .annotate(n=Count("id"))
    ):
        recent[(r["team_id"], r["status"])] = r["n"]
    metric(
        "agentops_runs_finished_24h",
        "gauge",
        "Runs created in the last 24 h that finished.",
        [({"team": slug[t], "status": s}, recent[(t, s)]) for t in slug for s in TERMINAL],
    )
    attention = Counter(
        dict(
            Run.objects.filter(team__in=teams)
            .filter(attention_condition(now))
            .order_by()
            .values_list("team_id")
            .annotate(n=Count("id"))
        )
    )
    metric(
        "agentops_runs_needing_attention",
        "gauge",
        "Unfinished runs paused, waiting on a person, retrying, stalled or past 80 % of a "
        "budget (the dashboard's list).",
        [({"team": slug[t]}, attention[t]) for t in slug],
    )
    durations: list[tuple[dict[str, Any], Any]] = []
    retries: list[tuple[dict[str, Any], Any]] = []
    recoveries: list[tuple[dict[str, Any], Any]] = []
    completion: list[tuple[dict[str, Any], Any]] = []
    for team in teams:
        w = window([team], label="24h", since=since)
        if w.completion_rate is not None:
            completion.append(({"team": team.slug}, round(w.completion_rate, 4)))
        for q, v in ((MEDIAN, w.median_seconds), (P95, w.p95_seconds)):
            if v is not None:
                durations.append(({"team": team.slug, "quantile": q}, round(v, 3)))
        retries += [({"team": team.slug, "service": s}, n) for s, n in w.retries_by_service]
        recoveries.append(({"team": team.slug}, w.recoveries))
    metric(
        "agentops_run_completion_ratio_24h",
        "gauge",
        "Of the runs created in the last 24 h that finished, the share that succeeded.",
        completion,
    )
    metric(
        "agentops_run_duration_seconds",
        "gauge",
        "Duration of the runs created in the last 24 h that finished (exact quantiles).",
        durations,
    )
    metric(
        "agentops_step_retries_24h",
        "gauge",
        "Failed attempts per external service that were retried, last 24 h.",
        retries,
    )
    metric(
        "agentops_recoveries_24h",
        "gauge",
        "Runs resumed from checkpoints after a worker was lost, last 24 h.",
        recoveries,
    )
    spend = spend_today(teams)
    metric(
        "agentops_team_spend_usd_today",
        "gauge",
        "What the team's runs spent today (UTC).",
        [({"team": s.team.slug}, s.usd) for s in spend],
    )
    metric(
        "agentops_team_budget_usd_daily",
        "gauge",
        "The team's daily USD limit.",
        [({"team": s.team.slug}, s.limit) for s in spend if s.limit is not None],
    )
    return "\n".join(lines) + "\n"
