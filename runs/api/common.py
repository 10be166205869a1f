"""How runs and events look on the wire, their links, and the opaque list cursor."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.urls import reverse
from django.utils.dateparse import parse_datetime

from runs.api.problems import Problem
from runs.audit import Event
from runs.models import TERMINAL, Run, RunStatus

#: Seconds a client should wait before polling again, by status.
POLL_AFTER = {
    RunStatus.QUEUED: 1,
    RunStatus.RUNNING: 2,
    RunStatus.WAITING: 5,
    RunStatus.PAUSED: 10,
}


def api_root() -> str:
    return reverse("api-v1:api-root")


def run_links(run_id: Any) -> dict[str, str]:
    base = f"{api_root()}runs/{run_id}"
    return {
        "self": base,
        "events": f"{base}/events",
        "stream": f"{base}/stream",
        "cancel": f"{base}/cancel",
        "pause": f"{base}/pause",
        "resume": f"{base}/resume",
        "retry": f"{base}/retry",
        "budget": f"{base}/budget",
        "signal": f"{base}/signals/{{name}}",
    }


def run_body(run: Run, **extra: Any) -> dict[str, Any]:
    """The run as the API shows it: status, progress, budget, result or partial result, error."""
    body = run.as_dict()
    body["terminal"] = run.status in TERMINAL
    body["links"] = run_links(run.pk)
    body.update(extra)
    return body


def run_summary(run: Run) -> dict[str, Any]:
    """A run in a list: enough to choose, not its input or result."""
    return {
        "id": str(run.pk),
        "workflow": run.workflow,
        "team": run.team.slug,
        "status": run.status,
        "progress": run.progress,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "links": {"self": f"{api_root()}runs/{run.pk}"},
    }


def retry_after(run: Run) -> str | None:
    """How long to wait before asking again; None once the run has finished."""
    if run.status in TERMINAL:
        return None
    return str(POLL_AFTER.get(run.status, 2))


def event_body(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "kind": event.kind,
        "run": str(event.run_id) if event.run_id else None,
        "actor": event.actor,
        "data": event.data,
        "created_at": event.created_at,
    }


def is_terminal_event(event: Event) -> bool:
    """The transition into a terminal state (every transition records ``data.to``)."""
    return event.run_id is not None and (event.data or {}).get("to") in TERMINAL


def page_link(path: str, params: dict[str, Any]) -> str:
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return f"{path}?{query}" if query else path


# --- the list cursor: opaque to clients, (created_at, id) to us ----------------------------
def encode_cursor(row: Any) -> str:
    """The cursor after ``row`` (a run, an approval request: anything with ``created_at``)."""
    raw = json.dumps([row.created_at.isoformat(), str(row.pk)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _uuid(text: str) -> str:
    return str(uuid.UUID(text))


def decode_cursor(cursor: str, *, pk: Callable[[str], Any] = _uuid) -> tuple[datetime, Any]:
    """``(created_at, pk)`` of a cursor; ``pk`` parses the id (a run's UUID by default)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, key = json.loads(raw)
        when = parse_datetime(created)
        if when is None or when.tzinfo is None or not isinstance(key, str):
            raise ValueError(cursor)
        return when, pk(key)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise Problem(400, "the cursor is not one this API gave out", kind="bad-cursor") from None
