"""Deciding by email: a reply to an approval email approves, rejects or pauses.

The reply address carries a signed token naming the request and the person it was sent to
(approvals/replyto.py). A reply decides only when all of these hold, checked in this order:
the token is authentic and not expired; the From address is that person's (a forwarded or
forged reply cannot decide); the message was not seen before (the same email delivered twice
decides once: its Message-ID is the decision's ``dedup_key``); the request is still pending;
the first line is a command; and the person may decide at this moment (``refusal``). Anything
else is refused, and the sender is told why by email, unless the message is automatic (an
out-of-office answer, a bounce, a list), which is never answered, so two robots cannot loop.

Every message whose token names a request is recorded on its run's audit chain
(``approval.email_reply``, actor ``email:<sender>``); a message with a forged token names
nothing it could be trusted with and is not.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from email.message import Message
from email.utils import getaddresses, parseaddr
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.template.loader import render_to_string

from approvals.emails import COMMANDS, inbox_url, send_reply_email
from approvals.exceptions import ApprovalError, NotPending
from approvals.models import ApprovalRequest, Decision
from approvals.reply_text import body_text, parse_reply
from approvals.replyto import ExpiredToken, Token, find_tokens, read_token, recipients_of
from runs.audit import Event
from runs.exceptions import AgentopsError
from runs.permissions import OPERATE, can

__all__ = ["ReplyResult", "handle_reply", "is_automated", "on_anymail_inbound"]

log = logging.getLogger(__name__)
VERDICTS = {"approve": Decision.Verdict.APPROVE, "reject": Decision.Verdict.REJECT}
ROBOT_LOCAL_PARTS = {"mailer-daemon", "postmaster", "noreply", "no-reply", "donotreply"}


@dataclass
class ReplyResult:
    """What became of one inbound message."""

    outcome: str  # "decided", "paused", "duplicate" or "refused"
    reason: str = ""  # why it was refused: bad_signature, expired, forged_sender, …
    detail: str = ""  # the same, for a person
    sender: str = ""
    command: str = ""
    request_id: int | None = None
    status: str = ""  # the request's status afterwards
    replied: bool = False  # the sender was sent an answer
    message_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome in ("decided", "paused", "duplicate")

    def as_dict(self) -> dict[str, Any]:
        keys = ("outcome", "reason", "detail", "sender", "command", "request_id", "status")
        return {
            **{k: getattr(self, k) for k in keys},
            "replied": self.replied,
            "message_id": self.message_id,
        }


def is_automated(message: Message, sender: str) -> bool:
    """An auto-reply, a bounce or a list message (RFC 3834 and common practice)."""
    auto = str(message.get("Auto-Submitted", "")).strip().lower()
    if auto and auto != "no":
        return True
    if str(message.get("Precedence", "")).strip().lower() in ("bulk", "auto_reply", "junk", "list"):
        return True
    if any(message.get(h) for h in ("X-Autoreply", "X-Autorespond", "List-Id", "List-Unsubscribe")):
        return True
    suppress = str(message.get("X-Auto-Response-Suppress", "")).lower()
    if any(word in suppress for word in ("all", "oof", "autoreply")):
        return True
    if str(message.get("Return-Path", "")).strip() == "<>":
        return True
    local, _, domain = sender.lower().partition("@")
    if not sender or local in ROBOT_LOCAL_PARTS:
        return True
    ours = parseaddr(settings.DEFAULT_FROM_EMAIL)[1].lower()
    return sender.lower() == ours or (
        domain == str(settings.AGENTOPS_REPLY_DOMAIN).lower()
        and local.startswith(str(settings.AGENTOPS_REPLY_LOCAL).lower() + "+")
    )


def _sender(message: Message) -> str:
    found = getaddresses([str(v) for v in (message.get_all("From") or [])])
    return found[0][1].strip() if len(found) == 1 else ""


def _dedup_key(message: Message) -> str:
    message_id = " ".join(str(message.get("Message-ID", "")).split())
    if message_id:
        return message_id[:300]
    # No Message-ID (rare, but legal): the content identifies a redelivery.
    try:
        raw = message.as_bytes()
    except Exception:
        raw = str(message).encode("utf-8", "replace")
    return "sha256:" + hashlib.sha256(raw).hexdigest()


class _Refusal(Exception):
    def __init__(self, reason: str, detail: str, *, commands: bool = False) -> None:
        self.reason, self.detail, self.commands = reason, detail, commands
        super().__init__(detail)


def handle_reply(message: Message) -> ReplyResult:
    """Act on one inbound message (an ``email.message.EmailMessage``, or anymail's
    ``AnymailInboundMessage``), answer the sender when it was refused, and return what
    happened. Network I/O (the answer) happens after every transaction has committed."""
    sender = _sender(message)
    result = ReplyResult(outcome="refused", sender=sender, message_id=_dedup_key(message))
    token: Token | None = None
    request: ApprovalRequest | None = None
    user: Any = None
    try:
        token = _verified_token(message)
        request, user = _identify(token)
        if _seen(request, result.message_id):
            result.outcome = "duplicate"
            result.detail = "this message was handled before; nothing changed"
        else:
            _check_sender(message, sender, user)
            _act(message, request, user, result)
    except ExpiredToken as exc:
        token = exc.token
        request, user = _identify(token, missing_ok=True)
        if request is not None and _seen(request, result.message_id):
            result.outcome = "duplicate"
            result.detail = "this message was handled before; nothing changed"
        else:
            result.reason, result.detail = (
                "expired",
                (
                    f"The reply address of this approval email expired at "
                    f"{token.expires_at:%Y-%m-%d %H:%M} UTC."
                ),
            )
    except signing.BadSignature as exc:
        result.reason, result.detail = (
            "bad_signature",
            (
                "This message was not sent to a valid reply address of an approval email "
                f"({exc}). Reply to the approval email itself, or decide in the inbox."
            ),
        )
    except _Refusal as exc:
        result.reason, result.detail = exc.reason, exc.detail
        result.extra["commands"] = exc.commands
    if request is not None:
        result.request_id = request.pk
        result.status = result.status or _status(request)
        verified = result.reason not in ("forged_sender", "automated", "expired")
        _log(request, result, user if verified and user is not None else None)
    if result.outcome == "refused" and result.reason != "automated":
        if is_automated(message, sender):
            result.extra["not_answered"] = "automatic message"
        else:
            result.replied = _answer(message, result, request)
    log.info("email reply from %s: %s %s", sender or "?", result.outcome, result.reason)
    return result


def _verified_token(message: Message) -> Token:
    tokens = find_tokens(recipients_of(message))
    if not tokens:
        raise signing.BadSignature("it has no reply token")
    first_error: signing.BadSignature | None = None
    for candidate in tokens:
        try:
            return read_token(candidate)
        except signing.BadSignature as exc:  # ExpiredToken too: remember the first problem
            if first_error is None or (
                isinstance(exc, ExpiredToken) and not isinstance(first_error, ExpiredToken)
            ):
                first_error = exc
    assert first_error is not None
    raise first_error


def _check_sender(message: Message, sender: str, user: Any) -> None:
    if is_automated(message, sender):
        raise _Refusal("automated", "an automatic message (auto-reply, bounce or list)")
    if user is None:
        raise _Refusal("not_allowed", "The person this email was sent to has no account now.")
    if not user.email or sender.lower() != user.email.strip().lower():
        raise _Refusal(
            "forged_sender",
            f"This reply address was given to someone else, so a message from "
            f"{sender or 'an unknown sender'} cannot use it. Reply from the address the "
            "approval email was sent to, or decide in the inbox signed in as yourself.",
        )


def _identify(token: Token, *, missing_ok: bool = False) -> tuple[Any, Any]:
    request = ApprovalRequest.objects.select_related("run").filter(pk=token.request_id).first()
    user = get_user_model().objects.filter(pk=token.user_id).first()
    if request is None and not missing_ok:
        raise _Refusal("unknown_request", "The approval request of this email no longer exists.")
    return request, user


def _status(request: ApprovalRequest) -> str:
    return str(ApprovalRequest.objects.filter(pk=request.pk).values_list("status", flat=True)[0])


def _seen(request: ApprovalRequest, message_id: str) -> bool:
    """This message was handled before: it decided, or it was recorded on the run's chain."""
    if Decision.objects.filter(request=request, dedup_key=message_id).exists():
        return True
    return Event.objects.filter(
        run_id=request.run_id, kind="approval.email_reply", data__message_id=message_id
    ).exists()


