"""When a run's wall time passes 80 % of its limit, for the sweep that warns of it, with a
partial index of the runs still to be warned, and an index of failed attempts by start time
(the dashboard's window); both built concurrently on PostgreSQL, as 0009's."""

from importlib import import_module

from django.db import migrations, models

AddIndexConcurrentlyOnPostgreSQL = import_module(
    "runs.migrations.0009_over_budget_index"
).AddIndexConcurrentlyOnPostgreSQL


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("runs", "0009_over_budget_index")]

    operations = [
        migrations.AddField(
            model_name="run",
            name="wall_warn_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        AddIndexConcurrentlyOnPostgreSQL(
            model_name="run",
            index=models.Index(
                condition=models.Q(("finished_at__isnull", True), ("wall_warn_at__isnull", False)),
                fields=["wall_warn_at"],
                name="run_wall_warnings",
            ),
        ),
        AddIndexConcurrentlyOnPostgreSQL(
            model_name="stepattempt",
            index=models.Index(fields=["started_at"], name="attempt_started"),
        ),
    ]
