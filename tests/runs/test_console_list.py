"""The runs list: only the user's teams, the filters (stored and derived statuses), search,
and keyset paging without counting the table."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.http import QueryDict
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from runs import console
from runs.models import Run, RunStatus, Team, WaitKind
from tests.runs.console_support import Cast, htmx_headers, make_cast, start

pytestmark = [pytest.mark.django_db, pytest.mark.engine]


@pytest.fixture
def cast(team: Team, other_team: Team) -> Cast:
    return make_cast(team, other_team)


def listed(client: Client, **params: Any) -> list[str]:
    response = client.get("/runs/", params)
    assert response.status_code == 200
    return [str(run.pk) for run in response.context["page"].runs]


def test_only_runs_of_the_users_teams(cast: Cast) -> None:
    mine = start("t-steps", team=cast.team, user=cast.owner)
    theirs = start("t-steps", team=cast.other_team, user=cast.outsider)
    assert listed(cast.client("owner")) == [str(mine.pk)]
    assert listed(cast.client("viewer")) == [str(mine.pk)]
    assert listed(cast.client("outsider")) == [str(theirs.pk)]
    nobody = User.objects.create_user("nobody")
    client = Client()
    client.force_login(nobody)
    assert listed(client) == []
    root = User.objects.create_superuser("root")
    client.force_login(root)
    assert set(listed(client)) == {str(mine.pk), str(theirs.pk)}


def test_rows_show_status_workflow_team_progress_budget_and_age(cast: Cast) -> None:
    run = start("t-spend", {"n": 3}, team=cast.team, user=cast.owner, budget={"usd": 1})
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING,
        progress={"done": 2, "total": 8},
        spent_usd="0.85",
        created_at=timezone.now() - timedelta(hours=3),
    )
    html = cast.client("viewer").get("/runs/").content.decode()
    assert 'class="badge badge-running">running<' in html
    assert ">t-spend</a>" in html
    assert "Default team" in html
    assert '<progress max="100" value="25"' in html and "2/8" in html
    assert 'class="budget budget-warn">85%<' in html
    assert "3\xa0hours" in html


def test_row_values_from_runs_and_people_are_escaped(cast: Cast) -> None:
    """The rows are built outside the template engine: what agents and people typed still
    arrives as text, never as markup."""
    cast.team.name = '<b id="team-markup">Team</b>'
    cast.team.save()
    cast.owner.username = "o<i>wner"
    cast.owner.save()
    run = start("t-steps", team=cast.team, user=cast.owner)
    _set(run, status=RunStatus.RUNNING, progress={"stage": '<img src=x onerror="alert(1)">'})
    html = cast.client("operator").get("/runs/").content.decode()
    assert "<img" not in html and '<b id="team-markup">' not in html and "o<i>" not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert "&lt;b id=&quot;team-markup&quot;&gt;Team&lt;/b&gt;" in html
    assert "o&lt;i&gt;wner" in html
    assert f'value="{run.pk}" form="bulk-form"' in html  # the operator may select it
    viewer = cast.client("viewer").get("/runs/").content.decode()
    assert 'class="row-select"' not in viewer


def _set(run: Run, **fields: Any) -> Run:
    Run.objects.filter(pk=run.pk).update(**fields)
    return run


def test_status_filters_including_derived_views(cast: Cast) -> None:
    now = timezone.now()
    t = cast.team
    queued = start("t-steps", team=t)
    retrying = _set(start("t-steps", team=t), status=RunStatus.WAITING, wait_kind=WaitKind.RETRY)
    person = _set(start("t-steps", team=t), status=RunStatus.WAITING, wait_kind=WaitKind.APPROVAL)
    timer = _set(start("t-steps", team=t), status=RunStatus.WAITING, wait_kind=WaitKind.TIMER)
    event = _set(start("t-steps", team=t), status=RunStatus.WAITING, wait_kind=WaitKind.EVENT)
    idle = _set(
        start("t-steps", team=t),
        status=RunStatus.RUNNING,
        idle_deadline_at=now - timedelta(seconds=5),
        last_activity_at=now,
    )
    quiet = _set(
        start("t-steps", team=t),
        status=RunStatus.RUNNING,
        last_activity_at=now - Run.STALLED_AFTER - timedelta(minutes=1),
    )
    busy = _set(start("t-steps", team=t), status=RunStatus.RUNNING, last_activity_at=now)
    # A long step within the run's own (longer) idle timeout is not stalled ...
    patient = _set(
        start("t-steps", team=t),
        status=RunStatus.RUNNING,
        idle_deadline_at=now + timedelta(minutes=30),
        last_activity_at=now - Run.STALLED_AFTER - timedelta(minutes=1),
    )
    # ... but a run whose worker stopped renewing its lease and was not recovered is (one
    # lapsed a moment ago is the leases sweep's, in seconds).
    orphaned = _set(
        start("t-steps", team=t),
        status=RunStatus.RUNNING,
        last_activity_at=now,
        lease_expires_at=now - Run.LEASE_LAPSED_AFTER - timedelta(seconds=1),
    )
    just_lapsed = _set(
        start("t-steps", team=t),
        status=RunStatus.RUNNING,
        last_activity_at=now,
        lease_expires_at=now - timedelta(seconds=1),
    )
    warned = _set(start("t-steps", team=t), budget_warned=["usd"])
    # A finished run's budget needs nobody's attention any more.
    _set(
        start("t-steps", team=t),
        budget_warned=["usd"],
        status=RunStatus.SUCCEEDED,
        finished_at=now,
    )
    client = cast.client("owner")

    def ids(*runs: Run) -> set[str]:
        return {str(r.pk) for r in runs}

    assert set(listed(client, status="queued")) == ids(queued, warned)
    assert set(listed(client, status="retrying")) == ids(retrying)
    assert set(listed(client, status="waiting-person")) == ids(person)
    assert set(listed(client, status="waiting-timer-event")) == ids(timer, event)
    assert set(listed(client, status="stalled")) == ids(idle, quiet, orphaned)
    assert set(listed(client, status="running")) == ids(
        idle, quiet, busy, patient, orphaned, just_lapsed
    )
    # The badge says the same as the filter.
    stalled_badges = client.get("/runs/", {"status": "running"}).content.decode().count(">stalled<")
    assert stalled_badges == 3
    assert set(listed(client, status="over-budget")) == ids(warned)
    # The badge names what a waiting run waits on.
    html = client.get("/runs/", {"status": "retrying"}).content.decode()
    assert ">retrying<" in html


def test_workflow_team_owner_and_time_filters(cast: Cast, other_team: Team) -> None:
    from runs.models import Membership

    Membership.objects.create(user=cast.owner, team=other_team, role="viewer")
    a = start("t-steps", team=cast.team, user=cast.owner)
    b = start("t-noop", team=cast.team, user=cast.operator)
    c = start("t-steps", team=other_team, user=cast.outsider)
    _set(a, created_at=timezone.now() - timedelta(days=3))
    client = cast.client("owner")
    assert set(listed(client, workflow="t-steps")) == {str(a.pk), str(c.pk)}
    assert listed(client, team="other") == [str(c.pk)]
    assert listed(client, owner="lead") == [str(b.pk)]
    since = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    assert set(listed(client, created_after=since)) == {str(b.pk), str(c.pk)}
    assert listed(client, created_before=since) == [str(a.pk)]
    assert listed(client, workflow="t-steps", team="default") == [str(a.pk)]


def test_an_invalid_filter_is_reported_and_ignored(cast: Cast) -> None:
    run = start("t-steps", team=cast.team)
    response = cast.client("owner").get("/runs/", {"status": "bogus", "created_after": "soon"})
    assert response.status_code == 200
    assert [r.pk for r in response.context["page"].runs] == [run.pk]
    html = response.content.decode()
    assert "Select a valid choice" in html and "Enter a valid date/time" in html


def test_the_kept_filter_form_follows_the_users_teams_and_time_zone(cast: Cast) -> None:
    """The filter form is validated and rendered once per values, choices and time zone in a
    process: the same query string is read afresh for a person whose teams differ, and in
    another time zone."""
    mine = start("t-steps", team=cast.team, user=cast.owner)
    theirs = start("t-steps", team=cast.other_team, user=cast.outsider)
    # "other" is one of the outsider's teams: it filters...
    response = cast.client("outsider").get("/runs/", {"team": "other"})
    assert [r.pk for r in response.context["page"].runs] == [theirs.pk]
    assert "Select a valid choice" not in response.content.decode()
    # ...and for the owner, who is not in it, the same query is an invalid choice, reported
    # at its field and not applied.
    response = cast.client("owner").get("/runs/", {"team": "other"})
    assert [r.pk for r in response.context["page"].runs] == [mine.pk]
    assert "Select a valid choice" in response.content.decode()

    _set(mine, created_at=datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    params = QueryDict("created_after=2026-03-01T10:00")
    with timezone.override("UTC"):  # 10:00 UTC: before the run
        assert [r.pk for r in console.list_context(cast.owner, params)["page"].runs] == [mine.pk]
    with timezone.override("Asia/Tokyo"):  # 01:00 UTC: before it as well
        assert [r.pk for r in console.list_context(cast.owner, params)["page"].runs] == [mine.pk]
    with timezone.override("America/Los_Angeles"):  # 18:00 UTC: after it
        assert console.list_context(cast.owner, params)["page"].runs == []


def test_a_team_the_user_cannot_see_filters_to_nothing(cast: Cast) -> None:
    start("t-steps", team=cast.other_team)
    response = cast.client("owner").get("/runs/", {"team": "other"})
    assert response.context["page"].runs == []


def test_search_by_id_prefix_or_input_text(cast: Cast) -> None:
    a = start("t-flaky", {"kind": "needle-in-input"}, team=cast.team)
    b = start("t-flaky", {"kind": "other"}, team=cast.team)
    client = cast.client("owner")
    assert listed(client, q="needle-in") == [str(a.pk)]
    assert listed(client, q="NEEDLE") == [str(a.pk)]
    hyphenated = str(b.pk)[:13]  # "xxxxxxxx-xxxx"
    assert listed(client, q=hyphenated) == [str(b.pk)]
    assert listed(client, q=b.pk.hex[:12]) == [str(b.pk)]
    assert listed(client, q=str(b.pk).upper()) == [str(b.pk)]
    assert listed(client, q="nothing-like-this") == []
    assert listed(client, q="----") == [] and console.id_range("a---") is None


@pytest.mark.pg
def test_search_reads_indexes_not_the_table(cast: Cast) -> None:
    """On PostgreSQL the input is searched by its trigram index and an id prefix by the
    primary key's range (neither reads every run, as ``id::text LIKE`` and a bare ILIKE did)."""
    qs = Run.objects.filter(console.search_condition("96687e10-20d3")).order_by()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # the test table is tiny
    plan = qs.explain()
    assert "run_input_trgm" in plan and "runs_run_pkey" in plan, plan
    assert console.id_range("96687e10-20d3") == (
        uuid.UUID("96687e10-20d3-0000-0000-000000000000"),
        uuid.UUID("96687e10-20d3-ffff-ffff-ffffffffffff"),
    )


