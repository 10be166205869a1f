"""Django admin: every model's pages load, runs change only through their operations (each
with its own guarded transition and event), events cannot be touched, agent data is escaped."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import SUCCESS, WARNING
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from runs import admin as runs_admin
from runs.models import (
    CircuitBreaker,
    Event,
    IdempotencyKey,
    Membership,
    Run,
    RunStatus,
    Signal,
    Step,
    StepAttempt,
    Team,
    TeamDailySpend,
)

pytestmark = [pytest.mark.engine, pytest.mark.django_db]

RUNS_CHANGELIST = "admin:runs_run_changelist"


def start(workflow: str, data: dict[str, Any] | None = None, **kw: Any) -> Run:
    return Run.start(workflow, data or {}, actor="test", **kw)[0]


def url(model: type, view: str, *args: Any) -> str:
    return reverse(f"admin:runs_{model._meta.model_name}_{view}", args=args)


def messages_of(response: Any) -> list[tuple[int, str]]:
    return [(m.level, str(m)) for m in response.context["messages"]]


def act(client: Client, action: str, runs: list[Run]) -> list[tuple[int, str]]:
    """POST a changelist action on ``runs``; the messages it reported."""
    response = client.post(
        reverse(RUNS_CHANGELIST),
        {"action": action, "_selected_action": [str(r.pk) for r in runs]},
        follow=True,
    )
    assert response.status_code == 200
    return messages_of(response)


@dataclass
class Ledger:
    """One row of every model."""

    waiting: Run  # t-sleep, driven onto its timer
    queued: Run  # t-sleep with an idempotency key, never driven
    succeeded: Run  # t-wait, signalled and finished; result holds the signal's payload
    flaky: Run  # t-flaky, with a failed attempt, waiting for its retry


@pytest.fixture
def ledger(team: Team, drive: Any, admin_user: User) -> Ledger:
    Membership.objects.create(user=admin_user, team=team, role=Membership.Role.ADMIN)
    TeamDailySpend.charge(team.pk, usd=Decimal("0.25"), tokens=100, day=timezone.now().date())
    CircuitBreaker.objects.create(service="svc", state=CircuitBreaker.State.OPEN)
    waiting = drive(start("t-sleep", {"seconds": 60}).pk)
    assert waiting.status == RunStatus.WAITING
    queued = start("t-sleep", {"seconds": 60}, idempotency_key="key-123")
    succeeded = drive(start("t-wait").pk)
    succeeded.signal("go", {"html": "<script>alert(1)</script>"}, actor="test")
    succeeded = drive(succeeded.pk)
    assert succeeded.status == RunStatus.SUCCEEDED
    flaky = drive(start("t-flaky", {"fail_times": 1}).pk)
    assert StepAttempt.objects.filter(run=flaky).exists()
    return Ledger(waiting=waiting, queued=queued, succeeded=succeeded, flaky=flaky)


# --- every page loads -----------------------------------------------------------------------
MODELS = [
    Team,
    Membership,
    TeamDailySpend,
    Run,
    Step,
    StepAttempt,
    Signal,
    IdempotencyKey,
    CircuitBreaker,
    Event,
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_changelist_and_change_page_load(admin_client: Client, ledger: Ledger, model: type) -> None:
    assert admin_client.get(url(model, "changelist")).status_code == 200
    obj = model.objects.order_by("pk").first()
    assert obj is not None, f"the fixture made no {model.__name__}"
    assert admin_client.get(url(model, "change", obj.pk)).status_code == 200


def test_run_page_shows_inlines_budget_and_escaped_agent_output(
    admin_client: Client, ledger: Ledger
) -> None:
    body = admin_client.get(url(Run, "change", ledger.succeeded.pk)).content.decode()
    # Agent output is untrusted: shown, escaped, never as markup.
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "Finished runs never change." in body
    assert 'name="_save"' not in body
    assert "before" in body  # the step inline
    body = admin_client.get(url(Run, "change", ledger.flaky.pk)).content.decode()
    assert "transient failure on attempt 1" in body  # the failed-attempt inline
    assert "$0.0000 / —" in body  # budget: spent / limit


def _listed(client: Client, params: dict[str, str]) -> set[Any]:
    response = client.get(reverse(RUNS_CHANGELIST), params)
    assert response.status_code == 200
    return {r.pk for r in response.context["cl"].result_list}


def test_run_search_by_id_workflow_and_idempotency_key(
    admin_client: Client, ledger: Ledger
) -> None:
    queued = ledger.queued.pk
    assert _listed(admin_client, {"q": str(queued)}) == {queued}
    assert _listed(admin_client, {"q": str(queued)[:8]}) == {queued}
    assert _listed(admin_client, {"q": "key-123"}) == {queued}
    assert _listed(admin_client, {"q": "t-flaky"}) == {ledger.flaky.pk}


def test_run_filters(admin_client: Client, ledger: Ledger, team: Team) -> None:
    everything = {ledger.waiting.pk, ledger.queued.pk, ledger.succeeded.pk, ledger.flaky.pk}
    assert _listed(admin_client, {"status__exact": "succeeded"}) == {ledger.succeeded.pk}
    assert _listed(admin_client, {"status__exact": "queued"}) == {ledger.queued.pk}
    assert _listed(admin_client, {"workflow__exact": "t-wait"}) == {ledger.succeeded.pk}
    assert _listed(admin_client, {"team__id__exact": str(team.pk)}) == everything
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    assert _listed(admin_client, {"created_at__year": str(today.year)}) == everything
    since = {"created_at__gte": str(today), "created_at__lt": str(today + timedelta(days=1))}
    assert _listed(admin_client, since) == everything


def test_step_changelist_filters_by_run(admin_client: Client, ledger: Ledger) -> None:
    response = admin_client.get(url(Step, "changelist"), {"run__id__exact": str(ledger.waiting.pk)})
    assert response.status_code == 200
    assert {s.run_id for s in response.context["cl"].result_list} == {ledger.waiting.pk}


# --- nothing is added, changed or deleted where the engine alone writes ----------------------
def test_events_cannot_be_added_changed_or_deleted(admin_client: Client, ledger: Ledger) -> None:
    event = Event.objects.order_by("id").first()
    assert event is not None
    page = admin_client.get(url(Event, "change", event.pk))
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    response = admin_client.post(url(Event, "change", event.pk), {"kind": "forged", "actor": "x"})
    assert response.status_code == 403
    assert admin_client.get(url(Event, "delete", event.pk)).status_code == 403
    assert admin_client.post(url(Event, "delete", event.pk), {"post": "yes"}).status_code == 403
    assert admin_client.get(url(Event, "add")).status_code == 403
    changelist = admin_client.get(url(Event, "changelist")).content.decode()
    assert "delete_selected" not in changelist
    again = Event.objects.get(pk=event.pk)
    assert (again.kind, again.actor, again.hash) == (event.kind, event.actor, event.hash)


def test_runs_cannot_be_added_edited_or_deleted(admin_client: Client, ledger: Ledger) -> None:
    run = ledger.waiting
    assert admin_client.get(url(Run, "add")).status_code == 403
    response = admin_client.post(url(Run, "change", run.pk), {"workflow": "forged"})
    assert response.status_code == 403
    assert admin_client.post(url(Run, "delete", run.pk), {"post": "yes"}).status_code == 403
    assert "delete_selected" not in admin_client.get(reverse(RUNS_CHANGELIST)).content.decode()
    assert Run.objects.get(pk=run.pk).workflow == "t-sleep"


@pytest.mark.parametrize("model", [Step, StepAttempt, Signal, IdempotencyKey, TeamDailySpend])
def test_engine_rows_are_view_only(admin_client: Client, ledger: Ledger, model: type) -> None:
    obj = model.objects.order_by("pk").first()
    assert 'name="_save"' not in admin_client.get(url(model, "change", obj.pk)).content.decode()
    assert admin_client.post(url(model, "change", obj.pk), {}).status_code == 403
    assert admin_client.get(url(model, "add")).status_code == 403
    assert admin_client.post(url(model, "delete", obj.pk), {"post": "yes"}).status_code == 403


# --- bulk operations: each run its own guarded transition and event --------------------------
def admin_events(run: Run, kind: str, user: User) -> int:
    return Event.objects.filter(
        run=run, kind=kind, actor=f"admin:{user.username}", actor_user_id=user.pk
    ).count()


def test_bulk_cancel(admin_client: Client, admin_user: User, ledger: Ledger) -> None:
    msgs = act(admin_client, "cancel_runs", [ledger.waiting, ledger.queued])
    assert msgs == [(SUCCESS, "Cancellation requested for 2 runs.")]
    for run in (ledger.waiting, ledger.queued):
        run.refresh_from_db()
        assert run.stop_requested == "cancel"
        assert admin_events(run, "run.cancel_requested", admin_user) == 1
    assert ledger.waiting.status == RunStatus.RUNNING  # made runnable to run compensations


def test_bulk_pause_then_resume(admin_client: Client, admin_user: User, ledger: Ledger) -> None:
    runs = [ledger.waiting, ledger.queued]
    assert act(admin_client, "pause_runs", runs) == [(SUCCESS, "Paused 2 runs.")]
    for run in runs:
        run.refresh_from_db()
        assert run.status == RunStatus.PAUSED
        assert run.pause_reason == f"paused by admin:{admin_user.username}"
        assert admin_events(run, "run.paused", admin_user) == 1
    assert act(admin_client, "resume_runs", runs) == [(SUCCESS, "Resumed 2 runs.")]
    for run in runs:
        run.refresh_from_db()
        assert run.status == RunStatus.RUNNING and run.pause_reason == ""
        assert admin_events(run, "run.resumed", admin_user) == 1


def test_resume_of_queued_and_succeeded_runs_reports_failures_and_changes_nothing(
    admin_client: Client, admin_user: User, ledger: Ledger
) -> None:
    ledger.waiting.pause(actor="test")
    refused = [ledger.queued, ledger.succeeded]
    before = {r.pk: (r.status, Event.objects.filter(run=r).count()) for r in refused}
    msgs = act(admin_client, "resume_runs", [ledger.waiting, *refused])
    assert msgs[0] == (SUCCESS, "Resumed 1 run.")
    level, text = msgs[1]
    assert level == WARNING
    assert text.startswith("Could not resume 2 runs: ")
    assert f"cannot resume run {ledger.queued.pk}: it is queued" in text
    assert f"cannot resume run {ledger.succeeded.pk}: it is succeeded" in text
    after = {
        r.pk: (Run.objects.get(pk=r.pk).status, Event.objects.filter(run=r).count())
        for r in refused
    }
    assert after == before
    assert not Event.objects.filter(kind="run.resumed", run__in=refused).exists()


def test_cancel_of_a_finished_run_is_refused(admin_client: Client, ledger: Ledger) -> None:
    msgs = act(admin_client, "cancel_runs", [ledger.succeeded])
    assert msgs == [
        (
            WARNING,
            f"Could not cancel 1 run: cannot cancel run {ledger.succeeded.pk}: it is succeeded",
        )
    ]
    assert Run.objects.get(pk=ledger.succeeded.pk).stop_requested == ""


def test_pause_of_a_run_a_worker_holds_is_requested_for_its_next_step(
    admin_client: Client, admin_user: User, ledger: Ledger
) -> None:
    run = ledger.waiting
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING,
        lease_owner="worker-1",
        lease_expires_at=timezone.now() + timedelta(seconds=30),
    )
    msgs = act(admin_client, "pause_runs", [run])
    assert msgs == [(SUCCESS, "Pause requested (at the next step boundary) for 1 run.")]
    run.refresh_from_db()
    assert (run.status, run.pause_requested) == (RunStatus.RUNNING, True)
    assert admin_events(run, "run.pause_requested", admin_user) == 1


# --- one operation from the run's own page ----------------------------------------------------
def test_operation_buttons_on_the_change_page(
    admin_client: Client, admin_user: User, ledger: Ledger
) -> None:
    run = ledger.waiting
    body = admin_client.get(url(Run, "change", run.pk)).content.decode()
    assert url(Run, "operate", run.pk, "pause") in body and "Resume run" not in body
    assert admin_client.get(url(Run, "operate", run.pk, "pause")).status_code == 405
    response = admin_client.post(url(Run, "operate", run.pk, "pause"), follow=True)
    assert response.redirect_chain[-1][0] == url(Run, "change", run.pk)
    assert messages_of(response) == [(SUCCESS, "Paused 1 run.")]
    assert Run.objects.get(pk=run.pk).status == RunStatus.PAUSED
    assert admin_events(run, "run.paused", admin_user) == 1
    assert "Resume run" in response.content.decode()
    assert admin_client.post(url(Run, "operate", run.pk, "delete")).status_code == 403


def test_view_only_staff_get_no_operations(client: Client, ledger: Ledger) -> None:
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_run"))
    client.force_login(viewer)
    page = client.get(reverse(RUNS_CHANGELIST))
    assert page.status_code == 200
    assert "cancel_runs" not in page.content.decode()
    act_response = client.post(
        reverse(RUNS_CHANGELIST),
        {"action": "cancel_runs", "_selected_action": [str(ledger.waiting.pk)]},
    )
    assert act_response.status_code in (200, 302)
    assert client.post(url(Run, "operate", ledger.waiting.pk, "cancel")).status_code == 403
    assert Run.objects.get(pk=ledger.waiting.pk).stop_requested == ""


def test_run_page_shows_at_most_the_newest_steps(
    admin_client: Client, team: Team, drive: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runs_admin, "INLINE_LIMIT", 2)
    run = drive(start("t-noop", {"n": 5}).pk)
    assert run.status == RunStatus.SUCCEEDED and run.steps.count() == 5
    response = admin_client.get(url(Run, "change", run.pk))
    steps = next(f for f in response.context["inline_admin_formsets"] if f.opts.model is Step)
    assert [form.original.seq for form in steps] == [5, 4]


# --- teams ---------------------------------------------------------------------------------------
def test_team_limit_change_is_audited(admin_client: Client, admin_user: User, team: Team) -> None:
    membership = Membership.objects.create(user=admin_user, team=team)
    prefix = "membership_set"
    response = admin_client.post(
        url(Team, "change", team.pk),
        {
            "slug": team.slug,
            "name": team.name,
            "daily_usd_limit": "12.50",
            f"{prefix}-TOTAL_FORMS": "1",
            f"{prefix}-INITIAL_FORMS": "1",
            f"{prefix}-0-id": str(membership.pk),
            f"{prefix}-0-team": str(team.pk),
            f"{prefix}-0-user": str(admin_user.pk),
            f"{prefix}-0-role": "operator",
        },
    )
    assert response.status_code == 302
    team.refresh_from_db()
    assert team.daily_usd_limit == Decimal("12.5")
    assert Membership.objects.get(pk=membership.pk).role == "operator"
    event = Event.objects.get(kind="team.changed")
    assert (event.team_id, event.actor) == (team.pk, f"admin:{admin_user.username}")
    assert event.data == {"fields": {"daily_usd_limit": "12.50"}}


# --- circuit breakers ---------------------------------------------------------------------------
def test_breaker_tuning_writes_only_the_tuned_columns(
    admin_client: Client, admin_user: User, ledger: Ledger
) -> None:
    breaker = CircuitBreaker.objects.get(service="svc")
    page = admin_client.get(url(CircuitBreaker, "change", "svc"))
    assert page.status_code == 200
    # A worker changes the state while the admin has the form open: saving must not undo it.
    until = timezone.now() + timedelta(seconds=30)
    CircuitBreaker.objects.filter(pk="svc").update(consecutive_failures=7, opened_until=until)
    response = admin_client.post(
        url(CircuitBreaker, "change", "svc"),
        {"failure_threshold": 9, "cooldown_seconds": breaker.cooldown_seconds},
    )
    assert response.status_code == 302
    breaker.refresh_from_db()
    assert breaker.failure_threshold == 9
    assert (breaker.state, breaker.consecutive_failures) == (CircuitBreaker.State.OPEN, 7)
    event = Event.objects.get(kind="circuit.tuned")
    assert event.actor == f"admin:{admin_user.username}"
    assert event.data == {"service": "svc", "failure_threshold": 9}


def test_close_circuit_action(admin_client: Client, admin_user: User, ledger: Ledger) -> None:
    CircuitBreaker.objects.filter(pk="svc").update(
        consecutive_failures=5, opened_until=timezone.now() + timedelta(minutes=1)
    )
    response = admin_client.post(
        url(CircuitBreaker, "changelist"),
        {"action": "close_circuits", "_selected_action": ["svc"]},
        follow=True,
    )
    assert messages_of(response) == [(SUCCESS, "1 circuit was closed.")]
    breaker = CircuitBreaker.objects.get(pk="svc")
    assert breaker.state == CircuitBreaker.State.CLOSED
    assert (breaker.consecutive_failures, breaker.opened_until) == (0, None)
    assert Event.objects.filter(
        kind="circuit.closed", chain="circuit:svc", actor=f"admin:{admin_user.username}"
    ).exists()
    assert (
        admin_client.post(url(CircuitBreaker, "delete", "svc"), {"post": "yes"}).status_code == 403
    )
