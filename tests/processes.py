"""Real ``celery worker`` and ``celery beat`` processes for the PostgreSQL + Redis tests.

The processes run against pytest-django's *test* database (``test_<name>`` on the server that
``python -m tests.servers`` started) and the test Redis, with short leases and sweeps so that
recovery happens within seconds. Every process gets its own process group, so a SIGKILL takes
down the whole worker (a prefork pool's children too) the way a lost machine would.

Use ``Cluster`` as a context manager (or through a fixture that wraps ``cluster_fixture``): it
always kills what it started, and on failure the processes' logs are part of the report.
Waiting is by polling with a deadline (``Cluster.wait``), never by sleeping.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CELERY = str(BIN / "celery") if (BIN / "celery").exists() else shutil.which("celery") or "celery"

#: Engine timings for the processes: a dead worker's run is recovered within a few seconds.
FAST_ENGINE = {
    "AGENTOPS_LEASE_SECONDS": "2",
    "AGENTOPS_ORPHAN_SECONDS": "2",
    "AGENTOPS_SLICE_SECONDS": "5",
}


def redis_url() -> str:
    from django.conf import settings

    return os.environ.get("AGENTOPS_TEST_REDIS_URL") or settings.CELERY_BROKER_URL


def redis_client() -> Any:
    import redis

    return redis.Redis.from_url(redis_url())


def database_url() -> str:
    """The URL of the database pytest-django created (``connection`` points at it now)."""
    from django.db import connection

    s = connection.settings_dict
    if s["ENGINE"] != "django.db.backends.postgresql":
        raise RuntimeError("real worker processes need PostgreSQL (python -m tests.servers)")
    auth = quote(s.get("USER") or "", safe="")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"], safe="")
    host = s.get("HOST") or "127.0.0.1"
    port = s.get("PORT") or 5432
    return f"postgres://{auth}@{host}:{port}/{s['NAME']}"


try:  # loaded here, not in the forked child (no imports between fork and exec)
    _LIBC: Any = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
except OSError:
    _LIBC = None
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it if pytest dies, so no worker outlives the run
    (Linux only; elsewhere ``Cluster.close`` is the only cleanup)."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def install_fast_sweeps(every: int = 1) -> None:
    """Register the beat sweeps at ``every`` seconds for the processes of this test.

    ``install`` leaves existing rows alone (admins' edits win), and the migration's rows, at
    the default interval, are still there until the first transactional test flushes them:
    drop ours first so the interval is the one asked for.
    """
    from django_celery_beat.models import PeriodicTask

    from runs import sweeps_schedule

    names = [name for name, _, _ in sweeps_schedule.SWEEPS]
    PeriodicTask.objects.filter(name__in=names).delete()
    sweeps_schedule.install(every=every)


def process_env(**extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DJANGO_SETTINGS_MODULE": "agentops.settings",
        "AGENTOPS_APPS": "tests.testapp",
        "CELERY_BROKER_URL": redis_url(),
        "CHANNEL_LAYER_URL": redis_url(),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
        "PYTHONUNBUFFERED": "1",
        **FAST_ENGINE,
    }
    env.update(extra)
    return env


@dataclass
class Proc:
    """One process (and its process group) with its log file."""

    name: str
    kind: str  # "worker" or "beat"
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, chars: int = 6000) -> str:
        text = self.log()
        return text if len(text) <= chars else "…" + text[-chars:]

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole process group: no handler, no cleanup, like a lost machine."""
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)

    def terminate(self) -> None:
        """SIGTERM to the main process: a warm shutdown, as a deploy or a scale-down does."""
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None


