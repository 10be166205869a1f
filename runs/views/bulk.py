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

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from runs.console import RunFilterForm
from runs.exceptions import AgentopsError, IllegalTransition
from runs.forms import BULK_ACTIONS, BulkActionForm
from runs.models import TERMINAL, Run, RunStatus
from runs.permissions import OPERATE, actor_for, can, runs_visible_to
from runs.views.common import (
    back_to,
    console_login_required,
    report_form_errors,
    report_outcomes,
    toasts_oob,
)

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


@console_login_required
@require_POST
def run_bulk(request: HttpRequest) -> HttpResponse:
    """htmx gets only the toast (the table updates itself from the live pushes); a plain
    form post goes back to the list with its filters."""
    form = BulkActionForm(request.POST)
    status = 200
    if not form.is_valid():
        report_form_errors(request, form)
        status = 422
    else:
        action = form.cleaned_data["action"]
        outcomes = act_on_runs(request.user, form.cleaned_data["run"], action)
        report_outcomes(request, BULK_ACTIONS[action], outcomes, order=OUTCOMES, done=DONE)
    if request.htmx:
        return HttpResponse(toasts_oob(request), status=status)
    keep = {*RunFilterForm.base_fields, "before", "after"}
    return redirect(back_to("run-list", request.POST.get("query", ""), keep))
