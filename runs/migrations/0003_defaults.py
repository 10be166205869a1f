"""The default team and the beat sweeps (visible and tunable in admin)."""

from __future__ import annotations

from django.db import migrations


def forward(apps, schema_editor):
    from runs.sweeps_schedule import install

    Team = apps.get_model("runs", "Team")
    Team.objects.get_or_create(slug="default", defaults={"name": "Default team"})
    install(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0002_guards"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]
    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]
