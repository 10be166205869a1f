"""What the OpenAPI document says each operation answers: bodies, status codes and headers.

The views build their answers themselves (``json_response``, ``problem_response``), so these
models only document them; the contract tests (``tests/runs/test_api_contract.py``) check every
answer against this document, so it cannot drift from what the views send.

Invariants of the document:
- every operation lists each status it may answer; errors are ``application/problem+json``
  (``Problem``), and every operation may answer 400, 401 and 429 (``answers`` adds them);
- an operation that declares nothing of its own gets the generic error answers, so a new
  router is documented as problem+json from its first day.
"""

from __future__ import annotations

from datetime import datetime
from http import HTTPStatus
from typing import Any

from ninja import NinjaAPI, Schema
from pydantic import ConfigDict, Field

from runs.api.problems import CONTENT_TYPE
from runs.models import RunStatus


# --- errors -------------------------------------------------------------------------------
class FieldError(Schema):
    loc: list[str | int]
    msg: str
    type: str


class Problem(Schema):
    """An RFC 9457 problem; some carry more members (``errors``, ``retry_after``, …)."""

    model_config = ConfigDict(extra="allow", title="Problem")

    type: str = Field(description="a URN naming the kind of problem, or about:blank")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    instance: str | None = Field(None, description="the path that was asked for")
    errors: list[FieldError] | None = Field(None, description="validation: the fields at fault")
    retry_after: int | None = Field(None, description="429: seconds until the next window")


# --- runs ---------------------------------------------------------------------------------
Number = int | float | str  # money is a decimal string (no binary rounding), counts are numbers


class BudgetFigure(Schema):
    spent: Number
    limit: Number | None
    fraction: float | None


class RunOut(Schema):
    """A run: status, progress, budget, result (or partial result), error and links."""

    id: str
    workflow: str
    workflow_version: str
    team: str
    status: RunStatus
    terminal: bool
    wait: dict[str, Any] | None = Field(description="waiting: its kind, what for, until when")
    stop_requested: str | None
    pause_reason: str | None
    input: Any
    result: Any
    result_is_partial: bool
    error: Any
    progress: dict[str, Any]
    budget: dict[str, BudgetFigure]
    recoveries: int
    parent: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    deadline_at: datetime | None
    links: dict[str, str]
    replayed: bool | None = Field(None, description="submit: answered from an earlier submit")
    retried_from: str | None = Field(None, description="retry: the finished run retried")


class RunSummaryOut(Schema):
    id: str
    workflow: str
    team: str
    status: RunStatus
    progress: dict[str, Any]
    created_at: datetime
    finished_at: datetime | None
    links: dict[str, str]


class RunPageOut(Schema):
    items: list[RunSummaryOut]
    next_cursor: str | None
    links: dict[str, str]


class SignalOut(Schema):
    run: str
    signal: str
    delivered: bool
    replayed: bool | None = None


class WorkflowOut(Schema):
    name: str
    version: str
    description: str
    input_schema: dict[str, Any]
    budget: dict[str, Number | None]
    deadline_seconds: float | None


class WorkflowListOut(Schema):
    items: list[WorkflowOut]


# --- events -------------------------------------------------------------------------------
class EventOut(Schema):
    id: int
    kind: str
    run: str | None
    actor: str
    data: Any
    created_at: datetime


class EventPageOut(Schema):
    items: list[EventOut]
    next_after: int
    has_more: bool
    links: dict[str, str]


# --- status codes and headers -------------------------------------------------------------
#: Every operation refuses a NUL character anywhere in its URL (400), authenticates (401) and
#: counts against the rate limit (429).
ALWAYS = (400, 401, 429)
#: What an operation that declares nothing may answer.
GENERIC_ERRORS = (400, 401, 403, 404, 409, 422, 429)

_HEADER = {"schema": {"type": "string"}}
HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {**_HEADER, "required": True}},
    429: {"Retry-After": {"schema": {"type": "integer", "minimum": 1}, "required": True}},
}
RUN_HEADERS = {
    "Location": {**_HEADER, "required": True, "description": "the run: poll it"},
    "Retry-After": {
        "schema": {"type": "integer", "minimum": 1},
        "description": "seconds to wait before polling (absent once the run has finished)",
    },
    "Idempotent-Replayed": {
        "schema": {"type": "string", "enum": ["true"]},
        "description": "the answer of an earlier request with the same Idempotency-Key",
    },
}


def answers(
    ok: dict[int, Any],
    *errors: int,
    headers: dict[int, dict[str, Any]] | None = None,
    content: dict[int, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The ``response=`` and ``openapi_extra=`` arguments of a route decorator.

    ``ok``: success status → body model (None: no JSON body); ``errors``: the problem statuses
    besides those of ``ALWAYS``; ``headers``/``content``: response headers and non-JSON bodies.
    """
    codes = sorted({*errors, *ALWAYS})
    response: dict[int, Any] = {**ok, **{code: Problem for code in codes}}
    extra: dict[int, dict[str, Any]] = {}
    for code, named in {**HEADERS, **(headers or {})}.items():
        if code in response:
            extra.setdefault(code, {})["headers"] = named
    for code, body in (content or {}).items():
        extra.setdefault(code, {})["content"] = body
    return {"response": response, "openapi_extra": {"responses": extra} if extra else None}


def _problem_response(code: int) -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/Problem"}
    out: dict[str, Any] = {
        "description": HTTPStatus(code).phrase,
        "content": {CONTENT_TYPE: {"schema": ref}},
    }
    if code in HEADERS:
        out["headers"] = HEADERS[code]
    return out


class DocumentedAPI(NinjaAPI):
    """The API whose document says errors are problems (``application/problem+json``)."""

    def get_openapi_schema(self, **kwargs: Any) -> Any:
        schema = super().get_openapi_schema(**kwargs)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if "Problem" not in components:
            components.update(_components())
        for methods in schema["paths"].values():
            for operation in methods.values():
                responses = operation["responses"]
                declared = {int(code) for code in responses}
                if declared <= {200}:  # nothing declared: the generic answers
                    for code in GENERIC_ERRORS:
                        responses[code] = _problem_response(code)
                for code, response in responses.items():
                    body = response.get("content", {})
                    if int(code) >= 400 and "application/json" in body:
                        response["content"] = {CONTENT_TYPE: body["application/json"]}
        return schema


def _components() -> dict[str, Any]:
    """``Problem`` and ``FieldError`` as JSON Schema components."""
    found = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = found.pop("$defs", {})
    return {"Problem": found, **defs}
