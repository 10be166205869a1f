"""Reviewers with addresses, replies as mail clients write them, and a real SMTP server."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from aiosmtpd.controller import Controller

from approvals.models import ApprovalRequest
from approvals.replyto import reply_address
from tests.approvals.support import Reviewers, make_reviewers

GMAIL_QUOTE = (
    "On Tue, 24 Nov 2026 at 10:02, agentops <agentops@localhost>\n"
    "wrote:\n"
    "> A run needs a decision from you before it goes on.\n"
    ">\n"
    "> APPROVE   approve; the lines after it are your comment\n"
)
OUTLOOK_QUOTE = (
    "________________________________\n"
    "From: agentops <agentops@localhost>\n"
    "Sent: Tuesday, November 24, 2026 10:02 AM\n"
    "To: Alice <alice@example.com>\n"
    "Subject: Approval needed: publish\n"
    "\n"
    "A run needs a decision from you before it goes on.\n"
    "REJECT   reject; the lines after it are your reason\n"
)


def with_addresses(team: Any, other_team: Any) -> Reviewers:
    people = make_reviewers(team, other_team)
    for user in vars(people).values():
        if hasattr(user, "email"):
            user.email = f"{user.username}@example.com"
            user.save(update_fields=["email"])
    return people


def reply(
    to: str,
    body: str | None,
    *,
    sender: str = "alice@example.com",
    html: str | None = None,
    message_id: str | None = None,
    headers: dict[str, str] | None = None,
    subject: str = "Re: Approval needed: publish",
) -> EmailMessage:
    """A reply as a mail client sends it: plain, HTML only, or multipart/alternative."""
    message = EmailMessage(policy=policy.default)
    message["From"] = f"Someone <{sender}>"
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = message_id or make_msgid(domain="mail.example.com")
    message["In-Reply-To"] = "<approval.1@localhost>"
    for name, value in (headers or {}).items():
        message[name] = value
    if body is not None:
        message.set_content(body)
        if html is not None:
            message.add_alternative(html, subtype="html")
    else:
        message.set_content(html or "", subtype="html")
    # As it arrives: serialised by the sender's client and parsed again on our side.
    return message_from_bytes(message.as_bytes(), policy=policy.default)  # type: ignore[return-value]


def address_for(request: ApprovalRequest, user: Any) -> str:
    return reply_address(request, user)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Inbox:
    """What a real SMTP server on the loopback received."""

    messages: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(envelope.original_content, policy=policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"


@contextmanager
def smtp_server() -> Iterator[tuple[int, Inbox]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()
