"""The approvals endpoints of the HTTP API: list, read and decide (channel ``api``)."""

from __future__ import annotations

import pytest

from approvals.models import ApprovalRequest, Decision
from runs.models import Membership, RunStatus
from tests.approvals.support import make_reviewers, start_gated
from tests.runs.api_support import assert_problem, token_client

pytestmark = [pytest.mark.django_db]
API = "/api/v1"


@pytest.fixture
def people(team, other_team):
    return make_reviewers(team, other_team)


def test_pending_requests_are_listed_with_whether_the_caller_may_decide(people, other_team):
    run, request = start_gated(people.owner)
    start_gated(people.owner)  # a second one
    response = token_client(people.alice, people.team).get(f"{API}/approvals", status="pending")
    assert response.status_code == 200
    items = response.json()["items"]
    assert len(items) == 2
    first = next(i for i in items if i["id"] == request.pk)
    assert first["status"] == "pending" and first["run_id"] == str(run.pk)
    assert first["payload"]["title"] == "Weekly report" and first["editable"] == ["title"]
    assert first["you_may_decide"] is True and first["links"]["decision"].endswith("/decision")
    # The viewer sees it but may not decide; the starter (made an admin) is told why not.
    Membership.objects.filter(user=people.owner).update(role="admin")
    viewer = token_client(people.viewer, people.team).get(f"{API}/approvals").json()
    assert viewer["items"][0]["you_may_decide"] is False
    owner = token_client(people.owner, people.team).get(f"{API}/approvals").json()
    assert "separation of duties" in owner["items"][0]["why_not"]
    # Another team sees nothing, and a single read is a 404.
    outsider = token_client(people.outsider, other_team)
    assert outsider.get(f"{API}/approvals").json()["items"] == []
    assert_problem(outsider.get(f"{API}/approvals/{request.pk}"), 404)


def test_cursor_paging_and_filters(people):
    for _ in range(3):
        start_gated(people.owner)
    client = token_client(people.alice, people.team)
    page = client.get(f"{API}/approvals", limit=2).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = client.get(f"{API}/approvals", limit=2, cursor=page["next_cursor"]).json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None
    ids = {i["id"] for i in page["items"]} | {i["id"] for i in rest["items"]}
    assert len(ids) == 3
    assert client.get(f"{API}/approvals", workflow="t-steps").json()["items"] == []
    assert client.get(f"{API}/approvals", status="decided").json()["items"] == []
    assert_problem(client.get(f"{API}/approvals", cursor="nonsense!"), 400)
    assert_problem(client.get(f"{API}/approvals", status="maybe"), 422)


def test_a_decision_over_the_api_is_recorded_with_its_channel(people, drive):
    run, request = start_gated(people.owner)
    client = token_client(people.alice, people.team)
    response = client.post(
        f"{API}/approvals/{request.pk}/decision",
        {"verdict": "approve", "comment": "ok", "edits": {"title": "Final"}},
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "approved" and body["outcome"]["payload"]["title"] == "Final"
    assert body["decisions"][0]["channel"] == "api"
    decision = Decision.objects.get(request=request)
    assert decision.actor == "api:alice" and decision.channel == "api"
    assert drive(run.pk).status == RunStatus.SUCCEEDED
    # Deciding again is a conflict that names the outcome.
    again = client.post(f"{API}/approvals/{request.pk}/decision", {"verdict": "reject"})
    assert assert_problem(again, 409)["status_now"] == "approved"


def test_decision_errors_are_problems(people, team, other_team):
    _run, request = start_gated(people.owner)
    url = f"{API}/approvals/{request.pk}/decision"
    alice = token_client(people.alice, people.team)
    assert_problem(alice.post(url, {"verdict": "maybe"}), 422)
    assert_problem(alice.post(url, {"verdict": "approve", "extra": 1}), 422)
    assert_problem(alice.post(url, raw="{not json"), 400)
    body = assert_problem(alice.post(url, {"verdict": "approve", "edits": {"to": "x"}}), 422)
    assert "not editable: to" in body["detail"]
    assert_problem(alice.post(url, {"verdict": "approve", "comment": "x" * 6000}), 422)
    assert_problem(token_client(people.viewer, team).post(url, {"verdict": "approve"}), 403)
    Membership.objects.filter(user=people.owner).update(role="admin")
    body = assert_problem(token_client(people.owner, team).post(url, {"verdict": "approve"}), 403)
    assert "separation of duties" in body["detail"]
    assert_problem(token_client(people.outsider, other_team).post(url, {"verdict": "reject"}), 404)
    assert_problem(alice.post(f"{API}/approvals/999999/decision", {"verdict": "reject"}), 404)
    assert_problem(alice.post(f"{API}/approvals/abc/decision", {"verdict": "reject"}), 422)
    # A token of another team held by a member of both acts only in its own team.
    Membership.objects.create(user=people.alice, team=other_team, role="reviewer")
    assert_problem(token_client(people.alice, other_team).post(url, {"verdict": "approve"}), 404)
    # The role is read at the moment of the decision.
    Membership.objects.filter(user=people.alice, team=team).update(role="viewer")
    assert_problem(alice.post(url, {"verdict": "approve"}), 403)
    assert ApprovalRequest.objects.get(pk=request.pk).status == "pending"
    assert not Decision.objects.exists()


def test_the_list_says_why_not_as_the_request_would_without_a_query_a_request(people):
    """Each listed request says whether the caller may decide it and why not, the same
    words as deciding it would answer, from the caller's standing read once."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    requests = [start_gated(people.owner)[1] for _ in range(4)]
    ApprovalRequest.objects.filter(pk=requests[1].pk).update(approvers=["group:leads"])
    ApprovalRequest.objects.filter(pk=requests[2].pk).update(
        requested_by=people.alice, allow_self_approval=False
    )
    ApprovalRequest.objects.filter(pk=requests[3].pk).update(quorum=2)
    Decision.objects.create(
        request=requests[3], reviewer=people.alice, verdict=Decision.Verdict.APPROVE
    )
    client = token_client(people.alice, people.team)

    def listed() -> tuple[dict[int, dict], int]:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(f"{API}/approvals")
        assert response.status_code == 200
        return {i["id"]: i for i in response.json()["items"]}, len(queries)

    listed()  # records the token's use (written at most once a minute)
    items, queries_for_four = listed()
    for req in requests:
        req.refresh_from_db()
        why = req.refusal(people.alice)
        assert items[req.pk]["why_not"] == (why or None)
        assert items[req.pk]["you_may_decide"] is (not why)
    assert {items[r.pk]["you_may_decide"] for r in requests} == {True, False}
    assert len({items[r.pk]["why_not"] for r in requests}) == 4  # each reason, and none
    for _ in range(4):
        start_gated(people.owner)
    assert listed()[1] == queries_for_four
