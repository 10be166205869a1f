"""An approval request that nobody has read or decided goes on by the next channel.

The in-app notification is where "read" is known; if it is still unread after
``AGENTOPS_APPROVAL_UNREAD_SECONDS`` and the request is still pending, the same milestone is
sent by email (once: its own dedup key), unless the person already got it by email.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from notifications.models import Channel, EventType, Notification

BATCH = 500


def unread_after() -> timedelta:
    return timedelta(seconds=int(getattr(settings, "AGENTOPS_APPROVAL_UNREAD_SECONDS", 900)))


def escalate_unread_approvals(*, now: datetime | None = None) -> int:
    from approvals.models import ApprovalRequest

    now = now or timezone.now()
    candidates = list(
        Notification.objects.filter(
            event_type=EventType.APPROVAL_REQUESTED,
            channel=Channel.IN_APP,
            status=Notification.Status.BATCHED,
            # A window, so old rows are not looked at again and again.
            created_at__lte=now - unread_after(),
            created_at__gt=now - 4 * unread_after(),
            message__read_at__isnull=True,
        ).order_by("-created_at")[:BATCH]
    )
    if not candidates:
        return 0
    pending = set(
        ApprovalRequest.objects.filter(
            pk__in={n.data.get("request") for n in candidates},
            status=ApprovalRequest.Status.PENDING,
        ).values_list("pk", flat=True)
    )
    rows = []
    for n in candidates:
        if n.data.get("request") not in pending or n.user_id is None:
            continue
        emailed = n.dedup_key.rsplit(":", 1)[0] + ":" + Channel.EMAIL
        if Notification.objects.filter(dedup_key=emailed).exists():
            continue
        rows.append(
            Notification(
                user_id=n.user_id,
                channel=Channel.EMAIL,
                event_type=n.event_type,
                dedup_key=f"{n.dedup_key}:unread",
                event_id=n.event_id,
                run_id=n.run_id,
                team_id=n.team_id,
                data={**n.data, "escalated": "unread in the app"},
                due_at=now,
                created_at=now,
            )
        )
    Notification.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)
