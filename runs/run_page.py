"""What a run's page shows: its status, progress, budgets, steps, result and events, and
the live partial pushed to its open pages (``runs.consumers``).

Shared by the views and the WebSocket consumers, so a pushed partial is the same HTML as the
page's. A run is read here only after its viewer's right to see it was checked.
"""

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from runs.audit import Event
from runs.budget import WARN_AT
from runs.forms import SignalForm
from runs.models import (
    TERMINAL,
    Run,
    RunStatus,
    Step,
    StepAttempt,
    WaitKind,
    budget_spent_fraction,
)
from runs.permissions import (
    OPERATE,
    can,
    runs_visible_to,
)

#: The origin of the cursors and versions written as integers of microseconds.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Events a run's page shows (and pushes on every change).
EVENTS_SHOWN = 50
#: The latest steps a run's page shows (and pushes on every change). A run of hours or days
#: may checkpoint thousands: the rest are on its steps page, a page at a time.
STEPS_SHOWN = 50
#: Steps on a page of a run's steps page.
STEPS_PAGE = 200


def status_view(run: Run, *, now: datetime | None = None) -> tuple[str, str]:
    """(label, css modifier) of the run's status badge, naming what it waits on."""
    now = now or timezone.now()
    if run.status == RunStatus.WAITING:
        kind = {
            WaitKind.RETRY: "retrying",
            WaitKind.APPROVAL: "waiting on a person",
            WaitKind.TIMER: "waiting on a timer",
            WaitKind.EVENT: "waiting on an event",
            WaitKind.CIRCUIT: "waiting on an open circuit",
        }.get(run.wait_kind, "waiting")
        return kind, "waiting"
    if run.status == RunStatus.RUNNING:
        if run.stop_requested:
            return "stopping", "stopping"
        if run.is_stalled(now=now):
            return "stalled", "stalled"
    return run.get_status_display().lower(), run.status


def budget_level(fraction: float | None) -> str:
    """ "ok", "warn" (past the 80 % warning) or "over" (limit reached)."""
    if fraction is None or fraction < WARN_AT:
        return "ok"
    return "over" if fraction >= 1 else "warn"


def budget_fraction(run: Run, *, now: datetime | None = None) -> float | None:
    """The largest fraction spent of the run's budgets, None when none has a limit."""
    fracs = [
        budget_spent_fraction(spent, limit)
        for _, spent, limit in run.budget_figures(now=now)
        if limit
    ]
    return max(fracs) if fracs else None


def progress_figures(run: Run) -> dict[str, Any]:
    """Done/total, the percent done (None without both), stage and message."""
    p = run.progress or {}
    done, total = p.get("done"), p.get("total")
    percent = None
    if isinstance(done, int | float) and isinstance(total, int | float) and total > 0:
        percent = round(100 * min(done, total) / total)
    return {
        "done": done,
        "total": total,
        "stage": p.get("stage") or "",
        "message": p.get("message") or "",
        "percent": percent,
    }


def progress_view(run: Run, *, now: datetime | None = None) -> dict[str, Any]:
    """``progress_figures``, and an ETA from the rate of progress while the run was working
    (``active_seconds``, written by the engine), or, before there is one, from the rate
    since it started."""
    out = progress_figures(run)
    out["eta"] = None
    if out["percent"] is not None:
        p = run.progress
        done, total = out["done"], out["total"]
        updated = parse_datetime(p["updated_at"]) if p.get("updated_at") else None
        if (
            run.status in (RunStatus.RUNNING, RunStatus.WAITING)
            and run.started_at
            and updated
            and 0 < done < total
            and updated > run.started_at
        ):
            rate = done / (updated - run.started_at).total_seconds()
            active_s, active_done = p.get("active_seconds"), p.get("active_done")
            if (
                isinstance(active_s, int | float)
                and isinstance(active_done, int | float)
                and active_s > 0
                and active_done > 0
            ):
                rate = active_done / active_s
            out["eta"] = updated + timedelta(seconds=(total - done) / rate)
    return out


BUDGET_LABELS = {
    "usd": "Cost (USD)",
    "tokens": "Tokens",
    "actions": "Actions",
    "wall_seconds": "Wall time (s)",
}


