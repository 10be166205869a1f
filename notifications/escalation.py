"""An approval request that nobody has read or decided goes on by the next channel.

The in-app notification is where "read" is known. If it is still unread after
``AGENTOPS_APPROVAL_UNREAD_SECONDS`` and the request is still pending, the person gets the
request by email (the approvals app's email, with its reply address), even if they turned
approval emails off; someone who already got that email gets nothing more (one email per
person and request: its row is unique).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from notifications.models import Channel, EventType, Notification

BATCH = 200


def unread_after() -> timedelta:
    return timedelta(seconds=int(getattr(settings, "AGENTOPS_APPROVAL_UNREAD_SECONDS", 900)))


def escalate_unread_approvals(*, now: datetime | None = None) -> int:
    from approvals.emails import send_request_emails
    from approvals.models import ApprovalRequest
    from approvals.outbox import ApprovalEmail

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
            user__isnull=False,
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
    emailed = set(
        ApprovalEmail.objects.filter(
            request_id__in=pending, why=ApprovalEmail.Why.REQUESTED
        ).values_list("request_id", "user_id")
    )
    sent = 0
    for n in candidates:
        request_id = n.data.get("request")
        if request_id in pending and (request_id, n.user_id) not in emailed:
            sent += send_request_emails(request_id, "requested", only_user_id=n.user_id)
    return sent
