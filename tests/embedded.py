"""Real `manage.py` processes of the embedded deployment for the tests: an environment on a
throwaway SQLite data dir, commands, and a served process that is always stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


def embedded_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of an embedded deployment on ``data_dir``, with the test workflows and
    short leases and sweeps, and none of the test run's own database or broker settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "CELERY_", "CHANNEL_LAYER", "AGENTOPS_TEST"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="agentops.settings",
        AGENTOPS_APPS="tests.testapp",
        AGENTOPS_DATA_DIR=str(data_dir),
        AGENTOPS_LEASE_SECONDS="2",
        AGENTOPS_SWEEP_SECONDS="1",
        AGENTOPS_ORPHAN_SECONDS="1",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def manage(env: dict[str, str], *args: str) -> str:
    """Run a management command to completion; its standard output."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except OSError:
        return 0


@dataclass
class Served:
    base: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crash would."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


def start_serve(env: dict[str, str], *, port: int | None = None, workers: int = 2) -> Served:
    port = port or free_port()
    log = Path(env["AGENTOPS_DATA_DIR"]) / "serve.log"
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port), "--workers", str(workers)],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Served(f"http://127.0.0.1:{port}", port, proc, log)


@contextlib.contextmanager
def serving(env: dict[str, str], *, ready_path: str = "/login/") -> Iterator[Served]:
    """A served agentops that answers ``ready_path``; stopped however the block ends."""
    served = start_serve(env)
    try:
        try:
            wait_for(
                lambda: (
                    served.proc.poll() is not None or http_status(served.base + ready_path) == 200
                ),
                timeout=60,
            )
        except AssertionError:
            pytest.fail(f"serve did not answer:\n{served.log.read_text()[-3000:]}")
        if served.proc.poll() is not None:
            pytest.fail(f"serve exited:\n{served.log.read_text()[-3000:]}")
        yield served
    finally:
        served.stop()