def test_a_page_asked_again_runs_its_kept_statement_and_reads_the_rows_afresh(
    cast: Cast,
) -> None:
    """The list keeps its compiled statements; the rows are read every time, converted as
    the ORM converts them, and a statement serves only the people and filters it was made
    for."""
    console.LIST_STATEMENTS.clear()
    a = start("t-spend", {"n": 2}, team=cast.team, user=cast.owner, budget={"usd": 2})
    b = start("t-steps", team=cast.team, user=cast.operator)
    theirs = start("t-steps", team=cast.other_team, user=cast.outsider)
    _set(a, progress={"done": 1, "total": 4, "stage": "<b>x</b>"}, spent_usd="0.50")
    client = cast.client("owner")

    def page(c: Client, **params: Any) -> tuple[list[Any], int, str]:
        with CaptureQueriesContext(connection) as ctx:
            response = c.get("/runs/", params)
        assert response.status_code == 200
        return response.context["page"].runs, len(ctx.captured_queries), response.context["rows"]

    first, queries, rows = page(client)
    assert len(console.LIST_STATEMENTS._statements) == 1
    again, queries_again, rows_again = page(client)
    assert again == first and queries_again == queries and rows_again == rows
    row = next(r for r in again if r.pk == a.pk)
    assert row.progress == {"done": 1, "total": 4, "stage": "<b>x</b>"}
    assert row.spent_usd == Decimal("0.5") and row.created_at.tzinfo is not None
    assert (row.team_name, row.owner) == (cast.team.name, "owner")

    # A change shows at once: the statement is kept, not the rows.
    _set(b, status=RunStatus.FAILED, workflow="t-noop")
    after_change, _, _ = page(client)
    assert next(r for r in after_change if r.pk == b.pk).status == RunStatus.FAILED
    assert page(client, workflow="t-steps")[0] == []
    assert [r.pk for r in page(client, workflow="t-noop")[0]] == [b.pk]
    # The viewer of the same team shares the statement; the outsider has their own.
    assert [r.pk for r in page(cast.client("viewer"))[0]] == [r.pk for r in after_change]
    assert [r.pk for r in page(cast.client("outsider"))[0]] == [theirs.pk]
    # The stalled view reads the time as well: it is not kept.
    kept = len(console.LIST_STATEMENTS._statements)
    page(client, status="stalled")
    assert len(console.LIST_STATEMENTS._statements) == kept


