"""The embedded deployment as a user runs it: one `manage.py serve` process on SQLite with
its worker pool and beat inside, killed and restarted mid-run."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def embedded_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "CELERY_", "CHANNEL_LAYER", "AGENTOPS_TEST"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="agentops.settings",
        AGENTOPS_APPS="tests.testapp",
        AGENTOPS_DATA_DIR=str(tmp_path),
        AGENTOPS_LEASE_SECONDS="2",
        AGENTOPS_SWEEP_SECONDS="1",
        AGENTOPS_ORPHAN_SECONDS="1",
        PYTHONUNBUFFERED="1",
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
    )
    return env


def manage(env: dict[str, str], *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return json.loads(out)


def status(db: Path, run_id: str) -> tuple[str, int, int]:
    with sqlite3.connect(db, timeout=30) as conn:
        row = conn.execute(
            "SELECT status, recoveries, (SELECT count(*) FROM runs_step WHERE run_id = r.id) "
            "FROM runs_run r WHERE id = ?",
            [run_id.replace("-", "")],
        ).fetchone()
    return row


def serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port), "--workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_one_process_serves_works_and_recovers_after_sigkill(embedded_env, tmp_path):
    db = tmp_path / "agentops.sqlite3"
    run = manage(embedded_env, "start_run", "t-steps", "--input", '{"n": 12, "work_ms": 250}')
    port, log = free_port(), tmp_path / "serve.log"
    proc = serve(embedded_env, port, log)
    try:
        wait_for(lambda: _get(f"http://127.0.0.1:{port}/admin/login/") == 200, timeout=60)
        # The run, started by another process before the server was up, gets going.
        wait_for(lambda: status(db, run["id"])[2] >= 3, timeout=60)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    state, _, steps = status(db, run["id"])
    assert state == "running" and steps < 12, log.read_text()[-3000:]

    proc = serve(embedded_env, port, log)
    try:
        wait_for(lambda: status(db, run["id"])[0] == "succeeded", timeout=90)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    state, recoveries, steps = status(db, run["id"])
    assert (state, steps) == ("succeeded", 12)
    assert recoveries == 1
    with sqlite3.connect(db) as conn:
        keys = [k for (k,) in conn.execute("SELECT key FROM testapp_effect ORDER BY id")]
    assert sorted(keys) == sorted(f"{run['id']}:{i}" for i in range(1, 13))


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except OSError:
        return 0
