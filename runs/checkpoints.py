"""Checkpoint writes of the workflow context: each is one transaction that first re-checks
the lease (and renews it), then stores the checkpoint, its event and its spend together.

A worker that lost its lease (``LeaseLost``) writes nothing more; that is what makes two
workers racing for one run execute each step's checkpoint once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from runs import hotpath
from runs.audit import canonical
from runs.budget import has_limits, new_warnings
from runs.exceptions import LeaseLost, LedgerUnavailable, StepFailed, StepTimeout, Suspend
from runs.live import publish_run_changed
from runs.models import Run, Step, StepAttempt, TeamDailySpend, WaitKind
from runs.redact import redact
from runs.retry import error_dict, is_retryable

if TYPE_CHECKING:
    from runs.context import _LiveStep
    from runs.workflow import RetryPolicy

Kind = Step.Kind
_ZERO = Decimal(0)
try:  # errors raised when a PostgreSQL pipeline syncs are psycopg's own, not Django's
    from psycopg import Error as _PsycopgError
    from psycopg import IntegrityError as _PsycopgIntegrityError

    _INTEGRITY_ERRORS: tuple[type[Exception], ...] = (IntegrityError, _PsycopgIntegrityError)
    _DATABASE_ERRORS: tuple[type[Exception], ...] = (DatabaseError, _PsycopgError)
except ImportError:  # pragma: no cover - psycopg is a dependency
    _INTEGRITY_ERRORS = (IntegrityError,)
    _DATABASE_ERRORS = (DatabaseError,)
_STEP_EVENTS = {
    Step.Status.COMPLETED: "step.completed",
    Step.Status.FAILED: "step.failed",
    Step.Status.PENDING: "step.waiting",
}


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
    #: Flags returned by a checkpoint's write are trusted for the next step's checks only
    #: while they are this fresh; older ones are read again.
    FLAGS_MAX_AGE = 0.25
    _head: tuple[int, str] | None = None
    _flags_row: dict[str, Any] | None = None
    _flags_at: float = 0.0
    _idle_written: datetime | None = None

    def _guard(
        self,
        now: datetime,
        *,
        actions: int = 0,
        usd: Decimal = _ZERO,
        tokens: int = 0,
        then: list[hotpath.Statement] | None = None,
    ) -> None:
        """The lease check every checkpoint write starts with; it charges the step's spend
        and returns the run's flags for the next step's checks. The heartbeat renews the
        lease itself, so a step's write leaves the lease column (and its index) alone.
        ``then`` are more statements of the same transaction, sent in the same round trip."""
        idle = self.run.idle_timeout_seconds
        idle_deadline = None
        if idle:
            # Moving the idle deadline rewrites an indexed column: do it only when it moved
            # by more than a twentieth of the timeout.
            candidate = now + timedelta(seconds=idle)
            written = self._idle_written
            if written is None or (candidate - written).total_seconds() > max(1.0, idle / 20):
                idle_deadline = self._idle_written = candidate
        statements = [
            hotpath.guard(
                self.run_id,
                self.worker,
                now=now,
                actions=actions,
                usd=usd,
                tokens=tokens,
                idle_deadline=idle_deadline,
            ),
            *(then or []),
        ]
        row = hotpath.run(statements)
        if row is None:
            raise LeaseLost()
        self._flags_row, self._flags_at = row, time.monotonic()

    def _take_flags(self) -> dict[str, Any]:
        """The run's flags for this step's checks: from the last write if fresh, else read."""
        row, self._flags_row = self._flags_row, None
        if row is not None and time.monotonic() - self._flags_at <= self.FLAGS_MAX_AGE:
            return row
        found = hotpath.read_flags(self.run_id)
        if found is None or found[0] != self.worker:
            raise LeaseLost()
        return found[1]

    def _event_statement(
        self, kind: str, data: dict[str, Any], *, now: datetime | None = None
    ) -> tuple[hotpath.Statement, tuple[int, str]]:
        """The INSERT appending to this run's audit chain from the cached chain head (a stale
        head fails the unique constraint; ``_write`` then retries), and the next head."""
        if self._head is None:
            self._head = hotpath.chain_head(str(self.run_id))
        return hotpath.event(
            run_id=self.run_id,
            team_id=self.run.team_id,
            chain=str(self.run_id),
            head=self._head,
            kind=kind,
            actor=self.actor,
            data=canonical(redact(data)),
            now=now or timezone.now(),
        )

    def _event(self, kind: str, data: dict[str, Any], *, now: datetime | None = None) -> None:
        """Append to this run's audit chain inside the caller's transaction."""
        (sql, params), head = self._event_statement(kind, data, now=now)
        with connection.cursor() as cur:
            cur.execute(sql, params)
        self._head = head

    def _write(self, body: Callable[[], Any]) -> Any:
        """Run ``body`` in one transaction; if another writer appended to this run's chain
        since our cached head (the INSERT hit the unique constraint), retry once fresh.

        Any other database error becomes ``LedgerUnavailable``, which the workflow's own
        ``except Exception`` cannot swallow: it must not carry on past an unrecorded step."""
        for attempt in (1, 2):
            head = self._head
            try:
                with transaction.atomic():
                    return body()
            except _INTEGRITY_ERRORS as exc:
                self._head = None
                if attempt == 2 or head is None:
                    raise LedgerUnavailable() from exc
            except _DATABASE_ERRORS as exc:
                self._head = None
                raise LedgerUnavailable() from exc
        raise AssertionError("unreachable")

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
        usd = live.usd if (charge and live and live.seq == seq) else _ZERO
        tokens = live.tokens if (charge and live and live.seq == seq) else 0
        actions = 1 if (charge and kind == Kind.STEP) else 0
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
        event = _STEP_EVENTS[status]

        def body() -> None:
            step = hotpath.step(
                self.run_id,
                seq=seq,
                name=name,
                kind=kind,
                status=status,
                output=output,
                error=error,
                attempts=attempts,
                service=service,
                via_fallback=via_fallback,
                usd=usd,
                tokens=tokens,
                started=started,
                finished=now if status != Step.Status.PENDING else None,
            )
            append, head = self._event_statement(event, data, now=now)
            self._guard(now, actions=actions, usd=usd, tokens=tokens, then=[step, append])
            self._head = head
            if usd or tokens:
                TeamDailySpend.charge(self.run.team_id, usd=usd, tokens=tokens, day=now.date())
            if charge and (usd or tokens or actions) and has_limits(self.run):
                self._warn_budgets(spent=self._flags_row)

        self._write(body)
        publish_run_changed(self.run_id, team_id=self.run.team_id)
        cp = Checkpoint(seq, name, kind, status, output, error)
        self._checkpoints[seq] = cp
        return cp

    def _warn_budgets(self, *, spent: dict[str, Any] | None) -> None:
        if spent:
            for key, value in spent.items():
                setattr(self.run, key, value)
        warnings = new_warnings(self.run)
        if not warnings:
            return
        self.run.budget_warned = [*self.run.budget_warned, *(k for k, _ in warnings)]
        Run.objects.filter(pk=self.run_id).update(budget_warned=self.run.budget_warned)
        if self._flags_row is not None:
            self._flags_row["budget_warned"] = self.run.budget_warned
        for kind, frac in warnings:
            self._event("budget.warning", {"budget": kind, "fraction": frac})

    def _complete_pending(self, seq: int, name: str, kind: str, output: Any) -> None:
        now = timezone.now()

        def body() -> None:
            self._guard(now)
            Step.objects.filter(run_id=self.run_id, seq=seq).update(
                status=Step.Status.COMPLETED, output=output, finished_at=now
            )
            self._event("step.completed", {"seq": seq, "name": name, "kind": kind}, now=now)

        self._write(body)
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
        # What the failed attempt reported spending is charged too (a 429 after the tokens
        # were billed still cost them); then it is gone, so nothing charges it twice.
        live, self._usage_of_last = self._usage_of_last, None
        usd = live.usd if live and live.seq == seq else _ZERO
        tokens = live.tokens if live and live.seq == seq else 0

        def body() -> None:
            self._guard(now, usd=usd, tokens=tokens)
            if usd or tokens:
                TeamDailySpend.charge(self.run.team_id, usd=usd, tokens=tokens, day=now.date())
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
            if usd or tokens:
                data["usage"] = {"usd": str(usd), "tokens": tokens}
            self._event("step.attempt_failed", data, now=now)

        self._write(body)
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
