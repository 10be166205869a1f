"""The engine driven in-process, the way a worker drives it (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from runs import engine, sweeps
from runs.models import CircuitBreaker, Event, Run, RunStatus, Step, StepAttempt, WaitKind
from tests.testapp.models import Effect
from tests.testapp.workflows import SWITCHES

pytestmark = [pytest.mark.engine, pytest.mark.django_db]


def start(workflow: str, data: dict | None = None, **kw) -> Run:
    return Run.start(workflow, data or {}, actor="test", **kw)[0]


def kinds(run: Run) -> list[str]:
    return list(Event.objects.filter(run=run).order_by("id").values_list("kind", flat=True))


def wake_due(time_machine, run: Run) -> None:
    run.refresh_from_db()
    assert run.wake_at is not None
    time_machine.move_to(run.wake_at + timedelta(milliseconds=5))
    assert sweeps.wake_due_timers() >= 1


def test_steps_checkpoint_and_side_effects_apply_once(team, drive):
    run = drive(start("t-steps", {"n": 4}).pk)
    assert run.status == RunStatus.SUCCEEDED
    assert run.result == {"keys": 4}
    assert list(run.steps.values_list("seq", flat=True)) == [1, 2, 3, 4]
    effects = Effect.objects.filter(run_id=str(run.pk))
    assert sorted(effects.values_list("key", flat=True)) == [f"{run.pk}:{i}" for i in (1, 2, 3, 4)]
    assert set(effects.values_list("calls", flat=True)) == {1}
    assert run.spent_actions == 4
    assert kinds(run)[:2] == ["run.created", "run.started"]
    assert kinds(run)[-1] == "run.succeeded"
    assert run.lease_owner == "" and run.lease_expires_at is None


def test_replay_returns_checkpoints_without_running_steps_again(team, drive):
    run = drive(start("t-compensate", {"steps": 3}).pk)
    assert run.status == RunStatus.WAITING and run.wait_kind == WaitKind.EVENT
    run.signal("go", {"ok": 1}, actor="test")
    run = drive(run.pk)
    assert run.status == RunStatus.SUCCEEDED
    # Three "do" steps ran on the first drive; the second drive replayed them.
    assert set(Effect.objects.filter(run_id=str(run.pk)).values_list("calls", flat=True)) == {1}


def test_expired_lease_is_recovered_and_counted(team, drive):
    run = start("t-steps", {"n": 2})
    # A worker took the run and died: its lease is in the past.
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING,
        lease_owner="dead-worker",
        lease_expires_at=timezone.now() - timedelta(seconds=1),
    )
    assert engine.drive(run.pk) == "succeeded"
    run.refresh_from_db()
    assert run.recoveries == 1
    recovered = Event.objects.get(run=run, kind="run.recovered")
    assert recovered.data["previous_worker"] == "dead-worker"


def test_a_held_lease_is_not_taken(team):
    run = start("t-steps", {"n": 1})
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING,
        lease_owner="live-worker",
        lease_expires_at=timezone.now() + timedelta(seconds=30),
    )
    assert engine.drive(run.pk) == "skipped"
    assert not Step.objects.filter(run=run).exists()


def test_retryable_errors_back_off_on_durable_timers(team, drive, time_machine):
    run = drive(start("t-flaky", {"fail_times": 2}).pk)
    assert run.status == RunStatus.WAITING and run.wait_kind == WaitKind.RETRY
    assert run.wake_at is not None
    attempts = StepAttempt.objects.filter(run=run)
    assert attempts.count() == 1 and attempts[0].outcome == StepAttempt.Outcome.RETRYABLE
    wake_due(time_machine, run)
    run = drive(run.pk)
    assert run.status == RunStatus.WAITING
    wake_due(time_machine, run)
    run = drive(run.pk)
    assert run.status == RunStatus.SUCCEEDED
    assert run.result == "ok on attempt 3"
    assert Step.objects.get(run=run).attempts == 3
    assert StepAttempt.objects.filter(run=run).count() == 2
    assert kinds(run).count("step.attempt_failed") == 2


def test_permanent_errors_do_not_retry(team, drive):
    run = drive(start("t-flaky", {"fail_times": 1, "kind": "permanent"}).pk)
    assert run.status == RunStatus.FAILED
    assert run.error["type"] == "PermanentError"
    assert run.error["step"] == "flaky"
    assert StepAttempt.objects.get(run=run).outcome == StepAttempt.Outcome.PERMANENT


def test_retries_are_bounded_by_the_policy(team, drive, time_machine):
    run = drive(start("t-flaky", {"fail_times": 10, "max_attempts": 2}).pk)
    wake_due(time_machine, run)
    run = drive(run.pk)
    assert run.status == RunStatus.FAILED
    outcomes = list(StepAttempt.objects.filter(run=run).values_list("outcome", flat=True))
    assert outcomes == [StepAttempt.Outcome.RETRYABLE, StepAttempt.Outcome.EXHAUSTED]


def test_step_timeout_is_a_retryable_failure(team, drive, time_machine):
    run = drive(start("t-timeout").pk)
    assert run.status == RunStatus.WAITING
    first = StepAttempt.objects.get(run=run)
    assert first.outcome == StepAttempt.Outcome.TIMEOUT
    assert "did not finish within 0.2s" in first.error["message"]
    wake_due(time_machine, run)
    run = drive(run.pk)
    assert run.status == RunStatus.FAILED
    assert run.error["type"] == "StepTimeout"


def test_open_circuit_parks_the_run_without_burning_attempts(team, drive, time_machine):
    CircuitBreaker.objects.create(service="t-svc", failure_threshold=2, cooldown_seconds=60)
    run = drive(start("t-breaker").pk)  # attempt 1 fails
    wake_due(time_machine, run)
    run = drive(run.pk)  # attempt 2 fails and opens the circuit
    breaker = CircuitBreaker.objects.get(service="t-svc")
    assert breaker.state == CircuitBreaker.State.OPEN
    assert Event.objects.filter(kind="circuit.opened", chain="circuit:t-svc").exists()
    wake_due(time_machine, run)
    run = drive(run.pk)  # the circuit is open: park, no third attempt
    assert run.status == RunStatus.WAITING and run.wait_kind == WaitKind.CIRCUIT
    assert StepAttempt.objects.filter(run=run).count() == 2
    assert run.wake_at == breaker.opened_until
    # Another run of the same service parks at once, without any attempt.
    other = drive(start("t-breaker").pk)
    assert other.wait_kind == WaitKind.CIRCUIT
    assert not StepAttempt.objects.filter(run=other).exists()


def test_fallback_runs_when_the_circuit_is_open(team, drive):
    CircuitBreaker.objects.create(
        service="t-svc",
        state=CircuitBreaker.State.OPEN,
        opened_until=timezone.now() + timedelta(minutes=5),
    )
    run = drive(start("t-breaker", {"fallback": True}).pk)
    assert run.status == RunStatus.SUCCEEDED
    assert run.result == "from backup"
    assert Step.objects.get(run=run).via_fallback is True


def test_fallback_runs_when_retries_are_exhausted(team, drive, time_machine):
    run = drive(start("t-breaker", {"fallback": True}).pk)
    for _ in range(2):
        wake_due(time_machine, run)
        run = drive(run.pk)
    assert run.status == RunStatus.SUCCEEDED
    assert run.result == "from backup"
    outcomes = list(StepAttempt.objects.filter(run=run).values_list("outcome", flat=True))
    assert outcomes[-1] == StepAttempt.Outcome.EXHAUSTED


def test_half_open_circuit_closes_after_a_successful_trial(team, drive, time_machine):
    CircuitBreaker.objects.create(
        service="t-svc",
        state=CircuitBreaker.State.OPEN,
        opened_until=timezone.now() - timedelta(seconds=1),
        consecutive_failures=5,
    )
    from runs import breaker

    assert breaker.blocked_until("t-svc") is None  # this caller won the trial
    assert breaker.blocked_until("t-svc") is not None  # others wait for it
    breaker.record_success("t-svc")
    assert CircuitBreaker.objects.get(service="t-svc").state == CircuitBreaker.State.CLOSED


def test_replay_with_a_different_step_name_is_a_clear_nondeterminism_error(
    team, drive, time_machine
):
    SWITCHES.pop("second_name", None)
    run = drive(start("t-nondet").pk)
    assert run.status == RunStatus.WAITING
    SWITCHES["second_name"] = "renamed"
    try:
        wake_due(time_machine, run)
        run = drive(run.pk)
    finally:
        SWITCHES.pop("second_name", None)
    assert run.status == RunStatus.FAILED
    assert run.error["type"] == "NonDeterminismError"
    assert "step 2" in run.error["message"]
    assert "'second'" in run.error["message"] and "'renamed'" in run.error["message"]


def test_step_output_that_is_not_json_fails_clearly(team, drive):
    run = drive(start("t-bad-output").pk)
    assert run.status == RunStatus.FAILED
    assert run.error["type"] == "StepOutputError"
    assert "cannot be stored as JSON" in run.error["message"]
    assert "Opaque" in run.error["message"]


def test_secrets_are_redacted_before_they_are_stored(team, drive):
    run = Run.start("t-steps", {"n": 0}, actor="test")[0]
    run = drive(start("t-secret").pk)
    assert run.result == {"api_key": "[redacted]", "tokens": 5, "ok": True}
    stored = Step.objects.get(run=run).output
    assert stored["api_key"] == "[redacted]"


def test_durable_sleep_holds_no_lease_and_wakes_when_due(team, drive, time_machine):
    run = drive(start("t-sleep", {"seconds": 3600}).pk)
    assert run.status == RunStatus.WAITING and run.wait_kind == WaitKind.TIMER
    assert run.lease_owner == "" and run.lease_expires_at is None
    assert sweeps.wake_due_timers() == 0  # not due yet
    wake_due(time_machine, run)
    run = drive(run.pk)
    assert run.status == RunStatus.SUCCEEDED
    sleep_step = Step.objects.get(run=run, kind=Step.Kind.SLEEP)
    assert sleep_step.status == Step.Status.COMPLETED


def test_signal_wakes_a_waiting_run_once(team, drive):
    run = drive(start("t-wait").pk)
    assert run.status == RunStatus.WAITING and run.waiting_for == "go"
    assert run.signal("go", {"n": 1}, actor="test", dedup_key="k1") is True
    assert run.signal("go", {"n": 1}, actor="test", dedup_key="k1") is False
    run = drive(run.pk)
    assert run.status == RunStatus.SUCCEEDED
    assert run.result == {"payload": {"n": 1}}


def test_signal_sent_before_the_wait_is_kept(team, drive):
    run = start("t-wait")
    run.signal("go", "early", actor="test")
    run = drive(run.pk)
    assert run.status == RunStatus.SUCCEEDED
    assert run.result == {"payload": "early"}


def test_wait_for_event_times_out(team, drive, time_machine):
    run = drive(start("t-wait", {"timeout": 60}).pk)
    wake_due(time_machine, run)
    run = drive(run.pk)
    assert run.status == RunStatus.SUCCEEDED
    assert run.result == {"payload": None}


def test_cancel_runs_compensations_in_reverse_order(team, drive):
    run = drive(start("t-compensate", {"steps": 3}).pk)
    run.cancel(actor="user:lead")
    run = drive(run.pk)
    assert run.status == RunStatus.CANCELLED
    undone = list(Effect.objects.filter(label="undo").order_by("id").values_list("key", flat=True))
    assert undone == [f"undo:{run.pk}:do{i}" for i in (2, 1, 0)]
    events = kinds(run)
    assert "run.cancel_requested" in events and events[-1] == "run.cancelled"
    assert Event.objects.get(run=run, kind="run.cancel_requested").actor == "user:lead"


def test_failure_runs_compensations(team, drive):
    run = drive(start("t-compensate", {"steps": 2, "then": "fail"}).pk)
    assert run.status == RunStatus.FAILED
    assert Effect.objects.filter(label="undo").count() == 2


def test_cancel_of_a_queued_run_finishes_it(team, drive):
    run = start("t-steps", {"n": 3})
    run.cancel(actor="test")
    run = drive(run.pk)
    assert run.status == RunStatus.CANCELLED
    assert not Step.objects.filter(run=run).exists()


def test_pause_and_resume(team, drive):
    run = drive(start("t-sleep", {"seconds": 3600}).pk)
    run = run.pause(actor="user:lead")
    assert run.status == RunStatus.PAUSED and "user:lead" in run.pause_reason
    run = run.resume(actor="user:lead")
    assert run.status == RunStatus.RUNNING
    run = drive(run.pk)
    # Replay reaches the same sleep, which is still not due: waiting again, same wake time.
    assert run.status == RunStatus.WAITING and run.wait_kind == WaitKind.TIMER


def test_pause_of_a_held_run_takes_effect_at_the_next_step(team, drive):
    run = start("t-steps", {"n": 3})
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING,
        lease_owner="busy-worker",
        lease_expires_at=timezone.now() + timedelta(seconds=30),
    )
    run = run.pause(actor="test")
    assert run.status == RunStatus.RUNNING and run.pause_requested
    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    run = drive(run.pk)
    assert run.status == RunStatus.PAUSED
    assert not Step.objects.filter(run=run).exists()


def test_an_operator_event_during_a_step_does_not_break_the_chain(team, drive):
    run = drive(start("t-interleave").pk)
    assert run.status == RunStatus.SUCCEEDED
    from runs.audit import verify_chain

    assert verify_chain(str(run.pk)).broken_at is None
    events = kinds(run)
    assert events.index("run.budget_raised") < events.index("run.succeeded")
    assert events.count("step.completed") == 3
