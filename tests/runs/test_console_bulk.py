"""Bulk actions on the runs list: each selected run is checked and acted on by itself, the
outcome counts are reported, and every action is an event with the person as actor."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.test import Client

from runs.forms import BULK_MAX
from runs.models import Event, Membership, Run, RunStatus, Team
from tests.runs.console_support import Cast, htmx_headers, make_cast, start

pytestmark = [pytest.mark.django_db, pytest.mark.engine]


@pytest.fixture
def cast(team: Team, other_team: Team) -> Cast:
    return make_cast(team, other_team)


@pytest.fixture
def runs(cast: Cast, drive: Any) -> dict[str, Run]:
    """The owner's runs in several states, one run of another team, and one of a team the
    owner only views."""
    watched = Team.objects.create(slug="watched", name="Watched team")
    Membership.objects.create(user=cast.owner, team=watched, role=Membership.Role.VIEWER)
    finished = drive(start("t-noop", {"n": 1}, team=cast.team, user=cast.owner).pk)
    assert finished.status == RunStatus.SUCCEEDED
    return {
        "queued": start("t-steps", team=cast.team, user=cast.owner),
        "waiting": drive(start("t-wait", team=cast.team, user=cast.owner).pk),
        "finished": finished,
        "theirs": start("t-steps", team=cast.other_team, user=cast.outsider),
        "viewed": start("t-steps", team=watched),
    }


def bulk(client: Client, action: str, *runs: Run | str, htmx: bool = True, **extra: str) -> Any:
    data: dict[str, Any] = {"action": action, "run": [str(getattr(r, "pk", r)) for r in runs]}
    data.update(extra)
    headers = htmx_headers() if htmx else {}
    return client.post("/runs/bulk/", data, headers=headers)


def person_events(run: Run) -> list[tuple[str, str, int | None]]:
    return list(
        Event.objects.filter(run=run, actor__startswith="user:")
        .order_by("id")
        .values_list("kind", "actor", "actor_user_id")
    )


def test_each_run_is_acted_on_by_itself_and_the_outcomes_are_counted(
    cast: Cast, runs: dict[str, Run]
) -> None:
    response = bulk(cast.client("owner"), "pause", *runs.values(), "not-a-run-id")
    assert response.status_code == 200
    html = response.content.decode()
    # Only the toast: the table follows from the live pushes.
    assert html.lstrip().startswith('<div id="toasts"') and 'hx-swap-oob="beforeend"' in html
    assert "Pause: 2 paused, 1 already finished, 1 not allowed, 2 not found." in html
    assert "toast-success" in html
    for name in ("queued", "waiting"):
        run = Run.objects.get(pk=runs[name].pk)
        assert run.status == RunStatus.PAUSED, name
        assert person_events(run) == [("run.paused", "user:owner", cast.owner.pk)]
    for name in ("finished", "theirs", "viewed"):
        run = Run.objects.get(pk=runs[name].pk)
        assert run.status == runs[name].status, name
        assert person_events(run) == [], name


def test_a_teammate_who_operates_acts_on_the_owners_runs(cast: Cast, runs: dict[str, Run]) -> None:
    client = cast.client("operator")
    html = bulk(client, "cancel", runs["queued"], runs["waiting"]).content.decode()
    assert "Cancel: 2 stopping." in html
    for name in ("queued", "waiting"):
        run = Run.objects.get(pk=runs[name].pk)
        assert run.stop_requested == "cancel"
        assert ("run.cancel_requested", "user:lead", cast.operator.pk) in person_events(run)
    # Asking again changes nothing and says so.
    html = bulk(client, "cancel", runs["queued"], runs["finished"]).content.decode()
    assert "Cancel: 1 already stopping, 1 already finished." in html
    assert "toast-warning" in html
    assert [k for k, *_ in person_events(runs["queued"])].count("run.cancel_requested") == 1


def test_an_outsider_and_a_viewer_change_nothing(cast: Cast, runs: dict[str, Run]) -> None:
    mine = [runs["queued"], runs["waiting"], runs["finished"]]
    html = bulk(cast.client("outsider"), "cancel", *mine).content.decode()
    assert "Cancel: 3 not found." in html and "toast-warning" in html
    html = bulk(cast.client("viewer"), "pause", *mine).content.decode()
    assert "Pause: 3 not allowed." in html
    for run in mine:
        fresh = Run.objects.get(pk=run.pk)
        assert (fresh.status, fresh.stop_requested) == (run.status, "")
        assert person_events(run) == []


def test_the_permission_is_read_at_the_moment_of_the_action(
    cast: Cast, runs: dict[str, Run]
) -> None:
    client = cast.client("operator")
    Membership.objects.filter(user=cast.operator, team=cast.team).update(
        role=Membership.Role.VIEWER
    )
    assert (
        "Pause: 2 not allowed."
        in bulk(client, "pause", runs["queued"], runs["waiting"]).content.decode()
    )
    assert Run.objects.get(pk=runs["queued"].pk).status == RunStatus.QUEUED


def test_resume_reports_runs_it_cannot_resume(cast: Cast, runs: dict[str, Run]) -> None:
    client = cast.client("owner")
    bulk(client, "pause", runs["waiting"])
    html = bulk(client, "resume", runs["waiting"], runs["queued"]).content.decode()
    assert "Resume: 1 resumed, 1 not possible now." in html
    assert Run.objects.get(pk=runs["waiting"].pk).status == RunStatus.RUNNING
    assert ("run.resumed", "user:owner", cast.owner.pk) in person_events(runs["waiting"])
    assert Run.objects.get(pk=runs["queued"].pk).status == RunStatus.QUEUED


def test_at_most_bulk_max_runs_per_request(cast: Cast, runs: dict[str, Run]) -> None:
    ids = [runs["queued"].pk] + [uuid.uuid4() for _ in range(BULK_MAX)]
    response = bulk(cast.client("owner"), "pause", *map(str, ids))
    assert response.status_code == 422
    html = response.content.decode()
    assert f"Select at most {BULK_MAX} runs at a time." in html and "toast-error" in html
    assert Run.objects.get(pk=runs["queued"].pk).status == RunStatus.QUEUED
    # The same id twice counts once.
    html = bulk(cast.client("owner"), "pause", runs["queued"], runs["queued"]).content.decode()
    assert "Pause: 1 paused." in html


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"action": "pause"}, "Select at least one run."),
        ({"action": "delete", "run": ["x"]}, "Select a valid choice."),
    ],
)
def test_a_bad_request_is_reported(cast: Cast, data: dict[str, Any], message: str) -> None:
    response = cast.client("owner").post("/runs/bulk/", data, headers=htmx_headers())
    assert response.status_code == 422
    assert message in response.content.decode()


def test_without_js_it_goes_back_to_the_list_with_its_filters(
    cast: Cast, runs: dict[str, Run]
) -> None:
    client = cast.client("owner")
    query = "status=queued&workflow=t-steps&poll=1&evil=https://example.com"
    response = bulk(client, "pause", runs["queued"], htmx=False, query=query)
    assert response.status_code == 302
    assert response["Location"] == "/runs/?status=queued&workflow=t-steps"
    page = client.get(response["Location"]).content.decode()
    assert "Pause: 1 paused." in page  # the toast on the list
    assert bulk(client, "pause", runs["waiting"], htmx=False)["Location"] == "/runs/"


def test_bulk_is_a_post_with_csrf(cast: Cast, runs: dict[str, Run]) -> None:
    client = cast.client("owner")
    assert client.get("/runs/bulk/").status_code == 405
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(cast.owner)
    assert bulk(strict, "pause", runs["queued"]).status_code == 403
    assert Run.objects.get(pk=runs["queued"].pk).status == RunStatus.QUEUED
    anonymous = Client().post("/runs/bulk/", {"action": "pause", "run": [str(runs["queued"].pk)]})
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]


def test_the_list_offers_checkboxes_only_for_runs_the_user_operates(
    cast: Cast, runs: dict[str, Run]
) -> None:
    html = cast.client("owner").get("/runs/").content.decode()
    assert '<form id="bulk-form"' in html and 'id="select-all"' in html
    for name in ("queued", "waiting", "finished"):
        pk = runs[name].pk
        assert f'value="{pk}" form="bulk-form" id="select-{pk}"' in html
        assert f'<label for="select-{pk}" class="visually-hidden">Select ' in html
    assert f'id="select-{runs["viewed"].pk}"' not in html  # seen, not operated
    assert f'<a href="/runs/{runs["viewed"].pk}/"' in html
    viewer = cast.client("viewer").get("/runs/").content.decode()
    assert "bulk-form" not in viewer and "select-all" not in viewer
