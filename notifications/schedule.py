"""From due notifications to messages: one message per person and channel at a time.

Rules, applied under the row lock of the person's ``Pace`` for that channel (so two sweeps
never batch the same rows twice):
- pause-all: due rows are suppressed (kept, visible in admin, never sent);
- quiet hours (email and webhook; the in-app list is silent anyway): rows wait until the end;
- the minimum interval: one message per channel per interval; rows due meanwhile wait and go
  out together as one digest when it has passed;
- digests every N minutes: rows are due on the digest boundary (set when they are made);
- presence (email): rows about a run the person is watching in an open page wait; if the
  person leaves and does not come back within the grace period, they go out.
Every row ends in exactly one message (or suppressed): the batch UPDATE is guarded on
``status = 'pending'``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from notifications.models import (
    Channel,
    Message,
    Notification,
    NotificationSettings,
    Pace,
    Presence,
)
from notifications.render import render

Status = Notification.Status
PAIRS_PER_SWEEP = 500
CHUNK = 2000
STALE_PRESENCE = timedelta(hours=2)


def presence_grace() -> timedelta:
    return timedelta(seconds=int(getattr(settings, "AGENTOPS_PRESENCE_GRACE_SECONDS", 180)))


def due_pairs(now: datetime, limit: int = PAIRS_PER_SWEEP) -> list[tuple[Any, Any, str]]:
    """(user, endpoint, channel) with rows due now, through the partial index on due rows."""
    return list(
        Notification.objects.filter(status=Status.PENDING, due_at__lte=now)
        .order_by()  # no ordering columns in the DISTINCT
        .values_list("user_id", "endpoint_id", "channel")
        .distinct()[:limit]
    )


def schedule(*, now: datetime | None = None) -> list[int]:
    """Batch every due row into messages; returns the ids of the messages made."""
    now = now or timezone.now()
    made: list[int] = []
    for user_id, endpoint_id, channel in due_pairs(now):
        if user_id is None:
            message = batch_endpoint(endpoint_id, now=now)
        else:
            message = batch_user(user_id, channel, now=now)
        if message is not None:
            made.append(message.pk)
    return made


def _pending(user_id: int | None, channel: str, endpoint_id: int | None = None) -> Any:
    qs = Notification.objects.filter(status=Status.PENDING, channel=channel)
    if user_id is None:
        return qs.filter(user__isnull=True, endpoint_id=endpoint_id)
    return qs.filter(user_id=user_id)


def _hold(qs: Any, until: datetime, reason: str) -> None:
    qs.filter(due_at__lt=until).update(due_at=until, reason=reason)


def batch_user(user_id: int, channel: str, *, now: datetime) -> Message | None:
    prefs = NotificationSettings.of(user_id)
    with transaction.atomic():
        pace, _ = Pace.objects.get_or_create(user_id=user_id, channel=channel)
        pace = Pace.objects.select_for_update().get(pk=pace.pk)
        pending = _pending(user_id, channel)
        if prefs.paused:
            pending.filter(due_at__lte=now).update(status=Status.SUPPRESSED, reason="paused")
            return None
        if channel != Channel.IN_APP:
            quiet = prefs.quiet_until(now)
            if quiet is not None:
                _hold(pending, quiet, "quiet hours")
                return None
        interval = timedelta(seconds=prefs.min_interval_seconds)
        if pace.last_message_at and now < pace.last_message_at + interval:
            _hold(pending, pace.last_message_at + interval, "minimum interval")
            return None
        due = pending.filter(due_at__lte=now)
        if channel == Channel.EMAIL:
            watched = _watched_runs(user_id, now)
            if watched:
                grace = presence_grace()
                # Re-checked when due again: still watching holds them again, gone for longer
                # than the grace period lets them go.
                _hold(due.filter(run_id__in=watched), now + grace, "watching the run")
                due = due.exclude(run_id__in=watched)
        items = list(due.select_related("run").order_by("created_at", "pk"))
        if not items:
            return None
        message = _message(items, user_id=user_id, endpoint_id=None, channel=channel, now=now)
        pace.last_message_at = now
        pace.save(update_fields=["last_message_at"])
    _ring(message)
    return message


def batch_endpoint(endpoint_id: int, *, now: datetime) -> Message | None:
    """A team's webhook gets its due rows as one delivery (machines are not paced)."""
    with transaction.atomic():
        items = list(
            _pending(None, Channel.WEBHOOK, endpoint_id)
            .filter(due_at__lte=now)
            .select_for_update(skip_locked=True)
            .select_related("run")
            .order_by("created_at", "pk")[:CHUNK]
        )
        if not items:
            return None
        message = _message(
            items, user_id=None, endpoint_id=endpoint_id, channel=Channel.WEBHOOK, now=now
        )
    _ring(message)
    return message


def _watched_runs(user_id: int, now: datetime) -> list[Any]:
    recent = now - presence_grace()
    # A count left above zero by a server that died with sockets open would hold emails for
    # ever: an open page counts for at most STALE_PRESENCE after it was last joined.
    return list(
        Presence.objects.filter(user_id=user_id)
        .filter(Q(connections__gt=0, updated_at__gt=now - STALE_PRESENCE) | Q(left_at__gt=recent))
        .values_list("run_id", flat=True)
    )


def _message(
    items: list[Notification],
    *,
    user_id: int | None,
    endpoint_id: int | None,
    channel: str,
    now: datetime,
) -> Message:
    content = render(items)
    runs = {n.run_id for n in items}
    message = Message.objects.create(
        user_id=user_id,
        endpoint_id=endpoint_id,
        channel=channel,
        subject=content["subject"],
        text=content["text"],
        html=content["html"],
        body=content["body"],
        count=len(items),
        run_id=next(iter(runs)) if len(runs) == 1 else None,
        next_attempt_at=now,
        created_at=now,
    )
    ids = [n.pk for n in items]
    for start in range(0, len(ids), CHUNK):
        updated = Notification.objects.filter(
            pk__in=ids[start : start + CHUNK], status=Status.PENDING
        ).update(status=Status.BATCHED, message=message, reason="")
        if updated != len(ids[start : start + CHUNK]):
            # Someone batched some of them first (we hold the pace lock, so this is a bug).
            raise RuntimeError("notification rows were batched twice")
    return message


def _ring(message: Message) -> None:
    from notifications.tasks import deliver

    def ring() -> None:
        try:
            deliver.delay(message.pk)
        except Exception:  # the broker is a doorbell: the delivery sweep sends what is due
            pass

    transaction.on_commit(ring)
