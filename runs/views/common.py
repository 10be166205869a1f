"""What every console view shares: sign-in, access to runs, and htmx responses."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.urls import reverse
from django_htmx.http import HttpResponseClientRedirect

from runs.models import Run
from runs.permissions import OPERATE, can, runs_visible_to

View = Callable[..., HttpResponse]


def console_login_required(view: View) -> View:
    """Like ``login_required``, but an htmx request (a poll, a button) whose sign-in expired
    sends the whole page to the sign-in page instead of swapping it into a fragment."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.user.is_authenticated:
            return view(request, *args, **kwargs)
        if getattr(request, "htmx", False):
            page = request.htmx.current_url_abs_path or request.get_full_path()
            return HttpResponseClientRedirect(redirect_to_login(page).url)
        return redirect_to_login(request.get_full_path())

    return wrapper


def wants_fragment(request: HttpRequest) -> bool:
    """An htmx request for a partial (a history restore after a cache miss wants the page)."""
    return bool(request.htmx) and not request.htmx.history_restore_request


def _get_run_for_user(request: HttpRequest, run_id: Any) -> Run:
    """The run if the user may see it; 404 otherwise, so another team's run does not leak."""
    return get_object_or_404(
        runs_visible_to(request.user).select_related("team", "created_by", "parent"), pk=run_id
    )


def _get_run_to_operate(request: HttpRequest, run_id: Any) -> Run:
    """The run if the user may operate it right now: 404 if unseen, 403 if only seen."""
    run = _get_run_for_user(request, run_id)
    if not can(request.user, run.team_id, OPERATE):
        raise PermissionDenied("You may view this run but not operate it.")
    return run


def toasts_oob(request: HttpRequest) -> str:
    """The pending messages as an out-of-band swap that appends them to the toast area."""
    storage = messages.get_messages(request)
    if not len(storage):
        return ""
    return render_to_string("base.html#toasts", {"messages": storage, "oob": True})


def render_fragments(
    request: HttpRequest,
    template: str,
    main: str,
    context: dict[str, Any],
    *,
    oob: tuple[str, ...] = (),
    extra: str = "",
    status: int = 200,
) -> HttpResponse:
    """``template#main`` for htmx, plus the ``oob`` partials swapped out of band, ``extra``
    HTML, and the toasts."""
    parts = [render_to_string(f"{template}#{main}", context, request=request)]
    for name in oob:
        parts.append(render_to_string(f"{template}#{name}", {**context, "oob": True}, request))
    parts.append(extra)
    parts.append(toasts_oob(request))
    return HttpResponse("".join(parts), status=status)


# --- bulk actions (the runs list and the approvals inbox) ---------------------------------
def report_form_errors(request: HttpRequest, form: Any) -> None:
    """Each error of ``form`` as an error toast."""
    for errors in form.errors.values():
        for error in errors:
            messages.error(request, error)


def report_outcomes(
    request: HttpRequest,
    title: str,
    outcomes: Counter[str],
    *,
    order: tuple[str, ...],
    done: frozenset[str],
) -> None:
    """One toast with the counts in words (``Pause: 3 paused, 1 not allowed.``): a success
    when any was done, a warning when none was."""
    text = f"{title}: " + ", ".join(f"{outcomes[o]} {o}" for o in order if outcomes[o]) + "."
    if any(outcomes[o] for o in done):
        messages.success(request, text)
    else:
        messages.warning(request, text)


def back_to(view_name: str, query: str, keep: Iterable[str]) -> str:
    """The page ``view_name`` with the parameters of ``query`` that it knows (``keep``): a
    form posted without JS goes back to the page it was on, with its filters."""
    keep = set(keep)
    kept = {k: v for k, v in QueryDict(query).items() if k in keep and v}
    url = reverse(view_name)
    return f"{url}?{urlencode(kept)}" if kept else url
