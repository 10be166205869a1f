"""Operations on runs: start, cancel, pause, resume, retry from a step, raise a budget, signal.

Each is a guarded transition recorded as an event with its actor. A mixin of ``Run`` (the
behaviour lives on the model) kept in its own module for size.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from runs import doorbell
from runs.budget import WARN_AT, wall_warning_at
from runs.exceptions import (
    BudgetInvalid,
    IdempotencyConflict,
    IllegalTransition,
    InvalidArgument,
    UnknownTeam,
)
from runs.live import publish_run_changed
from runs.redact import redact

if TYPE_CHECKING:
    from runs.models import Run, Team

IDEMPOTENCY_TTL = timedelta(hours=24)


def _request_hash(workflow: str, data: Any, extra: dict[str, Any]) -> str:
    body = json.dumps([workflow, data, extra], sort_keys=True, cls=DjangoJSONEncoder)
    return hashlib.sha256(body.encode()).hexdigest()


#: The largest limits the columns hold (USD: 12 digits, 4 after the point; counts: int32,
#: tokens: int64).
MAX_USD = Decimal("99999999.9999")
MAX_COUNT = 2**31 - 1
MAX_TOKENS = 2**63 - 1


def _decimal(name: str, value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise BudgetInvalid(f"{name}: {value!r} is not a number") from None
    if not d.is_finite() or d < 0:
        raise BudgetInvalid(f"{name}: must be a number of zero or more, got {value!r}")
    if d > MAX_USD:
        raise BudgetInvalid(f"{name}: at most {MAX_USD}, got {value!r}")
    return d.quantize(Decimal("0.0001"))


def _count(name: str, value: Any) -> int | None:
    n = _whole(name, value)
    limit = MAX_TOKENS if name.endswith("tokens") else MAX_COUNT
    if n is not None and n > limit:
        raise BudgetInvalid(f"{name}: at most {limit}, got {n}")
    return n


def _whole(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BudgetInvalid(f"{name}: {value!r} is not a whole number")
    try:
        n = int(value)
    except ValueError:
        raise BudgetInvalid(f"{name}: {value!r} is not a whole number") from None
    if n < 0:
        raise BudgetInvalid(f"{name}: must be zero or more, got {n}")
    return n


class RunOperations:
    # ------------------------------------------------------------------ start
    @classmethod
    def start(
        cls,
        workflow: str,
        input: Any = None,
        *,
        team: Team | str | None = None,
        actor: str,
        user: Any = None,
        idempotency_key: str | None = None,
        budget: dict[str, Any] | None = None,
        deadline: timedelta | None = None,
        parent: Run | None = None,
    ) -> tuple[Run, bool]:
        """Validate and create a queued run; returns ``(run, replayed)``.

        Everything is checked before anything is written, and the run, its idempotency key and
        its first event are one transaction, so a bad request leaves no half-made run.
        ``replayed`` is True when the idempotency key returned an existing run.
        """
        from runs.models import IdempotencyKey, Run, Team
        from runs.workflow import get_workflow

        wf = get_workflow(workflow)
        data = wf.validate_input(input)
        if team is None:
            team = "default"
        if isinstance(team, str):
            team_obj = Team.objects.filter(slug=team).first()
            if team_obj is None:
                raise UnknownTeam(f"unknown team {team!r}")
            team = team_obj
        limits = wf.budget.merged(budget or {})
        usd = _decimal("budget.usd", limits.get("usd"))
        tokens = _count("budget.tokens", limits.get("tokens"))
        actions = _count("budget.actions", limits.get("actions"))
        wall = _count("budget.wall_seconds", limits.get("wall_seconds"))
        unknown = set(budget or {}) - {"usd", "tokens", "actions", "wall_seconds"}
        if unknown:
            raise BudgetInvalid(
                f"unknown budget kind(s) {sorted(unknown)}; use usd, tokens, actions, wall_seconds"
            )
        deadline = deadline if deadline is not None else wf.deadline
        now = timezone.now()
        stored_input = redact(data)
        req_hash = _request_hash(
            workflow, stored_input, {"budget": budget or {}, "deadline": str(deadline)}
        )
        scope = f"team:{team.pk}"

        for _ in range(3):
            try:
                with transaction.atomic():
                    if idempotency_key:
                        existing = (
                            IdempotencyKey.objects.select_related("run")
                            .filter(scope=scope, key=idempotency_key)
                            .first()
                        )
                        if existing and existing.expires_at > now:
                            if existing.request_hash != req_hash:
                                raise IdempotencyConflict(idempotency_key)
                            return existing.run, True
                        if existing:
                            existing.delete()
                    run = Run.objects.create(
                        team=team,
                        created_by=user if getattr(user, "pk", None) else None,
                        parent=parent,
                        workflow=wf.name,
                        workflow_version=wf.version,
                        queue=wf.queue,
                        input=stored_input,
                        status="queued",
                        limit_usd=usd,
                        limit_tokens=tokens,
                        limit_actions=actions,
                        limit_wall_seconds=wall,
                        deadline_at=(now + deadline) if deadline else None,
                        idle_timeout_seconds=(
                            int(wf.idle_timeout.total_seconds()) if wf.idle_timeout else None
                        ),
                        idempotency_key=idempotency_key or "",
                        rung_at=now,
                        created_at=now,
                        updated_at=now,
                    )
                    if idempotency_key:
                        IdempotencyKey.objects.create(
                            scope=scope,
                            key=idempotency_key,
                            request_hash=req_hash,
                            run=run,
                            expires_at=now + IDEMPOTENCY_TTL,
                        )
                    from runs.audit import Event

                    Event.append(
                        "run.created",
                        run=run,
                        actor=actor,
                        actor_user_id=getattr(user, "pk", None),
                        data={
                            "workflow": wf.name,
                            "version": wf.version,
                            "idempotency_key": idempotency_key or None,
                            "parent": str(parent.pk) if parent else None,
                        },
                        locked=True,
                    )
                    doorbell.ring(run.pk, queue=run.queue)
                    publish_run_changed(run.pk, team_id=team.pk, status_changed=True)
                    return run, False
            except IntegrityError:
                # A concurrent request with the same key won the insert: read its run.
                if not idempotency_key:
                    raise
                continue
        raise IdempotencyConflict(idempotency_key or "")

    # ------------------------------------------------------------------ operator actions
    def cancel(self: Run, *, actor: str, user_id: int | None = None, reason: str = "") -> Run:
        """Request cancellation. The worker stops before its next step, runs the compensations
        in reverse order and finishes the run as cancelled."""
        return self._request_stop("cancel", actor=actor, user_id=user_id, reason=reason)

    def _request_stop(
        self: Run, why: str, *, actor: str, user_id: int | None = None, reason: str = ""
    ) -> Run:
        from runs.audit import Event
        from runs.models import TERMINAL, Run, RunStatus

        now = timezone.now()
        with transaction.atomic():
            updated = Run.objects.filter(
                pk=self.pk,
                status__in=[s for s in RunStatus if s not in TERMINAL],
                stop_requested="",
            ).update(stop_requested=why, updated_at=now)
            if not updated:
                current = Run.objects.get(pk=self.pk)
                if current.is_terminal:
                    raise IllegalTransition(
                        self.pk, current.status, "cancel" if why == "cancel" else "time out"
                    )
            else:
                Event.append(
                    "run.cancel_requested" if why == "cancel" else "run.deadline_passed",
                    run_id=self.pk,
                    team_id=self.team_id,
                    actor=actor,
                    actor_user_id=user_id,
                    data={"reason": reason} if reason else {},
                    locked=True,
                )
                _cancel_approvals(self, actor=actor)
            # A run nobody holds (queued, waiting, paused) is made runnable so that a worker
            # runs its compensations and finishes it; a held run notices before its next step.
            Run.transition(
                self.pk,
                to=RunStatus.RUNNING,
                from_=[RunStatus.WAITING, RunStatus.PAUSED],
                event="run.stopping",
                actor=actor,
                wait_kind="",
                waiting_for="",
                wake_at=None,
                lease_owner="",
                lease_expires_at=None,
                rung_at=now,
            )
            doorbell.ring(self.pk)
        return Run.objects.get(pk=self.pk)

    def pause(self: Run, *, actor: str, user_id: int | None = None, reason: str = "") -> Run:
        """Pause: a run nobody holds pauses now; a held run pauses at its next step boundary."""
        from runs.audit import Event
        from runs.models import Run, RunStatus

        reason = reason or f"paused by {actor}"
        with transaction.atomic():
            current = Run.objects.filter(pk=self.pk).values_list("stop_requested", flat=True)
            if current.first():
                raise IllegalTransition(self.pk, "being cancelled", "pause")
            moved = Run.transition(
                self.pk,
                to=RunStatus.PAUSED,
                from_=[RunStatus.QUEUED, RunStatus.WAITING, RunStatus.RUNNING],
                guard=(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=timezone.now()))
                & Q(stop_requested=""),
                event="run.paused",
                actor=actor,
                actor_user_id=user_id,
                data={"reason": reason, "by": "person"},
                pause_reason=reason,
                pause_requested=False,
                lease_owner="",
                lease_expires_at=None,
            )
            if not moved:
                held = Run.objects.filter(
                    pk=self.pk, status=RunStatus.RUNNING, stop_requested=""
                ).update(pause_requested=True, pause_reason=reason, updated_at=timezone.now())
                if not held:
                    current = Run.objects.get(pk=self.pk)
                    raise IllegalTransition(self.pk, current.status, "pause")
                Event.append(
                    "run.pause_requested",
                    run_id=self.pk,
                    team_id=self.team_id,
                    actor=actor,
                    actor_user_id=user_id,
                    data={"reason": reason},
                    locked=True,
                )
        return Run.objects.get(pk=self.pk)

    def resume(self: Run, *, actor: str, user_id: int | None = None) -> Run:
        """Resume a paused run. Refused while a budget is still exhausted (raise it first)."""
        from runs.budget import exhausted_reason
        from runs.models import Run, RunStatus

        current = Run.objects.get(pk=self.pk)
        if current.status == RunStatus.PAUSED:
            reason = exhausted_reason(current)
            if reason:
                raise IllegalTransition(
                    self.pk, "paused", "resume", hint=f"{reason}; raise the budget first"
                )
        now = timezone.now()
        with transaction.atomic():
            Run.transition(
                self.pk,
                to=RunStatus.RUNNING,
                from_=[RunStatus.PAUSED],
                event="run.resumed",
                action="resume",
                actor=actor,
                actor_user_id=user_id,
                pause_reason="",
                pause_requested=False,
                lease_owner="",
                lease_expires_at=None,
                rung_at=now,
                last_activity_at=now,
            )
            doorbell.ring(self.pk)
        return Run.objects.get(pk=self.pk)

    def raise_budget(
        self: Run,
        *,
        actor: str,
        user_id: int | None = None,
        usd: Any = None,
        tokens: Any = None,
        actions: Any = None,
        wall_seconds: Any = None,
    ) -> Run:
        """Set new, higher limits: a limit at or below the current one, or at or below what is
        already spent, is refused (and nothing changes)."""
        from runs.audit import Event
        from runs.models import TERMINAL, Run

        changes: dict[str, Any] = {}
        new = {
            "usd": _decimal("usd", usd),
            "tokens": _count("tokens", tokens),
            "actions": _count("actions", actions),
            "wall_seconds": _count("wall_seconds", wall_seconds),
        }
        if all(v is None for v in new.values()):
            raise BudgetInvalid("give at least one of usd, tokens, actions, wall_seconds")
        with transaction.atomic():
            current = Run.objects.select_for_update().get(pk=self.pk)
            if current.status in TERMINAL:
                raise IllegalTransition(self.pk, current.status, "raise the budget of")
            spent = {
                "usd": current.spent_usd,
                "tokens": current.spent_tokens,
                "actions": current.spent_actions,
                "wall_seconds": current.budget_usage()["wall_seconds"]["spent"],
            }
            for kind, value in new.items():
                if value is None:
                    continue
                if value <= spent[kind]:
                    raise BudgetInvalid(
                        f"{kind}: the new limit {value} must be above what is already spent "
                        f"({spent[kind]})"
                    )
                old = getattr(current, f"limit_{kind}")
                if old is not None and value <= old:
                    # Recorded as a raise, a lower limit would stop the run by surprise.
                    raise BudgetInvalid(
                        f"{kind}: the new limit {value} must be above the current limit "
                        f"({old}); a raise cannot lower it"
                    )
                changes[f"limit_{kind}"] = value
                changes.setdefault("_log", {})[kind] = {"from": old, "to": value}
            log = changes.pop("_log")
            # A kind raised to below 80 % may be warned of again; one still past it stays
            # warned (and on the console's "over 80 %" view).
            warned = [
                k
                for k in current.budget_warned
                if k not in log or float(spent[k]) >= WARN_AT * float(changes[f"limit_{k}"])
            ]
            if "wall_seconds" in log:
                changes["wall_warn_at"] = (
                    None
                    if "wall_seconds" in warned
                    else wall_warning_at(current.started_at, changes["limit_wall_seconds"])
                )
            Run.objects.filter(pk=self.pk).update(
                budget_warned=warned, updated_at=timezone.now(), **changes
            )
            Event.append(
                "run.budget_raised",
                run_id=self.pk,
                team_id=current.team_id,
                actor=actor,
                actor_user_id=user_id,
                data={"limits": log},
                locked=True,
            )
        return Run.objects.get(pk=self.pk)

    def retry_from(self: Run, seq: int, *, actor: str, user_id: int | None = None) -> Run:
        """Rewind to step ``seq``: its checkpoint and all later ones are dropped and the
        workflow runs again from there.

        A finished run never changes, so retrying a failed, cancelled or timed-out run makes a
        new run (``parent`` points back) that starts with the checkpoints before ``seq``.
        """
        from runs.audit import Event
        from runs.models import TERMINAL, Run, RunStatus, Signal, Step, StepAttempt

        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise InvalidArgument(f"step must be a step number of 1 or more, got {seq!r}")
        current = Run.objects.select_related("team").get(pk=self.pk)
        if current.status == RunStatus.SUCCEEDED:
            raise IllegalTransition(self.pk, current.status, "retry")
        if current.status in TERMINAL:
            # One transaction: the new run's doorbell rings only after its kept checkpoints
            # exist, so no worker can start it and re-run a step it was meant to keep.
            with transaction.atomic():
                new, _ = Run.start(
                    current.workflow,
                    current.input,
                    team=current.team,
                    actor=actor,
                    budget={
                        "usd": current.limit_usd,
                        "tokens": current.limit_tokens,
                        "actions": current.limit_actions,
                        "wall_seconds": current.limit_wall_seconds,
                    },
                    parent=current,
                )
                kept = list(current.steps.filter(seq__lt=seq, status=Step.Status.COMPLETED))
                Step.objects.bulk_create(
                    [
                        Step(
                            run=new,
                            seq=s.seq,
                            name=s.name,
                            kind=s.kind,
                            status=s.status,
                            output=s.output,
                            attempts=s.attempts,
                            service=s.service,
                            via_fallback=s.via_fallback,
                            started_at=s.started_at,
                            finished_at=s.finished_at,
                        )
                        for s in kept
                    ]
                )
                Event.append(
                    "run.retried",
                    run_id=current.pk,
                    team_id=current.team_id,
                    actor=actor,
                    actor_user_id=user_id,
                    data={"from_step": seq, "new_run": str(new.pk), "kept_steps": len(kept)},
                    chain=f"team:{current.team.slug}",
                )
            return new
        now = timezone.now()
        with transaction.atomic():
            moved = Run.transition(
                self.pk,
                to=RunStatus.RUNNING,
                from_=[RunStatus.PAUSED, RunStatus.WAITING, RunStatus.QUEUED],
                event="run.rewound",
                action="retry",
                actor=actor,
                actor_user_id=user_id,
                data={"from_step": seq},
                wait_kind="",
                waiting_for="",
                wake_at=None,
                pause_reason="",
                pause_requested=False,
                lease_owner="",
                lease_expires_at=None,
                rung_at=now,
            )
            if moved:
                Step.objects.filter(run_id=self.pk, seq__gte=seq).delete()
                StepAttempt.objects.filter(run_id=self.pk, seq__gte=seq).delete()
                # Signals consumed by the dropped waits are delivered again on replay.
                Signal.objects.filter(run_id=self.pk, consumed_seq__gte=seq).update(
                    consumed_seq=None
                )
                doorbell.ring(self.pk)
        return Run.objects.get(pk=self.pk)

    def signal(
        self: Run,
        name: str,
        payload: Any = None,
        *,
        actor: str,
        user_id: int | None = None,
        dedup_key: str = "",
    ) -> bool:
        """Deliver an external event to ``ctx.wait_for_event(name)``. Returns False when the
        same ``dedup_key`` was delivered before (a signal is delivered once)."""
        from runs.audit import Event
        from runs.models import TERMINAL, Run, RunStatus, Signal, WaitKind

        if not name or len(name) > 200:
            raise InvalidArgument("a signal needs a name of 1 to 200 characters")
        with transaction.atomic():
            # Lock the run row first: the worker suspending on this event takes the same lock,
            # so either it sees this signal or this sees it waiting. No lost wake-up.
            current = Run.objects.select_for_update().get(pk=self.pk)
            if current.status in TERMINAL:
                raise IllegalTransition(self.pk, current.status, f"signal {name!r} to")
            if dedup_key and Signal.objects.filter(run=current, dedup_key=dedup_key).exists():
                return False
            Signal.objects.create(
                run=current, name=name, payload=redact(payload), dedup_key=dedup_key, actor=actor
            )
            Event.append(
                "run.signal",
                run_id=self.pk,
                team_id=current.team_id,
                actor=actor,
                actor_user_id=user_id,
                data={"name": name},
                locked=True,
            )
            if (
                current.status == RunStatus.WAITING
                and current.wait_kind == WaitKind.EVENT
                and current.waiting_for == name
            ):
                current.wake(actor=actor, reason=f"signal {name}")
        return True

    def wake(self: Run, *, actor: str, reason: str = "timer", due_only: bool = False) -> bool:
        """Make a waiting run runnable again and ring for it."""
        from runs.models import Run, RunStatus

        now = timezone.now()
        with transaction.atomic():
            moved = Run.transition(
                self.pk,
                to=RunStatus.RUNNING,
                from_=[RunStatus.WAITING],
                guard=Q(wake_at__lte=now) if due_only else None,
                event="run.woken",
                actor=actor,
                data={"reason": reason},
                wait_kind="",
                waiting_for="",
                wake_at=None,
                lease_owner="",
                lease_expires_at=None,
                rung_at=now,
            )
            if moved:
                doorbell.ring(self.pk)
        return moved


def _cancel_approvals(run: Any, *, actor: str) -> None:
    """A stopping run's pending approval requests leave every inbox at once (the caller
    holds the run's row lock, the order the approvals app always takes: run, then request)."""
    from django.apps import apps

    if apps.is_installed("approvals"):
        from approvals.models import ApprovalRequest

        ApprovalRequest.cancel_for_run(run, actor=actor)
