"""The reviewers' inbox: who sees which request, each decision and its bad inputs, bulk
decisions, filters and pages, and escaping of what the agent wrote."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals import inbox as inbox_module
from approvals.forms import BULK_MAX
from approvals.models import MAX_COMMENT, ApprovalRequest, Decision
from runs.models import Membership, Run, RunStatus, Team
from tests.approvals.support import Reviewers, make_reviewers, start_gated
from tests.conftest import drive_to_rest
from tests.runs.console_support import htmx_headers, make_user

pytestmark = [pytest.mark.django_db, pytest.mark.engine]
Status = ApprovalRequest.Status
INBOX = "/approvals/"


@pytest.fixture
def people(team: Team, other_team: Team) -> Reviewers:
    return make_reviewers(team, other_team)


def gated_in(team: Team, owner: Any) -> ApprovalRequest:
    """A request of a run that ``owner`` started in ``team``."""
    run = Run.start("t-approve", {}, team=team, actor="t", user=owner)[0]
    drive_to_rest(run.pk)
    return ApprovalRequest.objects.get(run=run)


def client_of(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def listed(response: Any) -> list[int]:
    return [row["req"].pk for row in response.context["rows"]]


def decide(
    client: Client,
    req: ApprovalRequest | int,
    verdict: str = "approve",
    *,
    htmx: bool = True,
    page: str = INBOX,
    **fields: str,
) -> Any:
    pk = getattr(req, "pk", req)
    headers = {**htmx_headers("approval-detail"), "HX-Current-URL": f"http://testserver{page}"}
    return client.post(
        f"/approvals/{pk}/decide/", {"verdict": verdict, **fields}, headers=headers if htmx else {}
    )


def pane_error(response: Any) -> str:
    match = re.search(r'id="decision-error"><p>(.*?)</p>', response.content.decode(), re.S)
    assert match, "no error at the form"
    return match.group(1)


# --- who sees what -----------------------------------------------------------------------
def test_reviewers_see_what_they_may_decide_and_nobody_else_does(
    people: Reviewers, other_team: Team
) -> None:
    run, req = start_gated(people.owner)
    for who in ("alice", "bob", "carol", "lead"):
        response = client_of(getattr(people, who)).get(INBOX)
        assert response.status_code == 200
        assert listed(response) == [req.pk], who
        html = response.content.decode()
        assert f'href="/approvals/{req.pk}/"' in html and f'hx-get="/approvals/{req.pk}/"' in html
        assert f'href="/runs/{run.pk}/"' in html and "t-approve" in html
        assert 'ws-connect="/ws/approvals/"' in html
    # The starter (an operator) and a viewer may decide nothing: an empty inbox, no socket.
    for who in ("owner", "viewer", "operator"):
        response = client_of(getattr(people, who)).get(INBOX)
        assert listed(response) == [], who
        assert "Nothing waits on you." in response.content.decode()
        assert "/ws/approvals/" not in response.content.decode()
    # The viewer may still read the request (its team's), without a decision form.
    viewer = client_of(people.viewer)
    for headers in ({}, htmx_headers("approval-detail")):
        response = viewer.get(f"/approvals/{req.pk}/", headers=headers)
        assert response.status_code == 200
        html = response.content.decode()
        assert "You cannot decide this request: you may not decide approvals in this team" in html
        assert 'name="verdict"' not in html
    # Another team's reviewer: a 404 everywhere, and nothing in any view of the list.
    outsider = client_of(people.outsider)
    for status in ("pending", "all", "decided"):
        assert listed(outsider.get(INBOX, {"status": status})) == []
    assert outsider.get(f"/approvals/{req.pk}/").status_code == 404
    assert outsider.get(f"/approvals/{req.pk}/", headers=htmx_headers()).status_code == 404
    assert outsider.get(f"/approvals/run/{run.pk}/").status_code == 404
    assert outsider.get(INBOX, {"request": req.pk}).context.get("req") is None
    assert decide(outsider, req).status_code == 404
    assert outsider.post(f"/approvals/{req.pk}/diff/", {}).status_code == 404
    req.refresh_from_db()
    assert req.status == Status.PENDING and not req.decisions.exists()


def test_the_pending_view_follows_the_rules_of_the_model(people: Reviewers) -> None:
    _, for_leads = start_gated(people.owner, {"approvers": ["group:leads"]})
    _, pair = start_gated(people.owner, {"quorum": 2})
    # The starter, made an admin, may decide others' requests but not their own...
    Membership.objects.filter(user=people.owner).update(role=Membership.Role.ADMIN)
    _, own_allowed = start_gated(people.owner, {"allow_self": True})
    assert listed(client_of(people.owner).get(INBOX)) == [own_allowed.pk]
    # ...the leads' request is for the leads only (and a superuser)...
    assert set(listed(client_of(people.alice).get(INBOX))) == {pair.pk, own_allowed.pk}
    assert for_leads.pk in listed(client_of(people.lead).get(INBOX))
    root = make_user("root")
    root.is_superuser = True
    root.save()
    assert set(listed(client_of(root).get(INBOX))) == {for_leads.pk, pair.pk, own_allowed.pk}
    # ...and a request Alice approved leaves her inbox but waits in Bob's.
    assert decide(client_of(people.alice), pair).status_code == 200
    assert pair.pk not in listed(client_of(people.alice).get(INBOX))
    assert pair.pk in listed(client_of(people.bob).get(INBOX))
    # Each listed request is one the model lets the person decide, and the other way round.
    for user in (people.alice, people.bob, people.lead, people.owner, root, people.viewer):
        shown = set(listed(client_of(user).get(INBOX)))
        allowed = {r.pk for r in ApprovalRequest.objects.all() if not r.refusal(user)}
        assert shown == allowed, user


def test_group_names_match_exactly_whatever_their_characters(people: Reviewers) -> None:
    # The JSON text of the approvers differs between SQLite (escaped) and PostgreSQL.
    checkers = Group.objects.create(name="Prüfer")
    people.bob.groups.add(checkers)
    people.alice.groups.add(Group.objects.create(name="prüfer"))  # another group
    _, req = start_gated(people.owner, {"approvers": ["group:Prüfer"]})
    assert listed(client_of(people.bob).get(INBOX)) == [req.pk]
    assert listed(client_of(people.alice).get(INBOX)) == []


def test_the_nav_badge_counts_what_waits_on_the_person(people: Reviewers) -> None:
    start_gated(people.owner)
    start_gated(people.owner)
    # The runs list passes the roles it read to the badge; other pages read them for it.
    for page in ("/runs/", "/dashboard/"):
        html = client_of(people.alice).get(page).content.decode()
        badge = re.search(r'<span id="approvals-badge" class="nav-badge"( hidden)?>(\d+)', html)
        assert badge and badge.groups() == (None, "2"), page
    html = client_of(people.viewer).get("/runs/").content.decode()
    assert '<span id="approvals-badge" class="nav-badge" hidden>0' in html
    assert 'href="/approvals/"' in html  # the link is there for everyone


def test_the_run_page_links_to_its_request(people: Reviewers) -> None:
    run, req = start_gated(people.owner)
    client = client_of(people.alice)
    html = client.get(f"/runs/{run.pk}/").content.decode()
    assert f'href="/approvals/run/{run.pk}/"' in html
    response = client.get(f"/approvals/run/{run.pk}/")
    assert response.status_code == 302 and response["Location"] == f"/approvals/?request={req.pk}"
    page = client.get(response["Location"])
    assert page.context["req"].pk == req.pk
    assert f'action="/approvals/{req.pk}/decide/"' in page.content.decode()
    assert client.get("/approvals/run/00000000-0000-4000-8000-000000000000/").status_code == 404


# --- the pane ----------------------------------------------------------------------------
def test_the_pane_shows_the_agents_work_escaped_with_the_fields_to_edit(
    people: Reviewers, drive: Any
) -> None:
    evil = "<script>alert(1)</script>"
    run = Run.start("draft-email", {"topic": evil}, actor="t", user=people.owner)[0]
    run = drive(run.pk)
    req = ApprovalRequest.objects.get(run=run)
    ApprovalRequest.objects.filter(pk=req.pk).update(name=f"send {evil}")
    html = client_of(people.alice).get(f"/approvals/{req.pk}/").content.decode()
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # The step before the gate, with its output; the proposal as pretty JSON.
    assert re.search(
        r"<strong>draft</strong> <code class=\"step-output\">[^<]*About &lt;script", html
    )
    assert '<pre class="json">{\n  &quot;body&quot;' in html
    # A one-line string is a text input, a long text a text area.
    assert re.search(
        r'<input type="text" id="edit-\d+-0" name="edit:subject" value="About &lt;', html
    )
    assert re.search(r'<textarea id="edit-\d+-1" name="edit:body" rows="8">Hello all,', html)
    # The list escapes the name too.
    listing = client_of(people.alice).get(INBOX).content.decode()
    assert "send &lt;script&gt;" in listing and "<script>alert" not in listing


def test_the_diff_of_the_edits_is_rendered_on_the_server(people: Reviewers) -> None:
    _, req = start_gated(people.owner)
    ApprovalRequest.objects.filter(pk=req.pk).update(
        editable=["title", "limits"],
        payload={"title": "Weekly report", "to": "all@example.com", "limits": {"n": 1}},
    )
    client = client_of(people.alice)
    html = client.get(f"/approvals/{req.pk}/").content.decode()
    assert re.search(r'<textarea id="edit-\d+-1" name="edit:limits" rows="4" class="mono"', html)
    response = client.post(
        f"/approvals/{req.pk}/diff/",
        {"edit:title": "Weekly <b>report</b>", "edit:limits": '{"n": 2}'},
        headers=htmx_headers("edit-diff"),
    )
    diff = response.content.decode()
    assert diff.lstrip().startswith('<div id="edit-diff"')
    assert "<dt>title</dt>" in diff and "Weekly &lt;b&gt;report&lt;/b&gt;" in diff
    assert re.search(r'<del class="diff-old">.*Weekly report</del>', diff)
    assert "&quot;n&quot;: 2" in diff
    # Unchanged fields make no diff; a JSON field that does not parse says so.
    response = client.post(
        f"/approvals/{req.pk}/diff/",
        {"edit:title": "Weekly report", "edit:limits": "{n: 2"},
        headers=htmx_headers("edit-diff"),
    )
    diff = response.content.decode()
    assert "<dt>" not in diff and "limits: not valid JSON" in diff
    # Long texts get a line diff.
    ApprovalRequest.objects.filter(pk=req.pk).update(payload={"title": "a\nb\nc", "limits": 1})
    diff = client.post(
        f"/approvals/{req.pk}/diff/", {"edit:title": "a\r\nB\r\nc"}, headers=htmx_headers()
    ).content.decode()
    assert (
        '<span class="diff-del">- b</span>' in diff and '<span class="diff-ins">+ B</span>' in diff
    )


# --- deciding ----------------------------------------------------------------------------
def test_approving_with_an_edit_resumes_the_run_with_the_edited_payload(
    people: Reviewers, drive: Any
) -> None:
    run, req = start_gated(people.owner)
    start_gated(people.owner)  # another one stays in the list
    client = client_of(people.alice)
    response = decide(client, req, **{"edit:title": "Monthly report", "comment": "fine"})
    assert response.status_code == 200 and "X-Inline-Error" not in response
    html = response.content.decode().lstrip()
    # The pane, now showing the outcome and the decision with its diff...
    assert html.startswith('<section id="approval-detail"')
    assert "badge-approval-approved" in html and 'name="verdict"' not in html
    assert re.search(r"<strong>alice</strong>\s*<span class=\"badge badge-verdict-approve\">", html)
    assert "by web," in html and "Monthly report</ins>" in html
    # ...the list on screen without the request, the badge, and a toast.
    assert '<div id="inbox-list" class="live-region"' in html
    assert f'id="approval-row-{req.pk}"' not in html and 'id="approval-row-' in html
    assert '<span id="approvals-badge" class="nav-badge" hx-swap-oob="true">1' in html
    assert (
        'class="toast toast-success"' in html and "Approved “publish”: the run continues." in html
    )
    decision = Decision.objects.get(request=req)
    assert (decision.reviewer, decision.verdict, decision.channel) == (
        people.alice,
        "approve",
        "web",
    )
    assert decision.comment == "fine" and decision.edits == {"title": "Monthly report"}
    run = drive(run.pk)
    assert run.status == RunStatus.SUCCEEDED and run.result["title"] == "Monthly report"
    assert run.result["reviewers"] == ["alice"]


def test_reject_and_request_changes_without_js(people: Reviewers, drive: Any) -> None:
    client = client_of(people.bob)
    for verdict, status, message in (
        ("reject", Status.REJECTED, "Rejected “publish”."),
        ("request_changes", Status.CHANGES_REQUESTED, "Changes requested on “publish”."),
    ):
        run, req = start_gated(people.owner)
        response = decide(client, req, verdict, htmx=False, comment="not this week")
        assert response.status_code == 302 and response["Location"] == INBOX
        page = client.get(INBOX).content.decode()
        assert message in page  # the toast on the next page
        req.refresh_from_db()
        assert req.status == status and req.outcome["comment"] == "not this week"
        run = drive(run.pk)
        assert run.status == RunStatus.SUCCEEDED and run.result["outcome"] == status


def test_a_quorum_approval_says_how_many_more_are_needed(people: Reviewers) -> None:
    _, req = start_gated(people.owner, {"quorum": 2})
    html = decide(client_of(people.alice), req).content.decode()
    assert "Your approval of “publish” is recorded (1 of 2); it needs another reviewer." in html
    assert "badge-approval-pending" in html
    # Alice may still reject or ask for changes, but not approve twice.
    pane = client_of(people.alice).get(f"/approvals/{req.pk}/").content.decode()
    assert 'value="reject"' in pane and 'value="approve"' not in pane
    assert "You approved this request already; it needs another reviewer." in pane
    response = decide(client_of(people.alice), req)
    assert response.status_code == 403 and "approved this request already" in pane_error(response)


def test_bad_decisions_are_shown_at_the_form(people: Reviewers) -> None:
    _, req = start_gated(people.owner)
    ApprovalRequest.objects.filter(pk=req.pk).update(
        editable=["title", "limits"], payload={"title": "Weekly report", "limits": {"n": 1}}
    )
    alice = client_of(people.alice)
    cases = [
        (
            {"edit:to": "x@example.com"},
            "approve",
            422,
            "Not editable: to (editable: title, limits)",
        ),
        ({"edit:limits": "{oops"}, "approve", 422, "Check the field limits: not valid JSON"),
        ({"edit:limits": "NaN"}, "approve", 422, "Check the field limits: not valid JSON"),
        ({"comment": "x" * (MAX_COMMENT + 1)}, "approve", 422, "longer than 5000 characters"),
        ({}, "maybe", 422, "Unknown verdict &#x27;maybe&#x27;"),
        ({"edit:title": "New"}, "reject", 422, "Edits go with an approval"),
    ]
    for fields, verdict, status, message in cases:
        for htmx in (True, False):
            response = decide(alice, req, verdict, htmx=htmx, **fields)
            assert response.status_code == status, (fields, verdict)
            assert message in pane_error(response), (fields, verdict)
            if htmx:
                assert response["X-Inline-Error"] == "true"
    # What the person typed is kept in the form.
    response = decide(alice, req, **{"edit:limits": "{oops", "comment": "kept <i>"})
    html = response.content.decode()
    assert ">{oops</textarea>" in html and ">kept &lt;i&gt;</textarea>" in html
    assert 'aria-invalid="true"' in html
    # A viewer is refused at the form (403), an unknown request is a 404, GET is not allowed.
    response = decide(client_of(people.viewer), req)
    assert response.status_code == 403
    assert "may not decide approvals in this team" in pane_error(response)
    assert decide(alice, 999_999).status_code == 404
    assert alice.get(f"/approvals/{req.pk}/decide/").status_code == 405
    req.refresh_from_db()
    assert req.status == Status.PENDING and not req.decisions.exists()


def test_deciding_a_request_someone_else_decided_says_so(people: Reviewers) -> None:
    _, req = start_gated(people.owner)
    ApprovalRequest.objects.get(pk=req.pk).decide(people.bob, "reject", channel="email")
    response = decide(client_of(people.alice), req)
    assert response.status_code == 409 and response["X-Inline-Error"] == "true"
    assert "is already rejected; nothing changed" in pane_error(response)
    html = response.content.decode()
    assert "badge-approval-rejected" in html and "by email," in html
    assert f'id="approval-row-{req.pk}"' not in html  # and it leaves the list on screen
    assert Decision.objects.filter(request=req).count() == 1


# --- bulk --------------------------------------------------------------------------------
def bulk(client: Client, verdict: str, *ids: Any, htmx: bool = True, **extra: Any) -> Any:
    data = {"verdict": verdict, "request": [str(getattr(i, "pk", i)) for i in ids], **extra}
    headers = {"HX-Request": "true", "HX-Current-URL": "http://testserver/approvals/"}
    return client.post("/approvals/bulk/", data, headers=headers if htmx else {})


def test_bulk_decisions_are_each_checked_and_counted(
    people: Reviewers, other_team: Team, drive: Any
) -> None:
    first, second, decided, for_leads = (
        start_gated(people.owner)[1],
        start_gated(people.owner)[1],
        start_gated(people.owner)[1],
        start_gated(people.owner, {"approvers": ["group:leads"]})[1],
    )
    ApprovalRequest.objects.get(pk=decided.pk).decide(people.bob, "reject")
    theirs = make_user("their-owner", other_team, Membership.Role.OPERATOR)
    foreign = gated_in(other_team, theirs)
    response = bulk(
        client_of(people.alice), "approve", first, second, decided, for_leads, foreign, "x1"
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "Approve: 2 approved, 1 already decided, 1 not allowed, 2 not found." in html
    assert "toast-success" in html
    # The list on screen comes with the answer, without the decided requests.
    assert '<div id="inbox-list"' in html and 'id="approval-row-' not in html
    for req, status in ((first, "approved"), (second, "approved"), (for_leads, "pending")):
        req.refresh_from_db()
        assert req.status == status
    assert ApprovalRequest.objects.get(pk=foreign.pk).status == Status.PENDING
    assert list(
        Decision.objects.filter(reviewer=people.alice).values_list("channel", flat=True)
    ) == [
        "web",
        "web",
    ]
    # Rejecting in bulk, with a comment; nothing done is a warning.
    response = bulk(client_of(people.lead), "reject", for_leads, comment="no")
    assert "Reject: 1 rejected." in response.content.decode()
    assert ApprovalRequest.objects.get(pk=for_leads.pk).outcome["comment"] == "no"
    response = bulk(client_of(people.lead), "reject", for_leads)
    assert "Reject: 1 already decided." in response.content.decode()
    assert "toast-warning" in response.content.decode()


def test_bulk_bad_inputs(people: Reviewers) -> None:
    alice = client_of(people.alice)
    response = bulk(alice, "approve")
    assert (
        response.status_code == 422 and "Select at least one request." in response.content.decode()
    )
    response = bulk(alice, "approve", *range(1, BULK_MAX + 2))
    assert response.status_code == 422 and f"at most {BULK_MAX}" in response.content.decode()
    response = bulk(alice, "request_changes", 1)
    assert response.status_code == 422 and "toast-error" in response.content.decode()
    assert client_of(people.alice).get("/approvals/bulk/").status_code == 405
    # Without JS: back to the inbox with its filters.
    _, req = start_gated(people.owner)
    response = bulk(alice, "approve", req, htmx=False, query="workflow=t-approve&poll=1&x=2")
    assert response.status_code == 302
    assert response["Location"] == "/approvals/?workflow=t-approve"
    assert ApprovalRequest.objects.get(pk=req.pk).status == Status.APPROVED


# --- filters and pages -------------------------------------------------------------------
def test_most_urgent_first_and_keyset_pages_without_counting(
    people: Reviewers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbox_module, "PAGE_SIZE", 2)
    now = timezone.now()
    made = {}
    for name, deadline in (("none-old", None), ("later", 7200), ("none-new", None), ("soon", 60)):
        made[name] = start_gated(people.owner, {"deadline": deadline} if deadline else {})[1]
    # Two without a deadline: the older comes first.
    ApprovalRequest.objects.filter(pk=made["none-old"].pk).update(
        created_at=now - timedelta(hours=3)
    )
    client = client_of(people.alice)
    seen: list[int] = []
    params: dict[str, str] = {}
    while True:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(INBOX, params)
        read = [
            q["sql"].upper() for q in queries.captured_queries if "APPROVALS_" in q["sql"].upper()
        ]
        assert read and not any("COUNT(" in sql for sql in read)
        seen += listed(response)
        if not response.context["next_url"]:
            break
        params = {"after": response.context["next_url"].split("after=")[1]}
    names = {r.pk: n for n, r in made.items()}
    assert [names[pk] for pk in seen] == ["soon", "later", "none-old", "none-new"]
    html = client.get(INBOX).content.decode()
    assert re.search(r'<time class="deadline deadline-soon" data-deadline="[^"]+"', html)
    # A cursor that was not given out shows the first page.
    assert listed(client.get(INBOX, {"after": "1_x"})) == seen[:2]


def test_filters_and_the_status_switch(people: Reviewers, other_team: Team) -> None:
    second_team = Team.objects.create(slug="second", name="Second team")
    Membership.objects.create(user=people.alice, team=second_team, role=Membership.Role.REVIEWER)
    theirs = make_user("second-owner", second_team, Membership.Role.OPERATOR)
    run, req = start_gated(people.owner)
    other = gated_in(second_team, theirs)
    _, rejected = start_gated(people.owner)
    ApprovalRequest.objects.get(pk=rejected.pk).decide(people.bob, "reject")
    _, expired = start_gated(people.owner, {"deadline": 1})
    with time_machine.travel(timezone.now() + timedelta(seconds=5)):
        assert ApprovalRequest.objects.get(pk=expired.pk).apply_timeout() == "expired"
    ApprovalRequest.objects.filter(pk=other.pk).update(
        created_at=timezone.now() - timedelta(hours=2), payload={"note": "Quarterly Numbers"}
    )
    client = client_of(people.alice)

    def ids(**params: str) -> set[int]:
        return set(listed(client.get(INBOX, params)))

    assert ids() == {req.pk, other.pk}
    assert ids(team="second") == {other.pk} and ids(team="default") == {req.pk}
    assert ids(age="1h") == {other.pk} and ids(age="24h") == set()
    assert ids(workflow="t-approve") == {req.pk, other.pk} and ids(workflow="t-steps") == set()
    assert ids(status="decided") == {rejected.pk}
    assert ids(status="expired") == {expired.pk}
    assert ids(status="all") == {req.pk, other.pk, rejected.pk, expired.pk}
    # Search: payload text (any case), run id prefix (with or without hyphens), request id.
    assert ids(status="all", q="quarterly") == {other.pk}
    assert ids(status="all", q=str(run.pk)[:8]) == {req.pk}
    assert ids(status="all", q=run.pk.hex[:12]) == {req.pk}
    assert ids(status="all", q=str(rejected.pk)) == {rejected.pk}
    assert ids(status="decided", q="publish") == {rejected.pk}  # the name
    assert ids(status="decided", q="nothing like it") == set()
    # A decided request stays readable, with its history; a bad filter value is ignored.
    html = client.get(INBOX, {"status": "decided"}).content.decode()
    assert "badge-approval-rejected" in html and 'name="request"' not in html
    response = client.get(INBOX, {"team": "nope", "status": "maybe"})
    assert set(listed(response)) == {req.pk, other.pk} and response.context["form"].errors
    # htmx asks for the live part or the list only.
    part = client.get(INBOX, {"team": "second"}, headers=htmx_headers("inbox-live"))
    assert part.content.decode().lstrip().startswith('<div id="inbox-live" hx-ext="ws"')
    assert 'ws-connect="/ws/approvals/?team=second"' in part.content.decode()
    polled = client.get(INBOX, {"poll": "1"}, headers=htmx_headers("inbox-list"))
    html = polled.content.decode().lstrip()
    assert html.startswith('<div id="inbox-list"') and 'hx-trigger="every 2s"' in html
