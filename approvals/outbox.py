"""The record of every approval email: one row per (request, person, reason).

Invariants:
- a row is created before its email is sent and is unique on (request, user, why), so a retried
  task, a doorbell rung twice and the unsent sweep together send each email at most once per
  claim; a send is claimed by one conditional UPDATE (``claim``), so two senders never send the
  same row at the same time;
- a worker that dies between sending and recording leaves its claim to lapse: the email is
  then sent again with the same Message-ID, which lets mail clients drop the copy (email
  cannot be sent exactly once; this is at-least-once with a stable identity);
- a failed send keeps its error and is retried after ``RETRY_SECONDS``, at most
  ``MAX_ATTEMPTS`` times in all.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

__all__ = ["MAX_ATTEMPTS", "RETRY_SECONDS", "ApprovalEmail"]

#: Sends of one email before it is given up (its error stays on the row).
MAX_ATTEMPTS = 5
#: A claim older than this is a dead sender's or a failed attempt's: the row may be sent again.
RETRY_SECONDS = 60


class ApprovalEmail(models.Model):
    """One email about an approval request to one person, for one reason."""

    class Why(models.TextChoices):
        REQUESTED = "requested", "Requested"
        REMINDER = "reminder", "Reminder"
        ESCALATED = "escalated", "Escalated"

    request = models.ForeignKey(
        "approvals.ApprovalRequest", on_delete=models.CASCADE, related_name="emails"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    why = models.CharField(max_length=16, choices=Why.choices)
    to = models.CharField(max_length=254, help_text="The address it was sent to.")
    message_id = models.CharField(
        max_length=300, help_text="Kept across retries, so a resent copy is recognisable."
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    claimed_at = models.DateTimeField(
        null=True, blank=True, help_text="When the last attempt started."
    )
    sent_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["request", "user", "why"], name="approval_email_once_per_reason"
            )
        ]

    def __str__(self) -> str:
        state = "sent" if self.sent_at else ("failed" if self.error else "unsent")
        return f"{self.why} email for request {self.request_id} to {self.to} ({state})"

    @property
    def given_up(self) -> bool:
        return self.sent_at is None and self.attempts >= MAX_ATTEMPTS

    def claim(self, *, to: str, now: datetime | None = None) -> bool:
        """Take this row for one send attempt (one conditional UPDATE): False when it was sent,
        given up, or another sender's attempt is under way or failed less than
        ``RETRY_SECONDS`` ago."""
        now = now or timezone.now()
        stale = now - timedelta(seconds=RETRY_SECONDS)
        taken = (
            ApprovalEmail.objects.filter(
                pk=self.pk, sent_at__isnull=True, attempts__lt=MAX_ATTEMPTS
            )
            .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=stale))
            .update(claimed_at=now, attempts=F("attempts") + 1, to=to)
        )
        if taken:
            self.claimed_at, self.to = now, to
            self.attempts += 1
        return bool(taken)

    def record(self, *, error: str = "", now: datetime | None = None) -> None:
        """Record the attempt's result (the claim stays: it dates the next retry)."""
        fields: dict[str, object] = {"error": error[:2000]}
        if not error:
            fields["sent_at"] = now or timezone.now()
        ApprovalEmail.objects.filter(pk=self.pk).update(**fields)
        for key, value in fields.items():
            setattr(self, key, value)
