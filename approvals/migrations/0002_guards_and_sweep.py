"""PostgreSQL triggers (decisions are history; a decided request never changes) and the
approvals' beat sweep (visible and tunable in django-celery-beat's admin)."""

from __future__ import annotations

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION agentops_decision_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'approvals_decision is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS approvals_decision_immutable ON approvals_decision;
CREATE TRIGGER approvals_decision_immutable BEFORE UPDATE OR DELETE ON approvals_decision
    FOR EACH ROW EXECUTE FUNCTION agentops_decision_immutable();

CREATE OR REPLACE FUNCTION agentops_approval_decided() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'approval request % is % and cannot change', OLD.id, OLD.status
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS approvals_request_decided ON approvals_approvalrequest;
CREATE TRIGGER approvals_request_decided BEFORE UPDATE ON approvals_approvalrequest
    FOR EACH ROW WHEN (OLD.status <> 'pending')
    EXECUTE FUNCTION agentops_approval_decided();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS approvals_decision_immutable ON approvals_decision;
DROP TRIGGER IF EXISTS approvals_request_decided ON approvals_approvalrequest;
DROP FUNCTION IF EXISTS agentops_decision_immutable();
DROP FUNCTION IF EXISTS agentops_approval_decided();
"""

SWEEP = "agentops: approval deadlines, reminders and escalations"


def forward(apps, schema_editor):
    from django.conf import settings

    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    if not PeriodicTask.objects.filter(name=SWEEP).exists():
        every = max(1, int(settings.AGENTOPS_SWEEP_SECONDS) * 2)
        schedule, _ = IntervalSchedule.objects.get_or_create(every=every, period="seconds")
        PeriodicTask.objects.create(
            name=SWEEP,
            task="approvals.sweep",
            interval=schedule,
            queue="sweeps",
            description="Deadlines, reminders and escalations: see approvals/sweeps.py.",
        )


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=SWEEP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]
    operations = [migrations.RunPython(forward, backward)]
