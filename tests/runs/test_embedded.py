"""The embedded deployment as a user runs it: one `manage.py serve` process on SQLite with
its worker pool and beat inside, killed and restarted mid-run."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.embedded import embedded_env, http_status, manage, start_serve


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = embedded_env(tmp_path)
    manage(env, "migrate", "-v0")
    return env


def status(db: Path, run_id: str) -> tuple[str, int, int]:
    with sqlite3.connect(db, timeout=30) as conn:
        row = conn.execute(
            "SELECT status, recoveries, (SELECT count(*) FROM runs_step WHERE run_id = r.id) "
            "FROM runs_run r WHERE id = ?",
            [run_id.replace("-", "")],
        ).fetchone()
    return row


def test_one_process_serves_works_and_recovers_after_sigkill(env, tmp_path):
    db = tmp_path / "agentops.sqlite3"
    run = json.loads(manage(env, "start_run", "t-steps", "--input", '{"n": 12, "work_ms": 250}'))
    served = start_serve(env)
    try:
        wait_for(lambda: http_status(f"{served.base}/admin/login/") == 200, timeout=60)
        # The run, started by another process before the server was up, gets going.
        wait_for(lambda: status(db, run["id"])[2] >= 3, timeout=60)
    finally:
        served.kill()
    state, _, steps = status(db, run["id"])
    assert state == "running" and steps < 12, served.log.read_text()[-3000:]

    served = start_serve(env, port=served.port)
    try:
        wait_for(lambda: status(db, run["id"])[0] == "succeeded", timeout=90)
    finally:
        served.stop()
    state, recoveries, steps = status(db, run["id"])
    assert (state, steps) == ("succeeded", 12)
    assert recoveries == 1
    with sqlite3.connect(db) as conn:
        keys = [k for (k,) in conn.execute("SELECT key FROM testapp_effect ORDER BY id")]
    assert sorted(keys) == sorted(f"{run['id']}:{i}" for i in range(1, 13))
