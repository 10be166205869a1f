"""The API under a race on PostgreSQL: fifty clients sending one submit with one idempotency
key at the same moment, each on its own connection, get one run."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection

from runs.api_models import ApiToken
from runs.audit import Event
from runs.models import IdempotencyKey, Run, Team
from tests.runs.api_support import ApiClient, member

pytestmark = [pytest.mark.pg, pytest.mark.django_db(transaction=True)]

CLIENTS = 50


def test_concurrent_submits_with_one_key_make_one_run(team: Team) -> None:
    _, text = ApiToken.mint(user=member("alice", team), team=team)
    body = {"workflow": "t-steps", "input": {"n": 2}}
    barrier = threading.Barrier(CLIENTS)
    answers: list[Any] = []
    errors: list[BaseException] = []
    backends: set[int] = set()  # PostgreSQL server processes: one connection per client
    lock = threading.Lock()

    def submit() -> None:
        try:
            barrier.wait(timeout=10)
            r = ApiClient(text).post("/api/v1/runs", body, headers={"Idempotency-Key": "race"})
            with lock:
                answers.append((r.status_code, r.json(), r.get("Idempotent-Replayed")))
                backends.add(connection.connection.info.backend_pid)
        except BaseException as exc:
            with lock:
                errors.append(exc)
        finally:
            connection.close()  # each thread had its own connection

    threads = [threading.Thread(target=submit) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)

    assert errors == []
    assert len(answers) == CLIENTS and len(backends) == CLIENTS
    assert [status for status, _, _ in answers] == [202] * CLIENTS, answers
    assert len({body["id"] for _, body, _ in answers}) == 1
    # One request made the run; the other 49 were answered with it.
    assert sorted(body["replayed"] for _, body, _ in answers) == [False] + [True] * (CLIENTS - 1)
    assert sorted(str(h) for _, _, h in answers) == ["None"] + ["true"] * (CLIENTS - 1)
    assert Run.objects.count() == 1
    assert IdempotencyKey.objects.filter(key="race").count() == 1
    assert Event.objects.filter(kind="run.created").count() == 1
