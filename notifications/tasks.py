"""Celery tasks of the notifications. Each message carries only an id; the sweep is the
safety net that finds what a lost doorbell left behind."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from celery import shared_task
from django.utils import timezone

from notifications import delivery, escalation, fanout, schedule


@shared_task(name="notifications.deliver", ignore_result=True)
def deliver(message_id: int) -> str:
    return delivery.deliver(message_id)


@shared_task(name="notifications.sweep", ignore_result=True)
def sweep() -> dict[str, Any]:
    return run_sweep()


def run_sweep(now: datetime | None = None) -> dict[str, Any]:
    """Events into notifications, due notifications into messages, due messages sent."""
    now = now or timezone.now()
    read = fanout.fan_out(now=now)
    stalled = fanout.stalled(now=now)
    escalated = escalation.escalate_unread_approvals(now=now)
    made = schedule.schedule(now=now)
    sent = 0
    # Delivered here, not rung: a lost doorbell is why it is still due. A second pass takes
    # the fallbacks the first one made.
    for _ in range(2):
        for message_id in delivery.due_messages(now):
            delivery.deliver(message_id, now=now)
            sent += 1
    return {
        "events": read,
        "stalled": stalled,
        "escalated": escalated,
        "messages": made,
        "sent": sent,
    }
