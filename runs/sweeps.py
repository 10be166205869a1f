"""Beat sweeps: the safety net under the doorbell.

Each query filters on exactly the condition of one partial index (see ``Run.Meta.indexes``),
so a sweep's cost follows the number of due rows, not the size of the table. Each handles at
most ``BATCH`` rows per call; the next tick takes the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from runs import doorbell
from runs.audit import Event
from runs.budget import new_warnings
from runs.exceptions import AgentopsError
from runs.live import publish_run_changed
from runs.models import Run, RunStatus

BATCH = 500
ACTOR = "system:sweep"


def due_timers(now: datetime) -> QuerySet[Run]:
    return Run.objects.filter(status=RunStatus.WAITING, wake_at__lte=now).order_by("wake_at")


def expired_leases(now: datetime) -> QuerySet[Run]:
    return Run.objects.filter(status=RunStatus.RUNNING, lease_expires_at__lt=now).order_by(
        "lease_expires_at"
    )


def unheld(before: datetime) -> QuerySet[Run]:
    # rung_at is set only while the run is runnable and not held (see Run.Meta.indexes).
    return Run.objects.filter(rung_at__lt=before, lease_expires_at__isnull=True).order_by("rung_at")


def past_deadline(now: datetime) -> QuerySet[Run]:
    return Run.objects.filter(
        deadline_at__isnull=False,
        finished_at__isnull=True,
        stop_requested="",
        deadline_at__lte=now,
    ).order_by("deadline_at")


def idle(now: datetime) -> QuerySet[Run]:
    return Run.objects.filter(
        status=RunStatus.RUNNING,
        idle_deadline_at__isnull=False,
        stop_requested="",
        idle_deadline_at__lte=now,
    ).order_by("idle_deadline_at")


def past_step_deadline(now: datetime) -> QuerySet[Run]:
    return Run.objects.filter(
        status=RunStatus.RUNNING, step_deadline_at__isnull=False, step_deadline_at__lte=now
    ).order_by("step_deadline_at")


def due_wall_warnings(now: datetime) -> QuerySet[Run]:
    return Run.objects.filter(
        wall_warn_at__isnull=False, finished_at__isnull=True, wall_warn_at__lte=now
    ).order_by("wall_warn_at")


#: Each sweep's query by the partial index it reads (the tests check the query plans).
QUERIES: dict[str, Callable[[datetime], QuerySet[Run]]] = {
    "run_due_timers": due_timers,
    "run_leases": expired_leases,
    "run_unheld": unheld,
    "run_deadlines": past_deadline,
    "run_idle": idle,
    "run_step_deadlines": past_step_deadline,
    "run_wall_warnings": due_wall_warnings,
}


def wake_due_timers() -> int:
    """Waiting runs whose timer (sleep, retry backoff, open circuit, wait timeout) is due."""
    now = timezone.now()
    ids = list(due_timers(now).exclude(wait_kind="approval").values_list("pk", flat=True)[:BATCH])
    woken = 0
    for run_id in ids:
        woken += Run(pk=run_id).wake(actor=ACTOR, reason="timer due", due_only=True)
    return woken


def requeue_expired_leases() -> int:
    """Running runs whose worker stopped heartbeating: ring so another worker recovers them.

    The taker counts the recovery. ``rung_at`` keeps a backlogged queue from getting one more
    message per tick for the same run.
    """
    now = timezone.now()
    again = now - timedelta(seconds=float(settings.AGENTOPS_ORPHAN_SECONDS))
    ids = list(expired_leases(now).values_list("pk", "rung_at")[:BATCH])
    rung = 0
    for run_id, rung_at in ids:
        if rung_at is not None and rung_at > again:
            continue
        with transaction.atomic():
            if Run.objects.filter(
                pk=run_id, status=RunStatus.RUNNING, lease_expires_at__lt=now
            ).update(rung_at=now):
                doorbell.ring(run_id)
                rung += 1
    return rung


def requeue_orphans(*, older_than: float | None = None) -> int:
    """Queued or released runs that nobody picked up (a lost or flushed broker message).

    ``older_than=0`` rings for all of them at once (the embedded server does so at start-up:
    an in-process broker forgets its messages when the process stops)."""
    now = timezone.now()
    age = float(settings.AGENTOPS_ORPHAN_SECONDS) if older_than is None else older_than
    before = now - timedelta(seconds=age) + timedelta(microseconds=1)
    ids = list(unheld(before).values_list("pk", flat=True)[:BATCH])
    rung = 0
    for run_id in ids:
        with transaction.atomic():
            if Run.objects.filter(
                pk=run_id, lease_expires_at__isnull=True, rung_at__lt=before
            ).update(rung_at=now):
                doorbell.ring(run_id)
                rung += 1
    return rung


def enforce_deadlines() -> int:
    """Runs past their overall deadline stop: compensations run, then they are timed_out."""
    now = timezone.now()
    ids = list(past_deadline(now).values_list("pk", "team_id")[:BATCH])
    for run_id, team_id in ids:
        try:
            Run(pk=run_id, team_id=team_id)._request_stop(
                "timeout", actor="system:deadline", reason="overall deadline passed"
            )
        except AgentopsError:  # finished meanwhile: nothing to stop
            continue
    return len(ids)


def enforce_idle_timeouts() -> int:
    """Running runs with no activity for longer than their idle timeout are timed out."""
    now = timezone.now()
    ids = list(idle(now).values_list("pk", "team_id")[:BATCH])
    for run_id, team_id in ids:
        try:
            Run(pk=run_id, team_id=team_id)._request_stop(
                "timeout", actor="system:idle", reason="no activity within the idle timeout"
            )
        except AgentopsError:  # finished meanwhile: nothing to stop
            continue
    return len(ids)


def expire_step_deadlines() -> int:
    """A step past its timeout whose worker still holds the lease (hung, not dead): take the
    lease away so another worker retries the step."""
    now = timezone.now()
    ids = list(past_step_deadline(now).values_list("pk", "team_id", "lease_owner")[:BATCH])
    for run_id, team_id, owner in ids:
        with transaction.atomic():
            # A new owner string makes the hung worker's heartbeat and writes fail from now on.
            if Run.objects.filter(pk=run_id, lease_owner=owner, step_deadline_at__lte=now).update(
                lease_owner=f"expired:{owner}"[:120],
                lease_expires_at=now - timedelta(microseconds=1),
                step_deadline_at=None,
            ):
                Event.append(
                    "run.step_deadline_passed",
                    run_id=run_id,
                    team_id=team_id,
                    actor=ACTOR,
                    data={"worker": owner},
                    locked=True,
                )
    return len(ids)


def warn_wall_time() -> int:
    """Runs whose wall time passed 80 % of its limit are warned of, as a step warns of the
    other budgets: a run waiting on a person or a timer has no step to notice it. Returns
    how many were warned."""
    now = timezone.now()
    warned = 0
    for run_id in list(due_wall_warnings(now).values_list("pk", flat=True)[:BATCH]):
        with transaction.atomic():
            run = (
                Run.objects.select_for_update()
                .filter(pk=run_id, finished_at__isnull=True, wall_warn_at__lte=now)
                .first()
            )
            if run is None:  # finished, or its budget raised, meanwhile
                continue
            # The same test as a step's (``new_warnings``): nothing when a step warned first.
            warnings = new_warnings(run)
            run.budget_warned = [*run.budget_warned, *(kind for kind, _ in warnings)]
            Run.objects.filter(pk=run_id).update(
                wall_warn_at=None, budget_warned=run.budget_warned, updated_at=now
            )
            for kind, fraction in warnings:
                Event.append(
                    "budget.warning",
                    run_id=run_id,
                    team_id=run.team_id,
                    actor=ACTOR,
                    data={"budget": kind, "fraction": fraction},
                    locked=True,
                )
            if warnings:
                publish_run_changed(run_id, team_id=run.team_id)
                warned += 1
    return warned
