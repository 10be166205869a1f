"""Start a run: choose a workflow, fill the form generated from its input schema, choose a
team among those where the person may start runs."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.views.decorators.http import require_http_methods

from runs.exceptions import AgentopsError, InputInvalid, UnknownWorkflow
from runs.forms import StartForm, WorkflowChoiceForm, WorkflowInputForm
from runs.models import Run
from runs.permissions import START, actor_for, teams_for
from runs.views.common import console_login_required, wants_fragment
from runs.workflow import WorkflowDef, get_workflow

TEMPLATE = "runs/run_new.html"


def _respond(request: HttpRequest, context: dict[str, Any], *, status: int = 200) -> HttpResponse:
    if wants_fragment(request) and request.htmx.target == "start-form":
        return TemplateResponse(request, f"{TEMPLATE}#start-form", context, status=status)
    return TemplateResponse(request, TEMPLATE, context, status=status)


@console_login_required
@require_http_methods(["GET", "POST"])
def run_new(request: HttpRequest) -> HttpResponse:
    teams = teams_for(request.user, START)
    may_start = teams.exists()
    source = request.POST if request.method == "POST" else request.GET
    name = source.get("workflow", "")
    chooser = WorkflowChoiceForm({"workflow": name}) if name else WorkflowChoiceForm()
    chooser.is_valid()
    context: dict[str, Any] = {
        "chooser": chooser,
        "may_start": may_start,
        "workflow": None,
        "start_form": None,
        "input_form": None,
        "nav": "new",
    }
    if request.method == "POST" and not may_start:
        raise PermissionDenied("You may not start runs in any team.")
    wf: WorkflowDef | None = None
    if name:
        try:
            wf = get_workflow(name)
        except UnknownWorkflow as exc:
            chooser.add_error("workflow", str(exc))
            return _respond(request, context, status=422 if request.method == "POST" else 200)
    if wf is None:
        if request.method == "POST":
            chooser.add_error("workflow", "Choose a workflow.")
            return _respond(request, context, status=422)
        return _respond(request, context)

    context["workflow"] = wf
    if request.method == "GET":
        context["start_form"] = StartForm(initial={"workflow": wf.name}, teams=teams)
        context["input_form"] = WorkflowInputForm(workflow=wf)
        return _respond(request, context)

    start_form = StartForm(request.POST, teams=teams)
    input_form = WorkflowInputForm(request.POST, workflow=wf)
    context.update(start_form=start_form, input_form=input_form)
    if start_form.is_valid() and input_form.is_valid():
        try:
            run, _ = Run.start(
                wf.name,
                input_form.input_data(),
                team=start_form.cleaned_data["team"],
                actor=actor_for(request.user),
                user=request.user,
            )
        except InputInvalid as exc:
            input_form.add_input_errors(exc.errors)
        except AgentopsError as exc:
            start_form.add_error(None, str(exc))
        else:
            messages.success(request, f"Started {wf.name}.")
            return redirect("run-detail", run.pk)
    return _respond(request, context, status=422)
