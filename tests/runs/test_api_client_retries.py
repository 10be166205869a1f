"""``agentops.client`` against a scripted HTTP server (the network edge): one idempotency key
across a submit's retries, backoff that honours Retry-After, and SSE reconnection."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agentops.client import ApiError, Client

Answer = tuple[int, dict[str, str], Any]


class Script:
    """Answers in order per path; records each request's headers."""

    def __init__(self, answers: dict[str, list[Answer]]) -> None:
        self.answers = answers
        self.seen: list[tuple[str, str, dict[str, str]]] = []


@pytest.fixture
def scripted() -> Iterator[Any]:
    servers: list[ThreadingHTTPServer] = []

    def start(answers: dict[str, list[Answer]]) -> tuple[str, Script]:
        script = Script(answers)

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                path = self.path.split("?")[0]
                script.seen.append((self.command, self.path, dict(self.headers.items())))
                queue = script.answers[path]
                status, headers, body = queue.pop(0) if len(queue) > 1 else queue[0]
                raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}", script

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


RUN = {"id": "r1", "status": "queued"}


def test_submit_retries_with_one_idempotency_key(scripted):
    base, script = scripted(
        {
            "/api/v1/runs": [
                (503, {"Content-Type": "application/problem+json"}, {"detail": "busy"}),
                (429, {"Retry-After": "2"}, {"detail": "slow down"}),
                (202, {"Location": "/api/v1/runs/r1"}, RUN),
            ]
        }
    )
    sleeps: list[float] = []
    run = Client(base, "ao_x_y", sleep=sleeps.append).submit("t", {"a": 1})
    assert run["id"] == "r1" and run["replayed"] is False
    keys = {headers["Idempotency-Key"] for _, _, headers in script.seen}
    assert len(script.seen) == 3 and len(keys) == 1
    assert all(h["Authorization"] == "Bearer ao_x_y" for _, _, h in script.seen)
    assert len(sleeps) == 2 and sleeps[1] >= 2  # honours Retry-After


def test_client_errors_are_not_retried(scripted):
    problem = {"type": "urn:agentops:problem:input-invalid", "status": 422, "detail": "n: bad"}
    base, script = scripted({"/api/v1/runs": [(422, {}, problem)]})
    with pytest.raises(ApiError) as err:
        Client(base, "t", sleep=lambda s: None).submit("t", {})
    assert err.value.status == 422 and err.value.problem == problem
    assert len(script.seen) == 1


def test_retries_give_up(scripted):
    base, script = scripted({"/api/v1/runs/r1": [(502, {}, "bad gateway")]})
    with pytest.raises(ApiError) as err:
        Client(base, "t", retries=2, sleep=lambda s: None).get("r1")
    assert err.value.status == 502 and len(script.seen) == 3


def test_wait_backs_off_from_one_to_thirty_seconds_and_honours_retry_after(scripted):
    running = (200, {"Retry-After": "1"}, {"id": "r1", "status": "running"})
    slow = (200, {"Retry-After": "20"}, {"id": "r1", "status": "waiting"})
    done = (200, {}, {"id": "r1", "status": "succeeded", "result": 7})
    base, _ = scripted({"/api/v1/runs/r1": [running] * 5 + [slow] + [running] * 2 + [done]})
    sleeps: list[float] = []
    run = Client(base, "t", sleep=sleeps.append).wait("r1", timeout=3600)
    assert run["result"] == 7
    assert sleeps == [1, 2, 4, 8, 16, 30, 30, 30]


def test_wait_times_out(scripted):
    base, _ = scripted({"/api/v1/runs/r1": [(200, {}, {"id": "r1", "status": "running"})]})
    with pytest.raises(TimeoutError):
        Client(base, "t", sleep=lambda s: None).wait("r1", timeout=0)


def _sse(*events: dict[str, Any], retry: int = 10) -> str:
    out = f"retry: {retry}\n\n: keep-alive\n\n"
    for e in events:
        out += f"id: {e['id']}\ndata: {json.dumps(e)}\n\n"
    return out


def test_follow_reconnects_with_last_event_id(scripted):
    e1 = {"id": 1, "kind": "run.created", "data": {}}
    e2 = {"id": 2, "kind": "run.started", "data": {"to": "running"}}
    e3 = {"id": 3, "kind": "run.succeeded", "data": {"to": "succeeded"}}
    sse = {"Content-Type": "text/event-stream"}
    base, script = scripted(
        {
            # The first connection drops after two events; the second resumes after id 2.
            "/api/v1/runs/r1/stream": [(200, sse, _sse(e1, e2)), (200, sse, _sse(e3))],
            "/api/v1/runs/r1": [(200, {}, {"id": "r1", "status": "running"})],
        }
    )
    events = list(Client(base, "t", sleep=lambda s: None).follow("r1"))
    assert [e["id"] for e in events] == [1, 2, 3]
    streams = [
        {k.lower(): v for k, v in h.items()}
        for _, path, h in script.seen
        if path.endswith("/stream")
    ]
    assert "last-event-id" not in streams[0] and streams[1]["last-event-id"] == "2"
