"""Run callback deliveries: the outbox rows and their attempts, each team's signing secret, the
partial index of due deliveries and the beat sweep that reads it."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

import runs.webhooks


def give_each_team_a_secret(apps, schema_editor):
    # A callable default on AddField is called once for the whole table: every existing team
    # would share one secret. Each gets its own here.
    Team = apps.get_model("runs", "Team")
    for pk in Team.objects.filter(webhook_secret="").values_list("pk", flat=True):
        Team.objects.filter(pk=pk).update(webhook_secret=runs.webhooks.new_secret())


def install_sweep(apps, schema_editor):
    from runs.sweeps_schedule import install

    install(apps)  # adds the callbacks sweep; leaves the others (and admins' edits) alone


def remove_sweep(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(task="runs.sweep_callbacks").delete()


class Migration(migrations.Migration):

    dependencies = [
        ("runs", "0007_api_tokens"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.AddField(
            model_name="team",
            name="webhook_secret",
            field=models.CharField(default="", max_length=100),
            preserve_default=False,
        ),
        migrations.RunPython(give_each_team_a_secret, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="team",
            name="webhook_secret",
            field=models.CharField(
                default=runs.webhooks.new_secret,
                help_text="Signs the team's run callbacks (Standard Webhooks): receivers verify with it.",
                max_length=100,
            ),
        ),
        migrations.CreateModel(
            name="CallbackDelivery",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("type", models.CharField(max_length=64)),
                ("body", models.TextField(help_text="The JSON sent, byte for byte, by every attempt.")),
                ("status", models.CharField(choices=[("pending", "Pending"), ("delivered", "Delivered"), ("failed", "Gave up")], default="pending", max_length=16)),
                ("attempts", models.PositiveIntegerField(default=0)),
                ("next_attempt_at", models.DateTimeField(blank=True, help_text="When it is due; empty once delivered or given up.", null=True)),
                ("rung_at", models.DateTimeField(blank=True, help_text="When a worker was last asked to send it.", null=True)),
                ("lease_owner", models.CharField(blank=True, max_length=120)),
                ("last_status_code", models.PositiveSmallIntegerField(blank=True, null=True)),
                ("last_error", models.TextField(blank=True)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("delivered_at", models.DateTimeField(blank=True, null=True)),
                ("callback", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="deliveries", to="runs.runcallback")),
                ("event", models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="+", to="runs.event")),
                ("run", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="+", to="runs.run")),
            ],
            options={
                "verbose_name": "callback delivery",
                "verbose_name_plural": "callback deliveries",
                "ordering": ["-created_at", "-id"],
                "indexes": [
                    models.Index(condition=models.Q(("next_attempt_at__isnull", False)), fields=["next_attempt_at"], name="callback_due"),
                ],
                "constraints": [
                    models.UniqueConstraint(fields=("callback", "event"), name="callback_delivery_once"),
                ],
            },
        ),
        migrations.CreateModel(
            name="CallbackAttempt",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("number", models.PositiveIntegerField()),
                ("at", models.DateTimeField()),
                ("duration_ms", models.FloatField(default=0)),
                ("ok", models.BooleanField(default=False)),
                ("permanent", models.BooleanField(default=False)),
                ("status_code", models.PositiveSmallIntegerField(blank=True, null=True)),
                ("error", models.TextField(blank=True)),
                ("response_excerpt", models.TextField(blank=True)),
                ("worker", models.CharField(blank=True, max_length=120)),
                ("delivery", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="tries", to="runs.callbackdelivery")),
            ],
            options={
                "verbose_name": "callback attempt",
                "ordering": ["-at", "-id"],
            },
        ),
        migrations.RunPython(install_sweep, remove_sweep),
    ]
