"""The HTTP API's run endpoints: submit in the async job pattern, idempotent replays, reading,
listing with a cursor, and the operator actions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from runs.api_models import RunCallback
from runs.audit import Event
from runs.models import Run, RunStatus, Signal
from tests.runs.api_support import assert_problem, member, token_client

pytestmark = [pytest.mark.engine, pytest.mark.django_db]


@pytest.fixture
def api(team):
    return token_client(member("alice", team), team)


def test_submit_answers_202_with_location_and_retry_after(api, team):
    r = api.post("/api/v1/runs", {"workflow": "t-steps", "input": {"n": 2}})
    assert r.status_code == 202, r.content
    body = r.json()
    run = Run.objects.get(pk=body["id"])
    assert r["Location"] == f"/api/v1/runs/{run.pk}" == body["links"]["self"]
    assert int(r["Retry-After"]) >= 1
    assert body["status"] == "queued" and body["replayed"] is False
    assert "Idempotent-Replayed" not in r
    assert run.team == team and run.created_by.username == "alice"
    created = Event.objects.get(run=run, kind="run.created")
    assert created.actor == "api:alice"


def test_submit_with_budget_deadline_and_callback(api, settings):
    settings.AGENTOPS_ALLOW_PRIVATE_CALLBACKS = True
    r = api.post(
        "/api/v1/runs",
        {
            "workflow": "t-steps",
            "input": {"n": 1},
            "budget": {"usd": 2, "actions": 10},
            "deadline": 60,
            "callback_url": "http://127.0.0.1:9/done",
        },
    )
    assert r.status_code == 202, r.content
    run = Run.objects.get(pk=r.json()["id"])
    assert (float(run.limit_usd), run.limit_actions) == (2.0, 10)
    assert timedelta(seconds=55) < run.deadline_at - timezone.now() <= timedelta(seconds=60)
    assert RunCallback.objects.get(run=run).url == "http://127.0.0.1:9/done"


def test_idempotent_replay_returns_the_same_run(api):
    body = {"workflow": "t-steps", "input": {"n": 2}}
    first = api.post("/api/v1/runs", body, headers={"Idempotency-Key": "nightly-1"})
    again = api.post("/api/v1/runs", body, headers={"Idempotency-Key": "nightly-1"})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true" and again.json()["replayed"] is True
    assert again["Location"] == first["Location"]
    assert Run.objects.count() == 1


def test_same_key_with_a_different_body_is_a_422(api, settings):
    settings.AGENTOPS_ALLOW_PRIVATE_CALLBACKS = True
    key = {"Idempotency-Key": "k1"}
    assert api.post("/api/v1/runs", {"workflow": "t-steps"}, headers=key).status_code == 202
    r = api.post("/api/v1/runs", {"workflow": "t-steps", "input": {"n": 9}}, headers=key)
    problem = assert_problem(r, 422)
    assert problem["type"].endswith("idempotency-conflict")
    assert "k1" in problem["detail"] and "different" in problem["detail"]
    # The callback is part of the request too.
    r = api.post(
        "/api/v1/runs",
        {"workflow": "t-steps", "callback_url": "http://localhost/cb"},
        headers=key,
    )
    assert_problem(r, 422)
    assert Run.objects.count() == 1


def test_get_run_shows_status_progress_budget_and_result(api, drive):
    r = api.post("/api/v1/runs", {"workflow": "t-spend", "input": {"n": 2, "usd": 0.5}})
    run_id = r.json()["id"]
    r = api.get(f"/api/v1/runs/{run_id}")
    assert r.status_code == 200 and r["Retry-After"]
    body = r.json()
    assert body["status"] == "queued" and body["terminal"] is False
    assert set(body["budget"]) == {"usd", "tokens", "actions", "wall_seconds"}

    drive(run_id)
    r = api.get(f"/api/v1/runs/{run_id}")
    body = r.json()
    assert body["status"] == "succeeded" and body["terminal"] is True
    assert body["result"] == "all spent" and body["result_is_partial"] is False
    assert float(body["budget"]["usd"]["spent"]) == pytest.approx(1.0)
    assert "Retry-After" not in r


def test_partial_result_and_error_are_shown(api, drive):
    r = api.post("/api/v1/runs", {"workflow": "t-spend", "budget": {"usd": 0.25}})
    run = drive(r.json()["id"])
    assert run.status == RunStatus.PAUSED
    body = api.get(f"/api/v1/runs/{run.pk}").json()
    assert body["result_is_partial"] is True and body["result"]["done"] >= 1
    assert "budget" in body["pause_reason"]

    r = api.post(
        "/api/v1/runs", {"workflow": "t-flaky", "input": {"kind": "permanent", "fail_times": 9}}
    )
    drive(r.json()["id"])
    body = api.get(f"/api/v1/runs/{r.json()['id']}").json()
    assert body["status"] == "failed" and body["error"]


def test_workflows_list_names_versions_and_input_schemas(api):
    r = api.get("/api/v1/workflows")
    assert r.status_code == 200
    by_name = {w["name"]: w for w in r.json()["items"]}
    steps = by_name["t-steps"]
    assert steps["version"] == "1"
    assert steps["input_schema"]["properties"]["n"]["type"] == "integer"


def test_list_runs_filters_and_pages_with_a_cursor(api, team, time_machine):
    start = timezone.now()
    ids = []
    for i in range(5):
        time_machine.move_to(start + timedelta(seconds=i))
        ids.append(api.post("/api/v1/runs", {"workflow": "t-steps"}).json()["id"])
    time_machine.move_to(start + timedelta(seconds=10))
    api.post("/api/v1/runs", {"workflow": "t-noop"})

    seen, cursor, pages = [], None, 0
    while True:
        query = {"workflow": "t-steps", "limit": 2}
        if cursor:
            query["cursor"] = cursor
        r = api.get("/api/v1/runs", **query)
        assert r.status_code == 200, r.content
        body = r.json()
        seen += [item["id"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if not cursor:
            break
        assert body["links"]["next"].startswith("/api/v1/runs?")
    assert seen == list(reversed(ids)) and pages == 3

    r = api.get("/api/v1/runs", created_after=(start + timedelta(seconds=2.5)).isoformat())
    assert len(r.json()["items"]) == 3  # two t-steps and the t-noop
    r = api.get("/api/v1/runs", created_before=(start + timedelta(seconds=1.5)).isoformat())
    assert [i["id"] for i in r.json()["items"]] == [ids[1], ids[0]]
    Run.objects.filter(pk=ids[0]).update(status=RunStatus.PAUSED)
    r = api.get("/api/v1/runs", status="paused")
    assert [i["id"] for i in r.json()["items"]] == [ids[0]]


def test_cancel_pause_resume_and_a_finished_run_is_409(api, drive):
    run_id = api.post("/api/v1/runs", {"workflow": "t-compensate"}).json()["id"]
    drive(run_id)  # waits for the event "go"
    r = api.post(f"/api/v1/runs/{run_id}/pause", {"reason": "lunch"})
    assert r.status_code == 202 and r.json()["status"] == "paused"
    assert r["Location"].endswith(run_id)
    r = api.post(f"/api/v1/runs/{run_id}/resume")
    assert r.status_code == 202 and r.json()["status"] == "running"
    r = api.post(f"/api/v1/runs/{run_id}/cancel")
    assert r.status_code == 202 and r.json()["stop_requested"] == "cancel"
    assert drive(run_id).status == RunStatus.CANCELLED

    problem = assert_problem(api.post(f"/api/v1/runs/{run_id}/cancel"), 409)
    assert problem["run_status"] == "cancelled" and "cannot cancel" in problem["detail"]
    assert_problem(api.post(f"/api/v1/runs/{run_id}/resume"), 409)


def test_retry_a_failed_run_makes_a_new_run(api, drive):
    body = {"workflow": "t-flaky", "input": {"kind": "permanent", "fail_times": 9}}
    run_id = api.post("/api/v1/runs", body).json()["id"]
    drive(run_id)
    r = api.post(f"/api/v1/runs/{run_id}/retry", {"from_step": 1})
    assert r.status_code == 202, r.content
    new = r.json()
    assert new["id"] != run_id and new["parent"] == run_id and new["retried_from"] == run_id
    assert r["Location"] == f"/api/v1/runs/{new['id']}"


def test_signal_is_delivered_once_per_idempotency_key(api, drive):
    run_id = api.post("/api/v1/runs", {"workflow": "t-compensate"}).json()["id"]
    drive(run_id)
    key = {"Idempotency-Key": "sig-1"}
    r = api.post(f"/api/v1/runs/{run_id}/signals/go", {"payload": {"ok": True}}, headers=key)
    assert r.status_code == 202 and r.json()["delivered"] is True
    again = api.post(f"/api/v1/runs/{run_id}/signals/go", {"payload": {"ok": True}}, headers=key)
    assert again.status_code == 200 and again["Idempotent-Replayed"] == "true"
    assert again.json()["delivered"] is False
    assert Signal.objects.filter(run_id=run_id).count() == 1
    assert drive(run_id).status == RunStatus.SUCCEEDED


def test_raise_budget(api, drive):
    run_id = api.post("/api/v1/runs", {"workflow": "t-spend", "budget": {"usd": 0.25}}).json()["id"]
    assert drive(run_id).status == RunStatus.PAUSED
    assert_problem(api.post(f"/api/v1/runs/{run_id}/resume"), 409)
    r = api.post(f"/api/v1/runs/{run_id}/budget", {"usd": 5})
    assert r.status_code == 200, r.content
    assert api.post(f"/api/v1/runs/{run_id}/resume").status_code == 202
    assert drive(run_id).status == RunStatus.SUCCEEDED
