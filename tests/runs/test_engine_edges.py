"""Edge cases of the engine: interrupted compensations, retries of finished runs, spend of
failed attempts, stop versus pause, rewinds and values the database cannot store."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from runs import sweeps
from runs.audit import canonical, verify_chain
from runs.exceptions import IllegalTransition
from runs.models import Event, Run, RunStatus, Step
from tests.conftest import doorbells
from tests.testapp.models import Effect

pytestmark = [pytest.mark.engine, pytest.mark.django_db]


def wake(time_machine, run: Run) -> None:
    run.refresh_from_db()
    time_machine.move_to(run.wake_at + timedelta(milliseconds=5))
    assert sweeps.wake_due_timers() >= 1


def test_a_compensation_retry_during_cancel_undoes_each_step_once(team, drive, time_machine):
    run = drive(Run.start("t-compensate-retry", actor="t")[0].pk)
    assert run.status == RunStatus.WAITING
    run.cancel(actor="user:lead")
    run = drive(run.pk)
    # The last step's undo failed once: the run waits for the retry, still stopping.
    assert run.status == RunStatus.WAITING and run.stop_requested == "cancel"
    wake(time_machine, run)
    run = drive(run.pk)
    if run.status == RunStatus.WAITING:  # the first step's undo fails once too
        wake(time_machine, run)
        run = drive(run.pk)
    assert run.status == RunStatus.CANCELLED
    undone = Effect.objects.filter(label="undo").order_by("id")
    assert [e.key for e in undone] == [f"undo:{run.pk}:do1", f"undo:{run.pk}:do0"]
    assert {e.calls for e in undone} == {1}
    names = list(Step.objects.filter(run=run, kind="compensation").values_list("name", flat=True))
    assert names == ["compensate:do 1", "compensate:do 0"]


def test_retrying_a_finished_run_never_reruns_the_kept_steps(
    team, drive, django_capture_on_commit_callbacks
):
    run = drive(Run.start("t-compensate", {"steps": 2, "then": "fail"}, actor="t")[0].pk)
    with django_capture_on_commit_callbacks() as callbacks:
        new = run.retry_from(3, actor="t")
        # Nothing rang before the kept checkpoints were in place.
        assert not callbacks
    assert len(doorbells(callbacks)) == 1
    assert Step.objects.filter(run=new).count() == 2
    before = Effect.objects.filter(label__startswith="do").count()
    drive(new.pk)
    assert Effect.objects.filter(label__startswith="do").count() == before


def test_failed_attempts_are_charged(team, drive, time_machine):
    run = drive(Run.start("t-billed-retries", actor="t")[0].pk)
    for _ in range(2):
        wake(time_machine, run)
        run = drive(run.pk)
    assert run.status == RunStatus.SUCCEEDED
    assert run.spent_usd == Decimal("3") and run.spent_tokens == 30
    assert team.spent_today() == Decimal("3")


def test_pause_is_refused_while_a_cancel_is_under_way(team, drive):
    run = drive(Run.start("t-sleep", {"seconds": 600}, actor="t")[0].pk)
    Run.objects.filter(pk=run.pk).update(stop_requested="cancel")
    with pytest.raises(IllegalTransition, match="it is being cancelled"):
        run.pause(actor="t")


def test_a_second_cancel_frees_a_paused_run_that_is_stopping(team, drive):
    run = drive(Run.start("t-sleep", {"seconds": 600}, actor="t")[0].pk)
    run = run.pause(actor="t")
    Run.objects.filter(pk=run.pk).update(stop_requested="cancel")  # an earlier, lost attempt
    run = run.cancel(actor="t")
    assert run.status == RunStatus.RUNNING
    assert drive(run.pk).status == RunStatus.CANCELLED


def test_a_rewind_redelivers_signals_to_the_replayed_wait(team, drive):
    run = drive(Run.start("t-wait", actor="t")[0].pk)
    run.signal("go", {"n": 1}, actor="t")
    run = drive(run.pk)
    assert run.status == RunStatus.SUCCEEDED
    run2 = drive(Run.start("t-compensate", {"steps": 1}, actor="t")[0].pk)
    run2.signal("go", "first", actor="t")
    Run.objects.filter(pk=run2.pk).update(status=RunStatus.PAUSED)  # paused before finishing
    run2 = run2.retry_from(2, actor="t")
    run2 = drive(run2.pk)
    assert run2.status == RunStatus.SUCCEEDED


def test_text_with_a_nul_character_fails_the_step_clearly(team, drive):
    run = drive(Run.start("t-nul", actor="t")[0].pk)
    assert run.status == RunStatus.FAILED
    assert "NUL character" in run.error["message"]


def test_hashes_survive_numbers_the_database_normalises(team):
    run = Run.start("t-steps", {"n": 1}, actor="t")[0]
    Event.append("test.numbers", run=run, actor="t", data={"big": 1e16, "neg0": -0.0, "x": 0.5})
    assert canonical({"big": 1e16, "neg0": -0.0}) == {"big": 10**16, "neg0": 0.0}
    assert verify_chain(str(run.pk)).broken_at is None


def test_a_worker_that_does_not_know_the_workflow_hands_the_run_back(team, drive):
    from runs import engine

    run = Run.start("t-steps", {"n": 1}, actor="t")[0]
    Run.objects.filter(pk=run.pk).update(workflow="from-a-newer-release")
    for _ in range(engine.MAX_UNAVAILABLE - 1):
        assert engine.drive(run.pk) == "unavailable"
        run.refresh_from_db()
        assert run.status == RunStatus.RUNNING and run.lease_owner == ""
    assert engine.drive(run.pk) == "failed"
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.error["type"] == "UnknownWorkflow"
