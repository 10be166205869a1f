"""A run's page and the operator actions: who may see and do what, each action's effect and
its event with the person as actor, bad inputs, and escaping of agent data."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from runs import run_page
from runs.forms import RetryForm
from runs.models import Event, Run, RunStatus, Team, WaitKind
from runs.run_page import render_run_live_as
from tests.runs.console_support import Cast, htmx_headers, make_cast, start

pytestmark = [pytest.mark.django_db, pytest.mark.engine]
UNKNOWN = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def cast(team: Team, other_team: Team) -> Cast:
    return make_cast(team, other_team)


@pytest.fixture
def waiting(cast: Cast, drive: Any) -> Run:
    """A run of the owner waiting on an event after its first step."""
    run = start("t-wait", team=cast.team, user=cast.owner)
    return drive(run.pk)


def pages(run_id: Any) -> list[tuple[str, dict[str, str]]]:
    return [
        (f"/runs/{run_id}/", {}),
        (f"/runs/{run_id}/", htmx_headers("run-live")),
        (f"/runs/{run_id}/?poll=1", htmx_headers("run-live")),
        (f"/runs/{run_id}/steps/", {}),
    ]


def actions(run_id: Any) -> list[tuple[str, dict[str, str]]]:
    return [
        (f"/runs/{run_id}/pause/", {}),
        (f"/runs/{run_id}/resume/", {}),
        (f"/runs/{run_id}/cancel/", {}),
        (f"/runs/{run_id}/retry/", {"step": "1"}),
        (f"/runs/{run_id}/budget/", {"usd": "5"}),
    ]


def test_who_sees_the_run_and_who_may_act(cast: Cast, waiting: Run) -> None:
    for who in ("owner", "operator", "viewer"):
        client = cast.client(who)
        for url, headers in pages(waiting.pk):
            assert client.get(url, headers=headers).status_code == 200, (who, url)
    outsider = cast.client("outsider")
    for url, headers in pages(waiting.pk):
        assert outsider.get(url, headers=headers).status_code == 404
    for who, expected in (("outsider", 404), ("viewer", 403)):
        client = cast.client(who)
        assert client.get(f"/runs/{waiting.pk}/confirm-cancel/").status_code == expected
        for url, data in actions(waiting.pk):
            for headers in ({}, htmx_headers("run-live")):
                response = client.post(url, data, headers=headers)
                assert response.status_code == expected, (who, url)
    unchanged = Run.objects.get(pk=waiting.pk)
    assert unchanged.status == RunStatus.WAITING and unchanged.limit_usd is None
    assert not Event.objects.filter(run=waiting, actor__startswith="user:").exists()


def test_unknown_run_is_404_everywhere(cast: Cast) -> None:
    client = cast.client("owner")
    for url, headers in pages(UNKNOWN):
        assert client.get(url, headers=headers).status_code == 404
    assert client.get(f"/runs/{UNKNOWN}/confirm-cancel/").status_code == 404
    for url, data in actions(UNKNOWN):
        assert client.post(url, data).status_code == 404
    assert client.get("/runs/not-a-uuid/").status_code == 404


def test_actions_are_posts(cast: Cast, waiting: Run) -> None:
    client = cast.client("owner")
    for url, _ in actions(waiting.pk):
        assert client.get(url).status_code == 405


def test_a_viewer_sees_no_action_buttons(cast: Cast, waiting: Run) -> None:
    html = cast.client("viewer").get(f"/runs/{waiting.pk}/").content.decode()
    for url in ("/pause/", "/confirm-cancel/", "/budget/", "/retry/", "/resume/"):
        assert f"{waiting.pk}{url}" not in html
    owner_html = cast.client("owner").get(f"/runs/{waiting.pk}/").content.decode()
    for url in ("/pause/", "/confirm-cancel/", "/budget/", "/retry/"):
        assert f"{waiting.pk}{url}" in owner_html


def _last_event(run: Run) -> Event:
    return Event.objects.filter(run=run).order_by("-id").first()


def test_pause_and_resume(cast: Cast, waiting: Run) -> None:
    client = cast.client("operator")
    response = client.post(f"/runs/{waiting.pk}/pause/")
    assert response.status_code == 302 and response["Location"] == f"/runs/{waiting.pk}/"
    run = Run.objects.get(pk=waiting.pk)
    assert run.status == RunStatus.PAUSED
    event = _last_event(run)
    assert (event.kind, event.actor, event.actor_user_id) == (
        "run.paused",
        "user:lead",
        cast.operator.pk,
    )
    page = client.get(response["Location"]).content.decode()
    assert "Run paused." in page  # the toast
    response = client.post(f"/runs/{waiting.pk}/resume/", headers=htmx_headers("run-live"))
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="run-live"')
    assert 'id="toasts"' in html and 'hx-swap-oob="beforeend"' in html and "Run resumed." in html
    run = Run.objects.get(pk=waiting.pk)
    assert run.status == RunStatus.RUNNING
    assert (_last_event(run).kind, _last_event(run).actor) == ("run.resumed", "user:lead")


def test_an_action_that_does_not_apply_reports_why_and_changes_nothing(
    cast: Cast, waiting: Run
) -> None:
    client = cast.client("owner")
    before = Event.objects.filter(run=waiting).count()
    response = client.post(f"/runs/{waiting.pk}/resume/", headers=htmx_headers("run-live"))
    assert response.status_code == 200
    assert "cannot resume run" in response.content.decode()
    assert "toast-error" in response.content.decode()
    assert Run.objects.get(pk=waiting.pk).status == RunStatus.WAITING
    assert Event.objects.filter(run=waiting).count() == before


def test_cancel_asks_first_and_works_without_js(cast: Cast, waiting: Run) -> None:
    client = cast.client("owner")
    confirm = client.get(f"/runs/{waiting.pk}/confirm-cancel/")
    html = confirm.content.decode()
    assert "Cancel this run?" in html
    assert f'<form method="post" action="/runs/{waiting.pk}/cancel/"' in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert Run.objects.get(pk=waiting.pk).stop_requested == ""  # asking changed nothing
    inline = client.get(f"/runs/{waiting.pk}/confirm-cancel/", headers=htmx_headers())
    assert inline.content.decode().lstrip().startswith('<div id="cancel-confirm">')
    response = client.post(f"/runs/{waiting.pk}/cancel/")
    assert response.status_code == 302
    run = Run.objects.get(pk=waiting.pk)
    assert run.stop_requested == "cancel"
    kinds = list(Event.objects.filter(run=run).values_list("kind", "actor").order_by("id"))
    assert ("run.cancel_requested", "user:owner") in kinds


def test_cancel_over_htmx_closes_the_confirmation(cast: Cast, waiting: Run) -> None:
    response = cast.client("owner").post(
        f"/runs/{waiting.pk}/cancel/", headers=htmx_headers("run-live")
    )
    html = response.content.decode()
    assert '<div id="cancel-confirm" hx-swap-oob="true">' in html
    assert "Cancellation requested" in html


def test_retry_a_failed_run_makes_a_new_run(cast: Cast, drive: Any) -> None:
    run = start(
        "t-flaky", {"kind": "permanent", "max_attempts": 1}, team=cast.team, user=cast.owner
    )
    run = drive(run.pk)
    assert run.status == RunStatus.FAILED
    client = cast.client("owner")
    response = client.post(f"/runs/{run.pk}/retry/", {"step": "1"})
    new = Run.objects.get(parent=run)
    assert response["Location"] == f"/runs/{new.pk}/"
    event = Event.objects.get(run=run, kind="run.retried")
    assert event.actor == "user:owner" and event.data["new_run"] == str(new.pk)
    htmx = client.post(f"/runs/{run.pk}/retry/", {"step": "1"}, headers=htmx_headers())
    assert htmx["HX-Redirect"].startswith("/runs/")


def test_retry_a_waiting_run_rewinds_it(cast: Cast, drive: Any) -> None:
    run = drive(start("t-sleep", team=cast.team).pk)
    assert run.status == RunStatus.WAITING
    response = cast.client("operator").post(
        f"/runs/{run.pk}/retry/", {"step": "2"}, headers=htmx_headers("run-live")
    )
    assert "Rewound to step 2" in response.content.decode()
    run = Run.objects.get(pk=run.pk)
    assert run.status == RunStatus.RUNNING
    assert list(run.steps.values_list("seq", flat=True)) == [1]
    assert (_last_event(run).kind, _last_event(run).actor) == ("run.rewound", "user:lead")


def test_retry_from_a_step_the_run_does_not_have_is_refused(cast: Cast, waiting: Run) -> None:
    client = cast.client("owner")
    response = client.post(f"/runs/{waiting.pk}/retry/", {"step": "99"})
    assert response.status_code == 302
    assert Run.objects.get(pk=waiting.pk).status == RunStatus.WAITING
    page = client.get(response["Location"]).content.decode()
    assert "The run has no step 99." in page
    assert not Event.objects.filter(run=waiting, kind__in=["run.rewound", "run.retried"]).exists()


def retry_section(page: str) -> str:
    return page.split('<h2 id="retry-title">')[1].split("</section>")[0]


def test_a_run_with_many_steps_asks_for_the_step_number_to_retry_from(
    cast: Cast, waiting: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RetryForm, "LISTED", 0)  # the run's one step is more than that
    client = cast.client("owner")
    page = client.get(f"/runs/{waiting.pk}/").content.decode()
    form = retry_section(page)
    assert 'type="number" name="step"' in form and "<option" not in form
    assert f'href="/runs/{waiting.pk}/steps/">The run\'s steps</a>' in page
    refused = client.post(f"/runs/{waiting.pk}/retry/", {"step": "9999"}, follow=True)
    assert "The run has no step 9999." in refused.content.decode()
    assert not Event.objects.filter(run=waiting, kind="run.rewound").exists()
    # With few steps the same form lists them.
    monkeypatch.setattr(RetryForm, "LISTED", 200)
    listed = retry_section(client.get(f"/runs/{waiting.pk}/").content.decode())
    steps = waiting.steps.count()
    assert listed.count("<option") == steps and 'type="number" name="step"' not in listed
    seq = waiting.steps.order_by("seq").values_list("seq", flat=True).first()
    response = client.post(
        f"/runs/{waiting.pk}/retry/", {"step": str(seq)}, headers=htmx_headers("run-live")
    )
    assert f"Rewound to step {seq}" in response.content.decode()


def test_raise_budget(cast: Cast, waiting: Run) -> None:
    client = cast.client("owner")
    response = client.post(
        f"/runs/{waiting.pk}/budget/",
        {"usd": "2.5", "tokens": "1000"},
        headers=htmx_headers("run-budget-form"),
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="run-budget-form"')
    assert '<section id="run-live" class="live-region"' in html and "hx-swap-oob" in html
    assert "Budget raised." in html
    run = Run.objects.get(pk=waiting.pk)
    assert (run.limit_usd, run.limit_tokens) == (Decimal("2.5"), 1000)
    event = _last_event(run)
    assert (event.kind, event.actor) == ("run.budget_raised", "user:owner")
    assert Decimal(event.data["limits"]["usd"]["to"]) == Decimal("2.5")


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"usd": "0.5"}, "usd", "must be above what is already spent"),
        ({"actions": "10"}, "actions", "a raise cannot lower it"),
        ({"tokens": "-3"}, "tokens", "greater than or equal to 0"),
        ({"actions": "many"}, "actions", "Enter a whole number"),
        ({}, None, "Give at least one new limit."),
    ],
)
def test_an_invalid_budget_raise_shows_the_error_at_the_field_and_changes_nothing(
    cast: Cast, waiting: Run, data: dict[str, str], field: str | None, message: str
) -> None:
    Run.objects.filter(pk=waiting.pk).update(
        spent_usd=Decimal("1"), limit_usd=Decimal("1"), limit_actions=50
    )
    before = Event.objects.filter(run=waiting).count()
    client = cast.client("owner")
    for headers in ({}, htmx_headers("run-budget-form")):
        response = client.post(f"/runs/{waiting.pk}/budget/", data, headers=headers)
        assert response.status_code == 422
        form = response.context["budget_form"]
        errors = form.errors[field] if field else form.non_field_errors()
        assert any(message in e for e in errors), form.errors
        html = response.content.decode()
        assert message in html
        if field:
            assert f'id="id_{field}_errors"' in html
    run = Run.objects.get(pk=waiting.pk)
    assert (run.limit_usd, run.limit_tokens, run.limit_actions) == (Decimal("1"), None, 50)
    assert Event.objects.filter(run=waiting).count() == before


def test_actions_need_the_csrf_token(cast: Cast, waiting: Run) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(cast.owner)
    assert client.post(f"/runs/{waiting.pk}/pause/").status_code == 403
    assert Run.objects.get(pk=waiting.pk).status == RunStatus.WAITING
    # The header htmx sends (from the page's meta tag) is enough: pushed partials carry no
    # form field.
    page = client.get(f"/runs/{waiting.pk}/").content.decode()
    token = page.split('<meta name="csrf-token" content="', 1)[1].split('"', 1)[0]
    response = client.post(
        f"/runs/{waiting.pk}/pause/", headers={**htmx_headers("run-live"), "X-CSRFToken": token}
    )
    assert response.status_code == 200
    assert Run.objects.get(pk=waiting.pk).status == RunStatus.PAUSED


def test_agent_data_is_escaped(cast: Cast, drive: Any) -> None:
    evil = "<script>alert(1)</script>"
    run = start("t-flaky", {"kind": evil}, team=cast.team, user=cast.owner)
    Run.objects.filter(pk=run.pk).update(
        result={"answer": evil, "<b>key</b>": [evil]},
        result_is_partial=True,
        progress={"stage": evil, "message": evil, "done": 1, "total": 2},
        waiting_for=evil,
        status=RunStatus.WAITING,
        wait_kind=WaitKind.EVENT,
    )
    client = cast.client("owner")
    for response in (
        client.get(f"/runs/{run.pk}/"),
        client.get(f"/runs/{run.pk}/", headers=htmx_headers("run-live")),
        client.get("/runs/", {"q": "script"}),
    ):
        html = response.content.decode()
        assert evil not in html and "<b>key</b>" not in html
    html = client.get(f"/runs/{run.pk}/").content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Partial result" in html


def test_the_page_shows_progress_eta_budget_steps_and_events(cast: Cast, drive: Any) -> None:
    run = drive(start("t-flaky", {"fail_times": 2}, team=cast.team, user=cast.owner).pk)
    assert run.status == RunStatus.WAITING and run.wait_kind == WaitKind.RETRY
    now = timezone.now()
    Run.objects.filter(pk=run.pk).update(
        progress={"done": 5, "total": 20, "stage": "reading", "updated_at": now.isoformat()},
        started_at=now - timedelta(seconds=50),
        limit_usd=Decimal("1"),
        spent_usd=Decimal("0.9"),
    )
    html = cast.client("viewer").get(f"/runs/{run.pk}/").content.decode()
    assert ">retrying<" in html and "next retry" in html and "data-countdown" in html
    assert '<progress id="run-progress-bar" max="100" value="25">' in html
    assert "Progress: 5 of 20" in html and "Stage: <strong>reading</strong>" in html
    assert "Expected to finish" in html  # 15 more at 0.1/s
    assert "gauge gauge-warn" in html and "(90%)" in html
    assert "1 failed attempt" in html and "transient failure on attempt 1" in html
    assert "step.attempt_failed" in html and "run.created" in html
    assert "worker:" in html  # events show their actor


def test_the_eta_follows_the_rate_while_working_not_since_the_start(cast: Cast, drive: Any) -> None:
    # A run that did 2 of 3 in a slice: the engine counts that stretch's time and progress.
    run = drive(start("t-steps", {"n": 3}, team=cast.team, user=cast.owner).pk)
    assert run.progress["active_done"] == 2 and run.progress["active_seconds"] >= 0
    # 5 of 20 done in 10 s of work, though it started 50 s ago (it waited for a person
    # meanwhile): 15 more at 0.5 a second is 30 s, not the 150 s the start's rate gives.
    now = timezone.now()
    progress = {"done": 5, "total": 20, "updated_at": now.isoformat()}
    run = Run(status=RunStatus.RUNNING, started_at=now - timedelta(seconds=50), progress=progress)
    assert run_page.progress_view(run)["eta"] == now + timedelta(seconds=150)
    run.progress = {**progress, "active_seconds": 10.0, "active_done": 5}
    assert run_page.progress_view(run)["eta"] == now + timedelta(seconds=30)


def test_the_live_partial_polls_only_when_asked(cast: Cast, waiting: Run) -> None:
    client = cast.client("owner")
    plain = client.get(f"/runs/{waiting.pk}/", headers=htmx_headers("run-live")).content.decode()
    assert "hx-trigger" not in plain.split(">", 1)[0]
    assert f'data-poll-url="/runs/{waiting.pk}/?poll=1"' in plain
    polled = client.get(f"/runs/{waiting.pk}/?poll=1", headers=htmx_headers("run-live"))
    head = polled.content.decode().split(">", 1)[0]
    assert 'hx-trigger="every 2s"' in head and 'hx-swap="outerHTML"' in head
    page = client.get(f"/runs/{waiting.pk}/").content.decode()
    assert f'ws-connect="/ws/runs/{waiting.pk}/"' in page and 'hx-ext="ws"' in page


STEP_NAME = re.compile(r'<span class="step-seq">\d+</span>\s*<strong>([^<]*)</strong>')


def test_a_long_run_shows_its_latest_steps_and_pages_through_all_of_them(
    cast: Cast, drive: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = drive(start("t-noop", {"n": 60}, team=cast.team, user=cast.owner).pk)
    client = cast.client("viewer")
    page = client.get(f"/runs/{run.pk}/").content.decode()
    shown = [f"s{i}" for i in range(10, 60)]  # the latest STEPS_SHOWN (50)
    assert STEP_NAME.findall(page) == shown
    assert "10 earlier steps not shown here" in page
    assert f'href="/runs/{run.pk}/steps/"' in page
    # What the run's viewers are pushed is as bounded as the page.
    pushed = render_run_live_as(run.pk, may_operate=False) or ""
    assert STEP_NAME.findall(pushed) == shown and "10 earlier steps" in pushed

    monkeypatch.setattr(run_page, "STEPS_PAGE", 25)
    seen: list[str] = []
    url = f"/runs/{run.pk}/steps/"
    for expected in (25, 25, 10):
        html = client.get(url).content.decode()
        names = STEP_NAME.findall(html)
        assert len(names) == expected
        seen += names
        following = re.search(r'<a rel="next" href="\?after=(\d+)">', html)
        if following is None:
            break
        url = f"/runs/{run.pk}/steps/?after={following[1]}"
    assert following is None
    assert seen == [f"s{i}" for i in range(60)]


def test_a_short_run_shows_every_step_and_the_steps_page_the_attempts_in_progress(
    cast: Cast, drive: Any
) -> None:
    run = drive(start("t-flaky", {"fail_times": 2}, team=cast.team, user=cast.owner).pk)
    client = cast.client("viewer")
    assert "earlier step" not in client.get(f"/runs/{run.pk}/").content.decode()
    steps = client.get(f"/runs/{run.pk}/steps/").content.decode()
    assert "1 failed attempt" in steps and "transient failure on attempt 1" in steps
    assert 'rel="next"' not in steps


@pytest.mark.parametrize("after", ["abc", "-5", "1e3", "99999999999", "²", "%20"])
def test_a_bad_steps_cursor_is_a_clear_400(cast: Cast, waiting: Run, after: str) -> None:
    response = cast.client("owner").get(f"/runs/{waiting.pk}/steps/?after={after}")
    assert response.status_code == 400
    assert "after: the number of the step to start after" in response.content.decode()
