"""Approval emails: the request (and its reminder and escalation) to each person who may
decide, and the answers to replies that could not decide.

Invariants:
- each email is an ``ApprovalEmail`` row created and claimed before it is sent (see
  approvals/outbox.py), so a retried task, a doorbell rung twice and the unsent sweep send it
  once; sending happens outside any transaction;
- ``ApprovalRequest.emailed_at`` is set once every "requested" email went out (or was given
  up), by a guarded UPDATE on a pending request; until then the unsent sweep tries again;
- payloads, step names and comments are agent output or user input: the HTML part escapes them
  (Django templates) and the subject is one line.
"""

from __future__ import annotations

import copy
import json
import logging
from email.utils import make_msgid
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.timesince import timeuntil

from approvals.models import ApprovalRequest, Decision
from approvals.outbox import MAX_ATTEMPTS, ApprovalEmail
from approvals.replyto import reply_address
from runs.audit import Event
from runs.models import Step

__all__ = ["inbox_url", "run_url", "send_reply_email", "send_request_emails"]

log = logging.getLogger(__name__)
Why = ApprovalEmail.Why
MAX_PAYLOAD_CHARS = 4000
STEPS_SHOWN = 5
COMMANDS = [
    ("APPROVE", "approve; the lines after it are your comment"),
    ("REJECT", "reject; the lines after it are your reason"),
    ("PAUSE", "pause the run (it waits until someone resumes it)"),
]
INTRO = {
    Why.REQUESTED: "A run needs a decision from you before it goes on.",
    Why.REMINDER: "Reminder: this run is still waiting for a decision, and its deadline is near.",
    Why.ESCALATED: "Escalated to you: nobody decided this request in time.",
}
SUBJECT = {
    Why.REQUESTED: "Approval needed",
    Why.REMINDER: "Reminder: approval needed",
    Why.ESCALATED: "Escalated: approval needed",
}


def base_url() -> str:
    return str(settings.AGENTOPS_BASE_URL).rstrip("/")


def run_url(run_id: Any) -> str:
    return base_url() + reverse("run-detail", args=[run_id])


def inbox_url(request_id: Any) -> str:
    return f"{base_url()}/approvals/?request={request_id}"


