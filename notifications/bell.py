"""The bell of the top bar and the in-app list behind it: a person's in-app messages.

Shared by the views, the template tag of the top bar and the bell's WebSocket consumer, so a
pushed bell is the same HTML as the page's. Invariants:
- a person only ever reads and marks their own messages (every query starts from
  ``in_app_of(user)``);
- the count never reads more than ``BELL_CAP + 1`` rows (through the partial index on unread
  in-app messages), and the list is read in keyset pages of ``PAGE_SIZE``: nothing here counts
  or scans a person's whole history.
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Q, QuerySet
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from notifications.live import publish_bell
from notifications.models import Channel, Message

__all__ = [
    "BELL_CAP",
    "PAGE_SIZE",
    "Page",
    "in_app_of",
    "mark_all_read",
    "mark_read",
    "page_of",
    "render_bell",
    "run_links",
    "unread_count",
]

#: The bell stops counting here ("99+").
BELL_CAP = 99
PAGE_SIZE = 30
#: A digest links at most this many of its runs in the list (the message text has them all).
MAX_RUN_LINKS = 5
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def in_app_of(user: Any) -> QuerySet[Message]:
    """The in-app messages of ``user`` (none for an anonymous visitor)."""
    if not getattr(user, "is_authenticated", False):
        return Message.objects.none()
    return Message.objects.filter(user_id=user.pk, channel=Channel.IN_APP)


def unread_count(user: Any) -> int:
    """Unread in-app messages of ``user``, counted up to ``BELL_CAP + 1``."""
    if not getattr(user, "is_authenticated", False):
        return 0
    # Every page shows it: reads up to the cap's rows (bounded whatever the table holds, on
    # the partial index of unread messages) by SQL written once, rather than have the ORM
    # write it each time (which took three times the query's own time).
    with connection.cursor() as cursor:
        cursor.execute(_unread_sql(connection.vendor), [user.pk, Channel.IN_APP, BELL_CAP + 1])
        return len(cursor.fetchall())


@functools.cache
def _unread_sql(vendor: str) -> str:
    """``in_app_of(user).filter(read_at__isnull=True)[:cap]``, written once per database
    vendor (as ``runs.hotpath`` writes the step's statements)."""
    q = connection.ops.quote_name
    meta = Message._meta
    user, channel, read_at = (meta.get_field(f).column for f in ("user", "channel", "read_at"))
    return (
        f"SELECT 1 FROM {q(meta.db_table)} WHERE {q(user)} = %s AND {q(channel)} = %s "
        f"AND {q(read_at)} IS NULL LIMIT %s"
    )


def render_bell(user: Any, *, oob: bool = True) -> str:
    """The ``#notifications-bell`` partial for ``user`` (out of band: swapped by its id)."""
    return render_to_string(
        "notifications/_bell.html#notifications-bell", bell_context(user, oob=oob)
    )


def bell_context(user: Any, *, oob: bool = False) -> dict[str, Any]:
    return {"unread": unread_count(user), "bell_cap": BELL_CAP, "oob": oob}


def mark_read(user: Any, message_id: int) -> bool:
    """Mark one of ``user``'s unread in-app messages read; False when it was not unread (or
    not theirs: the caller answers 404 for those before asking)."""
    done = (
        in_app_of(user).filter(pk=message_id, read_at__isnull=True).update(read_at=timezone.now())
    )
    if done:
        publish_bell(user.pk)  # the person's other tabs
    return bool(done)


def mark_approval_read(user: Any, request_id: int) -> int:
    """Opening an approval request in the inbox reads its in-app notifications (so it does
    not escalate to email as unread); a digest is read only if it carries nothing else."""
    from notifications.models import EventType, Notification

    carrying = Notification.objects.filter(
        user=user,
        channel="in_app",
        event_type=EventType.APPROVAL_REQUESTED,
        data__request=request_id,
        message__isnull=False,
    ).values("message_id")
    done = (
        in_app_of(user)
        .filter(pk__in=carrying, read_at__isnull=True, count=1)
        .update(read_at=timezone.now())
    )
    if done:
        publish_bell(user.pk)
    return done


def mark_all_read(user: Any) -> int:
    """Mark every unread in-app message of ``user`` read; returns how many."""
    done = in_app_of(user).filter(read_at__isnull=True).update(read_at=timezone.now())
    if done:
        publish_bell(user.pk)
    return done


# --- keyset pages on (created_at, id), newest first ------------------------------------------
def encode_cursor(message: Message) -> str:
    micros = (message.created_at - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}_{message.pk}"


def decode_cursor(text: str) -> tuple[datetime, int] | None:
    match = re.fullmatch(r"(-?\d{1,20})_(\d{1,19})", text or "")
    if match is None:
        return None
    try:
        return _EPOCH + timedelta(microseconds=int(match[1])), int(match[2])
    except OverflowError:
        return None


@dataclass
class Page:
    messages: list[Message]
    older: str | None  # cursor of the next page (older messages), if there is one
    first: bool  # whether this is the newest page


def page_of(qs: QuerySet[Message], *, before: str = "", size: int = PAGE_SIZE) -> Page:
    """One page, newest first: ``size + 1`` rows say whether an older page follows."""
    qs = qs.order_by("-created_at", "-pk")
    cursor = decode_cursor(before) if before else None
    if cursor is not None:
        at, pk = cursor
        qs = qs.filter(Q(created_at__lt=at) | Q(created_at=at, pk__lt=pk))
    rows = list(qs[: size + 1])
    older = encode_cursor(rows[size - 1]) if len(rows) > size else None
    return Page(rows[:size], older=older, first=cursor is None)


def run_links(message: Message) -> list[dict[str, str]]:
    """Links to the runs a message is about: its run, or the first runs of a digest's body.
    Run ids from the body are checked to be UUIDs before they become URLs."""
    ids: list[str] = []
    if message.run_id:
        ids.append(str(message.run_id))
    else:
        events = (message.body or {}).get("events") or []
        for event in events if isinstance(events, list) else []:
            run_id = event.get("run_id") if isinstance(event, dict) else None
            try:
                text = str(uuid.UUID(str(run_id)))
            except ValueError:
                continue
            if text not in ids:
                ids.append(text)
            if len(ids) >= MAX_RUN_LINKS:
                break
    return [{"id": i, "short": i[:8], "url": reverse("run-detail", args=[i])} for i in ids]
