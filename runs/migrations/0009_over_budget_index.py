"""A partial index for the console's over-budget view. On PostgreSQL it is built with CREATE
INDEX CONCURRENTLY, so the runs table keeps taking writes while it builds."""

from typing import Any

from django.db import migrations, models


class AddIndexConcurrentlyOnPostgreSQL(migrations.AddIndex):
    atomic = False

    def _apply(self, app_label: str, schema_editor: Any, state: Any, method: str) -> None:
        model = state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        concurrently = (
            {"concurrently": True} if schema_editor.connection.vendor == "postgresql" else {}
        )
        getattr(schema_editor, method)(model, self.index, **concurrently)

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        self._apply(app_label, schema_editor, to_state, "add_index")

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        self._apply(app_label, schema_editor, from_state, "remove_index")


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("runs", "0008_callback_deliveries")]

    operations = [
        AddIndexConcurrentlyOnPostgreSQL(
            model_name="run",
            index=models.Index(
                condition=models.Q(("budget_warned", []), _negated=True),
                fields=["-created_at", "-id"],
                name="run_over_budget",
            ),
        ),
    ]
