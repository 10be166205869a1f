"""PostgreSQL triggers: the database half of "events are append-only" and "a finished run
never changes" (the models refuse too; the triggers also stop raw SQL)."""

from __future__ import annotations

from django.db import migrations

TERMINAL = "('succeeded', 'failed', 'cancelled', 'timed_out')"

FORWARD = f"""
CREATE OR REPLACE FUNCTION agentops_event_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'runs_event is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS runs_event_immutable ON runs_event;
CREATE TRIGGER runs_event_immutable BEFORE UPDATE OR DELETE ON runs_event
    FOR EACH ROW EXECUTE FUNCTION agentops_event_immutable();

CREATE OR REPLACE FUNCTION agentops_run_terminal() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'run % is % and cannot change', OLD.id, OLD.status
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS runs_run_terminal ON runs_run;
CREATE TRIGGER runs_run_terminal BEFORE UPDATE ON runs_run
    FOR EACH ROW WHEN (OLD.status IN {TERMINAL})
    EXECUTE FUNCTION agentops_run_terminal();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS runs_event_immutable ON runs_event;
DROP TRIGGER IF EXISTS runs_run_terminal ON runs_run;
DROP FUNCTION IF EXISTS agentops_event_immutable();
DROP FUNCTION IF EXISTS agentops_run_terminal();
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [("runs", "0001_initial")]
    operations = [migrations.RunPython(forward, backward)]
