"""The operating figures of the dashboard and of ``/metrics`` (Prometheus), per team.

Every query is bounded by a time window on an indexed column (``created_at``, event ids) or
reads the in-flight statuses through the (team, status) index, so the cost follows the
window's activity, not the table's history.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q
from django.utils import timezone

from runs.audit import Event
from runs.models import TERMINAL, Run, RunStatus, StepAttempt, Team, TeamDailySpend, WaitKind

#: Durations are computed over at most this many finished runs per window.
DURATION_SAMPLE = 5000
ACTIVE = [s for s in RunStatus if s not in TERMINAL]


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
    w = Window(label=label, since=since)
    runs = Run.objects.filter(team__in=teams, created_at__gte=since).order_by()
    w.by_status = {row["status"]: row["n"] for row in runs.values("status").annotate(n=Count("id"))}
    finished = sum(n for s, n in w.by_status.items() if s in TERMINAL)
    if finished:
        w.completion_rate = w.by_status.get(RunStatus.SUCCEEDED, 0) / finished
    spans = [
        (end - start).total_seconds()
        for start, end in runs.filter(
            finished_at__isnull=False, started_at__isnull=False
        ).values_list("started_at", "finished_at")[:DURATION_SAMPLE]
    ]
    if spans:
        w.median_seconds = statistics.median(spans)
        w.p95_seconds = (
            statistics.quantiles(spans, n=20, method="inclusive")[-1]
            if len(spans) > 1
            else spans[0]
        )
    retries = (
        StepAttempt.objects.filter(run__team__in=teams, started_at__gte=since)
        .exclude(service="")
        .order_by()
        .values("service")
        .annotate(n=Count("id"))
    )
    w.retries_by_service = sorted(((r["service"], r["n"]) for r in retries), key=lambda x: -x[1])
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


def needs_attention(teams: list[Team], *, limit: int = 20) -> list[Run]:
    """Runs a person should look at now: paused, waiting on a person, stalled, close to their
    budget, or retrying."""
    now = timezone.now()
    return list(
        Run.objects.filter(team__in=teams, status__in=ACTIVE)
        .filter(
            Q(status=RunStatus.PAUSED)
            | Q(status=RunStatus.WAITING, wait_kind__in=[WaitKind.APPROVAL, WaitKind.RETRY])
            | Q(status=RunStatus.RUNNING, idle_deadline_at__lt=now)
            | ~Q(budget_warned=[])
        )
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
    durations: list[tuple[dict[str, Any], Any]] = []
    retries: list[tuple[dict[str, Any], Any]] = []
    recoveries: list[tuple[dict[str, Any], Any]] = []
    for team in teams:
        w = window([team], label="24h", since=since)
        for q, v in (("0.5", w.median_seconds), ("0.95", w.p95_seconds)):
            if v is not None:
                durations.append(({"team": team.slug, "quantile": q}, round(v, 3)))
        retries += [({"team": team.slug, "service": s}, n) for s, n in w.retries_by_service]
        recoveries.append(({"team": team.slug}, w.recoveries))
    metric(
        "agentops_run_duration_seconds",
        "gauge",
        "Duration of runs finished in the last 24 h.",
        durations,
    )
    metric(
        "agentops_step_retries_24h",
        "gauge",
        "Failed attempts per external service in the last 24 h.",
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