def test_keyset_pages_walk_every_run_once_in_order_without_counting(
    cast: Cast, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "PAGE_SIZE", 4)
    base = timezone.now() - timedelta(hours=1)
    runs = [start("t-steps", team=cast.team) for _ in range(11)]
    for i, run in enumerate(runs):
        # Pairs share a created_at: the id breaks the tie.
        _set(run, created_at=base + timedelta(seconds=i // 2))
    expected = [
        str(r.pk)
        for r in Run.objects.filter(pk__in=[r.pk for r in runs]).order_by("-created_at", "-id")
    ]
    client = cast.client("owner")
    seen: list[str] = []
    params: dict[str, str] = {}
    pages = []
    while True:
        with CaptureQueriesContext(connection) as queries:
            response = client.get("/runs/", params)
        # No COUNT over the runs table (the navigation's small badges count other things).
        counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
        assert not [sql for sql in counts if '"runs_run"' in sql], counts
        page = [str(run.pk) for run in response.context["page"].runs]
        pages.append((dict(params), page, response.context))
        seen += page
        if not response.context["older_url"]:
            break
        params = {"before": response.context["page"].older}
    assert seen == expected
    assert [len(p) for _, p, _ in pages] == [4, 4, 3]
    # "Newer" from the last page comes back to the middle page.
    last_context = pages[-1][2]
    back = client.get("/runs/", {"after": last_context["page"].newer})
    assert [str(run.pk) for run in back.context["page"].runs] == pages[1][1]
    assert back.context["newer_url"] and back.context["older_url"]
    # A tampered cursor is ignored (first page), not an error.
    assert client.get("/runs/", {"before": "x_y"}).status_code == 200


def test_paging_keeps_the_filters(cast: Cast, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "PAGE_SIZE", 2)
    for _ in range(3):
        start("t-noop", team=cast.team)
    start("t-steps", team=cast.team)
    response = cast.client("owner").get("/runs/", {"workflow": "t-noop"})
    older = response.context["older_url"]
    assert "workflow=t-noop" in older and "before=" in older
    nxt = cast.client("owner").get(older)
    assert [run.workflow for run in nxt.context["page"].runs] == ["t-noop"]


def test_htmx_gets_the_fragment_named_by_its_target(cast: Cast) -> None:
    start("t-steps", team=cast.team)
    client = cast.client("owner")
    table = client.get("/runs/", {"status": "queued"}, headers=htmx_headers("runs-table"))
    html = table.content.decode()
    assert html.lstrip().startswith('<div id="runs-table"')
    assert "<html" not in html and "ws-connect" not in html
    live = client.get("/runs/", {"status": "queued"}, headers=htmx_headers("runs-live"))
    html = live.content.decode()
    assert html.lstrip().startswith('<div id="runs-live"')
    assert 'ws-connect="/ws/runs/?status=queued"' in html
    polled = client.get("/runs/", {"poll": "1"}, headers=htmx_headers("runs-table"))
    assert 'hx-trigger="every 2s"' in polled.content.decode()
    # The full page links every hx-get with an href too.
    page = client.get("/runs/").content.decode()
    assert 'data-poll-url="/runs/?poll=1"' in page


@pytest.mark.parametrize(
    "then",
    [
        datetime(2026, 1, 31, 23, 59, 30, tzinfo=UTC),
        datetime(2026, 2, 28, 0, 0, tzinfo=UTC),
        datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        datetime(2025, 12, 31, 23, 0, tzinfo=UTC),
    ],
)
def test_the_lists_age_is_djangos_timesince(then: datetime) -> None:
    """The list looks ages up by whole minutes; every delta says what ``timesince`` says."""
    from django.utils.timesince import timesince

    for delta in [
        timedelta(0),
        timedelta(seconds=59),
        timedelta(minutes=1, seconds=30),
        timedelta(hours=3, minutes=4, seconds=59),
        timedelta(days=6, hours=23, minutes=59),
        timedelta(days=27, hours=23, minutes=59, seconds=59),
        timedelta(days=28),
        timedelta(days=40, hours=5),
        timedelta(days=400),
        timedelta(minutes=-5),  # a clock ahead of ours
    ]:
        assert console.age(then, then + delta) == timesince(then, then + delta), delta
