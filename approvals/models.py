"""Approval requests and the reviewers' decisions.

Invariants:
- a request is created once per (run, step number); replaying the workflow finds it again;
- a request leaves ``pending`` exactly once, by one guarded conditional UPDATE
  (``WHERE status = 'pending'``) taken under the run's row lock, so decide, cancel, expire and a
  second reviewer racing each other end in exactly one outcome;
- every decision is a row that is never changed or deleted (the history of who said what, by
  which channel); the request's outcome is derived from those rows when it is decided;
- who may decide is checked at the moment of the decision: team permission
  (``runs.decide_approval``), membership of the request's approvers, separation of duties.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from approvals.exceptions import ApprovalError, InvalidDecision, NotAllowed, NotPending
from runs.audit import Event
from runs.live import publish_run_changed
from runs.models import TERMINAL, Membership, Run, RunStatus, WaitKind
from runs.permissions import DECIDE, ROLE_PERMISSIONS
from runs.redact import redact

__all__ = ["MAX_EDIT_BYTES", "ApprovalEmail", "ApprovalRequest", "Decision", "parse_approvers"]

#: Edits a reviewer may make to a payload, in bytes of JSON.
MAX_EDIT_BYTES = 64 * 1024
MAX_COMMENT = 5000
ROLE_NAMES = {str(r) for r in Membership.Role}


def parse_approvers(spec: Any) -> list[str]:
    """Normalise ``approvers=`` to a list of ``role:<role>`` / ``group:<name>`` entries.

    ``None`` means every team member allowed to decide; a bare role name is a role."""
    if spec is None:
        return []
    items = [spec] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"approvers: {item!r} is not a role or a group")
        item = item.strip()
        kind, _, value = item.partition(":")
        if not value:
            kind, value = "role", item
        if kind == "role":
            if value not in ROLE_NAMES:
                raise ValueError(
                    f"approvers: unknown role {value!r} (one of {', '.join(sorted(ROLE_NAMES))})"
                )
            if DECIDE not in ROLE_PERMISSIONS[value]:
                raise ValueError(f"approvers: the role {value!r} may not decide approvals")
        elif kind != "group":
            raise ValueError(f"approvers: {item!r} should be 'role:<role>' or 'group:<name>'")
        out.append(f"{kind}:{value}")
    return out


class ApprovalRequest(models.Model):
    """A gate in a run: the run waits, holding no worker, until this leaves ``pending``."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        CHANGES_REQUESTED = "changes_requested", "Changes requested"
        EXPIRED = "expired", "Expired"
        CANCELLED = "cancelled", "Cancelled"

    class OnTimeout(models.TextChoices):
        REJECT = "reject", "Reject"
        APPROVE = "approve", "Approve"
        FAIL = "fail", "Fail the run"
        ESCALATE = "escalate", "Escalate, then reject"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="approvals")
    seq = models.PositiveIntegerField(help_text="The gate's step number in its run.")
    name = models.CharField(max_length=200)
    team = models.ForeignKey("runs.Team", on_delete=models.CASCADE, related_name="approvals")
    workflow = models.CharField(max_length=100)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who started the run (separation of duties).",
    )
    payload = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    editable = models.JSONField(default=list, blank=True)
    approvers = models.JSONField(default=list, blank=True)
    escalate_to = models.JSONField(default=list, blank=True)
    quorum = models.PositiveSmallIntegerField(default=1)
    allow_self_approval = models.BooleanField(default=False)
    on_timeout = models.CharField(
        max_length=16, choices=OnTimeout.choices, default=OnTimeout.REJECT
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    deadline_at = models.DateTimeField(null=True, blank=True)
    remind_at = models.DateTimeField(null=True, blank=True)
    reminded_at = models.DateTimeField(null=True, blank=True)
    escalate_at = models.DateTimeField(null=True, blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    outcome = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    emailed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["run", "seq"], name="approval_once_per_gate"),
            models.CheckConstraint(condition=Q(quorum__gte=1), name="approval_quorum_positive"),
        ]
        indexes = [
            # Each sweep reads only the pending rows that are due (see approvals/sweeps.py).
            models.Index(
                fields=["deadline_at"],
                name="approval_due_deadline",
                condition=Q(status="pending", deadline_at__isnull=False),
            ),
            models.Index(
                fields=["remind_at"],
                name="approval_due_reminder",
                condition=Q(status="pending", reminded_at__isnull=True, remind_at__isnull=False),
            ),
            models.Index(
                fields=["escalate_at"],
                name="approval_due_escalation",
                condition=Q(status="pending", escalated_at__isnull=True, escalate_at__isnull=False),
            ),
            models.Index(
                fields=["created_at"],
                name="approval_unsent_email",
                condition=Q(status="pending", emailed_at__isnull=True),
            ),
            models.Index(
                fields=["team", "created_at"],
                name="approval_pending_inbox",
                condition=Q(status="pending"),
            ),
            models.Index(fields=["team", "status", "created_at"], name="approval_history"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.status}) in run {self.run_id}"

    # ------------------------------------------------------------------ reading
    @property
    def is_pending(self) -> bool:
        return self.status == self.Status.PENDING

    def approvals_so_far(self) -> int:
        return (
            self.decisions.filter(verdict=Decision.Verdict.APPROVE, reviewer__isnull=False)
            .values("reviewer")
            .distinct()
            .count()
        )

    def all_approvers(self) -> list[str]:
        """The approvers now: the original ones, plus the escalation group once escalated."""
        return [*self.approvers, *(self.escalate_to if self.escalated_at else [])]

    def eligible_users(self) -> models.QuerySet[Any]:
        """Every active user who may decide this request right now."""
        from django.contrib.auth import get_user_model

        User = get_user_model()
        roles = [r for r, perms in ROLE_PERMISSIONS.items() if DECIDE in perms]
        members = User.objects.filter(
            is_active=True, membership__team_id=self.team_id, membership__role__in=roles
        )
        spec = self.all_approvers()
        if spec:
            match = Q(pk__in=[])
            for item in spec:
                kind, _, value = item.partition(":")
                if kind == "role":
                    match |= Q(membership__team_id=self.team_id, membership__role=value)
                else:
                    match |= Q(groups__name=value)
            members = members.filter(match)
        if not self.allow_self_approval and self.requested_by_id:
            members = members.exclude(pk=self.requested_by_id)
        return members.distinct()

    def refusal(self, user: Any, *, verdict: str = "approve") -> str:
        """Why ``user`` may not decide this request now ("" when they may), read now. The
        rules are ``approvals.inbox.Reviewer``'s, which a list reads once for all its rows."""
        from approvals.inbox import Reviewer

        return Reviewer.of(user).refusal(self, verdict=verdict)

    # ------------------------------------------------------------------ deciding
    def decide(
        self,
        user: Any,
        verdict: str,
        *,
        comment: str = "",
        edits: dict[str, Any] | None = None,
        channel: str = "web",
        dedup_key: str = "",
    ) -> Decision:
        """Record ``user``'s decision and, when it settles the request, its outcome.

        Raises ``NotAllowed`` (checked now, not when the run started), ``NotPending`` (someone
        or something decided first) or ``InvalidDecision``. A ``dedup_key`` seen before (the
        same email delivered twice) returns the first decision and changes nothing."""
        if verdict not in Decision.Verdict.values:
            raise InvalidDecision(
                f"unknown verdict {verdict!r}: use one of {', '.join(Decision.Verdict.values)}"
            )
        comment = (comment or "").strip()
        if len(comment) > MAX_COMMENT:
            raise InvalidDecision(f"the comment is longer than {MAX_COMMENT} characters")
        edits = self.validate_edits(edits)
        if edits and verdict != Decision.Verdict.APPROVE:
            raise InvalidDecision("edits go with an approval; reject or request changes instead")
        actor = f"{channel}:{user.get_username()}"
        refused: ApprovalError | None = None
        with transaction.atomic():
            # Lock order, everywhere: the run, then the request. The worker suspending on
            # this gate takes the run's lock too, so it either sees the outcome or is woken.
            run = Run.objects.select_for_update().get(pk=self.run_id)
            current = ApprovalRequest.objects.select_for_update().get(pk=self.pk)
            if dedup_key:
                seen = current.decisions.filter(dedup_key=dedup_key).first()
                if seen is not None:
                    return seen
            if current.status != self.Status.PENDING:
                refused = NotPending(self.pk, current.status)
            elif run.status in TERMINAL or run.stop_requested:
                # Recorded (this commits), then said below: the run stopped, so nobody decides.
                current._settle(run, self.Status.CANCELLED, actor="system", reason="run stopped")
                refused = NotPending(self.pk, self.Status.CANCELLED)
            elif why := current.refusal(user, verdict=verdict):
                refused = NotAllowed(why)
            else:
                decision = current._record(
                    run, user, verdict, comment, edits, channel, dedup_key, actor
                )
        if refused is not None:
            raise refused
        self.__dict__.update(current.__dict__)
        return decision

    def _record(
        self,
        run: Run,
        user: Any,
        verdict: str,
        comment: str,
        edits: dict[str, Any],
        channel: str,
        dedup_key: str,
        actor: str,
    ) -> Decision:
        """The decision row, its event and, when it settles the request, the outcome (the
        caller holds the run's and the request's row locks)."""
        decision = Decision.objects.create(
            request=self,
            reviewer=user,
            actor=actor,
            verdict=verdict,
            comment=comment,
            edits=edits,
            channel=channel,
            dedup_key=dedup_key,
        )
        Event.append(
            "approval.decision",
            run_id=run.pk,
            team_id=run.team_id,
            actor=actor,
            actor_user_id=user.pk,
            data={
                "request": self.pk,
                "name": self.name,
                "verdict": verdict,
                "channel": channel,
                "edited": sorted(edits),
            },
            locked=True,
        )
        if verdict == Decision.Verdict.REJECT:
            self._settle(run, self.Status.REJECTED, actor=actor)
        elif verdict == Decision.Verdict.REQUEST_CHANGES:
            self._settle(run, self.Status.CHANGES_REQUESTED, actor=actor)
        elif self.approvals_so_far() >= self.quorum:
            self._settle(run, self.Status.APPROVED, actor=actor)
        else:
            publish_run_changed(run.pk, team_id=run.team_id)
            # Still pending, but one more approval is in: open inboxes show the count,
            # and the reviewer who gave it may not approve again.
            from approvals.live import publish_inbox_changed

            publish_inbox_changed(self.team_id)
        return decision

    def validate_edits(self, edits: Any) -> dict[str, Any]:
        if not edits:
            return {}
        if not isinstance(edits, dict):
            raise InvalidDecision("edits must be an object of field → new value")
        extra = sorted(set(edits) - set(self.editable))
        if extra:
            allowed = ", ".join(self.editable) or "none"
            raise InvalidDecision(f"not editable: {', '.join(extra)} (editable: {allowed})")
        try:
            text = json.dumps(edits, cls=DjangoJSONEncoder, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidDecision(f"edits must be JSON values ({exc})") from None
        if len(text.encode()) > MAX_EDIT_BYTES:
            raise InvalidDecision(f"edits are larger than {MAX_EDIT_BYTES // 1024} KB")
        return redact(json.loads(text))

    def _settle(
        self, run: Run, status: str, *, actor: str, reason: str = "", timed_out: bool = False
    ) -> bool:
        """Leave ``pending`` for ``status`` (guarded), record it, and wake the run. The caller
        holds the run's row lock inside a transaction."""
        now = timezone.now()
        outcome = self._outcome(status, timed_out=timed_out, reason=reason)
        moved = ApprovalRequest.objects.filter(pk=self.pk, status=self.Status.PENDING).update(
            status=status, decided_at=now, outcome=outcome
        )
        if not moved:
            return False
        self.status, self.decided_at, self.outcome = status, now, outcome
        kind = {
            self.Status.EXPIRED: "approval.expired",
            self.Status.CANCELLED: "approval.cancelled",
        }.get(status, "approval.decided")
        Event.append(
            kind,
            run_id=run.pk,
            team_id=run.team_id,
            actor=actor,
            data={
                "request": self.pk,
                "name": self.name,
                "outcome": status,
                **({"reason": reason} if reason else {}),
            },
            locked=True,
        )
        if (
            status != self.Status.CANCELLED
            and run.status == RunStatus.WAITING
            and run.wait_kind == WaitKind.APPROVAL
            and run.waiting_for == self.name
        ):
            run.wake(actor=actor, reason=f"approval {self.name} {status}")
        else:
            publish_run_changed(run.pk, team_id=run.team_id)
        from approvals.live import publish_inbox_changed

        publish_inbox_changed(self.team_id)
        return True

    def _outcome(self, status: str, *, timed_out: bool, reason: str) -> dict[str, Any]:
        """What replay returns to the workflow: fixed when the request is decided."""
        decisions = list(self.decisions.select_related("reviewer").order_by("created_at", "pk"))
        payload = dict(self.payload) if isinstance(self.payload, dict) else self.payload
        edits: dict[str, Any] = {}
        for d in decisions:
            if d.verdict == Decision.Verdict.APPROVE and d.edits:
                edits.update(d.edits)
        if edits and isinstance(payload, dict):
            payload.update(edits)
        last = next((d for d in reversed(decisions) if d.comment), None)
        return {
            "request": self.pk,
            "name": self.name,
            "outcome": status,
            "timed_out": timed_out,
            "on_timeout": self.on_timeout if timed_out else None,
            "reason": reason,
            "reviewers": [
                {
                    "user": d.reviewer.get_username() if d.reviewer else None,
                    "verdict": d.verdict,
                    "comment": d.comment,
                    "channel": d.channel,
                    "at": d.created_at.isoformat(),
                }
                for d in decisions
            ],
            "comment": last.comment if last else "",
            "payload": payload,
            "edits": edits,
        }

    # ------------------------------------------------------------------ time
    def apply_timeout(self, *, now: datetime | None = None) -> str:
        """At the deadline: apply ``on_timeout``. Returns what happened ("" if nothing)."""
        now = now or timezone.now()
        with transaction.atomic():
            run = Run.objects.select_for_update().get(pk=self.run_id)
            current = ApprovalRequest.objects.select_for_update().get(pk=self.pk)
            if current.status != self.Status.PENDING or not current.deadline_at:
                return ""
            if current.deadline_at > now:
                return ""
            if run.status in TERMINAL or run.stop_requested:
                current._settle(run, self.Status.CANCELLED, actor="system", reason="run stopped")
                return "cancelled"
            rule = current.on_timeout
            if rule == self.OnTimeout.ESCALATE and current.escalate_to and not current.escalated_at:
                span = current.deadline_at - current.created_at
                current._escalate(run, now=now, new_deadline=now + max(span, timedelta(minutes=1)))
                return "escalated"
            if rule == self.OnTimeout.APPROVE:
                current._settle(run, self.Status.APPROVED, actor="system:deadline", timed_out=True)
                return "approved"
            current._settle(
                run,
                self.Status.EXPIRED,
                actor="system:deadline",
                reason="no decision before the deadline",
                timed_out=True,
            )
            return "expired"

    def escalate(self, *, now: datetime | None = None, actor: str = "system:escalation") -> bool:
        """Hand the request to its second group (the first one may still decide)."""
        now = now or timezone.now()
        with transaction.atomic():
            run = Run.objects.select_for_update().get(pk=self.run_id)
            current = ApprovalRequest.objects.select_for_update().get(pk=self.pk)
            if current.status != self.Status.PENDING or current.escalated_at:
                return False
            if run.status in TERMINAL or run.stop_requested:
                current._settle(run, self.Status.CANCELLED, actor="system", reason="run stopped")
                return False
            if not current.escalate_to:
                return False
            current._escalate(run, now=now, actor=actor)
            return True

    def _escalate(
        self,
        run: Run,
        *,
        now: datetime,
        new_deadline: datetime | None = None,
        actor: str = "system:escalation",
    ) -> None:
        fields: dict[str, Any] = {"escalated_at": now}
        if new_deadline is not None:
            fields.update(
                deadline_at=new_deadline,
                on_timeout=self.OnTimeout.REJECT,
                reminded_at=None,
                remind_at=new_deadline - (new_deadline - now) / 4,
            )
        ApprovalRequest.objects.filter(pk=self.pk).update(**fields)
        for key, value in fields.items():
            setattr(self, key, value)
        Event.append(
            "approval.escalated",
            run_id=run.pk,
            team_id=run.team_id,
            actor=actor,
            data={
                "request": self.pk,
                "name": self.name,
                "to": self.escalate_to,
                "deadline": new_deadline.isoformat() if new_deadline else None,
            },
            locked=True,
        )
        transaction.on_commit(lambda: _notify(self.pk, "escalated"))

    def mark_reminded(self, *, now: datetime | None = None) -> bool:
        """Claim the reminder (once) and record it; the email goes out after commit."""
        now = now or timezone.now()
        with transaction.atomic():
            claimed = ApprovalRequest.objects.filter(
                pk=self.pk, status=self.Status.PENDING, reminded_at__isnull=True
            ).update(reminded_at=now)
            if not claimed:
                return False
            Event.append(
                "approval.reminder",
                run_id=self.run_id,
                team_id=self.team_id,
                actor="system:reminder",
                data={
                    "request": self.pk,
                    "name": self.name,
                    "deadline": self.deadline_at.isoformat() if self.deadline_at else None,
                },
            )
            transaction.on_commit(lambda: _notify(self.pk, "reminder"))
        return True

    @classmethod
    def cancel_for_run(cls, run: Run, *, actor: str) -> int:
        """The run is stopping: its pending requests are cancelled (inside the caller's
        transaction, which holds the run's row lock)."""
        n = 0
        for request in cls.objects.select_for_update().filter(
            run_id=run.pk, status=cls.Status.PENDING
        ):
            n += request._settle(run, cls.Status.CANCELLED, actor=actor, reason="run stopped")
        return n


def _notify(request_id: int, why: str) -> None:
    """Ring for the approval emails of ``request_id`` (the row records what was sent)."""
    from approvals.tasks import send_request_emails

    try:
        send_request_emails.delay(request_id, why)
    except Exception:
        pass  # the broker is only a doorbell: the sweep sends what is still unsent


class Decision(models.Model):
    """One reviewer's say on a request, by one channel. Never changed once written."""

    class Verdict(models.TextChoices):
        APPROVE = "approve", "Approve"
        REJECT = "reject", "Reject"
        REQUEST_CHANGES = "request_changes", "Request changes"

    class Channel(models.TextChoices):
        WEB = "web", "Web"
        EMAIL = "email", "Email"
        API = "api", "API"

    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="decisions")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor = models.CharField(max_length=200)
    verdict = models.CharField(max_length=20, choices=Verdict.choices)
    comment = models.TextField(blank=True)
    edits = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    channel = models.CharField(max_length=10, choices=Channel.choices)
    dedup_key = models.CharField(
        max_length=300, blank=True, help_text="The email's Message-ID: a redelivery decides once."
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["request", "dedup_key"],
                condition=~Q(dedup_key=""),
                name="decision_once_per_message",
            )
        ]

    def __str__(self) -> str:
        return f"{self.actor}: {self.verdict} on {self.request_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not self._state.adding:
            raise ValueError("a decision is history: it cannot be changed")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise ValueError("a decision is history: it cannot be deleted")


# The email record lives in its own module (this one is long enough); importing it here
# registers it with the app.
from approvals.outbox import ApprovalEmail  # noqa: E402
