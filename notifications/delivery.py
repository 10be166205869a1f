"""Sending a message through its channel, with retries, fallbacks and a record of every try.

Invariants:
- a worker first claims the message with one conditional UPDATE (due, and not claimed by a
  live lease), so two workers never send it at the same time; the network call happens
  outside any transaction;
- every try is a ``DeliveryAttempt`` row;
- a temporary failure is retried with exponential backoff and jitter, up to
  ``AGENTOPS_NOTIFY_MAX_ATTEMPTS``; a permanent one (or the last try) fails the message and
  hands its content to the next channel (webhook → email → in-app), so nothing is lost;
- a webhook endpoint failing ``AGENTOPS_WEBHOOK_DISABLE_AFTER`` times in a row is disabled and
  its owner is told in the app and by email.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from notifications.exceptions import TransportError
from notifications.models import FALLBACK, Channel, DeliveryAttempt, Message, WebhookEndpoint
from notifications.transports import get
from runs.models import Membership
from runs.workflow import RetryPolicy

LEASE = timedelta(seconds=120)
#: A receiver's Retry-After is honoured up to this many seconds.
MAX_RETRY_AFTER = 3600.0
Status = Message.Status


def max_attempts() -> int:
    return int(getattr(settings, "AGENTOPS_NOTIFY_MAX_ATTEMPTS", 8))


def backoff(attempt: int) -> float:
    return RetryPolicy(max_attempts=max_attempts(), initial=15, maximum=3600).delay(attempt)


def _claim(message_id: int, now: datetime) -> bool:
    return bool(
        Message.objects.filter(
            pk=message_id, status__in=[Status.PENDING, Status.SENDING], next_attempt_at__lte=now
        )
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(status=Status.SENDING, lease_until=now + LEASE, attempts=F("attempts") + 1)
    )


def deliver(message_id: int, *, now: datetime | None = None) -> str:
    """Send message ``message_id`` if it is due and nobody else is; returns what happened."""
    now = now or timezone.now()
    if not _claim(message_id, now):
        return "skipped"
    message = Message.objects.select_related("user", "endpoint").get(pk=message_id)
    started = time.monotonic()
    try:
        sent = get(message.channel).send(message)
    except TransportError as exc:
        return _failed(message, exc, started)
    except Exception as exc:  # a bug in a transport must not lose the message: retry it
        return _failed(message, TransportError(f"{type(exc).__name__}: {exc}"), started)
    duration = (time.monotonic() - started) * 1000
    with transaction.atomic():
        DeliveryAttempt.objects.create(
            message=message, ok=True, status_code=sent.status_code, duration_ms=duration
        )
        Message.objects.filter(pk=message.pk).update(
            status=Status.SENT,
            sent_at=timezone.now(),
            lease_until=None,
            destination=sent.destination[:500],
            provider_id=sent.provider_id[:300],
            error="",
        )
        if message.channel == Channel.WEBHOOK:
            endpoint_id = _endpoint_id(message)
            if endpoint_id:
                WebhookEndpoint.objects.filter(pk=endpoint_id).update(consecutive_failures=0)
    return "sent"


def _endpoint_id(message: Message) -> int | None:
    if message.endpoint_id:
        return message.endpoint_id
    from notifications.models import NotificationSettings

    return NotificationSettings.of(message.user_id).webhook_id


def _failed(message: Message, exc: TransportError, started: float) -> str:
    duration = (time.monotonic() - started) * 1000
    attempts = Message.objects.filter(pk=message.pk).values_list("attempts", flat=True)[0]
    final = exc.permanent or attempts >= max_attempts()
    now = timezone.now()
    with transaction.atomic():
        DeliveryAttempt.objects.create(
            message=message,
            ok=False,
            permanent=exc.permanent,
            status_code=exc.status_code,
            error=str(exc)[:2000],
            duration_ms=duration,
        )
        fields: dict[str, Any] = {"lease_until": None, "error": str(exc)[:2000]}
        if final:
            fields["status"] = Status.FAILED
        else:
            wait = backoff(attempts)
            if exc.retry_after is not None:  # the receiver said when, within reason
                wait = max(wait, min(exc.retry_after, MAX_RETRY_AFTER))
            fields.update(status=Status.PENDING, next_attempt_at=now + timedelta(seconds=wait))
        Message.objects.filter(pk=message.pk).update(**fields)
        if message.channel == Channel.WEBHOOK:
            _count_webhook_failure(message, exc)
        if final:
            fall_back(message, reason=str(exc))
    return "failed" if final else "retrying"


def fall_back(message: Message, *, reason: str) -> Message | None:
    """Carry a message that failed for good by the person's next channel."""
    channel = FALLBACK.get(Channel(message.channel))
    if channel is None or message.user_id is None:
        return None
    copy = Message.objects.create(
        user_id=message.user_id,
        channel=channel,
        subject=message.subject,
        text=f"{message.text}\n\n(Sent here because {message.channel} delivery failed: {reason})",
        html=message.html,
        body=message.body,
        count=message.count,
        run_id=message.run_id,
        fallback_of=message,
        # Due when the failed one was, so the same sweep takes it.
        next_attempt_at=min(timezone.now(), message.next_attempt_at or timezone.now()),
    )
    _ring(copy.pk)
    return copy


