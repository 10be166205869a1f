"""Starting runs, guarded transitions, idempotency keys, rewinds and bad input."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from runs.audit import Event
from runs.exceptions import (
    AuditImmutable,
    IdempotencyConflict,
    IllegalTransition,
    InputInvalid,
    TerminalRunError,
    UnknownTeam,
    UnknownWorkflow,
)
from runs.models import IdempotencyKey, Run, RunStatus, Step

pytestmark = [pytest.mark.engine, pytest.mark.django_db]


def test_unknown_workflow_leaves_nothing(team):
    with pytest.raises(UnknownWorkflow, match="unknown workflow 'nope'.*t-steps"):
        Run.start("nope", {}, actor="t")
    assert not Run.objects.exists() and not Event.objects.exists()


def test_input_failing_its_schema_names_the_field_and_leaves_nothing(team):
    with pytest.raises(InputInvalid) as err:
        Run.start("t-steps", {"n": "many"}, actor="t")
    assert "n:" in str(err.value) and err.value.errors[0]["loc"] == ["n"]
    with pytest.raises(InputInvalid):
        Run.start("t-steps", {"n": -1}, actor="t")
    assert not Run.objects.exists() and not Event.objects.exists()


def test_unknown_team(team):
    with pytest.raises(UnknownTeam):
        Run.start("t-steps", {}, actor="t", team="ghosts")
    assert not Run.objects.exists()


def test_idempotency_key_returns_the_same_run_within_24h(team, time_machine):
    time_machine.move_to(timezone.now())
    run, replayed = Run.start("t-steps", {"n": 1}, actor="t", idempotency_key="k")
    again, replayed_again = Run.start("t-steps", {"n": 1}, actor="t", idempotency_key="k")
    assert (replayed, replayed_again) == (False, True)
    assert again.pk == run.pk
    with pytest.raises(IdempotencyConflict, match="different workflow or input"):
        Run.start("t-steps", {"n": 2}, actor="t", idempotency_key="k")
    time_machine.shift(timedelta(hours=24, seconds=1))
    later, replayed_later = Run.start("t-steps", {"n": 2}, actor="t", idempotency_key="k")
    assert not replayed_later and later.pk != run.pk
    assert IdempotencyKey.objects.count() == 1


def test_idempotency_keys_are_scoped_to_a_team(team, other_team):
    a, _ = Run.start("t-steps", {"n": 1}, actor="t", idempotency_key="k")
    b, replayed = Run.start("t-steps", {"n": 1}, actor="t", idempotency_key="k", team="other")
    assert not replayed and a.pk != b.pk


@pytest.mark.parametrize(
    ("operation", "message"),
    [
        (lambda r: r.resume(actor="t"), "cannot resume run .*: it is succeeded"),
        (lambda r: r.cancel(actor="t"), "cannot cancel run .*: it is succeeded"),
        (lambda r: r.pause(actor="t"), "cannot pause run .*: it is succeeded"),
        (lambda r: r.retry_from(1, actor="t"), "cannot retry run .*: it is succeeded"),
        (lambda r: r.raise_budget(actor="t", usd=5), "cannot raise the budget of run"),
        (lambda r: r.signal("go", actor="t"), "cannot signal 'go' to run"),
    ],
)
def test_illegal_transitions_are_refused_and_change_nothing(team, drive, operation, message):
    run = drive(Run.start("t-steps", {"n": 1}, actor="t")[0].pk)
    assert run.status == RunStatus.SUCCEEDED
    before = (Event.objects.count(), Run.objects.filter(pk=run.pk).values().get())
    with pytest.raises(IllegalTransition, match=message):
        operation(run)
    assert (Event.objects.count(), Run.objects.filter(pk=run.pk).values().get()) == before


def test_resume_of_a_running_run_is_refused(team):
    run = Run.start("t-steps", {"n": 1}, actor="t")[0]
    with pytest.raises(IllegalTransition, match="it is queued"):
        run.resume(actor="t")


def test_a_terminal_run_cannot_be_saved(team, drive):
    run = drive(Run.start("t-steps", {"n": 1}, actor="t")[0].pk)
    run.status = RunStatus.RUNNING
    with pytest.raises(TerminalRunError):
        run.save()
    assert Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED


def test_events_cannot_be_changed_or_deleted(team):
    Run.start("t-steps", {"n": 1}, actor="t")
    event = Event.objects.first()
    event.kind = "forged"
    with pytest.raises(AuditImmutable):
        event.save()
    with pytest.raises(AuditImmutable):
        event.delete()
    with pytest.raises(AuditImmutable):
        Event.objects.update(kind="forged")
    with pytest.raises(AuditImmutable):
        Event.objects.all().delete()


def test_retry_of_a_failed_run_makes_a_new_run_with_earlier_checkpoints(team, drive):
    run = drive(Run.start("t-compensate", {"steps": 2, "then": "fail"}, actor="t")[0].pk)
    assert run.status == RunStatus.FAILED
    new = run.retry_from(3, actor="user:lead")
    assert new.pk != run.pk and new.parent_id == run.pk
    assert list(Step.objects.filter(run=new).values_list("name", flat=True)) == ["do 0", "do 1"]
    assert Run.objects.get(pk=run.pk).status == RunStatus.FAILED  # finished runs never change
    assert Event.objects.filter(kind="run.retried", data__new_run=str(new.pk)).exists()


def test_rewind_of_a_waiting_run_drops_later_checkpoints(team, drive):
    run = drive(Run.start("t-compensate", {"steps": 3}, actor="t")[0].pk)
    assert Step.objects.filter(run=run).count() == 4  # three steps and the pending wait
    run = run.retry_from(2, actor="user:lead")
    assert run.status == RunStatus.RUNNING
    assert list(Step.objects.filter(run=run).values_list("seq", flat=True)) == [1]
    run = drive(run.pk)
    assert run.status == RunStatus.WAITING
    assert Step.objects.filter(run=run).count() == 4


def test_signal_validates_its_name(team):
    run = Run.start("t-wait", actor="t")[0]
    with pytest.raises(Exception, match="1 to 200 characters"):
        run.signal("", actor="t")
