"""``/api/v1/``: the API, with the framework's own answers (405, unknown paths) as problems."""

from __future__ import annotations

import functools
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.urls import URLPattern, path, re_path

from runs.api import api
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


def _problem_405(view: Any) -> Any:
    if iscoroutinefunction(view):

        async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            return _as_problem(request, await view(request, *args, **kwargs))

        wrapper = functools.wraps(view)(async_wrapper)
        return markcoroutinefunction(wrapper)

    @functools.wraps(view)
    def sync_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        return _as_problem(request, view(request, *args, **kwargs))

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
