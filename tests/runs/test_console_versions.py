"""Every rendered run fragment carries the run's version, so the page can refuse an action's
response that arrives after the push of a newer state; and it carries who changed the run
last, so a push can say that another person paused or cancelled it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from runs.models import Event, Run, RunStatus, Team
from runs.run_page import render_run_live
from tests.runs.console_support import Cast, htmx_headers, make_cast, start

pytestmark = [pytest.mark.django_db, pytest.mark.engine]


@pytest.fixture
def cast(team: Team, other_team: Team) -> Cast:
    return make_cast(team, other_team)


def live_attrs(html: str) -> dict[str, str]:
    """The data attributes of the ``#run-live`` element in ``html``."""
    tag = re.search(r'<section id="run-live"[^>]*>', html)
    assert tag, html[:500]
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', tag.group(0)))


def version(attrs: dict[str, str]) -> tuple[int, int]:
    event_id, micros = attrs["version"].split("-")
    return int(event_id), int(micros)


def test_the_live_partial_carries_the_runs_version_and_state(cast: Cast, drive: Any) -> None:
    run = drive(start("t-wait", team=cast.team, user=cast.owner).pk)
    attrs = live_attrs(cast.client("owner").get(f"/runs/{run.pk}/").content.decode())
    last = Event.objects.filter(run=run).order_by("-id").first()
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert version(attrs) == (last.id, (run.updated_at - epoch) // timedelta(microseconds=1))
    assert attrs["state"] == "waiting" and attrs["state-label"] == "waiting on an event"
    assert (attrs["changed-by"], attrs["changed-at"]) == ("", "0")  # nobody acted yet


def test_an_action_answers_a_newer_version_and_a_later_push_the_same(
    cast: Cast, drive: Any
) -> None:
    run = drive(start("t-wait", team=cast.team, user=cast.owner).pk)
    client = cast.client("owner")
    before = live_attrs(client.get(f"/runs/{run.pk}/").content.decode())
    response = client.post(f"/runs/{run.pk}/pause/", headers=htmx_headers("run-live"))
    after = live_attrs(response.content.decode())
    assert version(after) > version(before)
    assert (after["state"], after["changed-by"]) == ("paused", "user:owner")
    paused_event = Event.objects.get(run=run, kind="run.paused")
    assert after["changed-at"] == str(paused_event.id)
    # A push rendered afterwards shows the same state: the same version, so it swaps.
    pushed = render_run_live(cast.operator, run.pk)
    assert pushed is not None
    assert live_attrs(pushed) == after
    # A later change (here by the teammate) is a newer version again.
    client_b = cast.client("operator")
    resumed = live_attrs(
        client_b.post(f"/runs/{run.pk}/resume/", headers=htmx_headers("run-live")).content.decode()
    )
    assert version(resumed) > version(after)
    assert (resumed["state"], resumed["changed-by"]) == ("running", "user:lead")
    assert int(resumed["changed-at"]) > int(after["changed-at"])


def test_the_event_id_orders_versions_whatever_the_clocks_say(cast: Cast) -> None:
    run = start("t-steps", team=cast.team, user=cast.owner)
    first = live_attrs(render_run_live(cast.owner, run.pk) or "")
    # A machine with a slow clock writes the next change: updated_at goes back in time.
    Run.objects.filter(pk=run.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    Run.objects.get(pk=run.pk).pause(actor="user:lead")
    Run.objects.filter(pk=run.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    second = live_attrs(render_run_live(cast.owner, run.pk) or "")
    assert version(second)[1] < version(first)[1]
    assert version(second) > version(first)  # compared as a pair, the event id first


def test_a_requested_pause_or_stop_is_part_of_the_state(cast: Cast) -> None:
    run = start("t-steps", team=cast.team, user=cast.owner)
    # Held by a worker: pause and cancel are requests the worker acts on later.
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING,
        lease_owner="w",
        lease_expires_at=timezone.now() + timedelta(minutes=1),
    )
    Run.objects.get(pk=run.pk).pause(actor="user:lead")
    attrs = live_attrs(render_run_live(cast.owner, run.pk) or "")
    assert (attrs["state"], attrs["state-label"]) == ("running-pausing", "pausing")
    assert attrs["changed-by"] == "user:lead"
    # The engine's own events come after it: the latest person's action is still named.
    Event.append("step.completed", run_id=run.pk, team_id=run.team_id, actor="worker:w1")
    attrs = live_attrs(render_run_live(cast.owner, run.pk) or "")
    assert attrs["changed-by"] == "user:lead"
    assert int(attrs["changed-at"]) < version(attrs)[0]
    Run.objects.get(pk=run.pk).cancel(actor="api:lead")
    attrs = live_attrs(render_run_live(cast.owner, run.pk) or "")
    assert attrs["state"] == "running-stopping-pausing"
    assert (attrs["state-label"], attrs["changed-by"]) == ("stopping", "api:lead")
