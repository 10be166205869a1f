"""The ASGI handler (``agentops.asgi.SyncChainASGIHandler``) driven as a server drives it:
a page is served with its request signals, middleware and view on one of the web threads,
in one hop; a request whose client left while it waited for a thread never reaches Django; a
streaming response (a run's Server-Sent Events) streams until the client goes away, and is
then closed, its stream ended."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator
from django.core import signals
from django.db import connection

from agentops.asgi import SyncChainASGIHandler
from runs.api_models import ApiToken
from runs.models import Run
from tests.runs.api_support import member

pytestmark = [pytest.mark.engine, pytest.mark.django_db(transaction=True)]


def scope(path: str, *, headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), *(headers or [])],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


@pytest.fixture(autouse=True)
def _end_other_sessions() -> Iterator[None]:
    """The handler's threads keep their database connections (as in a server, for good):
    end them, so the test database can be dropped."""
    yield
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


@pytest.fixture
def threads_seen() -> Iterator[dict[str, list[str]]]:
    """The threads each request signal was received on."""
    seen: dict[str, list[str]] = {"started": [], "finished": []}

    def started(**kwargs: Any) -> None:
        seen["started"].append(threading.current_thread().name)

    def finished(**kwargs: Any) -> None:
        seen["finished"].append(threading.current_thread().name)

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    yield seen
    signals.request_started.disconnect(started)
    signals.request_finished.disconnect(finished)


async def _serve(app: Any, request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    comm = ApplicationCommunicator(app, request)
    await comm.send_input({"type": "http.request", "body": b""})
    start = await comm.receive_output(10)
    body = b""
    while True:
        message = await comm.receive_output(10)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await comm.wait(10)
    return start, body


def test_a_page_is_served_in_one_hop_to_a_web_thread(threads_seen) -> None:  # type: ignore[no-untyped-def]
    app = SyncChainASGIHandler()
    start, body = asyncio.run(_serve(app, scope("/login/")))
    assert start["status"] == 200
    assert b'name="username"' in body
    # Both signals, whose receivers check and recycle the thread's database connection,
    # reached the web thread that ran the view, not a thread made for the request.
    assert threads_seen["started"] == threads_seen["finished"]
    assert len(threads_seen["started"]) == 1
    assert threads_seen["started"][0].startswith("django-http")


def test_a_request_whose_client_left_while_it_waited_is_dropped(settings, threads_seen) -> None:  # type: ignore[no-untyped-def]
    settings.AGENTOPS_WEB_THREADS = 1
    app = SyncChainASGIHandler()
    release = threading.Event()
    app._executor.submit(release.wait, 10)  # the one web thread, busy with another request

    async def two_clients() -> tuple[dict[str, Any], bytes]:
        left = ApplicationCommunicator(app, scope("/login/"))
        await left.send_input({"type": "http.request", "body": b""})
        await left.send_input({"type": "http.disconnect"})
        stays = asyncio.create_task(_serve(app, scope("/login/")))
        assert await left.receive_nothing(0.2)  # queued behind the busy thread
        release.set()
        await left.wait(10)
        assert await left.receive_nothing(0.05)  # nothing was sent to the client that left
        return await stays

    start, body = asyncio.run(two_clients())
    # The client that stayed was served; the one that left never reached Django.
    assert start["status"] == 200
    assert b'name="username"' in body
    assert len(threads_seen["started"]) == 1
    assert len(threads_seen["finished"]) == 1


def test_a_stream_ends_when_its_client_goes_away(team, threads_seen) -> None:  # type: ignore[no-untyped-def]
    user = member("sse-reader", team)
    _, secret = ApiToken.mint(user=user, team=team, name="t")
    run, _ = Run.start("t-steps", {"n": 1}, team=team, actor="t")  # queued: nobody drives it
    app = SyncChainASGIHandler()
    request = scope(
        f"/api/v1/runs/{run.pk}/stream",
        headers=[(b"authorization", f"Bearer {secret}".encode())],
    )

    async def follow_then_leave() -> list[bytes]:
        comm = ApplicationCommunicator(app, request)
        await comm.send_input({"type": "http.request", "body": b""})
        start = await comm.receive_output(10)
        assert start["status"] == 200, start
        chunks = []
        while len(chunks) < 2:  # the retry delay, then the run's first event
            chunks.append((await comm.receive_output(10))["body"])
        await comm.send_input({"type": "http.disconnect"})
        await comm.wait(10)  # the application ends: the stream stopped polling
        return chunks

    chunks = asyncio.run(follow_then_leave())
    assert chunks[0].startswith(b"retry:")
    assert b"run.created" in chunks[1]
    assert len(threads_seen["finished"]) == 1  # closed once it ended
