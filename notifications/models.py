"""Notifications: what each person wants to hear, the outbox, and every delivery attempt.

Flow (all in workers, never in a web request): the event log is read by ``fanout`` into
``Notification`` rows (one per person, channel and milestone: a unique ``dedup_key`` makes an
event seen twice, or a retried step, give one row); ``schedule`` batches a person's due rows
into one ``Message`` per channel, respecting the minimum interval, digests, quiet hours,
pause-all and presence; ``delivery`` sends a message through its channel's transport and
records each ``DeliveryAttempt``. Every row is kept and shown in admin.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.utils import timezone

__all__ = [
    "Address",
    "Channel",
    "DeliveryAttempt",
    "EventType",
    "FanoutCursor",
    "Message",
    "Notification",
    "NotificationSettings",
    "Pace",
    "Preference",
    "Presence",
    "Scope",
    "TeamDefault",
    "WebhookEndpoint",
]


class EventType(models.TextChoices):
    RUN_SUCCEEDED = "run.succeeded", "Run succeeded"
    RUN_FAILED = "run.failed", "Run failed"
    RUN_TIMED_OUT = "run.timed_out", "Run timed out"
    RUN_CANCELLED = "run.cancelled", "Run cancelled"
    RUN_PAUSED = "run.paused", "Run paused"
    BUDGET_WARNING = "budget.warning", "Budget at 80 %"
    RUN_STALLED = "run.stalled", "Run stalled"
    APPROVAL_REQUESTED = "approval.requested", "Approval requested"
    APPROVAL_EXPIRING = "approval.expiring", "Approval expiring"
    APPROVAL_DECIDED = "approval.decided", "Approval decided"


class Channel(models.TextChoices):
    EMAIL = "email", "Email"
    WEBHOOK = "webhook", "Webhook"
    IN_APP = "in_app", "In-app"


class Scope(models.TextChoices):
    MINE = "mine", "My runs"
    TEAMS = "teams", "My teams' runs"
    WORKFLOWS = "workflows", "Chosen workflows"


#: Approval requests go to whoever may decide them; the scope does not apply to them.
APPROVER_TYPES = frozenset({EventType.APPROVAL_REQUESTED, EventType.APPROVAL_EXPIRING})
#: When a channel fails for good, the message goes on by the next one.
FALLBACK = {Channel.WEBHOOK: Channel.EMAIL, Channel.EMAIL: Channel.IN_APP}


class PreferenceFields(models.Model):
    """What one person (or a team's default) wants for one event type on one channel."""

    event_type = models.CharField(max_length=32, choices=EventType.choices)
    channel = models.CharField(max_length=10, choices=Channel.choices)
    enabled = models.BooleanField(default=True)
    scope = models.CharField(max_length=10, choices=Scope.choices, default=Scope.MINE)
    workflows = models.JSONField(
        default=list, blank=True, help_text="With the 'chosen workflows' scope: their names."
    )
    digest_minutes = models.PositiveIntegerField(
        default=0, help_text="0: as it happens (after the minimum interval); N: a digest every N."
    )

    class Meta:
        abstract = True


class Preference(PreferenceFields):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_prefs"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "event_type", "channel"], name="preference_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user}: {self.event_type} by {self.channel}"


