"""Instructions a page costs in one process, counted by valgrind's callgrind: the same
count for the same code and data whatever else the machine is doing, where the latencies
move 30-50 % with the hour on a shared machine.

    python bench/console_instructions.py COUNT PATH   (run under callgrind, with the bench's
                                                       environment and COOKIE set)

``instructions_per_request`` runs that twice, with two counts of requests, under callgrind:
the difference over the difference in requests is one request's instructions (start-up and
the first requests' warming of caches cancel out). Each request goes through Django's WSGI
handler, the whole middleware chain and the view, but no server.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WARM, MEASURED = 3, 15


def instructions_per_request(env: dict[str, str], path: str, cookie: str) -> float | None:
    """One request's instructions (None without valgrind)."""
    if not shutil.which("valgrind"):
        return None
    totals = []
    for count in (WARM, WARM + MEASURED):
        out = subprocess.run(
            [
                "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                sys.executable, str(Path(__file__).resolve()), str(count), path,
            ],
            env={**env, "COOKIE": cookie}, cwd=ROOT, capture_output=True, text=True,
            timeout=900, check=True,
        )  # fmt: skip
        found = re.search(r"Collected : (\d+)", out.stderr)
        if found is None:
            raise RuntimeError(f"callgrind printed no total:\n{out.stderr[-2000:]}")
        totals.append(int(found.group(1)))
    return (totals[1] - totals[0]) / MEASURED


def _serve(count: int, path: str) -> None:
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.handlers.wsgi import WSGIHandler
    from django.test.client import FakePayload

    handler = WSGIHandler()
    route, _, query = path.partition("?")
    status: list[str] = []

    def start_response(line: str, headers: Any, exc: Any = None) -> None:
        status.append(line)

    for _ in range(count):
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "GET", "PATH_INFO": route, "QUERY_STRING": query,
            "SCRIPT_NAME": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "127.0.0.1",
            "HTTP_COOKIE": os.environ["COOKIE"], "REMOTE_ADDR": "127.0.0.1",
            "wsgi.input": FakePayload(b""), "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr, "wsgi.version": (1, 0), "wsgi.multithread": True,
            "wsgi.multiprocess": False, "wsgi.run_once": False,
        }  # fmt: skip
        status.clear()
        b"".join(handler(environ, start_response))
        if not status[0].startswith("200"):
            raise SystemExit(f"{path}: {status[0]}")


if __name__ == "__main__":
    _serve(int(sys.argv[1]), sys.argv[2])
