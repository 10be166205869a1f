"""The approvals' beat sweep: deadlines, reminders, escalations and unsent request emails.

Each query reads only the pending rows that are due, through its own partial index
(``approval_due_*`` in approvals/models.py), so its cost grows with what is due, not with the
table. Each row is then acted on with its own guarded transaction: a request decided meanwhile
is left alone, and two sweeps at once act once.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from approvals.models import ApprovalRequest

BATCH = 200
#: Requests whose emails are still unsent this long after they were created get them from the
#: sweep (the doorbell that should have sent them was lost, or a send failed).
UNSENT_AFTER = timedelta(minutes=1)
#: The sweep sends these itself, so it takes fewer per pass than it takes rows elsewhere.
UNSENT_BATCH = 20
Status = ApprovalRequest.Status

QUERIES = {
    "deadlines": lambda now: ApprovalRequest.objects.filter(
        status=Status.PENDING, deadline_at__isnull=False, deadline_at__lte=now
    ).order_by("deadline_at"),
    "reminders": lambda now: ApprovalRequest.objects.filter(
        status=Status.PENDING, reminded_at__isnull=True, remind_at__isnull=False, remind_at__lte=now
    ).order_by("remind_at"),
    "escalations": lambda now: ApprovalRequest.objects.filter(
        status=Status.PENDING,
        escalated_at__isnull=True,
        escalate_at__isnull=False,
        escalate_at__lte=now,
    ).order_by("escalate_at"),
    "unsent": lambda now: ApprovalRequest.objects.filter(
        status=Status.PENDING, emailed_at__isnull=True, created_at__lte=now - UNSENT_AFTER
    ).order_by("created_at"),
}


def apply_deadlines(now: datetime | None = None) -> int:
    now = now or timezone.now()
    return sum(bool(r.apply_timeout(now=now)) for r in QUERIES["deadlines"](now)[:BATCH])


def send_reminders(now: datetime | None = None) -> int:
    now = now or timezone.now()
    return sum(r.mark_reminded(now=now) for r in QUERIES["reminders"](now)[:BATCH])


def escalate_due(now: datetime | None = None) -> int:
    now = now or timezone.now()
    return sum(r.escalate(now=now) for r in QUERIES["escalations"](now)[:BATCH])


def send_unsent(now: datetime | None = None) -> int:
    """Send the request emails nobody sent. The sweep sends them itself rather than ringing
    again: the doorbell is what failed. Each send is claimed on its row, so a doorbell that
    arrives after all sends nothing twice; returns how many emails went out."""
    from approvals.emails import send_request_emails

    now = now or timezone.now()
    ids = list(QUERIES["unsent"](now).values_list("pk", flat=True)[:UNSENT_BATCH])
    return sum(send_request_emails(pk, "requested") for pk in ids)


def sweep(now: datetime | None = None) -> dict[str, int]:
    """Everything that is due now: escalations first (they may move a deadline)."""
    now = now or timezone.now()
    return {
        "escalated": escalate_due(now),
        "timed_out": apply_deadlines(now),
        "reminded": send_reminders(now),
        "emailed": send_unsent(now),
    }
