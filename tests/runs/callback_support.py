"""A real HTTP receiver of run callbacks that verifies them with the README's own snippet."""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from django.db import connections
from django.utils import timezone

from runs import deliveries
from runs.api_models import RunCallback
from runs.models import Run

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_snippet() -> dict[str, Any]:
    """The Python block of the README's "Callbacks" section, executed: ``sign`` and ``verify``
    as a receiver would paste them."""
    section = README.read_text().split("\n### Callbacks\n", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md (Callbacks)", "exec"), namespace)
    return namespace


@dataclass(frozen=True)
class Received:
    id: str
    timestamp: str
    signature: str
    host: str
    path: str
    body: bytes
    verified: bool

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """An HTTP server in a thread. It answers from its script (then 204), refuses a bad
    signature with 401, can be taken down and brought back on the same port, and can hold its
    answers until released (``hold``)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.verify = readme_snippet()["verify"]
        self.received: list[Received] = []
        self.script: list[tuple[int, dict[str, str], bytes]] = []
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.port = 0
        self.server: ThreadingHTTPServer | None = None
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/agentops?source=test"

    def answer(
        self,
        status: int,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> None:
        self.script.extend([(status, headers or {}, body)] * times)

    def hold(self) -> None:
        """Keep the next requests waiting (after they are recorded) until ``release.set()``."""
        self.arrived.clear()
        self.release.clear()

    def by_id(self) -> Counter[str]:
        return Counter(r.id for r in self.received)

    def types(self) -> list[str]:
        return [r.json["type"] for r in self.received]

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    verified = receiver.verify(receiver.secret, self.headers, body)
                except (KeyError, TypeError, ValueError):
                    verified = False
                receiver.received.append(
                    Received(
                        id=self.headers.get("webhook-id", ""),
                        timestamp=self.headers.get("webhook-timestamp", ""),
                        signature=self.headers.get("webhook-signature", ""),
                        host=self.headers.get("Host", ""),
                        path=self.path,
                        body=body,
                        verified=verified,
                    )
                )
                receiver.arrived.set()
                receiver.release.wait(timeout=30)
                status, headers, answer = (
                    receiver.script.pop(0) if receiver.script else (204, {}, b"")
                )
                if not verified:
                    status, headers, answer = 401, {}, b"bad signature"
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def down(self) -> None:
        """Stop listening: connections are refused until ``up()``."""
        assert self.server is not None
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
        self.server = None


def with_callback(workflow: str, url: str, data: dict[str, Any] | None = None, **kw: Any) -> Run:
    """A run started directly (not over the API) with a callback to ``url``."""
    run = Run.start(workflow, data or {}, actor="test", **kw)[0]
    RunCallback.objects.create(run=run, url=url)
    return run


def deliver_due() -> list[str]:
    """What a worker does for each due delivery (here without the doorbell)."""
    ids = list(deliveries.due(timezone.now()).values_list("pk", flat=True))
    return [deliveries.deliver(i) for i in ids]


def in_thread(fn: Any, *args: Any) -> tuple[threading.Thread, list[Any]]:
    """Run ``fn(*args)`` in a thread with its own database connection; its result lands in
    the returned list."""
    out: list[Any] = []

    def target() -> None:
        try:
            out.append(fn(*args))
        finally:
            connections.close_all()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out