def _count_webhook_failure(message: Message, exc: TransportError) -> None:
    endpoint_id = _endpoint_id(message)
    if not endpoint_id:
        return
    WebhookEndpoint.objects.filter(pk=endpoint_id).update(
        consecutive_failures=F("consecutive_failures") + 1
    )
    limit = int(getattr(settings, "AGENTOPS_WEBHOOK_DISABLE_AFTER", 10))
    reason = f"{limit} failed deliveries in a row; the last: {exc}"[:300]
    disabled = WebhookEndpoint.objects.filter(
        pk=endpoint_id, enabled=True, consecutive_failures__gte=limit
    ).update(enabled=False, disabled_reason=reason)
    if disabled:
        _tell_owners(WebhookEndpoint.objects.get(pk=endpoint_id), reason)


def _tell_owners(endpoint: WebhookEndpoint, reason: str) -> None:
    """The owner hears of a disabled endpoint through the other channels."""
    if endpoint.user_id:
        owners = [endpoint.user_id]
    else:
        owners = list(
            Membership.objects.filter(
                team_id=endpoint.team_id, role=Membership.Role.ADMIN, user__is_active=True
            ).values_list("user_id", flat=True)
        )
    subject = f"Webhook disabled: {endpoint.url}"[:300]
    text = (
        f"The webhook endpoint {endpoint.url} was disabled: {reason}\n\n"
        "Nothing more is sent to it until it is enabled again (in your notification "
        "preferences, or by an admin)."
    )
    for user_id in owners:
        for channel in (Channel.IN_APP, Channel.EMAIL):
            m = Message.objects.create(
                user_id=user_id,
                channel=channel,
                subject=subject,
                text=text,
                body={"type": "webhook.disabled", "url": endpoint.url, "reason": reason},
                next_attempt_at=timezone.now(),
            )
            _ring(m.pk)


def redeliver(message_id: int, *, actor: str) -> Message:
    """Send a message again now (an admin asked): same message, same webhook id."""
    now = timezone.now()
    Message.objects.filter(pk=message_id).update(
        status=Status.PENDING, next_attempt_at=now, lease_until=None, error=f"redelivery by {actor}"
    )
    message = Message.objects.get(pk=message_id)
    if message.channel == Channel.WEBHOOK:
        endpoint_id = _endpoint_id(message)
        if endpoint_id:
            WebhookEndpoint.objects.filter(pk=endpoint_id).update(consecutive_failures=0)
    _ring(message.pk)
    return message


def _ring(message_id: int) -> None:
    from notifications.tasks import deliver as deliver_task

    def ring() -> None:
        try:
            deliver_task.delay(message_id)
        except Exception:  # the broker is a doorbell: the sweep delivers what is due
            pass

    transaction.on_commit(ring)


def due_messages(now: datetime, limit: int = 500) -> list[int]:
    return list(
        Message.objects.filter(
            status__in=[Status.PENDING, Status.SENDING], next_attempt_at__lte=now
        )
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
