"""Runs over HTTP: submit (the async job pattern), list, read, and the operator actions.

Submitting answers ``202 Accepted`` at once with ``Location`` (poll it) and ``Retry-After``
(how long to wait first); the run goes on in the workers. An ``Idempotency-Key`` makes a
retried submit safe: the same key and body within 24 h answer the same run (marked
``Idempotent-Replayed: true``), a different body with that key is a 422.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from ninja import Header, Query, Router, Schema
from pydantic import Field, field_validator

from runs.api.auth import get_run, principal, require, resolve_team, visible_runs
from runs.api.callbacks import validate_callback_url
from runs.api.common import (
    decode_cursor,
    encode_cursor,
    page_link,
    retry_after,
    run_body,
    run_summary,
)
from runs.api.openapi import (
    RUN_HEADERS,
    RunOut,
    RunPageOut,
    SignalOut,
    WorkflowListOut,
    answers,
)
from runs.api.problems import Problem
from runs.api.schemas import BudgetIn, ReasonIn, RetryIn, SignalIn, StartIn, check_budget
from runs.api_models import RunCallback
from runs.exceptions import IdempotencyConflict
from runs.models import Run, RunStatus
from runs.permissions import OPERATE, START
from runs.workflow import all_workflows

router = Router(tags=["runs"])

KEY_HEADER = "Idempotency-Key"
MAX_KEY = 200
#: What an operator action may answer besides 401 and 429: a bad body, the role, an unseen
#: run, the run's state, a body too large, an invalid value.
ACTION_ERRORS = (400, 403, 404, 409, 413, 422)
SIGNAL_HEADERS = {k: RUN_HEADERS[k] for k in ("Location", "Idempotent-Replayed")}


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    response = HttpResponse(
        json.dumps(data, cls=DjangoJSONEncoder), status=status, content_type="application/json"
    )
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _key(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > MAX_KEY or not value.isprintable():
        raise Problem(
            400,
            f"{KEY_HEADER} must be 1 to {MAX_KEY} printable characters",
            kind="bad-idempotency-key",
        )
    return value


def _accepted(run: Run, *, status: int = 202, replayed: bool | None = None, **extra: Any) -> Any:
    """A run answer in the async job pattern: where to look, and when to look again."""
    body = run_body(run, **extra)
    headers = {"Location": body["links"]["self"]}
    wait = retry_after(run)
    if wait:
        headers["Retry-After"] = wait
    if replayed is not None:
        body["replayed"] = replayed
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return json_response(body, status=status, headers=headers)


def _fresh(run: Run) -> Run:
    return Run.objects.select_related("team").get(pk=run.pk)


# ------------------------------------------------------------------ workflows
@router.get(
    "/workflows",
    tags=["workflows"],
    summary="Workflows that can be started",
    **answers({200: WorkflowListOut}),
)
def list_workflows(request: HttpRequest) -> Any:
    items = [
        {
            "name": wf.name,
            "version": wf.version,
            "description": wf.description,
            "input_schema": wf.input_schema(),
            "budget": {
                "usd": wf.budget.usd,
                "tokens": wf.budget.tokens,
                "actions": wf.budget.actions,
                "wall_seconds": wf.budget.wall_seconds,
            },
            "deadline_seconds": wf.deadline.total_seconds() if wf.deadline else None,
        }
        for wf in all_workflows()
    ]
    return json_response({"items": items})


# ------------------------------------------------------------------ submit
@router.post(
    "/runs",
    summary="Start a run (202 Accepted; poll Location)",
    url_name="runs",
    **answers({202: RunOut}, 400, 403, 413, 422, headers={202: RUN_HEADERS}),
)
def start_run(
    request: HttpRequest,
    body: StartIn,
    idempotency_key: Annotated[str | None, Header(alias=KEY_HEADER)] = None,
) -> Any:
    p = principal(request)
    key = _key(idempotency_key)
    team = resolve_team(request, body.team, START)
    check_budget(body.budget)
    # Resolving the callback's host is network I/O: before the transaction, never in it.
    url = validate_callback_url(body.callback_url) if body.callback_url is not None else None
    with transaction.atomic():
        run, replayed = Run.start(
            body.workflow,
            body.input,
            team=team,
            actor=p.actor,
            user=p.user,
            idempotency_key=key,
            budget=body.budget,
            deadline=timedelta(seconds=body.deadline) if body.deadline else None,
        )
        if replayed:
            stored = RunCallback.objects.filter(run=run).values_list("url", flat=True).first()
            if stored != url:
                raise IdempotencyConflict(key or "")
        elif url:
            RunCallback.objects.create(run=run, url=url)
    return _accepted(_fresh(run), replayed=replayed)


# ------------------------------------------------------------------ list and read
class RunFilters(Schema):
    status: RunStatus | None = None
    workflow: str | None = Field(None, max_length=100)
    created_after: datetime | None = None
    created_before: datetime | None = None
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=500)

    @field_validator("created_after", "created_before")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        """In UTC (naive: taken as UTC); a time that has no UTC year from 1 to 9999 is a 422."""
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise ValueError("the time is out of range in UTC") from None


@router.get(
    "/runs",
    summary="Runs, newest first, with cursor paging",
    **answers({200: RunPageOut}, 400, 422),
)
def list_runs(request: HttpRequest, filters: Query[RunFilters]) -> Any:
    qs = visible_runs(principal(request)).select_related("team")
    if filters.status:
        qs = qs.filter(status=filters.status)
    if filters.workflow:
        qs = qs.filter(workflow=filters.workflow)
    if filters.created_after:
        qs = qs.filter(created_at__gt=filters.created_after)
    if filters.created_before:
        qs = qs.filter(created_at__lt=filters.created_before)
    if filters.cursor:
        when, pk = decode_cursor(filters.cursor)
        qs = qs.filter(Q(created_at__lt=when) | Q(created_at=when, pk__lt=pk))
    # Keyset paging on (created_at, id): no OFFSET, no COUNT(*); one extra row says "more".
    rows = list(qs.order_by("-created_at", "-pk")[: filters.limit + 1])
    page, more = rows[: filters.limit], len(rows) > filters.limit
    cursor = encode_cursor(page[-1]) if more else None
    params = {
        "status": filters.status,
        "workflow": filters.workflow,
        "created_after": filters.created_after.isoformat() if filters.created_after else None,
        "created_before": filters.created_before.isoformat() if filters.created_before else None,
        "limit": filters.limit,
    }
    return json_response(
        {
            "items": [run_summary(r) for r in page],
            "next_cursor": cursor,
            "links": {"next": page_link(request.path, {**params, "cursor": cursor})}
            if cursor
            else {},
        }
    )


@router.get(
    "/runs/{run_id}",
    summary="A run: status, progress, budget, result, error",
    **answers({200: RunOut}, 404, headers={200: {"Retry-After": RUN_HEADERS["Retry-After"]}}),
)
def get_run_view(request: HttpRequest, run_id: str) -> Any:
    run = get_run(request, run_id)
    headers = {}
    wait = retry_after(run)
    if wait:
        headers["Retry-After"] = wait
    return json_response(run_body(run), headers=headers)


# ------------------------------------------------------------------ operator actions
def _operable(request: HttpRequest, run_id: str) -> Run:
    run = get_run(request, run_id)
    require(request, run.team, OPERATE)
    return run


@router.post(
    "/runs/{run_id}/cancel",
    summary="Cancel: compensations run, then cancelled",
    **answers({202: RunOut}, *ACTION_ERRORS, headers={202: RUN_HEADERS}),
)
def cancel_run(request: HttpRequest, run_id: str, body: ReasonIn | None = None) -> Any:
    run = _operable(request, run_id)
    p = principal(request)
    run.cancel(actor=p.actor, user_id=p.user.pk, reason=body.reason if body else "")
    return _accepted(_fresh(run))


@router.post(
    "/runs/{run_id}/pause",
    summary="Pause now, or at the next step boundary",
    **answers({202: RunOut}, *ACTION_ERRORS, headers={202: RUN_HEADERS}),
)
def pause_run(request: HttpRequest, run_id: str, body: ReasonIn | None = None) -> Any:
    run = _operable(request, run_id)
    p = principal(request)
    run.pause(actor=p.actor, user_id=p.user.pk, reason=body.reason if body else "")
    return _accepted(_fresh(run))


@router.post(
    "/runs/{run_id}/resume",
    summary="Resume a paused run",
    **answers({202: RunOut}, 403, 404, 409, headers={202: RUN_HEADERS}),
)
def resume_run(request: HttpRequest, run_id: str) -> Any:
    run = _operable(request, run_id)
    p = principal(request)
    run.resume(actor=p.actor, user_id=p.user.pk)
    return _accepted(_fresh(run))


@router.post(
    "/runs/{run_id}/retry",
    summary="Run again from a step (a finished run: as a new run, which Location names)",
    **answers({202: RunOut}, *ACTION_ERRORS, headers={202: RUN_HEADERS}),
)
def retry_run(request: HttpRequest, run_id: str, body: RetryIn) -> Any:
    run = _operable(request, run_id)
    p = principal(request)
    result = run.retry_from(body.from_step, actor=p.actor, user_id=p.user.pk)
    return _accepted(_fresh(result), retried_from=str(run.pk) if result.pk != run.pk else None)


@router.post(
    "/runs/{run_id}/budget",
    summary="Raise the run's limits",
    **answers({200: RunOut}, *ACTION_ERRORS, headers={200: RUN_HEADERS}),
)
def raise_budget(request: HttpRequest, run_id: str, body: BudgetIn) -> Any:
    run = _operable(request, run_id)
    p = principal(request)
    run.raise_budget(actor=p.actor, user_id=p.user.pk, **body.model_dump())
    return _accepted(_fresh(run), status=200)


@router.post(
    "/runs/{run_id}/signals/{name}",
    summary="Deliver an event to ctx.wait_for_event(name); Idempotency-Key: at most once",
    **answers(
        {202: SignalOut, 200: SignalOut},
        *ACTION_ERRORS,
        headers={202: SIGNAL_HEADERS, 200: SIGNAL_HEADERS},
    ),
)
def signal_run(
    request: HttpRequest,
    run_id: str,
    name: str,
    body: SignalIn | None = None,
    idempotency_key: Annotated[str | None, Header(alias=KEY_HEADER)] = None,
) -> Any:
    run = _operable(request, run_id)
    p = principal(request)
    key = _key(idempotency_key)
    delivered = run.signal(
        name,
        body.payload if body else None,
        actor=p.actor,
        user_id=p.user.pk,
        dedup_key=key or "",
    )
    body_out = {"run": str(run.pk), "signal": name, "delivered": delivered}
    headers = {"Location": run_body(run)["links"]["self"]}
    if not delivered:
        headers["Idempotent-Replayed"] = "true"
        body_out["replayed"] = True
    return json_response(body_out, status=202 if delivered else 200, headers=headers)