def one_line(text: Any, limit: int = 200) -> str:
    """Header-safe: no line breaks or control characters, at most ``limit`` characters."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# ---------------------------------------------------------------------------- who gets it
def recipients(request: ApprovalRequest, why: str) -> QuerySet[Any]:
    """Who gets this email now: people who may decide and have an address.

    A reminder skips those who already said something; an escalation goes only to those the
    escalation made eligible (the first group heard about it already)."""
    people = request.eligible_users().exclude(email="")
    if why == Why.REMINDER:
        said = Decision.objects.filter(request=request, reviewer__isnull=False)
        people = people.exclude(pk__in=said.values("reviewer"))
    elif why == Why.ESCALATED:
        before = copy.copy(request)
        before.escalated_at = None  # who was eligible before the escalation
        people = people.exclude(pk__in=before.eligible_users().values("pk"))
    return people.order_by("pk")


# ---------------------------------------------------------------------------- rendering
def context(request: ApprovalRequest, user: Any, why: str, *, reply_to: str) -> dict[str, Any]:
    run = request.run
    steps = list(
        Step.objects.filter(run=run, status=Step.Status.COMPLETED, kind=Step.Kind.STEP)
        .order_by("-seq")
        .values_list("name", flat=True)[: STEPS_SHOWN + 1]
    )
    more_steps = len(steps) > STEPS_SHOWN
    steps = list(reversed(steps[:STEPS_SHOWN]))
    now = timezone.now()
    return {
        "request": request,
        "run": run,
        "user": user,
        "intro": INTRO[why],
        "why": why,
        "short_id": str(run.pk)[:8],
        "started_by": request.requested_by.get_username() if request.requested_by else "",
        "proposal": proposal(request.payload),
        "editable": list(request.editable or []),
        "steps": steps,
        "more_steps": more_steps,
        "deadline": request.deadline_at,
        "deadline_in": timeuntil(request.deadline_at, now) if request.deadline_at else "",
        "approvals_so_far": request.approvals_so_far(),
        "inbox_url": inbox_url(request.pk),
        "run_url": run_url(run.pk),
        "reply_to": reply_to,
        "commands": COMMANDS,
    }


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, cls=DjangoJSONEncoder, indent=2, ensure_ascii=False, sort_keys=True)


def proposal(payload: Any) -> list[tuple[str, str]]:
    """The payload as a reviewer reads it: one (field, text) per field, strings as they are,
    other values as JSON, cut at ``MAX_PAYLOAD_CHARS`` in all."""
    items = list(payload.items()) if isinstance(payload, dict) else [("", payload)]
    shown: list[tuple[str, str]] = []
    left = MAX_PAYLOAD_CHARS
    for key, value in items:
        text = _shown(value)
        if len(text) > left:
            shown.append((str(key), text[: max(left, 0)] + "… (cut: the inbox shows it all)"))
            break
        shown.append((str(key), text))
        left -= len(text)
    return shown


def build_request_email(
    request: ApprovalRequest, user: Any, why: str, *, to: str, message_id: str
) -> EmailMultiAlternatives:
    reply_to = reply_address(request, user)
    ctx = context(request, user, why, reply_to=reply_to)
    subject = one_line(f"{SUBJECT[why]}: {request.name} ({request.workflow} {ctx['short_id']})")
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string("approvals/email/request.txt", ctx),
        to=[to],
        reply_to=[reply_to],
        headers={
            "Message-ID": message_id,
            # Out-of-office robots must not answer it (RFC 3834).
            "Auto-Submitted": "auto-generated",
            "X-Agentops-Approval": str(request.pk),
        },
    )
    message.attach_alternative(render_to_string("approvals/email/request.html", ctx), "text/html")
    return message


# ---------------------------------------------------------------------------- sending
def _row_for(request: ApprovalRequest, user: Any, why: str) -> ApprovalEmail:
    defaults = {
        "to": user.email,
        "message_id": make_msgid("approval", settings.AGENTOPS_REPLY_DOMAIN),
    }
    try:
        with transaction.atomic():
            return ApprovalEmail.objects.get_or_create(
                request=request, user=user, why=why, defaults=defaults
            )[0]
    except IntegrityError:  # another sender created it between our read and our insert
        return ApprovalEmail.objects.get(request=request, user=user, why=why)


def wants_email(people: list[Any], request: ApprovalRequest, why: str) -> list[Any]:
    """Those of ``people`` whose notification preferences let approval emails through (the
    request by email is on by default; a reminder follows the "expiring" choice)."""
    from notifications.models import Channel, EventType
    from notifications.preferences import Resolver

    kind = EventType.APPROVAL_EXPIRING if why == Why.REMINDER else EventType.APPROVAL_REQUESTED
    resolver = Resolver()
    resolver.load_users([u.pk for u in people])
    return [
        u
        for u in people
        if resolver.effective(u.pk, kind, Channel.EMAIL, team_id=request.team_id)["enabled"]
    ]


def send_request_emails(request_id: int, why: str, *, only_user_id: int | None = None) -> int:
    """Send the ``why`` emails of a pending request to everyone who should get them and has
    not yet; returns how many went out now. Safe to call any number of times.

    ``only_user_id``: to that person only, whatever their preferences (an approval request
    left unread in the app goes on by email: see notifications/escalation.py)."""
    if why not in Why.values:
        raise ValueError(f"unknown reason {why!r}: one of {', '.join(Why.values)}")
    request = (
        ApprovalRequest.objects.select_related("run", "requested_by").filter(pk=request_id).first()
    )
    if request is None or not request.is_pending:
        return 0
    people = list(recipients(request, why))
    if only_user_id is not None:
        people = [u for u in people if u.pk == only_user_id]
    else:
        people = wants_email(people, request, why)
    sent: list[str] = []
    failed: list[dict[str, str]] = []
    for user in people:
        row = _row_for(request, user, why)
        if not row.claim(to=user.email):
            continue
        try:
            message = build_request_email(
                request, user, why, to=user.email, message_id=row.message_id
            )
            message.send()
        except Exception as exc:  # the backend's error, SMTP's or an ESP's: retried later
            log.warning("approval email %s to %s failed: %s", row.pk, user.email, exc)
            row.record(error=f"{type(exc).__name__}: {exc}")
            failed.append({"user": user.get_username(), "error": row.error})
            continue
        row.record()
        sent.append(user.get_username())
    marked = 0
    if why == Why.REQUESTED and _all_done(request, why, people):
        # Guarded: a decided request never changes (and PostgreSQL's trigger would refuse).
        marked = ApprovalRequest.objects.filter(
            pk=request.pk, status=ApprovalRequest.Status.PENDING, emailed_at__isnull=True
        ).update(emailed_at=timezone.now())
    if sent or failed or (marked and not people):
        Event.append(
            "approval.emailed",
            run_id=request.run_id,
            team_id=request.team_id,
            actor="system:email",
            data={
                "request": request.pk,
                "name": request.name,
                "why": why,
                "to": sent,
                "failed": failed,
                **({} if people else {"note": "nobody who may decide has an email address"}),
            },
        )
    return len(sent)


def _all_done(request: ApprovalRequest, why: str, people: list[Any]) -> bool:
    """Every recipient's email was sent or given up."""
    rows = ApprovalEmail.objects.filter(request=request, why=why, user__in=people)
    done = sum(1 for r in rows if r.sent_at is not None or r.attempts >= MAX_ATTEMPTS)
    return done == len(people)


def send_reply_email(
    to: str, *, subject: str, text: str, in_reply_to: str = "", references: str = ""
) -> None:
    """A plain answer to an inbound reply, marked as automatic so that robots don't answer."""
    headers = {"Auto-Submitted": "auto-replied"}
    if in_reply_to:
        headers["In-Reply-To"] = one_line(in_reply_to, 900)
        headers["References"] = one_line(f"{references} {in_reply_to}".strip(), 900)
    subject = one_line(subject) or "Your reply"
    if not subject.lower().startswith("re:"):
        subject = f"Re: {subject}"
    EmailMessage(subject=subject, body=text, to=[to], headers=headers).send()
