"""Events over HTTP: ``after=`` paging of one run, and the replay feed across the caller's runs
(never another team's)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from runs.audit import Event
from runs.models import Run
from tests.runs.api_support import ApiClient, member, token_client

pytestmark = [pytest.mark.engine, pytest.mark.django_db]


def _pages(api, path: str, *, limit: int, after: int = 0) -> tuple[list[int], int]:
    ids, pages = [], 0
    while True:
        body = api.get(path, after=after, limit=limit).json()
        pages += 1
        ids += [e["id"] for e in body["items"]]
        after = body["next_after"]
        if not body["has_more"]:
            return ids, pages


def test_run_events_page_after_an_id_without_gap_or_duplicate(team, drive):
    api = token_client(member("alice", team), team)
    run_id = api.post("/api/v1/runs", {"workflow": "t-steps", "input": {"n": 4}}).json()["id"]
    drive(run_id)
    expected = list(Event.objects.filter(run_id=run_id).order_by("id").values_list("id", flat=True))
    assert len(expected) >= 6

    ids, pages = _pages(api, f"/api/v1/runs/{run_id}/events", limit=2)
    assert ids == expected and pages >= 3

    body = api.get(f"/api/v1/runs/{run_id}/events", after=expected[2]).json()
    assert [e["id"] for e in body["items"]] == expected[3:]
    first = body["items"][0]
    assert set(first) == {"id", "kind", "run", "actor", "data", "created_at"}
    assert body["items"][-1]["kind"] == "run.succeeded"
    assert body["items"][-1]["data"]["to"] == "succeeded"
    # Past the end: empty, and next_after stays put so a poller can keep asking.
    body = api.get(f"/api/v1/runs/{run_id}/events", after=expected[-1]).json()
    assert body["items"] == [] and body["next_after"] == expected[-1]


def test_feed_replays_every_visible_run_and_no_other_teams(team, other_team, drive, time_machine):
    time_machine.move_to(timezone.now())
    user = member("alice", team)
    member("alice", other_team)
    api = token_client(user, team)
    mine = [Run.start("t-steps", {"n": 1}, team=team, actor="t")[0] for _ in range(2)]
    theirs = Run.start("t-steps", {"n": 1}, team=other_team, actor="t")[0]
    for run in [*mine, theirs]:
        drive(run.pk)
    time_machine.shift(timedelta(seconds=2))  # past the feed's settling time

    ids, _ = _pages(api, "/api/v1/events", limit=3)
    expected = list(Event.objects.filter(run__in=mine).order_by("id").values_list("id", flat=True))
    assert ids == expected
    runs_seen = {e["run"] for e in api.get("/api/v1/events", limit=1000).json()["items"]}
    assert runs_seen == {str(r.pk) for r in mine}

    # A signed-in user sees both teams' runs.
    browser = Client()
    browser.force_login(user)
    ids, _ = _pages(ApiClient(client=browser), "/api/v1/events", limit=50)
    assert {Event.objects.get(pk=i).run_id for i in ids} == {r.pk for r in [*mine, theirs]}


def test_feed_holds_back_unsettled_events_on_postgresql(team, time_machine):
    time_machine.move_to(timezone.now())
    api = token_client(member("alice", team), team)
    run = Run.start("t-steps", {"n": 1}, team=team, actor="t")[0]
    fresh = api.get("/api/v1/events").json()["items"]
    if connection.vendor == "postgresql":
        assert fresh == []
    else:
        assert [e["run"] for e in fresh] == [str(run.pk)]
    time_machine.shift(timedelta(seconds=2))
    assert [e["run"] for e in api.get("/api/v1/events").json()["items"]] == [str(run.pk)]
