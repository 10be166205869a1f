"""What a message says. Each notification answers five questions, in this order: what just
completed, what comes next, whether you must act (and how), the link to the run, and what went
wrong, if anything. A digest answers them per run, briefly, newest state last.

Everything quoted from a run (its error, a payload, a reason) is agent output or user input:
the HTML part escapes it (Django templates), the text part is plain text.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.template.loader import render_to_string
from django.urls import reverse

from notifications.models import EventType, Notification
from runs.models import Run

MAX_RUNS_IN_DIGEST = 20
MAX_QUOTE = 500
MAX_ITEMS_PER_RUN = 5


@dataclass(frozen=True)
class Answers:
    title: str
    completed: str
    next: str
    action: str
    link: str
    problem: str
    type: str
    run_id: str


def base_url() -> str:
    return str(getattr(settings, "AGENTOPS_BASE_URL", "http://127.0.0.1:8000")).rstrip("/")


_RUN_PATH: str = ""


def run_link(run_id: Any) -> str:
    """The run's absolute URL. A digest links thousands of runs: the path is reversed once."""
    global _RUN_PATH
    if not _RUN_PATH:
        zero = "00000000-0000-0000-0000-000000000000"
        _RUN_PATH = reverse("run-detail", args=[zero]).replace(zero, "{}")
    return base_url() + _RUN_PATH.format(run_id)


def inbox_link(request_id: Any) -> str:
    return f"{base_url()}/approvals/?request={request_id}"


