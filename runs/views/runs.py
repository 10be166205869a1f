"""The runs list, a run's page, and the operator actions on a run.

Every action is a POST that checks ``OPERATE`` in the run's team at that moment, calls the
run's own operation with the signed-in person as actor, reports the outcome as a toast and
answers htmx with the refreshed partial (or redirects back to the run's page without JS).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect, reswap, retarget

from runs.console import list_context
from runs.exceptions import AgentopsError
from runs.forms import BUDGET_KINDS, RaiseBudgetForm, RetryForm, SignalForm, errors_to_fields
from runs.models import RunStatus
from runs.permissions import actor_for, runs_visible_to
from runs.run_page import pretty_json, run_live_context, steps_page
from runs.views.common import (
    _get_run_for_user,
    _get_run_to_operate,
    console_login_required,
    render_fragments,
    wants_fragment,
)

DETAIL = "runs/run_detail.html"
LIST = "runs/run_list.html"
LIST_PARTIALS = ("runs-live", "runs-table")


@console_login_required
@require_GET
def run_list(request: HttpRequest) -> HttpResponse:
    context = list_context(request.user, request.GET)
    context["polling"] = request.GET.get("poll") == "1"
    if wants_fragment(request):
        target = request.htmx.target if request.htmx.target in LIST_PARTIALS else "runs-live"
        return TemplateResponse(request, f"{LIST}#{target}", context)
    return TemplateResponse(request, LIST, context)


def _detail_context(request: HttpRequest, run: Any, **overrides: Any) -> dict[str, Any]:
    """The page's context; ``overrides`` replace entries (a bound form with its errors)."""
    context = run_live_context(run, request.user)
    context.update(
        input_json=pretty_json(run.input),
        budget_form=RaiseBudgetForm(),
        retry_form=RetryForm(run_id=run.pk),
        retried_as=list(
            runs_visible_to(request.user).filter(parent=run).order_by("-created_at")[:10]
        ),
        polling=request.GET.get("poll") == "1",
        confirming=False,
    )
    context.update(overrides)
    return context


@console_login_required
@require_GET
def run_steps(request: HttpRequest, run_id: UUID) -> HttpResponse:
    """Every step of a run, a page at a time (the run's page shows the latest)."""
    run = _get_run_for_user(request, run_id)
    raw = request.GET.get("after", "")
    after = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 10 else -1
    if raw and after < 0:
        return HttpResponseBadRequest(
            "after: the number of the step to start after (0 or more)",
            content_type="text/plain; charset=utf-8",
        )
    steps, next_after = steps_page(run, after)
    context = {
        "run": run,
        "steps": steps,
        "after": after,
        "first": after < 0,
        "next_after": next_after,
        "nav": "runs",
    }
    return TemplateResponse(request, "runs/run_steps.html", context)


@console_login_required
@require_GET
def run_detail(request: HttpRequest, run_id: UUID) -> HttpResponse:
    run = _get_run_for_user(request, run_id)
    context = _detail_context(request, run)
    if wants_fragment(request):
        return TemplateResponse(request, f"{DETAIL}#run-live", context)
    return TemplateResponse(request, DETAIL, context)


@console_login_required
@require_GET
def run_cancel_confirm(request: HttpRequest, run_id: UUID) -> HttpResponse:
    """The confirmation step before a cancel: a page of its own without JS, a box inline
    with htmx. Both post to ``run_cancel``."""
    run = _get_run_to_operate(request, run_id)
    context = {"run": run, "confirming": True, "status_label": run.get_status_display()}
    if wants_fragment(request):
        return TemplateResponse(request, f"{DETAIL}#cancel-confirm", context)
    return TemplateResponse(request, "runs/run_cancel.html", context)


def _refreshed(
    request: HttpRequest, run_id: Any, *, main: str = "run-live", **overrides: Any
) -> HttpResponse:
    """After an action: htmx gets the refreshed live partial (plus the toasts and an emptied
    cancel box); a plain form post goes back to the run's page."""
    if not request.htmx:
        return redirect("run-detail", run_id)
    run = _get_run_for_user(request, run_id)
    context = _detail_context(request, run, **overrides)
    oob = ("cancel-confirm",) if main == "run-live" else ("run-live",)
    return render_fragments(request, DETAIL, main, context, oob=oob)


