"""Celery tasks of the approvals: the sweep and the emails. Each message carries only an id."""

from __future__ import annotations

from celery import shared_task

from approvals import sweeps


@shared_task(name="approvals.sweep", ignore_result=True)
def sweep() -> dict[str, int]:
    return sweeps.sweep()


@shared_task(name="approvals.send_emails", ignore_result=True)
def send_request_emails(request_id: int, why: str) -> int:
    from approvals.emails import send_request_emails as send

    return send(request_id, why)
