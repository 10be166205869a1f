"""The API as a client uses it: a real ``manage.py serve`` (daphne, embedded workers, SQLite)
driven with ``agentops.client``: submit, follow the Server-Sent Events stream (resuming after
``Last-Event-ID`` with no gap and no duplicate, heartbeats while idle, closed after the final
transition), and wait."""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentops.client import ApiError, Client
from tests.conftest import wait_for
from tests.embedded import embedded_env, manage, serving


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """A served agentops on a free port: (base URL, an operator's API token, the database)."""
    data = tmp_path_factory.mktemp("api-serve")
    env = embedded_env(data, AGENTOPS_SSE_HEARTBEAT_SECONDS="0.3", AGENTOPS_SSE_POLL_SECONDS="0.05")
    manage(env, "migrate", "-v0")
    manage(env, "createsuperuser", "--noinput", "--username", "ci", "--email", "ci@example.com")
    token = manage(env, "create_api_token", "ci", "--team", "default", "--name", "tests").strip()
    with serving(env, ready_path="/api/v1/openapi.json") as served:
        yield served.base, token, data / "agentops.sqlite3"


def _event_ids(db: Path, run_id: str) -> list[int]:
    with sqlite3.connect(db, timeout=30) as conn:
        rows = conn.execute(
            "SELECT id FROM runs_event WHERE run_id = ? ORDER BY id", [run_id.replace("-", "")]
        ).fetchall()
    return [r[0] for r in rows]


def test_submit_follow_and_wait(server):
    base, token, db = server
    client = Client(base, token)
    run = client.submit("t-steps", {"n": 5, "work_ms": 50})
    assert run["status"] == "queued" and run["replayed"] is False

    events = list(client.follow(run["id"]))
    assert events[0]["kind"] == "run.created"
    assert events[-1]["kind"] == "run.succeeded" and events[-1]["data"]["to"] == "succeeded"
    ids = [e["id"] for e in events]
    assert ids == sorted(set(ids)) == _event_ids(db, run["id"])

    done = client.wait(run["id"], timeout=30, initial=0.1)
    assert done["status"] == "succeeded" and done["result"] == {"keys": 5}

    # Following a finished run replays its events and closes; following from its end closes.
    assert [e["id"] for e in client.follow(run["id"])] == ids
    assert list(client.follow(run["id"], last_event_id=ids[-1])) == []


def test_resume_with_last_event_id_has_no_gap_and_no_duplicate(server):
    base, token, db = server
    client = Client(base, token)
    run = client.submit("t-steps", {"n": 8, "work_ms": 100})
    first: list[dict] = []
    for event in client.follow(run["id"]):
        first.append(event)
        if len(first) == 4:
            break  # the connection drops mid-run
    rest = list(client.follow(run["id"], last_event_id=first[-1]["id"]))
    ids = [e["id"] for e in first + rest]
    assert ids == _event_ids(db, run["id"])
    assert len(ids) == len(set(ids))
    assert rest[-1]["data"]["to"] == "succeeded"


def test_idle_stream_sends_heartbeats_and_closes_after_the_final_event(server):
    base, token, _ = server
    client = Client(base, token)
    run = client.submit("t-compensate", {"steps": 1})  # then waits for the event "go"
    wait_for(lambda: client.get(run["id"])["status"] == "waiting", timeout=30)

    req = urllib.request.Request(
        f"{base}/api/v1/runs/{run['id']}/stream",
        headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
    )
    lines: list[str] = []
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["Cache-Control"] == "no-cache"
        heartbeats, deadline = 0, time.monotonic() + 20
        while heartbeats < 2 and time.monotonic() < deadline:
            line = resp.readline().decode()
            lines.append(line)
            heartbeats += line.startswith(": keep-alive")
        assert heartbeats == 2, lines
        client.signal(run["id"], "go", {"ok": True})
        while True:  # the server closes the stream after the final transition
            line = resp.readline().decode()
            if not line:
                break
            lines.append(line)
    data = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert data[-1]["kind"] == "run.succeeded"
    id_lines = [int(line[4:]) for line in lines if line.startswith("id: ")]
    assert id_lines == [d["id"] for d in data]


def test_client_replays_its_submit_with_one_key_and_reports_errors(server):
    base, token, _ = server
    client = Client(base, token)
    first = client.submit("t-noop", {"n": 1}, idempotency_key="client-key")
    again = client.submit("t-noop", {"n": 1}, idempotency_key="client-key")
    assert again["id"] == first["id"] and again["replayed"] is True
    with pytest.raises(ApiError) as err:
        client.submit("t-noop", {"n": 2}, idempotency_key="client-key")
    assert err.value.status == 422 and "client-key" in err.value.problem["detail"]
    with pytest.raises(ApiError) as err:
        Client(base, "ao_bad_token").get(first["id"])
    assert err.value.status == 401
    assert {w["name"] for w in client.workflows()} >= {"t-steps", "t-noop"}
