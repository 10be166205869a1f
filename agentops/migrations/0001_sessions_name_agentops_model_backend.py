"""Signed-in sessions that name Django's ``ModelBackend`` name ``agentops.auth.ModelBackend``
instead, the settings' backend since this migration: a session whose backend is not in the
settings is signed out."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from django.conf import settings
from django.db import migrations

BACKEND_KEY = "_auth_user_backend"  # django.contrib.auth.BACKEND_SESSION_KEY
OLD = "django.contrib.auth.backends.ModelBackend"
NEW = "agentops.auth.ModelBackend"


def _rename(apps: Any, schema_editor: Any, old: str, new: str) -> None:
    session = apps.get_model("sessions", "Session")
    store = import_module(settings.SESSION_ENGINE).SessionStore()
    alias = schema_editor.connection.alias
    for row in session.objects.using(alias).iterator(chunk_size=1000):
        data = store.decode(row.session_data)
        if data.get(BACKEND_KEY) == old:
            data[BACKEND_KEY] = new
            row.session_data = store.encode(data)
            row.save(using=alias, update_fields=["session_data"])


def forwards(apps: Any, schema_editor: Any) -> None:
    _rename(apps, schema_editor, OLD, NEW)


def backwards(apps: Any, schema_editor: Any) -> None:
    _rename(apps, schema_editor, NEW, OLD)


class Migration(migrations.Migration):
    dependencies = [("sessions", "0001_initial")]
    operations = [migrations.RunPython(forwards, backwards)]
