"""The context a workflow receives: durable steps, timers, signals, progress and usage.

Replay invariant: the n-th durable call of a run (step, sleep, wait, compensation) is keyed by
(run, n). If its checkpoint exists, the call returns the stored output (or re-raises the
stored error) without doing anything; a different name at n is a non-determinism error.
Checkpoints are loaded once per drive, so replaying n steps costs O(n), not O(n²).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from runs import breaker
from runs.audit import normalise
from runs.budget import exhausted_reason
from runs.checkpoints import Checkpoint, CheckpointWriter
from runs.exceptions import (
    BudgetExceeded,
    LeaseLost,
    NonDeterminismError,
    StepFailed,
    StepOutputError,
    StepTimeout,
    StopRequested,
    Suspend,
    YieldSlice,
)
from runs.live import publish_run_changed
from runs.models import Run, Signal, Step, StepAttempt, WaitKind
from runs.redact import redact, redact_text
from runs.retry import is_retryable

if TYPE_CHECKING:
    from runs.workflow import RetryPolicy, WorkflowDef

#: Set when the worker is shutting down (SIGTERM): runs stop at the next step boundary.
SHUTDOWN = threading.Event()
_UNSET: Any = object()
Kind = Step.Kind


class PauseRequested(BudgetExceeded):
    """A person asked a held run to pause; it pauses at this step boundary."""


@dataclass
class _LiveStep:
    seq: int
    name: str
    attempt: int
    usd: Decimal = Decimal(0)
    tokens: int = 0


@dataclass
class Flags:
    """What the heartbeat saw last: read by the workflow through ``ctx.cancelled``."""

    stop: bool = False
    lease_lost: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def to_json(name: str, value: Any) -> Any:
    """The value as it is stored and replayed, or ``StepOutputError`` naming the step."""
    try:
        text = json.dumps(value, cls=DjangoJSONEncoder, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StepOutputError(
            f"step {name!r} returned {type(value).__name__}, which cannot be stored as JSON "
            f"({exc}); return plain data: dict, list, str, int, float, bool or None"
        ) from None
    if "\\u0000" in text:
        # PostgreSQL's jsonb refuses NUL characters: say so now, as a verdict on the step.
        raise StepOutputError(
            f"step {name!r} returned text containing a NUL character (\\x00), which cannot be "
            "stored; strip it from the output"
        )
    return normalise(json.loads(text))


class Context(CheckpointWriter):
    """Given to ``fn(ctx, data)``. Not thread-safe: call it from the workflow's thread, except
    ``usage`` and ``cancelled``, which a step function may use from its timeout thread."""

    def __init__(
        self,
        run: Run,
        wf: WorkflowDef,
        *,
        worker: str,
        actor: str,
        checkpoints: dict[int, Checkpoint],
        failed_attempts: dict[int, int],
        flags: Flags,
    ) -> None:
        self.run_id = run.pk
        self.run = run
        self.wf = wf
        self.worker = worker
        self.actor = actor
        self._checkpoints = checkpoints
        self._max_recorded = max(checkpoints, default=0)
        self._failed_attempts = failed_attempts
        self._flags = flags
        self._seq = 0
        self._current: _LiveStep | None = None
        self._usage_of_last: _LiveStep | None = None
        self._compensations: list[tuple[str, Callable[..., Any], Any]] = []
        self._compensating = False
        self._stopping = bool(run.stop_requested)
        self._slice_start = time.monotonic()
        self._live_steps = 0
        self._last_progress = 0.0
        self._progress_unwritten = False
        self._rate_from: tuple[float, datetime] | None = None
        self._progress: dict[str, Any] = dict(run.progress or {})
        self.lease_seconds = float(settings.AGENTOPS_LEASE_SECONDS)
        self.slice_seconds = float(settings.AGENTOPS_SLICE_SECONDS)

    # ------------------------------------------------------------------ small public API
    @property
    def input(self) -> Any:
        return self.run.input

    @property
    def replaying(self) -> bool:
        """True while the workflow is re-executing recorded checkpoints."""
        return self._seq < self._max_recorded

    @property
    def cancelled(self) -> bool:
        """True once cancellation (or the deadline) was requested; long steps may poll it."""
        return self._stopping or self._flags.stop

    @property
    def compensating(self) -> bool:
        return self._compensating

    @property
    def steps_seen(self) -> int:
        return self._seq

    @property
    def attempt(self) -> int:
        """The attempt number of the step running now (1-based)."""
        return self._current.attempt if self._current else 0

    def idempotency_key(self) -> str:
        """A stable key for the step running now (or, outside a step, the next one):
        run id + step number. Pass it to external side effects so a retried or recovered step
        is applied once."""
        seq = self._current.seq if self._current else self._seq + 1
        return f"{self.run_id}:{seq}"

    def usage(self, *, usd: float | Decimal | str = 0, tokens: int = 0) -> None:
        """Report what the step running now spent; charged in its checkpoint transaction."""
        current = self._current
        if current is None:
            raise RuntimeError("ctx.usage() reports a step's spend: call it inside the step")
        amount = Decimal(str(usd))
        if amount < 0 or tokens < 0:
            raise ValueError("usage cannot be negative")
        current.usd += amount
        current.tokens += int(tokens)

    def set_partial_result(self, value: Any) -> None:
        """Keep a partial result on the run (shown while it runs, kept if it stops early)."""
        if self.replaying:
            return
        value = redact(to_json("partial result", value))
        Run.objects.filter(pk=self.run_id, lease_owner=self.worker).update(
            result=value, result_is_partial=True, updated_at=timezone.now()
        )

    def progress(
        self,
        *,
        done: int | None = None,
        total: int | None = None,
        stage: str | None = None,
        message: str | None = None,
    ) -> None:
        """Report progress. Writes are throttled to one a second (plus stage changes and the
        last one); nothing is written while replaying."""
        if self.replaying:
            return
        new = dict(self._progress)
        for k, v in (("done", done), ("total", total), ("stage", stage), ("message", message)):
            if v is not None:
                new[k] = v
        stage_changed = new.get("stage") != self._progress.get("stage")
        finished = new.get("total") is not None and new.get("done") == new.get("total")
        self._progress = new
        if not (stage_changed or finished or time.monotonic() - self._last_progress >= 1.0):
            self._progress_unwritten = True  # written within a second, or when the run stops
            return
        self._write_progress(stage_changed=stage_changed)

    def flush_progress(self) -> None:
        """Write the progress that throttling held back, so a run that stops (to wait, to
        pause at its budget, to yield, to finish or fail) shows where it got to, not where it
        was up to a second before (a quick run showed "0 of 100" after 75 steps)."""
        if self._progress_unwritten and not self.replaying:
            self._write_progress(stage_changed=False)

    def _write_progress(self, *, stage_changed: bool) -> None:
        self._progress_unwritten = False
        self._last_progress = time.monotonic()
        new = self._progress
        now = timezone.now()
        self._count_active_progress(new, now)
        new["updated_at"] = now.isoformat()
        for key in ("stage", "message"):
            if isinstance(new.get(key), str):
                new[key] = redact_text(new[key])[:500]
        stored = to_json("progress", new)

        def body() -> None:
            n = Run.objects.filter(pk=self.run_id, lease_owner=self.worker).update(
                progress=stored, updated_at=now
            )
            if n and stage_changed:
                self._event(
                    "run.progress",
                    {k: stored.get(k) for k in ("done", "total", "stage", "message")},
                    now=now,
                )

        self._write(body)
        publish_run_changed(self.run_id, team_id=self.run.team_id)

    def _count_active_progress(self, progress: dict[str, Any], now: datetime) -> None:
        """Add to ``active_seconds`` and ``active_done`` the time and the progress since this
        slice's previous write: the rate the console's ETA reads. Only what happens within
        one slice counts, so the time a run spent waiting on a person or a timer, paused or
        queued between slices never slows the estimate (the rate since the start did)."""
        done = progress.get("done")
        if not isinstance(done, int | float) or isinstance(done, bool):
            return
        last, self._rate_from = self._rate_from, (done, now)
        if last is None or done < last[0]:
            return
        seconds = (now - last[1]).total_seconds()
        progress["active_seconds"] = round(float(progress.get("active_seconds") or 0) + seconds, 3)
        progress["active_done"] = (progress.get("active_done") or 0) + (done - last[0])

    # ------------------------------------------------------------------ steps
    def step(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        timeout: float | timedelta | None = _UNSET,
        retry: RetryPolicy | None = None,
        service: str | None = None,
        fallback: Callable[..., Any] | None = None,
        fallback_service: str | None = None,
        compensate: Callable[[Any], Any] | None = None,
        requires_approval: bool | dict[str, Any] = False,
        **kwargs: Any,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` once, durably, and return its (JSON) output.

        ``retry`` overrides the workflow's policy; ``timeout`` bounds one attempt; ``service``
        names the external service for its circuit breaker; ``fallback`` (same arguments) runs
        when the primary's retries are exhausted or its circuit is open; ``compensate(output)``
        undoes the step if the run is later cancelled or fails.

        A step that is destructive or visible outside (``requires_approval=True``, or a dict of
        ``ctx.approval`` options, or named in the workflow's ``requires_approval``) gets an
        approval gate before it; it runs only once approved, else ``ApprovalRejected``.
        """
        if requires_approval or name in self.wf.requires_approval:
            self._gate_step(name, args, kwargs, requires_approval)
        return self._step(
            name,
            fn,
            args,
            kwargs,
            kind=Kind.STEP,
            timeout=timeout,
            retry=retry,
            service=service,
            fallback=fallback,
            fallback_service=fallback_service,
            compensate=compensate,
        )

    def _step(
        self,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        kind: str,
        timeout: Any = _UNSET,
        retry: RetryPolicy | None = None,
        service: str | None = None,
        fallback: Callable[..., Any] | None = None,
        fallback_service: str | None = None,
        compensate: Callable[[Any], Any] | None = None,
    ) -> Any:
        seq = self._seq + 1
        cp = self._checkpoints.get(seq)
        # The number is used up before the stop check, so that compensations are numbered
        # the same way whether the stop is seen here or in _before_live_step.
        self._seq = seq
        self._stop_point(cp)
        if cp is not None:
            self._check_determinism(seq, cp, name, kind)
            if cp.status == Step.Status.COMPLETED:
                if compensate is not None:
                    self._compensations.append((name, compensate, cp.output))
                return cp.output
            raise StepFailed(name, cp.error or {})
        self._before_live_step(count_budget=kind == Kind.STEP)
        policy = retry or self.wf.retry
        if timeout is _UNSET:
            timeout = self.wf.step_timeout
        if isinstance(timeout, timedelta):
            timeout = timeout.total_seconds()
        attempt = self._failed_attempts.get(seq, 0) + 1
        call, used_service, via_fallback = fn, service, False
        if service:
            until = breaker.blocked_until(service)
            if until is not None:
                if fallback is None:
                    raise Suspend(WaitKind.CIRCUIT, wake_at=until, waiting_for=service)
                call, used_service, via_fallback = fallback, fallback_service, True
        started = timezone.now()
        try:
            output = self._call(seq, name, attempt, call, args, kwargs, timeout)
            output = redact(to_json(name, output))
        except StepOutputError as exc:
            self._fail(seq, name, kind, attempt, exc, started, service=used_service or "")
        except Exception as exc:
            retryable = is_retryable(exc)
            if used_service and retryable:
                breaker.record_failure(used_service, retrying=attempt < policy.max_attempts)
            elif used_service:
                breaker.record_success(used_service)  # it answered: a 4xx is about the call
            if retryable and attempt < policy.max_attempts:
                self._schedule_retry(seq, name, attempt, exc, started, policy, used_service)
            if retryable and fallback is not None and not via_fallback:
                self._record_attempt(
                    seq,
                    name,
                    attempt,
                    StepAttempt.Outcome.EXHAUSTED,
                    exc,
                    started,
                    service=used_service or "",
                )
                attempt += 1
                used_service, via_fallback = fallback_service, True
                started = timezone.now()
                try:
                    output = self._call(seq, name, attempt, fallback, args, kwargs, timeout)
                    output = redact(to_json(name, output))
                except Exception as exc2:
                    self._fail(seq, name, kind, attempt, exc2, started, service=used_service or "")
            else:
                self._fail(seq, name, kind, attempt, exc, started, service=used_service or "")
        if used_service:
            breaker.record_success(used_service)
        self._checkpoint(
            seq,
            name,
            kind=kind,
            status=Step.Status.COMPLETED,
            output=output,
            attempts=attempt,
            started=started,
            service=used_service or "",
            via_fallback=via_fallback,
        )
        if compensate is not None:
            self._compensations.append((name, compensate, output))
        return output

    def _call(
        self,
        seq: int,
        name: str,
        attempt: int,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        self._current = _LiveStep(seq, name, attempt)
        try:
            if not timeout:
                return fn(*args, **kwargs)
            # A step with a timeout runs in its own thread so the worker can give up on it.
            # Python cannot kill a thread: a step that ignores the timeout keeps running in
            # the background, but its late result is never recorded (the attempt is over).
            deadline = timezone.now() + timedelta(seconds=timeout)
            Run.objects.filter(pk=self.run_id, lease_owner=self.worker).update(
                step_deadline_at=deadline + timedelta(seconds=self.lease_seconds)
            )

            def target() -> Any:
                try:
                    return fn(*args, **kwargs)
                finally:
                    connections.close_all()

            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"step-{name[:20]}")
            future = pool.submit(target)
            try:
                return future.result(timeout=timeout)
            except FutureTimeout:
                raise StepTimeout(
                    f"step {name!r} did not finish within {timeout:g}s (attempt {attempt})"
                ) from None
            finally:
                pool.shutdown(wait=False)
        finally:
            self._usage_of_last = self._current
            self._current = None

    # ------------------------------------------------------------------ people
    def approval(self, name: str, **options: Any) -> Any:
        """Ask people to decide, durably: ``approvals.gate.request_approval`` documents the
        options (payload, editable, deadline, on_timeout, approvers, quorum, escalation)."""
        from approvals.gate import request_approval

        options.setdefault("allow_self_approval", self.wf.allow_self_approval)
        return request_approval(self, name, **options)

    def _gate_step(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: Any
    ) -> None:
        from approvals.exceptions import ApprovalRejected

        try:
            proposed = to_json(name, {"args": list(args), "kwargs": kwargs})
        except StepOutputError:
            proposed = {"args": [repr(a)[:500] for a in args]}
        opts = dict(options) if isinstance(options, dict) else {}
        opts.setdefault("payload", {"step": name, **proposed})
        result = self.approval(f"approve {name}", **opts)
        if not result.approved:
            raise ApprovalRejected(name, result.outcome, result.comment)

    # ------------------------------------------------------------------ timers and signals
    def sleep(self, name: str, duration: float | timedelta) -> None:
        """Sleep durably: the run waits holding no worker and no broker message."""
        seconds = duration.total_seconds() if isinstance(duration, timedelta) else duration
        seq, cp = self._wait_point(name, Kind.SLEEP)
        if cp is not None and cp.status == Step.Status.COMPLETED:
            return
        now = timezone.now()
        if cp is None:
            wake_at = now + timedelta(seconds=float(seconds))
            cp = self._checkpoint(
                seq,
                name,
                kind=Kind.SLEEP,
                status=Step.Status.PENDING,
                output={"wake_at": wake_at.isoformat()},
                started=now,
                charge=False,
            )
        wake_at = parse_datetime(cp.output["wake_at"])
        assert wake_at is not None
        if now >= wake_at:
            self._complete_pending(seq, name, Kind.SLEEP, cp.output)
            return
        raise Suspend(WaitKind.TIMER, wake_at=wake_at)

    def wait_for_event(self, name: str, *, timeout: float | timedelta | None = None) -> Any:
        """Wait durably for the signal ``name``; returns its payload, or None on timeout.

        A signal that arrived before the wait is kept and consumed here; each signal is
        consumed by exactly one wait.
        """
        seq, cp = self._wait_point(name, Kind.WAIT)
        if cp is not None and cp.status == Step.Status.COMPLETED:
            return (cp.output or {}).get("payload")
        now = timezone.now()
        if cp is None:
            seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
            deadline = now + timedelta(seconds=float(seconds)) if seconds else None
            cp = self._checkpoint(
                seq,
                name,
                kind=Kind.WAIT,
                status=Step.Status.PENDING,
                output={"deadline": deadline.isoformat() if deadline else None},
                started=now,
                charge=False,
            )
        deadline = parse_datetime(cp.output["deadline"]) if cp.output.get("deadline") else None
        with transaction.atomic():
            signal = (
                Signal.objects.select_for_update()
                .filter(run_id=self.run_id, name=name, consumed_seq__isnull=True)
                .order_by("id")
                .first()
            )
            if signal is not None:
                Signal.objects.filter(pk=signal.pk).update(consumed_seq=seq)
                output = {"payload": signal.payload, "signal_id": signal.pk, "timed_out": False}
                self._complete_pending(seq, name, Kind.WAIT, output)
                return signal.payload
        if deadline is not None and now >= deadline:
            self._complete_pending(seq, name, Kind.WAIT, {"payload": None, "timed_out": True})
            return None
        raise Suspend(WaitKind.EVENT, wake_at=deadline, waiting_for=name)

    def _wait_point(self, name: str, kind: str) -> tuple[int, Checkpoint | None]:
        seq = self._seq + 1
        cp = self._checkpoints.get(seq)
        self._seq = seq  # used up before the stop check, as in _step
        self._stop_point(cp)
        if cp is not None:
            self._check_determinism(seq, cp, name, kind)
        if cp is None or cp.status == Step.Status.PENDING:
            self._before_live_step(count_budget=False)
        return seq, cp

    # ------------------------------------------------------------------ checks
    def _stop_point(self, cp: Checkpoint | None) -> None:
        """While stopping, replay runs up to the first call that is not done, then unwinds."""
        if self._compensating or not self._stopping:
            return
        if cp is None or cp.kind == Kind.COMPENSATION or cp.status == Step.Status.PENDING:
            raise StopRequested()

    def _check_determinism(self, seq: int, cp: Checkpoint, name: str, kind: str) -> None:
        if cp.name != name or cp.kind != kind:
            raise NonDeterminismError(
                f"non-determinism at step {seq}: the run recorded {cp.kind} {cp.name!r} there, "
                f"but the workflow {self.wf.name!r} (version {self.wf.version}) now calls "
                f"{kind} {name!r}. The workflow code changed under a running run, or it "
                "branches on something that is not a step output (time, randomness, I/O)."
            )

    def _before_live_step(self, *, count_budget: bool) -> None:
        """Checked before every step: lease, shutdown, time slice, cancel, pause, budget."""
        if self._compensating:
            return
        if self._flags.lease_lost:
            raise LeaseLost()
        if self._live_steps and (
            SHUTDOWN.is_set() or time.monotonic() - self._slice_start > self.slice_seconds
        ):
            raise YieldSlice()
        if self._flags.stop:
            self._stopping = True
            raise StopRequested()
        row = self._take_flags()
        for key, value in row.items():
            setattr(self.run, key, value)
        if row["stop_requested"]:
            self._stopping = True
            raise StopRequested()
        if row["pause_requested"]:
            raise PauseRequested(row["pause_reason"] or "paused by a person")
        if count_budget:
            reason = exhausted_reason(self.run)
            if reason:
                raise BudgetExceeded(reason)
        self._live_steps += 1

    # ------------------------------------------------------------------ compensations
    def run_compensations(self) -> list[dict[str, Any]]:
        """Undo completed steps in reverse order; each undo is itself a durable step, so a
        crash half-way through does not undo anything twice."""
        self._compensating = True
        # Compensations are numbered after the last checkpoint of the workflow itself (a
        # pending wait included), so a replay after a crash meets them at the same numbers.
        base = max(
            (s for s, cp in self._checkpoints.items() if cp.kind != Kind.COMPENSATION),
            default=0,
        )
        self._seq = max(self._seq, base)
        failures = []
        for name, fn, output in reversed(self._compensations):
            try:
                self._step(f"compensate:{name}", fn, (output,), {}, kind=Kind.COMPENSATION)
            except StepFailed as exc:
                failures.append({"step": name, "error": exc.error})
        self._compensations.clear()
        return failures
