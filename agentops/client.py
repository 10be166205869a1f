"""A small client for the agentops HTTP API, on the standard library only.

    from agentops.client import Client

    client = Client("http://127.0.0.1:8000", token="ao_…")
    run = client.submit("digest", {"limit": 100}, budget={"usd": 2})
    for event in client.follow(run["id"]):  # live, resumes after a dropped connection
        print(event["kind"], event["data"])
    run = client.wait(run["id"], timeout=3600)  # polls with backoff, honours Retry-After

``submit`` makes an idempotency key once and sends the same key on each of its retries, so a
retry after a lost answer can never start a second run.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from http.client import HTTPException
from typing import Any
from urllib.parse import quote, urlencode

__all__ = ["TERMINAL", "ApiError", "Client"]

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "timed_out"})
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class ApiError(Exception):
    """The API answered with an error; ``problem`` is its RFC 9457 problem object."""

    def __init__(self, status: int, problem: dict[str, Any], headers: dict[str, str]) -> None:
        self.status = status
        self.problem = problem
        self.headers = headers
        detail = problem.get("detail") or problem.get("title") or "error"
        super().__init__(f"{status}: {detail}")


def _retry_after(headers: dict[str, str]) -> float | None:
    value = headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class Client:
    """``Client(base_url, token)``: ``base_url`` is the server (``/api/v1`` is added)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        base = base_url.rstrip("/")
        self.base = base if base.endswith("/api/v1") else f"{base}/api/v1"
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sleep = sleep

    # ------------------------------------------------------------------ plumbing
    def _url(self, path: str, query: dict[str, Any] | None = None) -> str:
        url = path if path.startswith("http") else f"{self.base}{path}"
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        return url

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "agentops-client/1"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        headers.update(extra or {})
        return headers

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        retry: bool = False,
    ) -> tuple[int, dict[str, str], Any]:
        """One call; with ``retry``, connection errors, 5xx and 429 are tried again with
        exponential backoff and jitter (at least Retry-After when the server gives one)."""
        data = None if body is None else json.dumps(body).encode()
        hdrs = self._headers(headers)
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        attempt = 0
        while True:
            attempt += 1
            req = urllib.request.Request(
                self._url(path, query), data=data, headers=hdrs, method=method
            )
            wait: float | None = None
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    resp_headers = {k.lower(): v for k, v in resp.headers.items()}
                    raw = resp.read()
                    return resp.status, resp_headers, json.loads(raw) if raw else None
            except urllib.error.HTTPError as exc:
                resp_headers = {k.lower(): v for k, v in exc.headers.items()}
                raw = exc.read()
                try:
                    problem = json.loads(raw) if raw else {}
                except ValueError:
                    problem = {"detail": raw.decode(errors="replace")[:500]}
                if not retry or exc.code not in RETRY_STATUSES or attempt > self.retries:
                    raise ApiError(exc.code, problem, resp_headers) from None
                wait = _retry_after(resp_headers)
            except (TimeoutError, urllib.error.URLError, HTTPException, ConnectionError):
                if not retry or attempt > self.retries:
                    raise
            delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
            delay = delay * (0.5 + random.random() / 2)
            self.sleep(max(delay, wait or 0.0))

    # ------------------------------------------------------------------ runs
    def submit(
        self,
        workflow: str,
        input: Any = None,
        *,
        budget: dict[str, Any] | None = None,
        deadline: float | None = None,
        callback_url: str | None = None,
        team: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Start a run; returns it (``replayed`` is True when the key named an earlier one)."""
        body: dict[str, Any] = {"workflow": workflow, "input": input}
        for name, value in (
            ("budget", budget),
            ("deadline", deadline),
            ("callback_url", callback_url),
            ("team", team),
        ):
            if value is not None:
                body[name] = value
        key = idempotency_key or str(uuid.uuid4())  # one key for every retry of this call
        _, headers, data = self.request(
            "POST", "/runs", body=body, headers={"Idempotency-Key": key}, retry=True
        )
        data.setdefault("replayed", headers.get("idempotent-replayed") == "true")
        return data

    def get(self, run_id: str) -> dict[str, Any]:
        return self.request("GET", f"/runs/{run_id}", retry=True)[2]

    def runs(self, **filters: Any) -> dict[str, Any]:
        """A page of runs (filters: status, workflow, created_after, created_before, limit,
        cursor)."""
        return self.request("GET", "/runs", query=filters, retry=True)[2]

    def workflows(self) -> list[dict[str, Any]]:
        return self.request("GET", "/workflows", retry=True)[2]["items"]

    def events(self, run_id: str, *, after: int = 0, limit: int = 100) -> dict[str, Any]:
        query = {"after": after, "limit": limit}
        return self.request("GET", f"/runs/{run_id}/events", query=query, retry=True)[2]

    def cancel(self, run_id: str, reason: str = "") -> dict[str, Any]:
        return self.request("POST", f"/runs/{run_id}/cancel", body={"reason": reason})[2]

    def pause(self, run_id: str, reason: str = "") -> dict[str, Any]:
        return self.request("POST", f"/runs/{run_id}/pause", body={"reason": reason})[2]

    def resume(self, run_id: str) -> dict[str, Any]:
        return self.request("POST", f"/runs/{run_id}/resume")[2]

    def retry(self, run_id: str, from_step: int) -> dict[str, Any]:
        return self.request("POST", f"/runs/{run_id}/retry", body={"from_step": from_step})[2]

    def signal(
        self, run_id: str, name: str, payload: Any = None, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        key = idempotency_key or str(uuid.uuid4())
        path = f"/runs/{run_id}/signals/{quote(name, safe='')}"
        return self.request(
            "POST",
            path,
            body={"payload": payload},
            headers={"Idempotency-Key": key},
            retry=True,
        )[2]

    def wait(
        self,
        run_id: str,
        timeout: float = 3600.0,
        *,
        initial: float = 1.0,
        maximum: float = 30.0,
    ) -> dict[str, Any]:
        """Poll until the run finishes: waits double from ``initial`` to ``maximum`` seconds,
        and are never shorter than the server's Retry-After. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        delay = initial
        while True:
            _, headers, run = self.request("GET", f"/runs/{run_id}", retry=True)
            if run["status"] in TERMINAL:
                return run
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"run {run_id} is still {run['status']} after {timeout}s")
            pause = min(max(delay, _retry_after(headers) or 0.0), maximum, left)
            self.sleep(pause)
            delay = min(delay * 2, maximum)

    def follow(
        self,
        run_id: str,
        *,
        last_event_id: int | None = None,
        read_timeout: float = 60.0,
        max_reconnects: int = 100,
    ) -> Iterator[dict[str, Any]]:
        """Yield the run's events as they happen (Server-Sent Events), reconnecting with
        ``Last-Event-ID`` after a dropped connection, until the run's final transition."""
        last = last_event_id
        reconnect_delay = 2.0
        failures = 0
        while True:
            headers = self._headers({"Accept": "text/event-stream"})
            if last is not None:
                headers["Last-Event-ID"] = str(last)
            req = urllib.request.Request(self._url(f"/runs/{run_id}/stream"), headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=read_timeout) as resp:
                    for event_id, data, retry_ms in _sse_events(resp):
                        if retry_ms is not None:
                            reconnect_delay = retry_ms / 1000
                            continue
                        failures = 0
                        if event_id is not None:
                            last = event_id
                        event = json.loads(data)
                        yield event
                        if (event.get("data") or {}).get("to") in TERMINAL:
                            return
            except urllib.error.HTTPError as exc:
                if exc.code not in RETRY_STATUSES:
                    raw = exc.read()
                    try:
                        problem = json.loads(raw) if raw else {}
                    except ValueError:
                        problem = {}
                    raise ApiError(exc.code, problem, dict(exc.headers.items())) from None
                failures += 1
            except (TimeoutError, urllib.error.URLError, HTTPException, ConnectionError):
                failures += 1
            else:
                # The server closed the stream without a final transition in it: either it
                # was sent before ``last`` (a resume after the end), or the connection dropped.
                if self.get(run_id)["status"] in TERMINAL:
                    tail = self.events(run_id, after=last or 0, limit=1)["items"]
                    if not tail:
                        return
            if failures > max_reconnects:
                raise ConnectionError(f"gave up following run {run_id} after {failures} tries")
            self.sleep(min(self.max_backoff, reconnect_delay * (2 ** max(0, failures - 1))))


def _sse_events(resp: Any) -> Iterator[tuple[int | None, str, int | None]]:
    """Parse a ``text/event-stream``: yields ``(id, data, None)`` per event and
    ``(None, "", retry_ms)`` for a ``retry:`` field; comments (heartbeats) are skipped."""
    event_id: int | None = None
    data: list[str] = []
    while True:
        raw = resp.readline()
        if not raw:
            return
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield event_id, "\n".join(data), None
            event_id, data = None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            data.append(value)
        elif field == "id":
            try:
                event_id = int(value)
            except ValueError:
                event_id = None
        elif field == "retry" and value.isdigit():
            yield None, "", int(value)