def _not_pending(request: ApprovalRequest) -> _Refusal:
    request.refresh_from_db()
    outcome = request.get_status_display().lower()
    who = ", ".join(
        f"{r['user']} ({r['verdict'].replace('_', ' ')})"
        for r in (request.outcome or {}).get("reviewers", [])
        if r.get("user")
    )
    when = f" at {request.decided_at:%Y-%m-%d %H:%M} UTC" if request.decided_at else ""
    return _Refusal(
        "not_pending",
        f"The request “{request.name}” is no longer pending: it was {outcome}{when}"
        f"{f' by {who}' if who else ''}. Nothing changed.",
    )


def _act(message: Message, request: ApprovalRequest, user: Any, result: ReplyResult) -> None:
    if not request.is_pending:
        raise _not_pending(request)
    parsed = parse_reply(body_text(message))
    result.command = parsed.command
    if not parsed.command:
        said = f"“{parsed.first_line[:80]}”" if parsed.first_line else "empty"
        raise _Refusal(
            "unknown_command",
            f"The first line of your reply must be APPROVE, REJECT or PAUSE; it was {said}.",
            commands=True,
        )
    actor = f"email:{user.get_username()}"
    if parsed.command == "pause":
        may = not request.refusal(user, verdict=Decision.Verdict.REJECT) or can(
            user, request.team_id, OPERATE
        )
        if not may:
            raise _Refusal("not_allowed", f"You may not pause this run: {request.refusal(user)}.")
        try:
            request.run.pause(
                actor=actor,
                user_id=user.pk,
                reason=parsed.comment[:500] or f"paused by {user.get_username()} by email",
            )
        except AgentopsError as exc:
            raise _Refusal("not_paused", f"The run could not be paused: {exc}.") from None
        result.outcome = "paused"
        return
    try:
        request.decide(
            user,
            VERDICTS[parsed.command],
            comment=parsed.comment,
            channel=Decision.Channel.EMAIL,
            dedup_key=result.message_id,
        )
    except NotPending:
        raise _not_pending(request) from None
    except ApprovalError as exc:  # NotAllowed, InvalidDecision: their message says why
        raise _Refusal("not_allowed", f"Your {parsed.command} was not recorded: {exc}.") from None
    result.outcome = "decided"


