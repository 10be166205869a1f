"""Who is watching which run in an open console page, kept by the run page's WebSocket.

Invariants:
- ``connections`` counts the person's open sockets on the run: each join adds one and each
  leave takes one away, by one atomic ``UPDATE … SET connections = connections ± 1`` (two
  tabs opening or closing at the same moment both count, whatever the workers interleave);
- it never goes below zero (a leave without its join, e.g. after the row was reset, is a
  no-op), and ``left_at`` is set by the same UPDATE that takes the last connection away, so
  "gone since when" is never missing for a row at zero;
- the row is made on the first join; a concurrent first join by another socket of the same
  person loses the insert race and counts itself on the winner's row.

The batching of emails (``notifications.schedule``) holds back what is about a run its person
is watching, or stopped watching less than the grace period ago.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from notifications.models import Presence

__all__ = ["joined", "left", "watching"]


def joined(user_id: int, run_id: Any) -> None:
    """One more open page of ``user_id`` on run ``run_id``."""
    now = timezone.now()
    if _add_one(user_id, run_id, now):
        return
    try:
        # A savepoint: on PostgreSQL a failed INSERT would otherwise spoil an outer transaction.
        with transaction.atomic():
            Presence.objects.create(
                user_id=user_id, run_id=run_id, connections=1, left_at=None, updated_at=now
            )
    except IntegrityError:
        # Another socket of the same person made the row first: count this one on it.
        _add_one(user_id, run_id, now)


def _add_one(user_id: int, run_id: Any, now: datetime) -> bool:
    return bool(
        Presence.objects.filter(user_id=user_id, run_id=run_id).update(
            connections=F("connections") + 1, left_at=None, updated_at=now
        )
    )


def left(user_id: int, run_id: Any) -> None:
    """One open page fewer; the last one to close stamps ``left_at``."""
    now = timezone.now()
    Presence.objects.filter(user_id=user_id, run_id=run_id, connections__gt=0).update(
        # Both sides of SET read the row as it was, so "was 1" means "drops to 0 now".
        left_at=Case(When(connections__lte=1, then=Value(now)), default=F("left_at")),
        connections=F("connections") - 1,
        updated_at=now,
    )


def watching(user_id: int, run_id: Any, *, grace: timedelta, now: datetime | None = None) -> bool:
    """Whether ``user_id`` has the run open now, or closed it less than ``grace`` ago."""
    now = now or timezone.now()
    return (
        Presence.objects.filter(user_id=user_id, run_id=run_id)
        .filter(Q(connections__gt=0) | Q(left_at__gt=now - grace))
        .exists()
    )