def budget_view(run: Run) -> list[dict[str, Any]]:
    rows = []
    for kind, fig in run.budget_usage().items():
        frac = fig["fraction"]
        rows.append(
            {
                "kind": kind,
                "label": BUDGET_LABELS[kind],
                "spent": fig["spent"],
                "limit": fig["limit"],
                "fraction": min(frac, 1.0) if frac is not None else None,
                "percent": round(100 * frac) if frac is not None else None,
                "warn": WARN_AT,
                "level": budget_level(frac),
            }
        )
    return rows


def pretty_json(value: Any) -> str:
    """Indented JSON for a <pre>; escaped by the template like any other text."""
    return json.dumps(value, indent=2, ensure_ascii=False, cls=DjangoJSONEncoder, sort_keys=True)


@dataclass
class StepRow:
    step: Step
    failed_attempts: list[StepAttempt]
    error_json: str


def latest_steps(run: Run) -> tuple[list[StepRow], int]:
    """The latest ``STEPS_SHOWN`` steps of ``run`` with their failed attempts, in order (then
    the failed attempts of the step in progress, which has no checkpoint yet), and how many
    earlier steps there are."""
    steps = Step.objects.filter(run=run).order_by("-seq").defer("output")
    chosen = list(steps[:STEPS_SHOWN])[::-1]
    earlier = 0
    if len(chosen) == STEPS_SHOWN:
        earlier = Step.objects.filter(run=run, seq__lt=chosen[0].seq).count()
    return _with_attempts(run, chosen, to_the_end=True), earlier


def steps_page(run: Run, after: int) -> tuple[list[StepRow], int | None]:
    """The first ``STEPS_PAGE`` steps of ``run`` after seq ``after`` (keyset: no offset to
    count through), and the cursor of the next page (None on the last, which also ends with
    the failed attempts of the step in progress)."""
    steps = Step.objects.filter(run=run, seq__gt=after).order_by("seq").defer("output")
    chosen = list(steps[: STEPS_PAGE + 1])
    more = len(chosen) > STEPS_PAGE
    chosen = chosen[:STEPS_PAGE]
    rows = _with_attempts(run, chosen, after=after, to_the_end=not more)
    return rows, chosen[-1].seq if more else None


def _with_attempts(
    run: Run, chosen: list[Step], *, after: int = -1, to_the_end: bool
) -> list[StepRow]:
    tried = StepAttempt.objects.filter(run=run, seq__gt=after)
    if chosen:
        tried = tried.filter(seq__gte=chosen[0].seq)
    if not to_the_end:
        tried = tried.filter(seq__lte=chosen[-1].seq)
    attempts: dict[int, list[StepAttempt]] = {}
    for a in tried.order_by("seq", "attempt"):
        attempts.setdefault(a.seq, []).append(a)
    rows = [
        StepRow(step, attempts.pop(step.seq, []), pretty_json(step.error) if step.error else "")
        for step in chosen
    ]
    for seq, failed in sorted(attempts.items()):  # a step in progress, failed so far
        pending = Step(
            run=run,
            seq=seq,
            name=failed[-1].name,
            status=Step.Status.PENDING,
            attempts=len(failed),
            started_at=failed[0].started_at,
        )
        rows.append(StepRow(pending, failed, ""))
    return rows


def run_actions(run: Run, *, may_operate: bool) -> dict[str, bool]:
    """Which buttons the console offers; each action still checks again when posted."""
    active = run.status not in TERMINAL
    return {
        "pause": may_operate
        and run.status in (RunStatus.QUEUED, RunStatus.WAITING, RunStatus.RUNNING)
        and not run.pause_requested
        and not run.stop_requested,
        "resume": may_operate and run.status == RunStatus.PAUSED and not run.stop_requested,
        "cancel": may_operate and active and not run.stop_requested,
        "raise_budget": may_operate and active,
        "retry": may_operate and run.status != RunStatus.SUCCEEDED,
    }


def live_version(run: Run, last_event_id: int | None) -> str:
    """The version of a rendered run fragment: ``<last event id>-<updated_at in µs>``.

    The page refuses to swap in a fragment whose version is lower than the one it shows
    (compared as a pair), so an action's response that arrives after the push of a newer
    state cannot take the page back in time. Event ids are handed out by the database, so
    they order changes across machines whatever their clocks; ``updated_at`` only breaks ties
    between writes that append no event (progress), which come from the one lease holder.
    """
    micros = (run.updated_at - EPOCH) // timedelta(microseconds=1)
    return f"{last_event_id or 0}-{micros}"


