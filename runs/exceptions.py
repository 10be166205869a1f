"""Errors of the run engine and its operations.

``StopRun`` and its subclasses derive from ``BaseException`` on purpose: a workflow's generic
``except Exception`` must not be able to swallow a cancellation, a suspension or a lost lease
(as DBOS does with its cancellation exception).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any


class AgentopsError(Exception):
    """Base of the errors an operation reports to a person: ``str(exc)`` is the message."""


class UnknownWorkflow(AgentopsError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        super().__init__(
            f"unknown workflow {name!r}; registered workflows: {', '.join(known) or 'none'}"
        )


class InputInvalid(AgentopsError):
    """The input does not match the workflow's schema. ``errors`` lists them per field."""

    def __init__(self, workflow: str, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        parts = [
            f"{'.'.join(str(p) for p in e.get('loc', ())) or 'input'}: {e['msg']}" for e in errors
        ]
        super().__init__(f"input for workflow {workflow!r} is invalid: " + "; ".join(parts))


class IdempotencyConflict(AgentopsError):
    def __init__(self, key: str) -> None:
        super().__init__(
            f"idempotency key {key!r} was already used within 24 hours with a different "
            "workflow or input; use a new key for a different request"
        )


class IllegalTransition(AgentopsError):
    """A guarded transition found the run in a state it may not leave that way."""

    def __init__(self, run_id: Any, current: str, action: str, *, hint: str = "") -> None:
        self.current = current
        msg = f"cannot {action} run {run_id}: it is {current}"
        super().__init__(msg + (f"; {hint}" if hint else ""))


class TerminalRunError(AgentopsError):
    """Something tried to change a run that has finished. Finished runs never change."""


class AuditImmutable(AgentopsError):
    """Events are the audit trail: they can be neither updated nor deleted."""


class InvalidArgument(AgentopsError):
    """An operation's argument is out of range (a step number, a signal name, a budget)."""


class BudgetInvalid(InvalidArgument):
    pass


class UnknownTeam(AgentopsError):
    pass


# --- errors a step raises, classified by the retry policy --------------------------------
class StepError(Exception):
    """Base for errors a step raises on purpose."""


class RetryableError(StepError):
    """A transient failure (timeout, 429, 5xx): the step is tried again after a backoff."""


class PermanentError(StepError):
    """A failure that another attempt cannot fix (4xx, validation): no retry."""


class StepTimeout(RetryableError):
    pass


class StepOutputError(PermanentError):
    """The step returned something that cannot be stored as JSON."""


class StepFailed(Exception):
    """Raised into the workflow when a step has failed for good (its error is recorded)."""

    def __init__(self, name: str, error: dict[str, Any]) -> None:
        self.step_name = name
        self.error = error
        super().__init__(f"step {name!r} failed: {error.get('type')}: {error.get('message')}")


# --- control flow of the engine: BaseException so workflows cannot swallow them -----------
class StopRun(BaseException):
    """Unwinds the workflow function back to the engine."""


class Suspend(StopRun):
    """The run waits (timer, event, retry backoff, open circuit, person) holding no worker."""

    def __init__(
        self,
        kind: str,
        *,
        wake_at: datetime | None,
        waiting_for: str = "",
        ready: Callable[[], bool] | None = None,
    ) -> None:
        self.kind = kind
        self.wake_at = wake_at
        self.waiting_for = waiting_for
        #: Asked under the run's row lock just before it starts waiting: True means what it
        #: waits for arrived meanwhile, so it stays runnable (no lost wake-up).
        self.ready = ready
        super().__init__(kind)


class StopRequested(StopRun):
    """Cancellation (or a deadline) was requested: run compensations, then finish."""


class BudgetExceeded(StopRun):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class YieldSlice(StopRun):
    """The time slice is used up, or the worker is shutting down: release and re-queue."""


class LeaseLost(StopRun):
    """Another worker (or a sweep) took the run: abandon this attempt without writing."""


class NonDeterminismError(StopRun):
    """Replay met a different step than the one recorded at this sequence number. A
    ``StopRun`` so that a workflow's ``except Exception`` cannot carry on past it."""


class LedgerUnavailable(StopRun):
    """A checkpoint write failed in the database (the cause is chained): no verdict on the
    step, and the workflow must not be able to swallow it and carry on unrecorded."""
