"""Engine behaviour shown on SQLite only (PostgreSQL would abort the test's own transaction)."""

from __future__ import annotations

import pytest

from runs import engine
from runs.models import Run, RunStatus
from tests.testapp.workflows import SWITCHES

pytestmark = [pytest.mark.django_db]


def test_a_database_error_is_no_verdict_on_the_run(team, drive):
    SWITCHES["db_down"] = True
    try:
        run = Run.start("t-dberror", actor="t")[0]
        assert engine.drive(run.pk) == "database-error"
    finally:
        SWITCHES.pop("db_down")
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.error is None
    assert run.lease_owner == "" and run.rung_at is not None  # the orphan sweep retries it
    assert drive(run.pk).status == RunStatus.SUCCEEDED
