"""The notifications' beat sweep (visible and tunable in django-celery-beat's admin)."""

from __future__ import annotations

from django.db import migrations

SWEEP = "agentops: notifications (fan-out, batching, delivery)"


def forward(apps, schema_editor):
    from django.conf import settings

    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    if not PeriodicTask.objects.filter(name=SWEEP).exists():
        every = max(1, int(settings.AGENTOPS_SWEEP_SECONDS))
        schedule, _ = IntervalSchedule.objects.get_or_create(every=every, period="seconds")
        PeriodicTask.objects.create(
            name=SWEEP,
            task="notifications.sweep",
            interval=schedule,
            queue="sweeps",
            description="Events into notifications into messages: see notifications/tasks.py.",
        )


def backward(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=SWEEP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]
    operations = [migrations.RunPython(forward, backward)]