def _log(request: ApprovalRequest, result: ReplyResult, user: Any) -> None:
    Event.append(
        "approval.email_reply",
        run_id=request.run_id,
        team_id=request.team_id,
        actor=f"email:{result.sender or 'unknown'}"[:200],
        actor_user_id=user.pk if user is not None else None,
        data={
            "request": request.pk,
            "name": request.name,
            "outcome": result.outcome,
            "reason": result.reason,
            "command": result.command,
            "message_id": result.message_id,
        },
    )


def _answer(message: Message, result: ReplyResult, request: ApprovalRequest | None) -> bool:
    """Tell the sender why nothing happened. Best effort: a failure is logged, not raised,
    since the message itself was handled (an ESP would otherwise deliver it again)."""
    if not result.sender:
        return False
    from django.contrib.auth import get_user_model

    # Only people we know get an answer: a From address can be forged, and answering every
    # stranger would send mail to innocent addresses (backscatter).
    if not get_user_model().objects.filter(email__iexact=result.sender, is_active=True).exists():
        return False
    text = render_to_string(
        "approvals/email/reply.txt",
        {
            "subject": " ".join(str(message.get("Subject", "")).split())[:200],
            "command": result.command,
            "reason": result.detail,
            "inbox_url": inbox_url(request.pk) if request is not None else "",
            "show_commands": result.extra.get("commands", False),
            "commands": COMMANDS,
        },
    )
    try:
        send_reply_email(
            result.sender,
            subject=str(message.get("Subject", "")) or "Your reply",
            text=text,
            in_reply_to=str(message.get("Message-ID", "")),
            references=str(message.get("References", "")),
        )
    except Exception as exc:
        log.warning("could not answer %s: %s", result.sender, exc)
        return False
    return True


def on_anymail_inbound(sender: Any, event: Any, esp_name: str = "", **kwargs: Any) -> None:
    """django-anymail's ``inbound`` signal: an ESP's webhook delivered a message. An error
    here is a 500 to the ESP, which delivers the message again later (duplicates are safe)."""
    result = handle_reply(event.message)
    log.info("%s inbound: %s", esp_name, result.as_dict())
