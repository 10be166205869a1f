"""The beat sweeps as django-celery-beat periodic tasks (written by a migration, tuned in
admin). ``install`` is idempotent: it creates what is missing and leaves admins' edits alone."""

from __future__ import annotations

from typing import Any

SWEEPS: list[tuple[str, str, float]] = [
    # (name shown in admin, task, interval as a multiple of AGENTOPS_SWEEP_SECONDS)
    ("agentops: wake due timers", "runs.sweep_timers", 1),
    ("agentops: recover expired leases and hung steps", "runs.sweep_leases", 1),
    ("agentops: re-ring orphaned runs", "runs.sweep_orphans", 2),
    ("agentops: deadlines and idle timeouts", "runs.sweep_deadlines", 2),
    ("agentops: run callbacks due (retries, lost doorbells)", "runs.sweep_callbacks", 1),
]


def install(apps: Any = None, *, every: int | None = None) -> None:
    from django.conf import settings

    if apps is None:
        from django_celery_beat.models import IntervalSchedule, PeriodicTask
    else:
        IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
        PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    base = every or int(settings.AGENTOPS_SWEEP_SECONDS)
    for name, task, factor in SWEEPS:
        if PeriodicTask.objects.filter(name=name).exists():
            continue
        schedule, _ = IntervalSchedule.objects.get_or_create(
            every=max(1, int(base * factor)), period="seconds"
        )
        PeriodicTask.objects.create(
            name=name,
            task=task,
            interval=schedule,
            queue="sweeps",
            description="Safety net of the run engine: see runs/sweeps.py.",
        )
