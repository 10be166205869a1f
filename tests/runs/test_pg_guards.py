"""The PostgreSQL half of the audit guarantees (``runs/migrations/0002_guards.py``): triggers
refuse to change or delete events and to change a finished run even through raw SQL, and
``verify_audit`` names the event whose content no longer matches its hash."""

from __future__ import annotations

from collections.abc import Callable
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection, transaction

from runs.audit import Event
from runs.models import Run, RunStatus, Team

pytestmark = [pytest.mark.pg, pytest.mark.django_db]


@pytest.fixture
def finished_run(team: Team, drive: Callable[..., Run]) -> Run:
    run, _ = Run.start("t-steps", {"n": 3}, team=team, actor="test")
    run = drive(run.pk)
    assert run.status == RunStatus.SUCCEEDED
    return run


def _events(run: Run) -> list[tuple[int, str, object, str]]:
    return list(
        Event.objects.filter(run=run).order_by("id").values_list("id", "kind", "data", "hash")
    )


def _raw(sql: str, params: list[object] | None = None) -> None:
    with connection.cursor() as cur:
        cur.execute(sql, params)


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE runs_event SET kind = 'x'",
        "UPDATE runs_event SET data = '{}'::jsonb WHERE run_id = %s",
        "DELETE FROM runs_event",
        "DELETE FROM runs_event WHERE run_id = %s",
    ],
)
def test_raw_sql_cannot_change_or_delete_events(finished_run: Run, sql: str) -> None:
    before = _events(finished_run)
    total = Event.objects.count()
    params = [finished_run.pk] if "%s" in sql else None
    # The trigger raises SQLSTATE 23000 (integrity_constraint_violation): IntegrityError.
    with pytest.raises(IntegrityError, match="runs_event is append-only"), transaction.atomic():
        _raw(sql, params)
    assert _events(finished_run) == before
    assert Event.objects.count() == total


def test_raw_sql_cannot_change_a_finished_run(finished_run: Run) -> None:
    with pytest.raises(IntegrityError, match="cannot change"), transaction.atomic():
        _raw("UPDATE runs_run SET status = 'running' WHERE id = %s", [finished_run.pk])
    with pytest.raises(IntegrityError), transaction.atomic():
        _raw("UPDATE runs_run SET result = '{}'::jsonb WHERE id = %s", [finished_run.pk])
    finished_run.refresh_from_db()
    assert finished_run.status == RunStatus.SUCCEEDED
    assert finished_run.result == {"keys": 3}


def test_an_unfinished_run_still_changes(team: Team) -> None:
    """The trigger fires only on terminal runs: the engine's own updates go through."""
    run, _ = Run.start("t-steps", {"n": 1}, team=team, actor="test")
    _raw("UPDATE runs_run SET progress = '{\"done\": 0}'::jsonb WHERE id = %s", [run.pk])
    run.refresh_from_db()
    assert run.progress == {"done": 0}


def test_verify_audit_passes_and_then_names_the_tampered_event(
    finished_run: Run, team: Team, drive: Callable[..., Run]
) -> None:
    other = drive(Run.start("t-steps", {"n": 1}, team=team, actor="test")[0].pk)
    out = StringIO()
    call_command("verify_audit", stdout=out, stderr=StringIO())
    assert out.getvalue().startswith("OK:")

    events = _events(finished_run)
    assert len(events) >= 5
    victim = events[len(events) // 2][0]
    # Only by switching the trigger off (which needs the table owner) can a row be rewritten;
    # the test's transaction rolls all of this back. (Checking the deferred foreign keys first:
    # PostgreSQL does not alter a table with trigger events pending.)
    _raw("SET CONSTRAINTS ALL IMMEDIATE")
    _raw("ALTER TABLE runs_event DISABLE TRIGGER runs_event_immutable")
    try:
        _raw(
            "UPDATE runs_event SET data = data || '{\"tampered\": true}'::jsonb WHERE id = %s",
            [victim],
        )
    finally:
        _raw("ALTER TABLE runs_event ENABLE TRIGGER runs_event_immutable")

    err = StringIO()
    with pytest.raises(CommandError, match="1 of .* audit chains are broken"):
        call_command("verify_audit", stdout=StringIO(), stderr=err)
    assert (
        f"BROKEN chain {finished_run.pk}: first broken link is event #{victim} " in err.getvalue()
    )
    assert "content does not match its hash" in err.getvalue()

    # One chain per run: the tampered run's chain is broken, another run's still verifies.
    with pytest.raises(CommandError):
        call_command("verify_audit", "--chain", str(finished_run.pk), stderr=StringIO())
    out = StringIO()
    call_command("verify_audit", "--chain", str(other.pk), stdout=out)
    assert out.getvalue().startswith("OK: 1 chains")
