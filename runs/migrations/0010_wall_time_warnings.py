"""When a run's wall time passes 80 % of its limit, for the sweep that warns of it
(``runs.sweeps.warn_wall_time``), filled in for the unfinished runs that have a wall-time
limit and have not been warned of it yet. Its index is built in 0011, concurrently."""

from datetime import timedelta

from django.db import migrations, models

WARN_AT = 0.8  # runs.budget.WARN_AT, as it was when this was written
ACTIVE = ["queued", "running", "waiting", "paused"]


def fill(apps, schema_editor):
    Run = apps.get_model("runs", "Run")
    pending = Run.objects.filter(
        status__in=ACTIVE,
        finished_at__isnull=True,
        started_at__isnull=False,
        limit_wall_seconds__isnull=False,
        wall_warn_at__isnull=True,
    ).values_list("pk", "started_at", "limit_wall_seconds", "budget_warned")
    for pk, started_at, limit, warned in pending.iterator(chunk_size=1000):
        if "wall_seconds" not in (warned or []):
            Run.objects.filter(pk=pk, finished_at__isnull=True).update(
                wall_warn_at=started_at + timedelta(seconds=limit * WARN_AT)
            )


class Migration(migrations.Migration):
    dependencies = [("runs", "0009_over_budget_index")]

    operations = [
        migrations.AddField(
            model_name="run",
            name="wall_warn_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(fill, migrations.RunPython.noop, elidable=True),
    ]
