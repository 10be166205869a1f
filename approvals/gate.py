"""The gate a workflow calls: ``ctx.approval(name, payload=…)``.

Replay invariant: the gate is a durable call like a step, keyed by (run, step number). The
first time, it creates the request (once: unique per run and number) and a pending checkpoint,
then suspends; the run holds no worker. When the request is decided the run is woken; the
replay finds the request decided, completes the checkpoint with the outcome and returns it.
From then on the outcome is read from the checkpoint, so it can never change under the run,
and the step after the gate is an ordinary checkpointed step: it runs once even if the worker
dies right after the decision.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from approvals.exceptions import ApprovalExpired
from approvals.models import ApprovalRequest, parse_approvers
from runs.audit import Event
from runs.exceptions import Suspend
from runs.models import Step, WaitKind
from runs.redact import redact

if TYPE_CHECKING:
    from runs.context import Context

__all__ = ["ApprovalResult", "request_approval"]

MAX_PAYLOAD_BYTES = 256 * 1024
Status = ApprovalRequest.Status
OnTimeout = ApprovalRequest.OnTimeout


@dataclass(frozen=True)
class ApprovalResult:
    """What the gate returns: the outcome, who decided and how, and the (edited) payload."""

    outcome: str
    payload: Any = None
    edits: dict[str, Any] = field(default_factory=dict)
    comment: str = ""
    reviewers: list[dict[str, Any]] = field(default_factory=list)
    timed_out: bool = False
    request_id: int | None = None

    @property
    def approved(self) -> bool:
        return self.outcome == Status.APPROVED

    @property
    def rejected(self) -> bool:
        return self.outcome == Status.REJECTED

    @property
    def changes_requested(self) -> bool:
        return self.outcome == Status.CHANGES_REQUESTED

    @property
    def expired(self) -> bool:
        return self.outcome == Status.EXPIRED

    @classmethod
    def from_outcome(cls, data: dict[str, Any]) -> ApprovalResult:
        return cls(
            outcome=data["outcome"],
            payload=data.get("payload"),
            edits=dict(data.get("edits") or {}),
            comment=data.get("comment") or "",
            reviewers=list(data.get("reviewers") or []),
            timed_out=bool(data.get("timed_out")),
            request_id=data.get("request"),
        )


def _seconds(name: str, value: float | timedelta | None) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds <= 0:
        raise ValueError(f"{name} must be positive")
    return seconds


def _stored_payload(name: str, payload: Any) -> Any:
    try:
        text = json.dumps(payload, cls=DjangoJSONEncoder, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"approval {name!r}: the payload must be JSON ({exc})") from None
    if len(text.encode()) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"approval {name!r}: the payload is over {MAX_PAYLOAD_BYTES // 1024} KB")
    return redact(json.loads(text))


def request_approval(
    ctx: Context,
    name: str,
    *,
    payload: Any = None,
    editable: list[str] | tuple[str, ...] = (),
    deadline: float | timedelta | datetime | None = None,
    on_timeout: str = OnTimeout.REJECT,
    approvers: str | list[str] | None = None,
    quorum: int = 1,
    allow_self_approval: bool = False,
    escalate_to: str | list[str] | None = None,
    escalate_after: float | timedelta | None = None,
    remind_before: float | timedelta | None = None,
) -> ApprovalResult:
    if not name or len(name) > 200:
        raise ValueError("an approval needs a name of 1 to 200 characters")
    if on_timeout not in OnTimeout.values:
        raise ValueError(
            f"approval {name!r}: on_timeout must be one of {', '.join(OnTimeout.values)}"
        )
    if quorum < 1:
        raise ValueError(f"approval {name!r}: quorum must be at least 1")
    approver_spec = parse_approvers(approvers)
    escalation_spec = parse_approvers(escalate_to)
    if on_timeout == OnTimeout.ESCALATE and not escalation_spec:
        raise ValueError(f"approval {name!r}: on_timeout='escalate' needs escalate_to")
    if escalate_after is not None and not escalation_spec:
        raise ValueError(f"approval {name!r}: escalate_after needs escalate_to")

    seq, cp = ctx._wait_point(name, Step.Kind.APPROVAL)
    if cp is not None and cp.status == Step.Status.COMPLETED:
        return _result(cp.output or {})
    if cp is None:
        now = timezone.now()
        if isinstance(deadline, datetime):
            deadline_at: datetime | None = deadline
        else:
            span = _seconds("deadline", deadline)
            deadline_at = now + timedelta(seconds=span) if span else None
        remind_at = None
        if deadline_at is not None:
            before = _seconds("remind_before", remind_before)
            lead = timedelta(seconds=before) if before else (deadline_at - now) / 4
            remind_at = deadline_at - lead
        after = _seconds("escalate_after", escalate_after)
        request = _create(
            ctx,
            seq,
            name,
            payload=_stored_payload(name, payload),
            editable=[str(e) for e in editable],
            approvers=approver_spec,
            escalate_to=escalation_spec,
            quorum=quorum,
            allow_self_approval=allow_self_approval,
            on_timeout=on_timeout,
            deadline_at=deadline_at,
            remind_at=remind_at,
            escalate_at=now + timedelta(seconds=after) if after else None,
        )
        cp = ctx._checkpoint(
            seq,
            name,
            kind=Step.Kind.APPROVAL,
            status=Step.Status.PENDING,
            output={"request": request.pk},
            started=now,
            charge=False,
        )
    request_id = (cp.output or {}).get("request")
    request = ApprovalRequest.objects.get(pk=request_id)
    if request.status not in (Status.PENDING, Status.CANCELLED):
        outcome = request.outcome or {"outcome": request.status, "request": request.pk}
        ctx._complete_pending(seq, name, Step.Kind.APPROVAL, outcome)
        return _result(outcome)

    def decided() -> bool:
        # Checked by the engine under the run's row lock, just before the run starts waiting:
        # a decision that landed since the read above wakes the run instead of being lost.
        return (
            ApprovalRequest.objects.filter(pk=request_id)
            .exclude(status__in=[Status.PENDING, Status.CANCELLED])
            .exists()
        )

    raise Suspend(WaitKind.APPROVAL, wake_at=None, waiting_for=name, ready=decided)


def _create(ctx: Context, seq: int, name: str, **fields: Any) -> ApprovalRequest:
    """The request, once per (run, seq), with its event, in one transaction."""
    with transaction.atomic():
        request, created = ApprovalRequest.objects.get_or_create(
            run_id=ctx.run_id,
            seq=seq,
            defaults={
                "name": name,
                "team_id": ctx.run.team_id,
                "workflow": ctx.run.workflow,
                "requested_by_id": ctx.run.created_by_id,
                **fields,
            },
        )
        if created:
            Event.append(
                "approval.requested",
                run_id=ctx.run_id,
                team_id=ctx.run.team_id,
                actor=ctx.actor,
                data={
                    "request": request.pk,
                    "name": name,
                    "seq": seq,
                    "quorum": request.quorum,
                    "approvers": request.approvers,
                    "deadline": request.deadline_at.isoformat() if request.deadline_at else None,
                },
            )
            from approvals.live import publish_inbox_changed
            from approvals.models import _notify

            publish_inbox_changed(request.team_id)
            transaction.on_commit(lambda: _notify(request.pk, "requested"))
    # The chain head cached by the context is stale now: the next write reads it afresh.
    ctx._head = None
    return request


def _result(outcome: dict[str, Any]) -> ApprovalResult:
    result = ApprovalResult.from_outcome(outcome)
    if result.expired and outcome.get("on_timeout") == OnTimeout.FAIL:
        raise ApprovalExpired(
            f"approval {outcome.get('name')!r} had no decision before its deadline "
            "(on_timeout='fail')"
        )
    return result