def person_state(run: Run) -> str:
    """The part of a run's state that people change (status, a requested stop or pause):
    when a push changes it, the page tells who did it."""
    parts = [str(run.status)]
    if run.stop_requested:
        parts.append("stopping")
    if run.pause_requested:
        parts.append("pausing")
    return "-".join(parts)


#: Actors that are people (``runs.permissions.actor_for``), not the engine or a sweep.
PERSON_ACTORS = ("user:", "api:")


def signal_form_id(name: str) -> str:
    """The DOM id of the form that sends signal ``name``: a digest, since a signal name may
    hold any character, and one id per name, so a form kept while the person types
    (``hx-preserve``) is never the form of another signal."""
    return "run-signal-" + hashlib.sha256(name.encode()).hexdigest()[:12]


def run_live_context(
    run: Run, user: Any = None, *, now: datetime | None = None, may_operate: bool | None = None
) -> dict[str, Any]:
    """Everything the live part of a run's page shows, for ``user`` (or for anyone whose
    right to operate it is ``may_operate``: nothing else in it depends on who looks)."""
    now = now or timezone.now()
    if may_operate is None:
        may_operate = can(user, run.team_id, OPERATE)
    label, modifier = status_view(run, now=now)
    events = list(Event.objects.filter(run=run).order_by("-id")[:EVENTS_SHOWN])
    steps, earlier_steps = latest_steps(run)
    detail_url = reverse("run-detail", args=[run.pk])
    waits_for_signal = (
        run.status == RunStatus.WAITING and run.wait_kind == WaitKind.EVENT and run.waiting_for
    )
    # The latest thing a person did: a push that brings a newer one along with a new state
    # says who changed the run (changes the engine makes on its own are not announced).
    by_person = next((e for e in events if e.actor.startswith(PERSON_ACTORS)), None)
    pausing = run.status == RunStatus.RUNNING and run.pause_requested and not run.stop_requested
    return {
        "version": live_version(run, events[0].id if events else None),
        "person_state": person_state(run),
        "person_state_label": "pausing" if pausing else label,
        "changed_by": by_person.actor if by_person else "",
        "changed_at": by_person.id if by_person else 0,
        "signal_form": (
            SignalForm(initial={"name": run.waiting_for})
            if may_operate and waits_for_signal
            else None
        ),
        "signal_form_id": signal_form_id(run.waiting_for),
        "signal_preserve": True,
        "run": run,
        "now": now,
        "status_label": label,
        "status_modifier": modifier,
        "progress": progress_view(run, now=now),
        "budget": budget_view(run),
        "steps": steps,
        "earlier_steps": earlier_steps,
        "steps_url": reverse("run-steps", args=[run.pk]),
        "events": [(e, pretty_json(e.data) if e.data else "") for e in events],
        "result_json": pretty_json(run.result) if run.result is not None else "",
        "error_json": pretty_json(run.error) if run.error is not None else "",
        "actions": run_actions(run, may_operate=may_operate),
        "may_operate": may_operate,
        "poll_url": f"{detail_url}?poll=1",
        "nav": "runs",
    }


def render_run_live(user: Any, run_id: Any, *, oob: bool = True) -> str | None:
    """The run's live partial as a push for ``user``; None when the user may not see it."""
    run = runs_visible_to(user).select_related("team", "created_by").filter(pk=run_id).first()
    if run is None:
        return None
    context = run_live_context(run, user)
    context["oob"] = oob
    return render_to_string("runs/run_detail.html#run-live", context).strip()


def render_run_live_as(run_id: Any, *, may_operate: bool) -> str | None:
    """The run's live push for every viewer with that right to operate it: the caller has
    checked that they may see it. One render serves a crowd of viewers."""
    run = Run.objects.select_related("team", "created_by").filter(pk=run_id).first()
    if run is None:
        return None
    context = run_live_context(run, may_operate=may_operate)
    context["oob"] = True
    return render_to_string("runs/run_detail.html#run-live", context).strip()
