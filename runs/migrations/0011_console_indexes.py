"""The console's indexes: the runs still to be warned of their wall time, failed attempts by
start time (the dashboard's window), and the over-80% view's index narrowed to unfinished
runs, as the view is. On PostgreSQL each is built and dropped concurrently, so the runs
table keeps taking reads and writes meanwhile."""

from importlib import import_module
from typing import Any

from django.db import migrations, models

AddIndexConcurrentlyOnPostgreSQL = import_module(
    "runs.migrations.0009_over_budget_index"
).AddIndexConcurrentlyOnPostgreSQL


class RemoveIndexConcurrentlyOnPostgreSQL(migrations.RemoveIndex):
    """0009's ``AddIndexConcurrentlyOnPostgreSQL`` the other way round."""

    atomic = False

    def _apply(self, app_label: str, schema_editor: Any, state: Any, method: str) -> None:
        model = state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        index = state.models[app_label, self.model_name_lower].get_index_by_name(self.name)
        concurrently = (
            {"concurrently": True} if schema_editor.connection.vendor == "postgresql" else {}
        )
        getattr(schema_editor, method)(model, index, **concurrently)

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        self._apply(app_label, schema_editor, from_state, "remove_index")

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        self._apply(app_label, schema_editor, to_state, "add_index")


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("runs", "0010_wall_time_warnings")]

    operations = [
        AddIndexConcurrentlyOnPostgreSQL(
            model_name="run",
            index=models.Index(
                condition=models.Q(("finished_at__isnull", True), ("wall_warn_at__isnull", False)),
                fields=["wall_warn_at"],
                name="run_wall_warnings",
            ),
        ),
        RemoveIndexConcurrentlyOnPostgreSQL(model_name="run", name="run_over_budget"),
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
