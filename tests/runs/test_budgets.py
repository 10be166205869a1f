"""Budgets stop a run within one step; deadlines and idle timeouts fire (time-machine)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from runs import sweeps
from runs.exceptions import BudgetInvalid, IllegalTransition
from runs.models import Event, Run, RunStatus, Step, Team, TeamDailySpend

pytestmark = [pytest.mark.engine, pytest.mark.django_db]


def test_cost_budget_pauses_within_one_step_and_resumes_after_a_raise(team, drive):
    run = Run.start("t-spend", {"n": 10, "usd": 0.1}, actor="test", budget={"usd": "0.35"})[0]
    run = drive(run.pk)
    assert run.status == RunStatus.PAUSED
    assert "cost budget reached" in run.pause_reason
    # Checked before every step: at most the one step that crossed the limit is spent.
    assert run.spent_usd == Decimal("0.4")
    assert run.spent_usd - run.limit_usd < Decimal("0.1")
    assert run.result == {"done": 4} and run.result_is_partial
    warning = Event.objects.get(run=run, kind="budget.warning")
    assert warning.data["budget"] == "usd" and warning.data["fraction"] >= 0.8
    paused = Event.objects.get(run=run, kind="run.paused")
    assert paused.data["by"] == "budget"

    with pytest.raises(IllegalTransition, match="raise the budget first"):
        run.resume(actor="user:lead")
    run = run.raise_budget(actor="user:lead", usd="5")
    assert run.limit_usd == Decimal("5")
    run = run.resume(actor="user:lead")
    run = drive(run.pk)
    assert run.status == RunStatus.SUCCEEDED
    assert run.spent_usd == Decimal("1.0")
    assert run.spent_tokens == 1000
    raised = Event.objects.get(run=run, kind="run.budget_raised")
    assert raised.actor == "user:lead"
    assert raised.data["limits"]["usd"]["to"] == "5.0000"


def test_action_budget_counts_steps(team, drive):
    run = Run.start("t-noop", {"n": 10}, actor="test", budget={"actions": 5})[0]
    run = drive(run.pk)
    assert run.status == RunStatus.PAUSED
    assert run.spent_actions == 5
    assert Step.objects.filter(run=run).count() == 5


def test_token_budget(team, drive):
    run = Run.start(
        "t-spend", {"n": 10, "usd": 0, "tokens": 100}, actor="t", budget={"tokens": 250}
    )[0]
    run = drive(run.pk)
    assert run.status == RunStatus.PAUSED and run.spent_tokens == 300


def test_wall_time_budget(team, drive, time_machine):
    time_machine.move_to(timezone.now())
    run = drive(
        Run.start("t-sleep", {"seconds": 120}, actor="t", budget={"wall_seconds": 60})[0].pk
    )
    assert run.status == RunStatus.WAITING
    time_machine.shift(timedelta(seconds=121))
    sweeps.wake_due_timers()
    run = drive(run.pk)
    assert run.status == RunStatus.PAUSED
    assert "wall time budget reached" in run.pause_reason


def test_team_daily_budget(team, drive):
    team.daily_usd_limit = Decimal("0.25")
    team.save()
    run = drive(Run.start("t-spend", {"n": 10, "usd": 0.1}, actor="t")[0].pk)
    assert run.status == RunStatus.PAUSED
    assert "team default daily budget reached" in run.pause_reason
    assert TeamDailySpend.objects.get(team=team).usd == Decimal("0.3")
    # Another run of the same team cannot start spending either.
    other = drive(Run.start("t-spend", {"n": 1}, actor="t")[0].pk)
    assert other.status == RunStatus.PAUSED and other.spent_usd == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"usd": "abc"}, "not a number"),
        ({"usd": "-1"}, "zero or more"),
        ({"tokens": "1.5"}, "whole number"),
        ({}, "at least one"),
        ({"usd": "0.01"}, "above what is already spent"),
    ],
)
def test_invalid_budget_raises_are_refused(team, drive, kwargs, message):
    run = drive(Run.start("t-spend", {"n": 10, "usd": 0.1}, actor="t", budget={"usd": 0.2})[0].pk)
    before = Event.objects.filter(run=run).count()
    with pytest.raises(BudgetInvalid, match=message):
        run.raise_budget(actor="t", **kwargs)
    assert Event.objects.filter(run=run).count() == before


def test_a_raise_cannot_lower_a_limit(team, drive):
    budget = {"usd": 5, "actions": 1}
    run = drive(Run.start("t-spend", {"n": 3, "usd": 0.1}, actor="t", budget=budget)[0].pk)
    assert run.status == RunStatus.PAUSED and run.spent_usd == Decimal("0.1")
    before = Event.objects.filter(run=run).count()
    # Above what is spent, yet below (or at) the current limit: not a raise.
    for lower in ("1", "5"):
        with pytest.raises(BudgetInvalid, match="above the current limit"):
            run.raise_budget(actor="t", usd=lower)
    run.refresh_from_db()
    assert run.limit_usd == Decimal("5") and Event.objects.filter(run=run).count() == before
    # A limit that was never set may be set to anything above what is spent.
    assert run.raise_budget(actor="t", tokens=10_000).limit_tokens == 10_000


def test_overall_deadline_times_out_and_compensates(team, drive, time_machine):
    time_machine.move_to(timezone.now())
    run = drive(Run.start("t-deadline", actor="t")[0].pk)
    assert run.status == RunStatus.WAITING
    assert sweeps.enforce_deadlines() == 0
    time_machine.shift(timedelta(seconds=3601))
    assert sweeps.enforce_deadlines() == 1
    run.refresh_from_db()
    assert run.stop_requested == "timeout" and run.status == RunStatus.RUNNING
    run = drive(run.pk)
    assert run.status == RunStatus.TIMED_OUT
    assert run.error["type"] == "DeadlineExceeded"
    assert Step.objects.filter(run=run, kind=Step.Kind.COMPENSATION).count() == 1
    assert Event.objects.filter(run=run, kind="run.deadline_passed").exists()


def test_idle_timeout_fires_for_a_stalled_run(team, drive, time_machine):
    time_machine.move_to(timezone.now())
    run = Run.start("t-deadline", actor="t")[0]
    # A worker took it and then made no progress at all.
    now = timezone.now()
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING,
        lease_owner="stuck",
        lease_expires_at=now + timedelta(hours=1),
        idle_deadline_at=now + timedelta(seconds=600),
    )
    assert sweeps.enforce_idle_timeouts() == 0
    time_machine.shift(timedelta(seconds=601))
    assert sweeps.enforce_idle_timeouts() == 1
    run.refresh_from_db()
    assert run.stop_requested == "timeout"
    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    run = drive(run.pk)
    assert run.status == RunStatus.TIMED_OUT


def test_step_deadline_takes_the_lease_from_a_hung_worker(team, time_machine):
    run = Run.start("t-steps", {"n": 1}, actor="t")[0]
    now = timezone.now()
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING,
        lease_owner="hung",
        lease_expires_at=now + timedelta(hours=1),
        step_deadline_at=now + timedelta(seconds=30),
    )
    assert sweeps.expire_step_deadlines() == 0
    time_machine.move_to(now + timedelta(seconds=31))
    assert sweeps.expire_step_deadlines() == 1
    run.refresh_from_db()
    assert run.lease_owner == "expired:hung" and run.lease_expires_at < timezone.now()


def test_team_spend_is_per_day(team):
    TeamDailySpend.charge(team.pk, usd=Decimal("1"), tokens=5, day=timezone.now().date())
    TeamDailySpend.charge(team.pk, usd=Decimal("2"), tokens=5, day=timezone.now().date())
    assert Team.objects.get(pk=team.pk).spent_today() == Decimal("3")


@pytest.mark.parametrize(
    "budget",
    [{"tokens": 2**64}, {"usd": "1e20"}, {"actions": 2**40}, {"wall_seconds": 2**31}],
)
def test_limits_larger_than_their_columns_are_refused(team, budget):
    with pytest.raises(BudgetInvalid, match="at most"):
        Run.start("t-steps", {"n": 1}, actor="t", budget=budget)
    assert not Run.objects.exists()


def test_wall_time_past_80_percent_is_warned_of_while_the_run_waits(team, drive, time_machine):
    """A run waiting on a signal takes no step, so no step notices its wall time: the
    deadlines sweep warns of it once, a raise below 80 % re-arms it, and a finished run is
    left alone."""
    time_machine.move_to(timezone.now(), tick=False)
    start = timezone.now()
    run = drive(Run.start("t-wait", {}, actor="t", budget={"wall_seconds": 100})[0].pk)
    assert run.status == RunStatus.WAITING and run.budget_warned == []
    assert run.wall_warn_at == run.started_at + timedelta(seconds=80)

    time_machine.move_to(start + timedelta(seconds=79))
    assert sweeps.warn_wall_time() == 0
    time_machine.move_to(start + timedelta(seconds=81))
    assert sweeps.warn_wall_time() == 1
    assert sweeps.warn_wall_time() == 0  # once
    run.refresh_from_db()
    assert run.budget_warned == ["wall_seconds"] and run.wall_warn_at is None
    warning = Event.objects.get(run=run, kind="budget.warning")
    assert warning.data == {"budget": "wall_seconds", "fraction": 0.81}
    assert warning.actor == sweeps.ACTOR

    # Raised to where 81 s is still past 80 % (100 s): it stays warned and is not re-armed.
    run = run.raise_budget(actor="t", wall_seconds=100 + 1)
    assert run.budget_warned == ["wall_seconds"] and run.wall_warn_at is None
    # Raised well clear of it: warned of again when the new 80 % comes.
    run = run.raise_budget(actor="t", wall_seconds=1000)
    assert run.budget_warned == [] and run.wall_warn_at == run.started_at + timedelta(seconds=800)
    time_machine.move_to(start + timedelta(seconds=801))
    assert sweeps.warn_wall_time() == 1
    assert Event.objects.filter(run=run, kind="budget.warning").count() == 2

    # A run that finished before its 80 % came is never warned of.
    done = drive(Run.start("t-noop", {}, actor="t", budget={"wall_seconds": 100})[0].pk)
    assert done.status == RunStatus.SUCCEEDED and done.wall_warn_at is not None
    time_machine.move_to(start + timedelta(seconds=2000))
    assert sweeps.warn_wall_time() == 0
    assert not Event.objects.filter(run=done, kind="budget.warning").exists()


def test_a_run_that_stops_shows_the_progress_it_reported_last(team, drive):
    """Progress writes are throttled to one a second; a quick run paused at its budget must
    still show where it got to, not the first step's figure."""
    run = drive(Run.start("t-steps", {"n": 50}, actor="t", budget={"actions": 7})[0].pk)
    assert run.status == RunStatus.PAUSED
    assert (run.progress["done"], run.progress["total"]) == (run.spent_actions, 50)
    assert run.spent_actions >= 7


def test_a_run_paused_before_it_started_is_warned_of_its_wall_time_too(team, drive):
    run = Run.start("t-wait", {}, actor="t", budget={"wall_seconds": 100})[0]
    run.pause(actor="t")
    run.refresh_from_db()
    assert run.status == RunStatus.PAUSED and run.started_at is None
    run.resume(actor="t")
    run = drive(run.pk)
    assert run.started_at is not None
    assert run.wall_warn_at == run.started_at + timedelta(seconds=80)


def test_a_failed_progress_write_never_takes_the_place_of_how_the_run_stopped(
    team, drive, monkeypatch
):
    from runs.context import Context
    from runs.exceptions import LedgerUnavailable

    def refused(self):
        raise LedgerUnavailable()

    monkeypatch.setattr(Context, "flush_progress", refused)
    run = drive(Run.start("t-wait", {}, actor="t")[0].pk)
    assert run.status == RunStatus.WAITING  # the wait, not a database error
