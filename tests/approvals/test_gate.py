"""The approval gate driven in-process the way a worker drives it (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals import sweeps
from approvals.exceptions import InvalidDecision, NotAllowed, NotPending
from approvals.models import ApprovalRequest, Decision
from runs.models import Event, Membership, Run, RunStatus, Step, WaitKind
from tests.approvals.support import make_reviewers, start_gated
from tests.testapp.models import Effect

pytestmark = [pytest.mark.engine, pytest.mark.django_db]
Status = ApprovalRequest.Status


@pytest.fixture
def people(team, other_team):
    return make_reviewers(team, other_team)


def kinds(run: Run) -> list[str]:
    return list(Event.objects.filter(run=run).order_by("id").values_list("kind", flat=True))


def test_the_gate_suspends_without_holding_a_worker(people):
    run, request = start_gated(people.owner)
    assert run.status == RunStatus.WAITING
    assert (run.wait_kind, run.waiting_for) == (WaitKind.APPROVAL, "publish")
    assert run.lease_owner == "" and run.rung_at is None
    assert request.status == Status.PENDING and request.requested_by == people.owner
    assert request.payload == {"title": "Weekly report", "to": "all@example.com"}
    assert "approval.requested" in kinds(run)
    step = Step.objects.get(run=run, seq=1)
    assert (step.kind, step.status) == (Step.Kind.APPROVAL, Step.Status.PENDING)


def test_approval_wakes_the_run_and_the_action_runs_once(people, drive):
    run, request = start_gated(people.owner)
    request.decide(people.alice, "approve", comment="ship it")
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.rung_at is not None  # woken, rung
    run = drive(run.pk)
    assert run.status == RunStatus.SUCCEEDED
    assert run.result["outcome"] == "approved"
    assert run.result["reviewers"] == ["alice"] and run.result["comment"] == "ship it"
    assert Effect.objects.get(run_id=str(run.pk)).calls == 1
    # Replaying the finished run's checkpoints returns the stored decision: nothing re-runs.
    assert Step.objects.get(run=run, seq=1).output["outcome"] == "approved"
    assert ["approval.decision", "approval.decided"] == [
        k for k in kinds(run) if k.startswith("approval.") and k != "approval.requested"
    ]


def test_rejection_is_an_answer_not_a_resume(people, drive):
    run, request = start_gated(people.owner)
    request.decide(people.bob, "reject", comment="wrong audience")
    run = drive(run.pk)
    assert run.status == RunStatus.SUCCEEDED
    assert run.result["outcome"] == "rejected" and run.result["comment"] == "wrong audience"
    assert not Effect.objects.filter(run_id=str(run.pk)).exists()


def test_request_changes_returns_the_comment_to_the_workflow(people, drive):
    run, request = start_gated(people.owner)
    request.decide(people.alice, "request_changes", comment="shorter title")
    run = drive(run.pk)
    assert run.result["outcome"] == "changes_requested"
    assert run.result["comment"] == "shorter title"


def test_reviewer_edits_reach_the_action_and_only_editable_fields(people, drive):
    run, request = start_gated(people.owner)
    with pytest.raises(InvalidDecision, match="not editable: to"):
        request.decide(people.alice, "approve", edits={"to": "evil@example.com"})
    with pytest.raises(InvalidDecision, match="edits go with an approval"):
        request.decide(people.alice, "reject", edits={"title": "x"})
    request.decide(people.alice, "approve", edits={"title": "Weekly report (final)"})
    run = drive(run.pk)
    assert run.result["title"] == "Weekly report (final)"
    assert Effect.objects.get(run_id=str(run.pk)).label == "Weekly report (final)"
    request.refresh_from_db()
    assert request.outcome["edits"] == {"title": "Weekly report (final)"}
    assert request.payload["title"] == "Weekly report"  # the proposal is kept as it was


def test_quorum_needs_distinct_reviewers(people, drive):
    run, request = start_gated(people.owner, {"quorum": 2})
    request.decide(people.alice, "approve")
    request.refresh_from_db()
    assert request.status == Status.PENDING
    with pytest.raises(NotAllowed, match="already"):
        request.decide(people.alice, "approve")
    assert Run.objects.get(pk=run.pk).status == RunStatus.WAITING
    request.decide(people.bob, "approve")
    run = drive(run.pk)
    assert run.status == RunStatus.SUCCEEDED
    assert sorted(run.result["reviewers"]) == ["alice", "bob"]


def test_separation_of_duties(people, team, drive):
    Membership.objects.filter(user=people.owner, team=team).update(role="admin")
    run, request = start_gated(people.owner)
    with pytest.raises(NotAllowed, match="separation of duties"):
        request.decide(people.owner, "approve")
    run, request = start_gated(people.owner, {"allow_self": True})
    request.decide(people.owner, "approve")
    assert drive(run.pk).result["outcome"] == "approved"


def test_permission_is_checked_at_the_moment_of_the_decision(people, team):
    _run, request = start_gated(people.owner)
    for who in (people.viewer, people.operator, people.outsider):
        with pytest.raises(NotAllowed, match="may not decide"):
            request.decide(who, "approve")
    Membership.objects.filter(user=people.alice, team=team).update(role="viewer")
    with pytest.raises(NotAllowed):
        request.decide(people.alice, "approve")
    assert not Decision.objects.exists()
    assert set(request.eligible_users()) == {people.bob, people.carol, people.lead}


def test_approvers_name_a_role_or_a_group(people):
    _run, request = start_gated(people.owner, {"approvers": ["group:leads"]})
    with pytest.raises(NotAllowed, match="for group:leads"):
        request.decide(people.alice, "approve")
    assert list(request.eligible_users()) == [people.lead]
    request.decide(people.lead, "approve")
    _run, request = start_gated(people.owner, {"approvers": ["role:admin"]})
    with pytest.raises(NotAllowed):
        request.decide(people.bob, "approve")
    request.decide(people.carol, "approve")


def test_bad_approvers_fail_the_run_clearly(people, drive):
    run = Run.start("t-approve", {"approvers": ["role:operator"]}, actor="t", user=people.owner)[0]
    run = drive(run.pk)
    assert run.status == RunStatus.FAILED
    assert "may not decide approvals" in str(run.error)


def test_the_first_outcome_stands(people):
    _run, request = start_gated(people.owner)
    request.decide(people.alice, "reject")
    with pytest.raises(NotPending, match="already rejected"):
        request.decide(people.bob, "approve")
    assert request.decisions.count() == 1


def test_the_same_message_decides_once(people):
    _run, request = start_gated(people.owner)
    first = request.decide(people.alice, "approve", channel="email", dedup_key="<m1@x>")
    again = request.decide(people.alice, "approve", channel="email", dedup_key="<m1@x>")
    assert first.pk == again.pk and request.decisions.count() == 1


def test_decisions_are_history(people):
    _run, request = start_gated(people.owner)
    decision = request.decide(people.alice, "approve")
    decision.comment = "rewritten"
    with pytest.raises(ValueError, match="history"):
        decision.save()
    with pytest.raises(ValueError, match="history"):
        decision.delete()


def test_cancel_while_waiting_cancels_the_request(people, drive):
    run, request = start_gated(people.owner)
    run.cancel(actor="user:owner")
    request.refresh_from_db()
    assert request.status == Status.CANCELLED
    with pytest.raises(NotPending, match="cancelled"):
        request.decide(people.alice, "approve")
    run = drive(run.pk)
    assert run.status == RunStatus.CANCELLED
    assert not Effect.objects.filter(run_id=str(run.pk)).exists()


def test_deadline_rejects_by_default(people, drive, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    run, request = start_gated(people.owner, {"deadline": 3600})
    assert request.remind_at == request.deadline_at - timedelta(minutes=15)
    time_machine.shift(timedelta(minutes=59))
    # (nobody here has an email address: the unsent sweep finds nobody to email)
    assert sweeps.sweep() == {"escalated": 0, "timed_out": 0, "reminded": 1, "emailed": 0}
    assert sweeps.sweep()["reminded"] == 0  # once
    time_machine.shift(timedelta(minutes=2))
    assert sweeps.sweep()["timed_out"] == 1
    run = drive(run.pk)
    assert run.result["outcome"] == "expired" and run.result["timed_out"] is True
    assert {"approval.reminder", "approval.expired"} <= set(kinds(run))
    with pytest.raises(NotPending):
        request.decide(people.alice, "approve")


def test_deadline_may_approve(people, drive, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    run, _request = start_gated(people.owner, {"deadline": 60, "on_timeout": "approve"})
    time_machine.shift(timedelta(seconds=61))
    sweeps.sweep()
    run = drive(run.pk)
    assert run.result["outcome"] == "approved" and run.result["timed_out"] is True
    assert Effect.objects.filter(run_id=str(run.pk)).count() == 1


def test_deadline_may_fail_the_run(people, drive, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    run, _request = start_gated(people.owner, {"deadline": 60, "on_timeout": "fail"})
    time_machine.shift(timedelta(seconds=61))
    sweeps.sweep()
    run = drive(run.pk)
    assert run.status == RunStatus.FAILED
    assert "before its deadline" in str(run.error)


def test_deadline_may_escalate_then_reject(people, drive, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    data = {"deadline": 600, "on_timeout": "escalate", "escalate_to": ["group:leads"]}
    data["approvers"] = ["role:admin"]
    run, request = start_gated(people.owner, data)
    with pytest.raises(NotAllowed):
        request.decide(people.lead, "approve")
    time_machine.shift(timedelta(seconds=601))
    assert sweeps.sweep()["timed_out"] == 1  # escalated, with a new deadline
    request.refresh_from_db()
    assert request.status == Status.PENDING and request.escalated_at is not None
    assert request.deadline_at > timezone.now()
    assert "approval.escalated" in kinds(run)
    time_machine.shift(timedelta(seconds=601))
    sweeps.sweep()
    assert drive(run.pk).result["outcome"] == "expired"


def test_escalation_after_a_set_time_adds_the_second_group(people, drive, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    data = {"approvers": ["role:admin"], "escalate_to": ["group:leads"], "escalate_after": 300}
    run, request = start_gated(people.owner, data)
    time_machine.shift(timedelta(seconds=299))
    assert sweeps.sweep()["escalated"] == 0
    time_machine.shift(timedelta(seconds=2))
    assert sweeps.sweep()["escalated"] == 1
    assert sweeps.sweep()["escalated"] == 0
    request.refresh_from_db()
    request.decide(people.lead, "approve")
    assert drive(run.pk).result["reviewers"] == ["lead"]


def test_a_step_that_requires_approval_cannot_run_without_one(people, drive):
    run, request = start_gated(people.owner, workflow="t-gated-step")
    assert request.name == "approve delete" and request.payload["step"] == "delete"
    assert not Effect.objects.exists()
    request.decide(people.alice, "reject", comment="no")
    run = drive(run.pk)
    assert run.status == RunStatus.FAILED
    assert "was not approved (rejected): no" in str(run.error)
    assert not Effect.objects.exists()

    run, request = start_gated(people.owner, workflow="t-gated-step")
    request.decide(people.alice, "approve")
    run = drive(run.pk)
    assert run.status == RunStatus.SUCCEEDED
    assert Effect.objects.get(run_id=str(run.pk)).calls == 1


def test_a_decision_landing_just_before_the_run_waits_is_not_lost(people, drive, monkeypatch):
    """The worker reads the request (pending), a reviewer decides, then the worker suspends:
    the engine's check under the run's lock keeps the run runnable."""
    from approvals import gate

    real = gate.ApprovalRequest.objects.get
    state = {"decided": False}

    def get_then_decide(*args, **kwargs):
        request = real(*args, **kwargs)
        if not state["decided"]:
            state["decided"] = True
            real(pk=request.pk).decide(people.alice, "approve")
        return request

    run = Run.start("t-approve", {}, actor="t", user=people.owner)[0]
    monkeypatch.setattr(gate.ApprovalRequest.objects, "get", get_then_decide)
    run = drive(run.pk)
    assert run.status == RunStatus.SUCCEEDED and run.result["outcome"] == "approved"