def _quote(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    text = " ".join(text.split())
    return text if len(text) <= MAX_QUOTE else text[: MAX_QUOTE - 1] + "…"


def _error_text(run: Run) -> str:
    error = run.error or {}
    if isinstance(error, dict):
        return _quote(error.get("message") or error.get("type") or error)
    return _quote(error)


def answers(n: Notification) -> Answers:
    """The five answers for one notification."""
    run = n.run
    data = n.data or {}
    short = str(run.pk)[:8] if run else ""
    name = f"{run.workflow} {short}" if run else "a run"
    link = run_link(run.pk) if run else base_url()
    t = n.event_type
    no_action = "No action needed."
    nothing_wrong = "Nothing went wrong."
    finished = "Nothing: the run is finished."
    if t == EventType.RUN_SUCCEEDED:
        return Answers(
            f"Succeeded: {name}",
            f"Run {name} succeeded.",
            finished,
            no_action,
            link,
            nothing_wrong,
            t,
            str(run.pk),
        )
    if t in (EventType.RUN_FAILED, EventType.RUN_TIMED_OUT, EventType.RUN_CANCELLED):
        verb = {
            EventType.RUN_FAILED: "failed",
            EventType.RUN_TIMED_OUT: "timed out",
            EventType.RUN_CANCELLED: "was cancelled",
        }[t]
        problem = (
            _error_text(run)
            if t == EventType.RUN_FAILED
            else (
                "It ran past its deadline or sat idle too long."
                if t == EventType.RUN_TIMED_OUT
                else f"Cancelled by {data.get('actor', 'someone')}."
            )
        )
        action = (
            f"If it should go on, retry it from the failed step on its page: {link}"
            if t != EventType.RUN_CANCELLED
            else no_action
        )
        return Answers(
            f"{verb.capitalize()}: {name}",
            f"Run {name} {verb}.",
            finished,
            action,
            link,
            problem,
            t,
            str(run.pk),
        )
    if t == EventType.RUN_PAUSED:
        reason = _quote(data.get("reason") or "paused")
        by_budget = data.get("by") == "budget"
        return Answers(
            f"Paused: {name}",
            f"Run {name} paused at a step boundary; its work so far is saved.",
            "It waits until someone resumes it.",
            (
                f"Yes: raise its budget, then resume it at {link}"
                if by_budget
                else f"Resume it when ready at {link}"
            ),
            link,
            f"Paused because: {reason}." if by_budget else nothing_wrong,
            t,
            str(run.pk),
        )
    if t == EventType.BUDGET_WARNING:
        kind = data.get("budget", "budget")
        pct = round(float(data.get("fraction") or 0.8) * 100)
        return Answers(
            f"Budget at {pct} %: {name}",
            f"Run {name} has used {pct} % of its {kind} budget.",
            "It goes on, and pauses if it reaches the limit.",
            f"Raise the budget now if it should finish: {link}",
            link,
            nothing_wrong,
            t,
            str(run.pk),
        )
    if t == EventType.RUN_STALLED:
        return Answers(
            f"Stalled: {name}",
            f"Run {name} has made no progress for longer than its idle threshold.",
            "If it stays idle it times out; a lost worker is recovered by the sweeps.",
            f"Look at its last step and events: {link}",
            link,
            "No step finished recently: a slow external service, or a stuck step.",
            t,
            str(run.pk),
        )
    request = data.get("request")
    approval = _quote(data.get("name") or "an action")
    if t == EventType.APPROVAL_REQUESTED:
        return Answers(
            f"Approval needed: {approval} ({name})",
            f"Run {name} reached the gate {approval!r} and waits for a decision.",
            "The run holds no worker while it waits; your decision resumes it.",
            f"Yes: approve, reject or request changes at {inbox_link(request)}"
            " (or reply APPROVE or REJECT to the approval email).",
            link,
            nothing_wrong,
            t,
            str(run.pk),
        )
    if t == EventType.APPROVAL_EXPIRING:
        return Answers(
            f"Approval expiring: {approval} ({name})",
            f"The request {approval!r} of run {name} is still undecided.",
            f"At its deadline ({data.get('deadline') or 'soon'}) its timeout rule applies.",
            f"Yes, before the deadline: {inbox_link(request)}",
            link,
            nothing_wrong,
            t,
            str(run.pk),
        )
    outcome = data.get("outcome", "decided")
    return Answers(
        f"Approval {outcome}: {approval} ({name})",
        f"The request {approval!r} of run {name} was {str(outcome).replace('_', ' ')}"
        f" by {data.get('actor', 'a reviewer')}.",
        "The run goes on with the outcome.",
        no_action,
        link,
        nothing_wrong if outcome != "expired" else "Nobody decided before the deadline.",
        t,
        str(run.pk),
    )


def render(items: list[Notification]) -> dict[str, Any]:
    """Subject, text, HTML and the JSON body of a message carrying ``items``."""
    all_answers = [answers(n) for n in items]
    if len(all_answers) == 1:
        a = all_answers[0]
        context = {"single": a, "runs": [], "count": 1}
        subject = a.title
    else:
        by_run: OrderedDict[str, list[Answers]] = OrderedDict()
        for a in all_answers:
            by_run.setdefault(a.run_id, []).append(a)
        runs = [
            {
                "run_id": rid,
                "items": group[-MAX_ITEMS_PER_RUN:],
                "earlier": max(0, len(group) - MAX_ITEMS_PER_RUN),
                "last": group[-1],
            }
            for rid, group in list(by_run.items())[-MAX_RUNS_IN_DIGEST:]
        ]
        must_act = sum(1 for a in all_answers if a.action.startswith("Yes"))
        context = {
            "single": None,
            "runs": runs,
            "count": len(all_answers),
            "run_count": len(by_run),
            "more_runs": max(0, len(by_run) - MAX_RUNS_IN_DIGEST),
            "must_act": must_act,
        }
        subject = f"{len(all_answers):,} updates on {len(by_run):,} run(s)" + (
            f", {must_act} need you" if must_act else ""
        )
    context["base_url"] = base_url()
    text = render_to_string("notifications/message.txt", context)
    html = render_to_string("notifications/message.html", context)
    body = {
        "count": len(all_answers),
        "events": [
            {
                "type": n.event_type,
                "run_id": str(n.run_id) if n.run_id else None,
                "event_id": n.event_id,
                "dedup_key": n.dedup_key,
                "at": n.created_at.isoformat(),
                "data": n.data,
                "title": a.title,
                "link": a.link,
            }
            for n, a in zip(items, all_answers, strict=True)
        ],
    }
    return {"subject": subject[:300], "text": text, "html": html, "body": body}
