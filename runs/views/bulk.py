"""Bulk actions on the runs list: cancel, pause or resume the selected runs in one POST.

Each run is looked up and permission-checked at that moment and acted on by its own model
method (the same one as the single actions, so each is its own transaction and its own event
with the person as actor); one run that cannot be acted on never stops the others. The person
is told how many runs ended up in which outcome.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from runs.console import RunFilterForm
from runs.exceptions import AgentopsError, IllegalTransition
from runs.forms import BULK_ACTIONS, BulkActionForm
from runs.models import TERMINAL, Run, RunStatus
from runs.permissions import OPERATE, actor_for, can, runs_visible_to
from runs.views.common import console_login_required, toasts_oob

#: Outcomes in the order the summary names them.
OUTCOMES = (
    "stopping",
    "paused",
    "pausing",
    "resumed",
    "already stopping",
    "already finished",
    "not possible now",
    "not allowed",
    "not found",
)
DONE = frozenset({"stopping", "paused", "pausing", "resumed"})


def _act(run: Run, action: str, *, actor: str, user_id: int) -> str:
    """Apply ``action`` to one run; its outcome."""
    if action == "cancel":
        if run.stop_requested and not run.is_terminal:
            return "already stopping"
        run.cancel(actor=actor, user_id=user_id)
        return "stopping"
    if action == "pause":
        after = run.pause(actor=actor, user_id=user_id)
        return "paused" if after.status == RunStatus.PAUSED else "pausing"
    run.resume(actor=actor, user_id=user_id)
    return "resumed"


def act_on_runs(user: Any, run_ids: list[str], action: str) -> Counter[str]:
    """Apply ``action`` to each run of ``run_ids`` independently; the count per outcome.

    A run the user may not see counts as not found (as with a single run, its existence does
    not leak); a run the user sees but may not operate, as not allowed. The permission is
    read once per team in this request: all of its runs are judged at the same moment.
    """
    outcomes: Counter[str] = Counter()
    actor = actor_for(user)
    may: dict[int, bool] = {}
    for text in run_ids:
        try:
            run_id = uuid.UUID(text)
        except ValueError:
            outcomes["not found"] += 1
            continue
        run = runs_visible_to(user).filter(pk=run_id).first()
        if run is None:
            outcomes["not found"] += 1
            continue
        if run.team_id not in may:
            may[run.team_id] = can(user, run.team_id, OPERATE)
        if not may[run.team_id]:
            outcomes["not allowed"] += 1
            continue
        if run.is_terminal:
            outcomes["already finished"] += 1
            continue
        try:
            outcomes[_act(run, action, actor=actor, user_id=user.pk)] += 1
        except IllegalTransition as exc:
            # Refused by the guarded update: the run may have finished since the read above.
            finished = exc.current in TERMINAL
            outcomes["already finished" if finished else "not possible now"] += 1
        except (AgentopsError, Run.DoesNotExist):
            outcomes["not possible now"] += 1
    return outcomes


def summary(outcomes: Counter[str]) -> str:
    """The counts in words: ``3 stopping, 1 already finished, 2 not allowed``."""
    return ", ".join(f"{outcomes[o]} {o}" for o in OUTCOMES if outcomes[o])


def _list_url(query: str) -> str:
    """The list with the filters the person had (only the list's own parameters)."""
    params = QueryDict(query)
    keep = set(RunFilterForm.base_fields) | {"before", "after"}
    kept = {k: v for k, v in params.items() if k in keep and v}
    url = reverse("run-list")
    return f"{url}?{urlencode(kept)}" if kept else url


@console_login_required
@require_POST
def run_bulk(request: HttpRequest) -> HttpResponse:
    """htmx gets only the toast (the table updates itself from the live pushes); a plain
    form post goes back to the list with its filters."""
    form = BulkActionForm(request.POST)
    status = 200
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, error)
        status = 422
    else:
        action = form.cleaned_data["action"]
        outcomes = act_on_runs(request.user, form.cleaned_data["run"], action)
        text = f"{BULK_ACTIONS[action]}: {summary(outcomes)}."
        if any(outcomes[o] for o in DONE):
            messages.success(request, text)
        else:
            messages.warning(request, text)
    if request.htmx:
        return HttpResponse(toasts_oob(request), status=status)
    return redirect(_list_url(request.POST.get("query", "")))
