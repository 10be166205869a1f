"""Events over HTTP: pages after an id, a replay feed across the caller's runs, and a live
Server-Sent Events stream of one run.

The event id is the continuation token everywhere: ``?after=ID`` and ``Last-Event-ID`` give
every event with a greater id, in id order, once. The stream reads the database (the ledger),
not the channel layer, so a reconnect resumes exactly where it stopped, whatever happened in
between. A run's events are written while its row is locked, so they commit in id order and
a reader never sees a later id before an earlier one of the same run.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated, Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone
from ninja import Query, Router, Schema
from pydantic import Field

from runs.api.auth import get_run, principal, visible_team_ids
from runs.api.common import event_body, is_terminal_event, page_link
from runs.api.openapi import EventPageOut, answers
from runs.api.problems import Problem
from runs.api.run_views import json_response
from runs.audit import Event
from runs.models import TERMINAL, Run

router = Router(tags=["events"])

MAX_ID = 2**63 - 1
#: How old an event must be before the cross-run feed shows it on PostgreSQL.
FEED_SETTLE = timedelta(seconds=1)


class EventPage(Schema):
    after: int = Field(0, ge=0, le=MAX_ID, description="return events with a greater id")
    limit: int = Field(100, ge=1, le=1000)


def _page(request: HttpRequest, qs: Any, page: EventPage) -> Any:
    rows = list(qs.filter(id__gt=page.after).order_by("id")[: page.limit + 1])
    items, more = rows[: page.limit], len(rows) > page.limit
    last = items[-1].id if items else page.after
    return json_response(
        {
            "items": [event_body(e) for e in items],
            "next_after": last,
            "has_more": more,
            "links": {"next": page_link(request.path, {"after": last, "limit": page.limit})},
        }
    )


@router.get(
    "/runs/{run_id}/events",
    summary="A run's events after an id, in id order",
    **answers({200: EventPageOut}, 404, 422),
)
def run_events(request: HttpRequest, run_id: str, page: Query[EventPage]) -> Any:
    run = get_run(request, run_id)
    return _page(request, Event.objects.filter(run_id=run.pk), page)


@router.get(
    "/events",
    summary="Replay feed: events of every run the caller can see",
    **answers({200: EventPageOut}, 422),
)
def event_feed(request: HttpRequest, page: Query[EventPage]) -> Any:
    teams = visible_team_ids(principal(request))
    qs = Event.objects.filter(team_id__in=teams, run_id__isnull=False)
    if connection.vendor == "postgresql":
        # Across runs, PostgreSQL may commit a later id before an earlier one; a reader that
        # moved past the later id would never see the earlier. Events settle for a moment
        # before the feed shows them (SQLite has one writer at a time: ids commit in order).
        qs = qs.filter(created_at__lt=timezone.now() - FEED_SETTLE)
    return _page(request, qs, page)


# ------------------------------------------------------------------ Server-Sent Events
def _fetch(run_id: Any, after: int, limit: int) -> list[Event]:
    return list(Event.objects.filter(run_id=run_id, id__gt=after).order_by("id")[:limit])


def _finished(run_id: Any) -> bool:
    return Run.objects.filter(pk=run_id, status__in=list(TERMINAL)).exists()


def sse_message(event: Event) -> str:
    data = json.dumps(event_body(event), cls=DjangoJSONEncoder)
    return f"id: {event.id}\ndata: {data}\n\n"


async def event_stream(
    run_id: Any,
    after: int,
    *,
    heartbeat: float,
    poll: float,
    batch: int = 200,
) -> AsyncIterator[str]:
    """Every event of the run with an id above ``after``, then new ones as they are written,
    ending after the transition into a terminal state. Idle: a comment every ``heartbeat``."""
    fetch = sync_to_async(_fetch)
    finished = sync_to_async(_finished)
    yield "retry: 2000\n\n"  # the reconnection delay browsers should use
    last, quiet_since = after, time.monotonic()
    while True:
        events = await fetch(run_id, last, batch)
        if not events and await finished(run_id):
            # The final transition commits with its event: anything not yet sent is visible.
            events = await fetch(run_id, last, batch)
            if not events:
                return
        for event in events:
            last = event.id
            yield sse_message(event)
            if is_terminal_event(event):
                return
        if events:
            quiet_since = time.monotonic()
            if len(events) == batch:
                continue
        elif time.monotonic() - quiet_since >= heartbeat:
            yield ": keep-alive\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(poll)


def _last_event_id(request: HttpRequest, after: int | None) -> int:
    raw = request.headers.get("Last-Event-ID")
    if raw is None or not raw.strip():
        return after or 0
    try:
        value = int(raw.strip())
    except ValueError:
        raise Problem(400, "Last-Event-ID must be an event id", kind="bad-last-event-id") from None
    if not 0 <= value <= MAX_ID:
        raise Problem(400, "Last-Event-ID is out of range", kind="bad-last-event-id")
    return value


@router.get(
    "/runs/{run_id}/stream",
    summary="Server-Sent Events: the run's events live; resumes after Last-Event-ID",
    **answers(
        {200: None},
        400,
        404,
        422,
        content={200: {"text/event-stream": {"schema": {"type": "string"}}}},
    ),
)
async def stream_run(
    request: HttpRequest,
    run_id: str,
    after: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
) -> Any:
    run = await sync_to_async(get_run)(request, run_id)
    start = _last_event_id(request, after)
    response = StreamingHttpResponse(
        event_stream(
            run.pk,
            start,
            heartbeat=float(getattr(settings, "AGENTOPS_SSE_HEARTBEAT_SECONDS", 15.0)),
            poll=float(getattr(settings, "AGENTOPS_SSE_POLL_SECONDS", 0.5)),
        ),
        content_type="text/event-stream; charset=utf-8",
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # a buffering proxy would hold the stream back
    return response