class Cluster:
    """Starts worker and beat processes; ``close`` (or leaving the ``with``) kills them all."""

    def __init__(self, *, flush_redis: bool = True) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="agentops-procs-"))
        self.procs: list[Proc] = []
        self._flush = flush_redis

    def __enter__(self) -> Cluster:
        if self._flush:
            # Messages left by earlier tests (for runs the flush deleted) would only add noise.
            redis_client().flushall()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ starting
    def _spawn(self, name: str, kind: str, argv: list[str], env: dict[str, str]) -> Proc:
        log_path = self.dir / f"{name}.log"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so kill() takes all of it
                preexec_fn=_die_with_parent if _LIBC is not None else None,
            )
        proc = Proc(name, kind, popen, log_path)
        self.procs.append(proc)
        return proc

    def worker(
        self,
        name: str = "w1",
        *,
        concurrency: int = 2,
        queues: str = "runs,sweeps",
        wait_ready: bool = True,
        **env: str,
    ) -> Proc:
        argv = [
            CELERY,
            "-A",
            "agentops",
            "worker",
            "-Q",
            queues,
            "-P",
            "threads",
            "-c",
            str(concurrency),
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
            "-n",
            f"{name}@%h",
            "-l",
            "INFO",
        ]
        proc = self._spawn(name, "worker", argv, process_env(**env))
        if wait_ready:
            self.ready(proc)
        return proc

    def beat(self, name: str = "beat", *, wait_ready: bool = True, **env: str) -> Proc:
        """Beat with the database scheduler. Call ``runs.sweeps_schedule.install(every=1)``
        first: transactional tests flush the rows the migration wrote."""
        argv = [
            CELERY,
            "-A",
            "agentops",
            "beat",
            "-S",
            "django",
            "-l",
            "INFO",
            "--max-interval",
            "1",
        ]
        proc = self._spawn(name, "beat", argv, process_env(**env))
        if wait_ready:
            self.ready(proc)
        return proc

    def ready(self, *procs: Proc, timeout: float = 30) -> None:
        """Wait until each worker says it is ready and each beat that it sent a sweep."""

        def up(p: Proc) -> bool:
            log = p.log()
            return " ready." in log if p.kind == "worker" else "Sending due task" in log

        for p in procs:
            self.wait(lambda p=p: up(p), timeout=timeout, what=f"{p.name} to start")

    # ------------------------------------------------------------------ waiting and reporting
    def logs(self, chars: int = 6000) -> str:
        parts = []
        for p in self.procs:
            state = "running" if p.alive() else f"exited {p.popen.returncode}"
            parts.append(
                f"----- {p.name} (pid {p.pid}, {state}) {p.log_path} -----\n{p.tail(chars)}"
            )
        return "\n".join(parts)

    def wait(
        self,
        predicate: Callable[[], Any],
        *,
        timeout: float,
        what: str,
        every: float = 0.05,
        alive: list[Proc] | None = None,
    ) -> Any:
        """Poll ``predicate`` until it is truthy; fail with the processes' logs after
        ``timeout`` seconds, or at once if a process in ``alive`` (default: every process not
        deliberately stopped) exits."""
        deadline = time.monotonic() + timeout
        watch = alive if alive is not None else [p for p in self.procs if p.alive()]
        while True:
            value = predicate()
            if value:
                return value
            dead = [p for p in watch if not p.alive()]
            if dead:
                names = ", ".join(f"{p.name} (exit {p.popen.returncode})" for p in dead)
                raise AssertionError(f"{names} died while waiting for {what}\n{self.logs()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}\n{self.logs()}"
                )
            time.sleep(every)

    # ------------------------------------------------------------------ stopping
    def close(self) -> None:
        for p in self.procs:
            if p.alive():
                p.kill()
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(timeout=10)
        # Their database sessions must be gone before pytest-django flushes the tables.
        _wait_backends_gone()

    def cleanup_dir(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _wait_backends_gone(timeout: float = 10) -> None:
    """Wait until no other session is connected to the test database (a killed worker's
    backend can linger for a moment, and a TRUNCATE would queue behind its locks)."""
    from django.db import connection

    deadline = time.monotonic() + timeout
    with connection.cursor() as cur:
        while time.monotonic() < deadline:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
            if cur.fetchone()[0] == 0:
                return
            time.sleep(0.05)


def cluster_fixture(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """Body of a ``cluster`` fixture: yields a Cluster, kills its processes afterwards and,
    when the test failed, prints their logs (pytest shows them under "Captured stdout
    teardown")."""
    failed_before = request.session.testsfailed
    cluster = Cluster()
    try:
        with cluster:
            yield cluster
    finally:
        if request.session.testsfailed > failed_before:
            print(cluster.logs(chars=20000))
        else:
            cluster.cleanup_dir()
