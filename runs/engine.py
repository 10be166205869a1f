"""The engine: take a run's lease, replay it from its checkpoints, drive it for one time slice.

Called by the Celery task ``runs.drive`` with nothing but a run id. Invariants:
- at most one worker drives a run: the lease is taken with one conditional UPDATE and every
  checkpoint write re-checks it (a worker that lost its lease writes nothing more);
- the run leaves this function holding no lease: finished, waiting (a durable timer, holding no
  worker and no broker message), paused, or released and re-rung for the next slice;
- a worker killed at any point loses at most the step in flight: its lease lapses, the sweep
  rings again, and the next worker resumes from the checkpoints (counted as a recovery).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, connections, transaction
from django.db.models import Case, DateTimeField, F, Q, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from runs import doorbell
from runs.audit import Event
from runs.budget import wall_warning_at
from runs.checkpoints import Checkpoint
from runs.context import SHUTDOWN, Context, Flags, PauseRequested, to_json
from runs.exceptions import (
    BudgetExceeded,
    LeaseLost,
    LedgerUnavailable,
    NonDeterminismError,
    StepFailed,
    StopRequested,
    StopRun,
    Suspend,
    UnknownWorkflow,
    YieldSlice,
)
from runs.models import Run, RunStatus, Signal, Step, StepAttempt, WaitKind
from runs.redact import redact
from runs.retry import error_dict
from runs.workflow import get_workflow

log = logging.getLogger(__name__)
try:  # errors raised when a PostgreSQL pipeline syncs are psycopg's own, not Django's
    from psycopg import Error as _PsycopgError

    DATABASE_ERRORS: tuple[type[Exception], ...] = (DatabaseError, _PsycopgError)
except ImportError:  # pragma: no cover - psycopg is a dependency
    DATABASE_ERRORS = (DatabaseError,)
HOST = socket.gethostname()


def worker_actor() -> str:
    return f"worker:{HOST}:{os.getpid()}"


def new_lease_token() -> str:
    return f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class Heartbeat(threading.Thread):
    """Renews the lease while a step runs and relays cancellation to ``ctx.cancelled``."""

    def __init__(self, run_id: Any, token: str, flags: Flags, lease_seconds: float) -> None:
        super().__init__(name=f"heartbeat-{run_id}", daemon=True)
        self.run_id, self.token, self.flags = run_id, token, flags
        self.lease_seconds = lease_seconds
        self.interval = max(lease_seconds / 3, 0.2)
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            while not self._halt.wait(self.interval):
                try:
                    now = timezone.now()
                    renewed = Run.objects.filter(
                        pk=self.run_id, lease_owner=self.token, status=RunStatus.RUNNING
                    ).update(lease_expires_at=now + timedelta(seconds=self.lease_seconds))
                    if not renewed:
                        self.flags.lease_lost = True
                        return
                    stop = (
                        Run.objects.filter(pk=self.run_id)
                        .values_list("stop_requested", flat=True)
                        .first()
                    )
                    self.flags.stop = bool(stop)
                except DATABASE_ERRORS:
                    # One failed beat only risks the lease: drop the connection, try again.
                    log.warning("heartbeat for run %s failed", self.run_id, exc_info=True)
                    connection.close()
        finally:
            connection.close()

    def halt(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def take_lease(run_id: Any, token: str, *, actor: str) -> Run | None:
    """Take the run if it is runnable and nobody holds it; None otherwise.

    A queued run starts; a running run whose lease expired is a recovery.
    """
    now = timezone.now()
    row = (
        Run.objects.filter(pk=run_id)
        .values(
            "status",
            "lease_owner",
            "lease_expires_at",
            "idle_timeout_seconds",
            "limit_wall_seconds",
        )
        .first()
    )
    if row is None or row["status"] not in (RunStatus.QUEUED, RunStatus.RUNNING):
        return None
    expires = row["lease_expires_at"]
    if expires is not None and expires >= now:
        return None
    lease = timedelta(seconds=float(settings.AGENTOPS_LEASE_SECONDS))
    idle = row["idle_timeout_seconds"]
    fields: dict[str, Any] = {
        "lease_owner": token,
        "lease_expires_at": now + lease,
        "last_activity_at": now,
        "idle_deadline_at": now + timedelta(seconds=idle) if idle else None,
        "rung_at": None,
    }
    if (warn_at := wall_warning_at(now, row["limit_wall_seconds"])) is not None:
        # A run's first start (from the queue, or resumed after a pause while it was queued)
        # sets when its wall time will pass 80 %; a run that started before keeps its own.
        fields["wall_warn_at"] = Case(
            When(started_at__isnull=True, then=Value(warn_at)),
            default=F("wall_warn_at"),
            output_field=DateTimeField(),
        )
    guard = Q(lease_expires_at=expires) if expires else Q(lease_expires_at__isnull=True)
    if row["status"] == RunStatus.QUEUED:
        taken = Run.transition(
            run_id,
            to=RunStatus.RUNNING,
            from_=[RunStatus.QUEUED],
            guard=guard,
            event="run.started",
            actor=actor,
            data={"worker": token},
            started_at=now,
            **fields,
        )
    else:
        with transaction.atomic():
            taken = bool(
                Run.objects.filter(pk=run_id, status=RunStatus.RUNNING)
                .filter(guard)
                .update(
                    updated_at=now,
                    recoveries=F("recoveries") + (1 if expires else 0),
                    started_at=Coalesce(F("started_at"), Value(now)),
                    **fields,
                )
            )
            if taken and expires:
                Event.append(
                    "run.recovered",
                    run_id=run_id,
                    actor=actor,
                    locked=True,
                    team_id=Run.objects.filter(pk=run_id).values_list("team_id", flat=True)[0],
                    data={"previous_worker": row["lease_owner"], "worker": token},
                )
    if not taken:
        return None
    return Run.objects.select_related("team").get(pk=run_id)


def load_checkpoints(run_id: Any) -> tuple[dict[int, Checkpoint], dict[int, int]]:
    cps = {
        seq: Checkpoint(seq, name, kind, status, output, error)
        for seq, name, kind, status, output, error in Step.objects.filter(run_id=run_id)
        .order_by("seq")
        .values_list("seq", "name", "kind", "status", "output", "error")
        .iterator(chunk_size=5000)
    }
    attempts: dict[int, int] = {}
    for seq, attempt in StepAttempt.objects.filter(run_id=run_id).values_list("seq", "attempt"):
        attempts[seq] = max(attempts.get(seq, 0), attempt)
    return cps, attempts


def drive(run_id: Any, *, token: str | None = None) -> str:
    """Drive one run for one slice. Returns what happened (for logs and tests)."""
    if SHUTDOWN.is_set():
        # A worker going down takes nothing new: the doorbell goes back to the broker for
        # another worker (a message Celery still delivers during a warm shutdown would
        # otherwise start a whole step here after SIGTERM).
        with transaction.atomic():
            doorbell.ring(run_id, countdown=1)
        return "skipped"
    # Celery keeps connections across tasks (CELERY_DB_REUSE_MAX): drop any that broke,
    # e.g. after a database failover, before this task relies on them.
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close_if_unusable_or_obsolete()
    token = token or new_lease_token()
    actor = worker_actor()
    run = take_lease(run_id, token, actor=actor)
    if run is None:
        return "skipped"
    mine = Q(lease_owner=token)
    try:
        wf = get_workflow(run.workflow)
    except UnknownWorkflow as exc:
        return _workflow_unavailable(run, exc, actor, mine)
    if run.pause_requested and not run.stop_requested:
        _pause(run, run.pause_reason or "paused by a person", actor, mine, by="person")
        return "paused"
    checkpoints, attempts = load_checkpoints(run.pk)
    flags = Flags()
    ctx = Context(
        run,
        wf,
        worker=token,
        actor=actor,
        checkpoints=checkpoints,
        failed_attempts=attempts,
        flags=flags,
    )
    heartbeat = Heartbeat(run.pk, token, flags, ctx.lease_seconds)
    heartbeat.start()
    try:
        return _execute(ctx, run, wf, actor, mine)
    finally:
        heartbeat.halt()


#: Consecutive slices the database refused before the run is failed instead of retried.
MAX_DATABASE_ERRORS = 5
#: Times a run is handed back because this worker does not know its workflow (a rolling
#: deploy: an older worker took it) before it is failed as unknown.
MAX_UNAVAILABLE = 10


def _workflow_unavailable(run: Run, exc: UnknownWorkflow, actor: str, mine: Q) -> str:
    """Hand the run back for a worker that knows its workflow; fail it once many have not."""
    with transaction.atomic():
        seen = Event.objects.filter(run_id=run.pk, kind="run.workflow_unavailable").count()
        if seen + 1 >= MAX_UNAVAILABLE:
            _finish(
                run,
                RunStatus.FAILED,
                "run.failed",
                actor,
                mine,
                error={"type": "UnknownWorkflow", "message": str(exc), "retryable": False},
            )
            return "failed"
        Event.append(
            "run.workflow_unavailable",
            run_id=run.pk,
            team_id=run.team_id,
            actor=actor,
            data={"workflow": run.workflow, "worker": actor},
        )
        _release(run, mine, ring=False)  # the orphan sweep rings again after its interval
    return "unavailable"


def _body(ctx: Context, wf: Any, data: Any) -> Any:
    """The workflow's code. However it stops (returns, fails, waits, pauses, yields) while
    this worker still holds the lease, the progress it reported last is written first."""
    try:
        result = wf.fn(ctx, data)
    except (LeaseLost, LedgerUnavailable, NonDeterminismError, *DATABASE_ERRORS):
        raise  # the lease is gone, or the database refuses: nothing more is written
    except BaseException:
        _flush_progress(ctx)
        raise
    _flush_progress(ctx)
    return result


def _flush_progress(ctx: Context) -> None:
    # Progress is a display: a failed write must not take the place of how the workflow
    # stopped (a wait, a pause, a worker's shutdown), which matters more.
    try:
        ctx.flush_progress()
    except (LeaseLost, LedgerUnavailable, *DATABASE_ERRORS):
        log.warning("run %s: last progress not written", ctx.run_id, exc_info=True)


def _execute(ctx: Context, run: Run, wf: Any, actor: str, mine: Q) -> str:
    try:
        try:
            data = wf.parse_input(run.input)
            result = _body(ctx, wf, data)
            result = redact(to_json("the workflow's result", result))
        except StopRequested:
            return _stop(ctx, run, actor, mine)
        except (NonDeterminismError, StopRun):
            raise
        except DATABASE_ERRORS:
            raise
        except Exception as exc:
            return _fail_workflow(ctx, run, exc, actor, mine)
    except Suspend as s:
        _suspend(run, s, actor, mine, compensating=ctx.compensating)
        return "compensating" if ctx.compensating else "waiting"
    except BudgetExceeded as b:
        _pause(
            run, b.reason, actor, mine, by="person" if isinstance(b, PauseRequested) else "budget"
        )
        return "paused"
    except YieldSlice:
        _release(run, mine)
        return "yielded"
    except LeaseLost:
        log.info("run %s: lease lost, abandoning this slice", run.pk)
        return "lease-lost"
    except NonDeterminismError as exc:
        _finish(run, RunStatus.FAILED, "run.failed", actor, mine, error=error_dict(exc))
        return "failed"
    except (LedgerUnavailable, *DATABASE_ERRORS) as exc:
        return _database_error(run, exc, actor, mine)
    except BaseException:
        # KeyboardInterrupt/SystemExit mid-run: hand the run back before going down.
        _release(run, mine)
        raise
    if not Run.transition(
        run.pk,
        to=RunStatus.SUCCEEDED,
        from_=[RunStatus.RUNNING],
        guard=mine,
        event="run.succeeded",
        actor=actor,
        result=result,
        result_is_partial=False,
        data={"steps": ctx.steps_seen},
    ):
        return "lease-lost"
    return "succeeded"


def _stop(ctx: Context, run: Run, actor: str, mine: Q) -> str:
    """Cancelled or past its deadline: compensate, then finish. A compensation waiting for a
    retry (or any other interruption) propagates to ``_execute`` and is handled there."""
    failures = ctx.run_compensations()
    why = Run.objects.filter(pk=run.pk).values_list("stop_requested", flat=True)[0]
    to = RunStatus.TIMED_OUT if why == "timeout" else RunStatus.CANCELLED
    error = (
        {"type": "DeadlineExceeded", "message": "the run's deadline passed"}
        if to == RunStatus.TIMED_OUT
        else None
    )
    _finish(
        run,
        to,
        f"run.{to}",
        actor,
        mine,
        error=error,
        data={"compensation_failures": failures} if failures else None,
    )
    return str(to)


def _fail_workflow(ctx: Context, run: Run, exc: Exception, actor: str, mine: Q) -> str:
    err = exc.error if isinstance(exc, StepFailed) else error_dict(exc)
    if isinstance(exc, StepFailed):
        err = {**err, "step": exc.step_name}
    failures = ctx.run_compensations()
    _finish(
        run,
        RunStatus.FAILED,
        "run.failed",
        actor,
        mine,
        error=err,
        data={"compensation_failures": failures} if failures else None,
    )
    return "failed"


def _database_error(run: Run, exc: BaseException, actor: str, mine: Q) -> str:
    """The ledger refused a write: usually no verdict on the run (connection lost, server
    restarting), so it is handed back without ringing and the orphan sweep retries it after
    its interval. A run the database keeps refusing (its data cannot be stored) fails after
    ``MAX_DATABASE_ERRORS`` slices in a row instead of looping for ever."""
    cause = exc.__cause__ if isinstance(exc, LedgerUnavailable) and exc.__cause__ else exc
    log.warning("run %s: database error, abandoning this slice: %s", run.pk, cause)
    try:
        with transaction.atomic():
            Event.append(
                "run.slice_failed",
                run_id=run.pk,
                team_id=run.team_id,
                actor=actor,
                data={"error": error_dict(cause)},
            )
            last_step = (
                Event.objects.filter(run_id=run.pk, kind="step.completed")
                .order_by("-id")
                .values_list("id", flat=True)
                .first()
            ) or 0
            failures = Event.objects.filter(
                run_id=run.pk, kind="run.slice_failed", id__gt=last_step
            ).count()
        if failures >= MAX_DATABASE_ERRORS:
            _finish(
                run,
                RunStatus.FAILED,
                "run.failed",
                actor,
                mine,
                error={
                    **error_dict(cause),
                    "message": f"the database refused this run's writes {failures} times in a row: "
                    f"{error_dict(cause)['message']}",
                },
            )
            return "failed"
        _release(run, mine, ring=False)
    except DATABASE_ERRORS:
        log.warning("run %s: could not release the lease; it will lapse", run.pk)
    return "database-error"


def _finish(
    run: Run,
    to: str,
    event: str,
    actor: str,
    mine: Q,
    *,
    error: Any = None,
    data: dict[str, Any] | None = None,
) -> None:
    fields: dict[str, Any] = {}
    if error is not None:
        fields["error"] = error
    Run.transition(
        run.pk,
        to=to,
        from_=[RunStatus.RUNNING],
        guard=mine,
        event=event,
        actor=actor,
        data={**({"error": error} if error else {}), **(data or {})},
        **fields,
    )


def _pause(run: Run, reason: str, actor: str, mine: Q, *, by: str) -> None:
    # A stop requested meanwhile wins over the pause: hand the run back to finish it.
    if not Run.transition(
        run.pk,
        to=RunStatus.PAUSED,
        from_=[RunStatus.RUNNING],
        guard=mine & Q(stop_requested=""),
        event="run.paused",
        actor=actor,
        data={"reason": reason, "by": by},
        pause_reason=reason,
        pause_requested=False,
        lease_owner="",
        lease_expires_at=None,
        step_deadline_at=None,
        idle_deadline_at=None,
    ):
        _release(run, mine)


def _release(run: Run, mine: Q, *, ring: bool = True) -> None:
    """Hand the run back (still runnable) and ring so another slice picks it up."""
    now = timezone.now()
    with transaction.atomic():
        # The idle deadline goes too: a run waiting in a backlogged queue is not stalled.
        released = (
            Run.objects.filter(pk=run.pk, status=RunStatus.RUNNING)
            .filter(mine)
            .update(
                lease_owner="",
                lease_expires_at=None,
                step_deadline_at=None,
                idle_deadline_at=None,
                rung_at=now,
                updated_at=now,
            )
        )
        if released and ring:
            doorbell.ring(run.pk)


def _suspend(run: Run, s: Suspend, actor: str, mine: Q, *, compensating: bool = False) -> None:
    now = timezone.now()
    with transaction.atomic():
        # Lock the row before looking for signals: ``Run.signal`` takes the same lock.
        list(Run.objects.select_for_update().filter(pk=run.pk).values_list("pk"))
        if (
            s.kind == WaitKind.EVENT
            and Signal.objects.filter(
                run_id=run.pk, name=s.waiting_for, consumed_seq__isnull=True
            ).exists()
        ) or (s.ready is not None and s.ready()):
            _release(run, mine)
            return
        moved = Run.transition(
            run.pk,
            to=RunStatus.WAITING,
            from_=[RunStatus.RUNNING],
            # While compensating, a stop is already under way: a compensation's retry may wait.
            guard=mine if compensating else mine & Q(stop_requested="", pause_requested=False),
            event="run.waiting",
            actor=actor,
            data={
                "kind": s.kind,
                "for": s.waiting_for or None,
                "wake_at": s.wake_at.isoformat() if s.wake_at else None,
            },
            wait_kind=s.kind,
            waiting_for=s.waiting_for,
            wake_at=s.wake_at,
            lease_owner="",
            lease_expires_at=None,
            step_deadline_at=None,
            idle_deadline_at=None,
        )
        if not moved:
            # Cancelled or paused while we were suspending: the next slice handles it.
            _release(run, mine)
            return
        if s.wake_at is not None:
            delay = (s.wake_at - now).total_seconds()
            if delay <= float(settings.AGENTOPS_SHORT_TIMER_SECONDS):
                doorbell.ring_wake(run.pk, countdown=max(delay, 0.0))
