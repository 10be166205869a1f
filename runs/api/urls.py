"""``/api/v1/``: the API, with the framework's own answers (405, unknown paths) as problems,
and paths or queries the database could not look up (a NUL character) refused with a 400."""

from __future__ import annotations

import functools
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.urls import URLPattern, path, re_path

from runs.api import api
from runs.api.parsing import refused_url
from runs.api.problems import problem_response


def _as_problem(request: HttpRequest, response: Any) -> Any:
    if isinstance(response, HttpResponseNotAllowed):
        allowed = response["Allow"]
        return problem_response(
            405,
            f"{request.method} is not allowed here; use {allowed}",
            kind="method-not-allowed",
            headers={"Allow": allowed},
            request=request,
        )
    return response


def _refused(request: HttpRequest) -> HttpResponse | None:
    """A path or query the database could not even look up (a NUL character): 400."""
    reason = refused_url(request)
    if not reason:
        return None
    return problem_response(400, reason, kind="bad-request", request=request)


def _problem_405(view: Any) -> Any:
    if iscoroutinefunction(view):

        async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            refused = _refused(request)
            if refused is not None:
                return refused
            return _as_problem(request, await view(request, *args, **kwargs))

        wrapper = functools.wraps(view)(async_wrapper)
        return markcoroutinefunction(wrapper)

    @functools.wraps(view)
    def sync_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        return _refused(request) or _as_problem(request, view(request, *args, **kwargs))

    return sync_wrapper


def unknown_path(request: HttpRequest, rest: str = "") -> HttpResponse:
    return problem_response(
        404, f"no API endpoint at {request.path}", kind="not-found", request=request
    )


_patterns, _app_name, _namespace = api.urls
_wrapped = [
    URLPattern(p.pattern, _problem_405(p.callback), p.default_args, p.name)
    if isinstance(p, URLPattern)
    else p
    for p in _patterns
]

urlpatterns = [
    path("", (_wrapped, _app_name, _namespace)),
    re_path(r"^(?P<rest>.*)$", unknown_path),
]
