"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error the API answers is a problem object ``{type, title, status, detail, …}``: the
engine's ``AgentopsError`` subclasses keep their user-facing message as ``detail``, request
validation lists the fields at fault, and an unexpected error is logged and answered 500
without internals. Bad input of any kind (malformed JSON, wrong types, bad ids) is a 4xx.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, SuspiciousOperation
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpRequest, HttpResponse
from django.http.request import RawPostDataException
from ninja.errors import AuthenticationError, HttpError, ValidationError

from runs.api.parsing import BodyRefused
from runs.exceptions import (
    AgentopsError,
    IdempotencyConflict,
    IllegalTransition,
    InputInvalid,
    InvalidArgument,
    TerminalRunError,
    UnknownTeam,
    UnknownWorkflow,
)

if TYPE_CHECKING:
    from ninja import NinjaAPI

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "urn:agentops:problem:"

TITLES = {
    400: "Bad request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    422: "Unprocessable request",
    429: "Too many requests",
    500: "Internal server error",
}


class Problem(Exception):
    """An error answered as a problem object; raise it from a view or an auth check."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str = "",
        title: str = "",
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.status = status
        self.detail = detail
        self.kind = kind
        self.title = title or TITLES.get(status, "Error")
        self.headers = headers or {}
        self.extra = extra
        super().__init__(detail)


class CallbackUrlInvalid(AgentopsError):
    """A callback URL that is malformed or points somewhere the server must not call."""


def problem_response(
    status: int,
    detail: str,
    *,
    kind: str = "",
    title: str = "",
    headers: dict[str, str] | None = None,
    request: HttpRequest | None = None,
    **extra: Any,
) -> HttpResponse:
    body: dict[str, Any] = {
        "type": f"{TYPE_BASE}{kind}" if kind else "about:blank",
        "title": title or TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if request is not None:
        body["instance"] = request.path
    body.update(extra)
    response = HttpResponse(
        json.dumps(body, cls=DjangoJSONEncoder), status=status, content_type=CONTENT_TYPE
    )
    for name, value in (headers or {}).items():
        response[name] = value
    return response


# --- the engine's errors ------------------------------------------------------------------
def _agentops(request: HttpRequest, exc: AgentopsError) -> HttpResponse:
    extra: dict[str, Any] = {}
    if isinstance(exc, InputInvalid):
        status, kind, title = 422, "input-invalid", "Input does not match the workflow's schema"
        extra["errors"] = [
            {"loc": ["input", *e.get("loc", [])], "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors
        ]
    elif isinstance(exc, IdempotencyConflict):
        status, kind, title = 422, "idempotency-conflict", "Idempotency key reused"
    elif isinstance(exc, UnknownWorkflow):
        status, kind, title = 422, "unknown-workflow", "Unknown workflow"
    elif isinstance(exc, UnknownTeam):
        status, kind, title = 422, "unknown-team", "Unknown team"
    elif isinstance(exc, InvalidArgument):  # BudgetInvalid among them
        status, kind, title = 422, "invalid-value", "Invalid value"
    elif isinstance(exc, CallbackUrlInvalid):
        status, kind, title = 422, "callback-url-refused", "Callback URL refused"
    elif isinstance(exc, IllegalTransition):
        status, kind, title = 409, "illegal-transition", "Not possible in the run's state"
        extra["run_status"] = exc.current
    elif isinstance(exc, TerminalRunError):
        status, kind, title = 409, "run-finished", "The run has finished"
    else:
        status, kind, title = 400, "bad-request", ""
    return problem_response(status, str(exc), kind=kind, title=title, request=request, **extra)


# --- request validation and the framework's errors -----------------------------------------
def _validation(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors
    ]
    parts = [f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in errors]
    return problem_response(
        422,
        "the request is invalid: " + "; ".join(parts),
        kind="validation-error",
        title="Invalid request",
        request=request,
        errors=errors,
    )


def _problem(request: HttpRequest, exc: Problem) -> HttpResponse:
    return problem_response(
        exc.status,
        exc.detail,
        kind=exc.kind,
        title=exc.title,
        headers=exc.headers,
        request=request,
        **exc.extra,
    )


def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    headers = {}
    kind = ""
    detail = str(exc)
    if isinstance(exc, AuthenticationError):
        headers["WWW-Authenticate"] = 'Bearer realm="agentops"'
        kind = "unauthenticated"
        detail = "send a valid API token (Authorization: Bearer ao_…) or sign in"
    elif exc.status_code == 400 and "parse request body" in detail:
        kind, detail = "malformed-body", "the request body is not valid JSON"
        if isinstance(exc.__cause__, BodyRefused):  # valid to Python, not storable JSON
            detail = f"the request body cannot be stored as JSON: {exc.__cause__}"
    elif exc.status_code == 403 and "CSRF" in detail:
        kind, detail = "csrf", "CSRF check failed: send the X-CSRFToken header with the cookie"
    return problem_response(exc.status_code, detail, kind=kind, headers=headers, request=request)


def _not_found(request: HttpRequest, exc: Exception) -> HttpResponse:
    return problem_response(404, "no such resource", kind="not-found", request=request)


def _denied(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return problem_response(403, str(exc) or "forbidden", kind="forbidden", request=request)


def _unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    if isinstance(exc, SuspiciousOperation | RawPostDataException):
        too_big = type(exc).__name__ == "RequestDataTooBig"
        return problem_response(
            413 if too_big else 400,
            "the request body is too large" if too_big else "the request was refused",
            kind="bad-request",
            request=request,
        )
    logger.exception("API error on %s %s", request.method, request.path, exc_info=exc)
    return problem_response(
        500, "an unexpected error occurred; it has been logged", kind="internal", request=request
    )


def install(api: NinjaAPI) -> None:
    """Answer every error of ``api`` as a problem object."""
    api.add_exception_handler(Exception, _unexpected)
    api.add_exception_handler(AgentopsError, _agentops)
    api.add_exception_handler(ValidationError, _validation)
    api.add_exception_handler(HttpError, _http_error)
    api.add_exception_handler(Problem, _problem)
    api.add_exception_handler(Http404, _not_found)
    api.add_exception_handler(ObjectDoesNotExist, _not_found)
    api.add_exception_handler(PermissionDenied, _denied)
