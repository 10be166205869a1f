"""Throwaway PostgreSQL and Redis servers for the tests and benchmarks.

``python -m tests.servers CMD …`` starts both on free loopback ports, runs CMD with
``AGENTOPS_TEST_PG_URL`` and ``AGENTOPS_TEST_REDIS_URL`` set, and stops them. PostgreSQL refuses
to run as root, so as root the cluster is created and started as the ``postgres`` user with
``runuser`` (pytest-postgresql cannot do that, hence this small module). ``initdb``/``pg_ctl``
are looked up on PATH and then under ``/usr/lib/postgresql/*/bin``.

Without the servers: in CI (``CI=true``) that is an error; elsewhere the command is not run
and the reason is printed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _wait_port(port: int, deadline: float, what: str, log: Path | None = None) -> None:
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    detail = log.read_text()[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not accept connections on port {port}\n{detail}")


@dataclass
class Server:
    url: str
    stop_cmd: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    tmp: str = ""

    def stop(self) -> None:
        if self.stop_cmd:
            subprocess.run(self.stop_cmd, capture_output=True, timeout=60, check=False)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


def start_postgres(*, durable: bool = False) -> Server:
    """A fresh cluster. ``durable=False`` turns fsync off (tests); benchmarks keep it on."""
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        raise FileNotFoundError("PostgreSQL (initdb, pg_ctl) is not installed")
    tmp = tempfile.mkdtemp(prefix="agentops-pg-")
    os.chmod(tmp, 0o755)
    data = Path(tmp) / "data"
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres", "postgres")
    subprocess.run(
        _as_postgres(
            [initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"]
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = free_port()
    opts = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c max_connections=200"
    if not durable:
        opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    log = Path(tmp) / "pg.log"
    subprocess.run(
        _as_postgres(
            [pg_ctl, "-D", str(data), "-o", opts, "-l", str(log), "-w", "-t", "60", "start"]
        ),
        check=True,
        capture_output=True,
        timeout=90,
    )
    _wait_port(port, time.monotonic() + 30, "PostgreSQL", log)
    return Server(
        url=f"postgres://postgres@127.0.0.1:{port}/postgres",
        stop_cmd=_as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]),
        tmp=tmp,
    )


def start_redis() -> Server:
    exe = shutil.which("redis-server")
    if not exe:
        raise FileNotFoundError("redis-server is not installed")
    tmp = tempfile.mkdtemp(prefix="agentops-redis-")
    port = free_port()
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            tmp,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_port(port, time.monotonic() + 30, "Redis")
    return Server(url=f"redis://127.0.0.1:{port}/0", proc=proc, tmp=tmp)


@contextlib.contextmanager
def servers(*, durable: bool = False) -> Iterator[tuple[Server, Server]]:
    pg = start_postgres(durable=durable)
    try:
        redis = start_redis()
        try:
            yield pg, redis
        finally:
            redis.stop()
    finally:
        pg.stop()


def main(argv: list[str]) -> int:
    durable = bool(argv) and argv[0] == "--durable"
    if durable:
        argv = argv[1:]
    if not argv:
        print("usage: python -m tests.servers [--durable] CMD [ARGS…]", file=sys.stderr)
        return 2
    try:
        ctx = servers(durable=durable)
        pg, redis = ctx.__enter__()
    except (FileNotFoundError, subprocess.CalledProcessError, RuntimeError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        reason = f"{exc} {detail.decode(errors='replace')}".strip()
        if os.environ.get("CI", "").lower() == "true":
            print(f"ERROR: the PostgreSQL/Redis tests cannot run: {reason}", file=sys.stderr)
            return 1
        print(f"SKIPPED the PostgreSQL + Redis tests: {reason}", file=sys.stderr)
        return 0
    try:
        env = {
            **os.environ,
            "AGENTOPS_TEST_PG_URL": pg.url,
            "AGENTOPS_TEST_REDIS_URL": redis.url,
        }
        return subprocess.call(argv, env=env)
    finally:
        ctx.__exit__(None, None, None)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