def _operate(
    request: HttpRequest, run_id: UUID, act: Callable[[Any, str, int], str]
) -> HttpResponse:
    run = _get_run_to_operate(request, run_id)
    try:
        message = act(run, actor_for(request.user), request.user.pk)
    except AgentopsError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, message)
    return _refreshed(request, run.pk)


@console_login_required
@require_POST
def run_cancel(request: HttpRequest, run_id: UUID) -> HttpResponse:
    def act(run: Any, actor: str, user_id: int) -> str:
        run.cancel(actor=actor, user_id=user_id)
        return "Cancellation requested: compensations run, then the run stops."

    return _operate(request, run_id, act)


@console_login_required
@require_POST
def run_pause(request: HttpRequest, run_id: UUID) -> HttpResponse:
    def act(run: Any, actor: str, user_id: int) -> str:
        after = run.pause(actor=actor, user_id=user_id)
        if after.status == RunStatus.PAUSED:
            return "Run paused."
        return "Pause requested: the run pauses after its current step."

    return _operate(request, run_id, act)


@console_login_required
@require_POST
def run_resume(request: HttpRequest, run_id: UUID) -> HttpResponse:
    def act(run: Any, actor: str, user_id: int) -> str:
        run.resume(actor=actor, user_id=user_id)
        return "Run resumed."

    return _operate(request, run_id, act)


@console_login_required
@require_POST
def run_retry(request: HttpRequest, run_id: UUID) -> HttpResponse:
    run = _get_run_to_operate(request, run_id)
    form = RetryForm(request.POST, run_id=run.pk)
    if not form.is_valid():
        why = " ".join(form.errors.get("step", []))
        messages.error(request, f"Choose one of the run's steps to retry from. {why}".strip())
        return _refreshed(request, run.pk)
    seq = form.cleaned_data["step"]
    try:
        new = run.retry_from(seq, actor=actor_for(request.user), user_id=request.user.pk)
    except AgentopsError as exc:
        messages.error(request, str(exc))
        return _refreshed(request, run.pk)
    if new.pk != run.pk:
        messages.success(request, f"Retrying from step {seq} as a new run.")
        url = reverse("run-detail", args=[new.pk])
        return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
    messages.success(request, f"Rewound to step {seq}: the run continues from there.")
    return _refreshed(request, run.pk)


@console_login_required
@require_POST
def run_raise_budget(request: HttpRequest, run_id: UUID) -> HttpResponse:
    run = _get_run_to_operate(request, run_id)
    form = RaiseBudgetForm(request.POST)
    if form.is_valid():
        try:
            run.raise_budget(
                actor=actor_for(request.user), user_id=request.user.pk, **form.limits()
            )
        except AgentopsError as exc:
            errors_to_fields(form, exc, BUDGET_KINDS)
        else:
            messages.success(request, "Budget raised.")
            return _refreshed(request, run.pk, main="run-budget-form")
    # Invalid: the form again with its errors at the fields (422, which htmx is told to swap).
    context = _detail_context(request, run, budget_form=form)
    if request.htmx:
        return render_fragments(request, DETAIL, "run-budget-form", context, status=422)
    return TemplateResponse(request, DETAIL, context, status=422)


@console_login_required
@require_POST
def run_signal(request: HttpRequest, run_id: UUID) -> HttpResponse:
    """Send the signal the run waits on, as the API's signal endpoint does (``Run.signal``).

    The form lives in the live partial and is kept while the person types
    (``hx-preserve``); a response with errors replaces only the form, a sent signal the whole
    live partial with an empty form (or none, once the run has stopped waiting)."""
    run = _get_run_to_operate(request, run_id)
    form = SignalForm(request.POST)
    if form.is_valid():
        name = form.cleaned_data["name"]
        try:
            run.signal(
                name,
                form.cleaned_data["payload"],
                actor=actor_for(request.user),
                user_id=request.user.pk,
            )
        except AgentopsError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"Signal {name!r} sent.")
        if not request.htmx:
            return redirect("run-detail", run.pk)
        response = _refreshed(request, run.pk, signal_preserve=False)
        return retarget(reswap(response, "outerHTML"), "#run-live")
    context = _detail_context(request, run, signal_form=form, signal_preserve=False)
    if request.htmx:
        return render_fragments(request, DETAIL, "run-signal", context, status=422)
    return TemplateResponse(request, DETAIL, context, status=422)
