"""The management commands print runs as JSON and fail clearly on bad input."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from runs.models import Event, Run, RunStatus

pytestmark = [pytest.mark.engine, pytest.mark.django_db]


def run_cmd(*args: str) -> dict:
    out = StringIO()
    call_command(*args, stdout=out)
    return json.loads(out.getvalue())


def test_start_run_and_run_status(team):
    started = run_cmd("start_run", "t-steps", "--input", '{"n": 2}', "--idempotency-key", "abc")
    assert started["status"] == "queued" and started["replayed"] is False
    again = run_cmd("start_run", "t-steps", "--input", '{"n": 2}', "--idempotency-key", "abc")
    assert again["id"] == started["id"] and again["replayed"] is True
    status = run_cmd("run_status", started["id"])
    assert status["id"] == started["id"] and status["workflow"] == "t-steps"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["start_run", "nope"], "unknown workflow 'nope'"),
        (["start_run", "t-steps", "--input", "{bad"], "--input is not valid JSON"),
        (["start_run", "t-steps", "--input", '{"n": "x"}'], "is invalid: n:"),
        (["start_run", "t-steps", "--team", "ghosts"], "unknown team 'ghosts'"),
        (["start_run", "t-steps", "--budget", '{"usd": "x"}'], "budget.usd"),
        (["run_status", "not-a-uuid"], "no run with id"),
        (["run_status", "00000000-0000-0000-0000-000000000000"], "no run with id"),
    ],
)
def test_bad_input_is_a_clear_error(team, args, message):
    with pytest.raises(CommandError, match=message):
        call_command(*args, stdout=StringIO())
    assert not Run.objects.exists()


def test_operations_are_recorded_with_the_actor(team, drive):
    run = drive(Run.start("t-sleep", {"seconds": 600}, actor="t")[0].pk)
    paused = run_cmd("pause_run", str(run.pk), "--actor", "cli:ops")
    assert paused["status"] == "paused"
    with pytest.raises(CommandError, match="no run with id"):
        call_command("resume_run", "00000000-0000-0000-0000-000000000000", stdout=StringIO())
    resumed = run_cmd("resume_run", str(run.pk), "--actor", "cli:ops")
    assert resumed["status"] == "running"
    raised = run_cmd("raise_budget", str(run.pk), "--usd", "3", "--actor", "cli:ops")
    assert raised["budget"]["usd"]["limit"] == "3.0000"
    cancelled = run_cmd("cancel_run", str(run.pk), "--actor", "cli:ops")
    assert cancelled["stop_requested"] == "cancel"
    run = drive(run.pk)
    assert run.status == RunStatus.CANCELLED
    actors = set(Event.objects.filter(run=run, actor="cli:ops").values_list("kind", flat=True))
    assert {"run.paused", "run.resumed", "run.budget_raised", "run.cancel_requested"} <= actors
    with pytest.raises(CommandError, match="cannot cancel"):
        call_command("cancel_run", str(run.pk), stdout=StringIO())


def test_signal_and_retry_commands(team, drive):
    run = drive(Run.start("t-wait", actor="t")[0].pk)
    run_cmd("signal_run", str(run.pk), "go", "--payload", '{"x": 1}')
    run = drive(run.pk)
    assert run.result == {"payload": {"x": 1}}
    failed = drive(Run.start("t-compensate", {"then": "fail"}, actor="t")[0].pk)
    new = run_cmd("retry_run", str(failed.pk), "--from-step", "2")
    assert new["parent"] == str(failed.pk) and new["status"] == "queued"
