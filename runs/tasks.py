"""Celery tasks: the doorbell handlers and the beat sweeps. Each carries only an id."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.signals import worker_shutting_down

from runs import engine, sweeps
from runs.context import SHUTDOWN


@worker_shutting_down.connect
def _stop_at_step_boundary(**_: Any) -> None:
    """On SIGTERM, runs stop at their next step boundary and hand their leases back."""
    SHUTDOWN.set()


@shared_task(name="runs.drive", ignore_result=True)
def drive_run(run_id: str) -> str:
    return engine.drive(run_id)


@shared_task(name="runs.wake", ignore_result=True)
def wake_run(run_id: str) -> bool:
    from runs.models import Run

    run = Run.objects.filter(pk=run_id).first()
    return bool(run and run.wake(actor="system:timer", reason="timer", due_only=True))


@shared_task(name="runs.sweep_timers", ignore_result=True)
def sweep_timers() -> int:
    return sweeps.wake_due_timers()


@shared_task(name="runs.sweep_leases", ignore_result=True)
def sweep_leases() -> int:
    return sweeps.requeue_expired_leases() + sweeps.expire_step_deadlines()


@shared_task(name="runs.sweep_orphans", ignore_result=True)
def sweep_orphans() -> int:
    return sweeps.requeue_orphans()


@shared_task(name="runs.sweep_deadlines", ignore_result=True)
def sweep_deadlines() -> int:
    return sweeps.enforce_deadlines() + sweeps.enforce_idle_timeouts() + sweeps.warn_wall_time()


@shared_task(name="runs.deliver_callback", ignore_result=True)
def deliver_callback(delivery_id: int) -> str:
    from runs import deliveries

    return deliveries.deliver(delivery_id)


@shared_task(name="runs.sweep_callbacks", ignore_result=True)
def sweep_callbacks() -> int:
    from runs import deliveries

    return len(deliveries.sweep())
