"""When a run's wall time passes 80 % of its limit, for the sweep that warns of it, with a
partial index of the runs still to be warned, and an index of failed attempts by start time
(the dashboard's window); and the over-80% view's index narrowed to unfinished runs, as the
view. Built concurrently on PostgreSQL, as 0009's."""

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
        # The over-80% view shows unfinished runs only: its index holds only those.
        migrations.RemoveIndex(model_name="run", name="run_over_budget"),
        AddIndexConcurrentlyOnPostgreSQL(
            model_name="run",
            index=models.Index(
                condition=models.Q(
                    models.Q(("budget_warned", []), _negated=True), ("finished_at__isnull", True)
                ),
                fields=["-created_at", "-id"],
                name="run_over_budget",
            ),
        ),
        AddIndexConcurrentlyOnPostgreSQL(
            model_name="stepattempt",
            index=models.Index(fields=["started_at"], name="attempt_started"),
        ),
    ]