class TeamDefault(PreferenceFields):
    """A team's default for its members who have not chosen themselves (set in admin)."""

    team = models.ForeignKey("runs.Team", on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["team", "event_type", "channel"], name="team_default_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.team}: {self.event_type} by {self.channel}"


class NotificationSettings(models.Model):
    """A person's settings across event types: pause-all, pace, quiet hours, time zone."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_settings"
    )
    paused = models.BooleanField(default=False, help_text="Pause all notifications.")
    min_interval_seconds = models.PositiveIntegerField(
        default=60, help_text="At most one message per channel this often; the rest are batched."
    )
    quiet_start = models.TimeField(null=True, blank=True)
    quiet_end = models.TimeField(null=True, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    webhook = models.ForeignKey(
        "WebhookEndpoint", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self) -> str:
        return f"settings of {self.user}"

    @classmethod
    def of(cls, user_id: int) -> NotificationSettings:
        found = cls.objects.filter(user_id=user_id).first()
        return found or cls(user_id=user_id)

    def zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.timezone or "UTC")
        except (ZoneInfoNotFoundError, ValueError):
            return ZoneInfo("UTC")

    def quiet_until(self, now: datetime) -> datetime | None:
        """The end of the quiet hours ``now`` falls in (None when it is not quiet)."""
        if self.quiet_start is None or self.quiet_end is None or self.quiet_start == self.quiet_end:
            return None
        local = now.astimezone(self.zone())
        t = local.time()
        start, end = self.quiet_start, self.quiet_end
        inside = (start <= t < end) if start < end else (t >= start or t < end)
        if not inside:
            return None
        day = local.date() if (start < end or t < end) else local.date() + timedelta(days=1)
        until = datetime.combine(day, end, tzinfo=local.tzinfo)
        return until.astimezone(UTC)


class Notification(models.Model):
    """One milestone for one person (or one team webhook) on one channel; batched into a
    ``Message``."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        BATCHED = "batched", "In a message"
        SUPPRESSED = "suppressed", "Suppressed"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="notifications",
    )
    endpoint = models.ForeignKey(
        "WebhookEndpoint",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="A team's webhook (then there is no user).",
    )
    channel = models.CharField(max_length=10, choices=Channel.choices)
    event_type = models.CharField(max_length=32, choices=EventType.choices)
    dedup_key = models.CharField(max_length=300, unique=True)
    event_id = models.BigIntegerField(null=True, blank=True, help_text="The event it came from.")
    run = models.ForeignKey(
        "runs.Run", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    team = models.ForeignKey(
        "runs.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    data = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    reason = models.CharField(max_length=200, blank=True)
    due_at = models.DateTimeField(default=timezone.now)
    digest_minutes = models.PositiveIntegerField(default=0)
    message = models.ForeignKey(
        "Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="items"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "pk"]
        indexes = [
            models.Index(fields=["due_at"], name="notification_due", condition=Q(status="pending")),
            models.Index(fields=["user", "channel", "status"], name="notification_user"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} for {self.user} by {self.channel}"


class Message(models.Model):
    """What is actually sent: one notification, or a digest of several, on one channel."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="notification_messages",
    )
    endpoint = models.ForeignKey(
        "WebhookEndpoint", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    channel = models.CharField(max_length=10, choices=Channel.choices)
    subject = models.CharField(max_length=300)
    text = models.TextField()
    html = models.TextField(blank=True)
    body = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    count = models.PositiveIntegerField(default=1, help_text="Notifications it carries.")
    run = models.ForeignKey(
        "runs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    destination = models.CharField(max_length=500, blank=True)
    provider_id = models.CharField(max_length=300, blank=True)
    error = models.TextField(blank=True)
    fallback_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="fallbacks"
    )
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="message_due",
                condition=Q(status__in=["pending", "sending"]),
            ),
            models.Index(
                fields=["user", "created_at"],
                name="message_unread",
                condition=Q(channel="in_app", read_at__isnull=True),
            ),
            models.Index(fields=["user", "channel", "created_at"], name="message_user"),
        ]

    def __str__(self) -> str:
        return f"{self.channel} to {self.user}: {self.subject}"


class DeliveryAttempt(models.Model):
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="deliveries")
    at = models.DateTimeField(default=timezone.now)
    ok = models.BooleanField(default=False)
    permanent = models.BooleanField(default=False)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.FloatField(default=0)

    class Meta:
        ordering = ["-at", "-pk"]

    def __str__(self) -> str:
        return f"attempt on {self.message_id}: {'ok' if self.ok else self.error[:60]}"


def new_secret() -> str:
    from runs.webhooks import new_secret as signing_secret

    return signing_secret()


class WebhookEndpoint(models.Model):
    """A URL a user or a team registered; disabled after too many failures in a row."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="webhook_endpoints",
    )
    team = models.ForeignKey(
        "runs.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    url = models.URLField(max_length=2000)
    secret = models.CharField(
        max_length=100, default=new_secret, help_text="Signs each delivery (Standard Webhooks)."
    )
    description = models.CharField(max_length=200, blank=True)
    enabled = models.BooleanField(default=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    disabled_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(user__isnull=False) | Q(team__isnull=False),
                name="webhook_has_owner",
            )
        ]

    def __str__(self) -> str:
        return self.url


class Address(models.Model):
    """What the ESP told us about an email address (bounced, complained, rejected)."""

    email = models.EmailField(unique=True)
    undeliverable = models.BooleanField(default=False)
    reason = models.CharField(max_length=40, blank=True)
    detail = models.TextField(blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "addresses"

    def __str__(self) -> str:
        return f"{self.email}{' (undeliverable)' if self.undeliverable else ''}"

    @classmethod
    def is_undeliverable(cls, email: str) -> bool:
        return cls.objects.filter(email__iexact=email, undeliverable=True).exists()


class Presence(models.Model):
    """Who watches which run in an open console page (kept by the run page's WebSocket)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="+")
    connections = models.IntegerField(default=0)
    left_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "run"], name="presence_once")]

    def __str__(self) -> str:
        return f"{self.user} on {self.run_id} ({self.connections})"


class Pace(models.Model):
    """When a person last got a message on a channel: the minimum interval counts from here.
    Its row lock also serialises the batching of that person's notifications."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    last_message_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "channel"], name="pace_once")]

    def __str__(self) -> str:
        return f"{self.user} by {self.channel}: {self.last_message_at}"


class FanoutCursor(models.Model):
    """How far the event log has been read into notifications (one row)."""

    name = models.CharField(max_length=40, unique=True, default="events")
    last_event_id = models.BigIntegerField(default=0)
    recent_ids = models.JSONField(
        default=list, blank=True, help_text="Ids read past the cursor (not settled yet)."
    )
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name} at {self.last_event_id}"
