"""Checkpoint writes of the workflow context: each is one transaction that first re-checks
the lease (and renews it), then stores the checkpoint, its event and its spend together.

A worker that lost its lease (``LeaseLost``) writes nothing more; that is what makes two
workers racing for one run execute each step's checkpoint once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from runs.audit import Event
from runs.budget import new_warnings
from runs.exceptions import LeaseLost, StepFailed, StepTimeout, Suspend
from runs.models import Run, RunStatus, Step, StepAttempt, TeamDailySpend, WaitKind
from runs.retry import error_dict, is_retryable

if TYPE_CHECKING:
    from runs.context import _LiveStep
    from runs.workflow import RetryPolicy

Kind = Step.Kind


@dataclass
class Checkpoint:
    seq: int
    name: str
    kind: str
    status: str
    output: Any = None
    error: Any = None


class CheckpointWriter:
    """Mixin of ``Context``: the writes. Needs ``run_id``, ``run``, ``worker``, ``actor``,
    ``lease_seconds``, ``_checkpoints``, ``_failed_attempts`` and ``_usage_of_last``."""

    run_id: Any
    run: Run
    worker: str
    actor: str
    lease_seconds: float
    _checkpoints: dict[int, Checkpoint]
    _failed_attempts: dict[int, int]
    _usage_of_last: _LiveStep | None

    # ------------------------------------------------------------------ writes
    def _guard(self, now: datetime, **extra: Any) -> None:
        """The lease check every checkpoint write starts with (and a lease renewal)."""
        idle = self.run.idle_timeout_seconds
        n = Run.objects.filter(
            pk=self.run_id, lease_owner=self.worker, status=RunStatus.RUNNING
        ).update(
            last_activity_at=now,
            idle_deadline_at=now + timedelta(seconds=idle) if idle else None,
            lease_expires_at=now + timedelta(seconds=self.lease_seconds),
            step_deadline_at=None,
            updated_at=now,
            **extra,
        )
        if not n:
            raise LeaseLost()

    def _checkpoint(
        self,
        seq: int,
        name: str,
        *,
        kind: str,
        status: str,
        started: datetime,
        output: Any = None,
        error: Any = None,
        attempts: int = 1,
        service: str = "",
        via_fallback: bool = False,
        charge: bool = True,
    ) -> Checkpoint:
        """Store the step's checkpoint, its event and its spend in one transaction."""
        now = timezone.now()
        live = self._usage_of_last
        usd = live.usd if (charge and live and live.seq == seq) else Decimal(0)
        tokens = live.tokens if (charge and live and live.seq == seq) else 0
        actions = 1 if (charge and kind == Kind.STEP) else 0
        with transaction.atomic():
            self._guard(
                now,
                spent_actions=F("spent_actions") + actions,
                spent_usd=F("spent_usd") + usd,
                spent_tokens=F("spent_tokens") + tokens,
            )
            Step.objects.create(
                run_id=self.run_id,
                seq=seq,
                name=name,
                kind=kind,
                status=status,
                output=output,
                error=error,
                attempts=attempts,
                service=service,
                via_fallback=via_fallback,
                usage_usd=usd,
                usage_tokens=tokens,
                started_at=started,
                finished_at=now if status != Step.Status.PENDING else None,
            )
            if usd or tokens:
                TeamDailySpend.charge(self.run.team_id, usd=usd, tokens=tokens, day=now.date())
            data: dict[str, Any] = {
                "seq": seq,
                "name": name,
                "kind": kind,
                "attempts": attempts,
                "duration_ms": round((now - started).total_seconds() * 1000, 2),
            }
            if usd or tokens:
                data["usage"] = {"usd": str(usd), "tokens": tokens}
            if service:
                data["service"] = service
            if via_fallback:
                data["via_fallback"] = True
            if error:
                data["error"] = error
            event = {
                Step.Status.COMPLETED: "step.completed",
                Step.Status.FAILED: "step.failed",
                Step.Status.PENDING: "step.waiting",
            }[status]
            Event.append(
                event,
                run_id=self.run_id,
                team_id=self.run.team_id,
                actor=self.actor,
                data=data,
                locked=True,
            )
            self.run.spent_actions += actions
            self.run.spent_usd += usd
            self.run.spent_tokens += tokens
            if charge and (usd or tokens or actions):
                self._warn_budgets()
        cp = Checkpoint(seq, name, kind, status, output, error)
        self._checkpoints[seq] = cp
        return cp

    def _warn_budgets(self) -> None:
        warnings = new_warnings(self.run)
        if not warnings:
            return
        self.run.budget_warned = [*self.run.budget_warned, *(k for k, _ in warnings)]
        Run.objects.filter(pk=self.run_id).update(budget_warned=self.run.budget_warned)
        for kind, frac in warnings:
            Event.append(
                "budget.warning",
                run_id=self.run_id,
                team_id=self.run.team_id,
                actor=self.actor,
                data={"budget": kind, "fraction": frac},
                locked=True,
            )

    def _complete_pending(self, seq: int, name: str, kind: str, output: Any) -> None:
        now = timezone.now()
        with transaction.atomic():
            self._guard(now)
            Step.objects.filter(run_id=self.run_id, seq=seq).update(
                status=Step.Status.COMPLETED, output=output, finished_at=now
            )
            Event.append(
                "step.completed",
                run_id=self.run_id,
                team_id=self.run.team_id,
                actor=self.actor,
                data={"seq": seq, "name": name, "kind": kind},
                locked=True,
            )
        self._checkpoints[seq] = Checkpoint(seq, name, kind, Step.Status.COMPLETED, output)

    def _record_attempt(
        self,
        seq: int,
        name: str,
        attempt: int,
        outcome: str,
        exc: BaseException,
        started: datetime,
        *,
        service: str = "",
        retry_at: datetime | None = None,
    ) -> dict[str, Any]:
        now = timezone.now()
        err = error_dict(exc)
        with transaction.atomic():
            self._guard(now)
            StepAttempt.objects.create(
                run_id=self.run_id,
                seq=seq,
                name=name,
                attempt=attempt,
                outcome=outcome,
                error=err,
                service=service,
                worker=self.worker,
                started_at=started,
                finished_at=now,
                retry_at=retry_at,
            )
            data = {"seq": seq, "name": name, "attempt": attempt, "outcome": outcome, "error": err}
            if retry_at:
                data["retry_at"] = retry_at.isoformat()
            if service:
                data["service"] = service
            Event.append(
                "step.attempt_failed",
                run_id=self.run_id,
                team_id=self.run.team_id,
                actor=self.actor,
                data=data,
                locked=True,
            )
        return err

    def _schedule_retry(
        self,
        seq: int,
        name: str,
        attempt: int,
        exc: BaseException,
        started: datetime,
        policy: RetryPolicy,
        service: str | None,
    ) -> None:
        retry_at = timezone.now() + timedelta(seconds=policy.delay(attempt))
        outcome = (
            StepAttempt.Outcome.TIMEOUT
            if isinstance(exc, StepTimeout)
            else StepAttempt.Outcome.RETRYABLE
        )
        self._record_attempt(
            seq, name, attempt, outcome, exc, started, service=service or "", retry_at=retry_at
        )
        self._failed_attempts[seq] = attempt
        raise Suspend(WaitKind.RETRY, wake_at=retry_at, waiting_for=name)

    def _fail(
        self,
        seq: int,
        name: str,
        kind: str,
        attempt: int,
        exc: BaseException,
        started: datetime,
        *,
        service: str = "",
    ) -> None:
        outcome = (
            StepAttempt.Outcome.EXHAUSTED if is_retryable(exc) else StepAttempt.Outcome.PERMANENT
        )
        err = self._record_attempt(seq, name, attempt, outcome, exc, started, service=service)
        self._checkpoint(
            seq,
            name,
            kind=kind,
            status=Step.Status.FAILED,
            error=err,
            attempts=attempt,
            started=started,
            service=service,
        )
        raise StepFailed(name, err)
