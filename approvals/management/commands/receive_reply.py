"""Read one raw RFC 822 message (a file, or standard input) and act on it as a reply to an
approval email. A mail server can pipe the reply domain's mail here, e.g. Postfix:
``reply: "|/srv/agentops/.venv/bin/python /srv/agentops/manage.py receive_reply"``."""

from __future__ import annotations

import email
import email.policy
import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from approvals.replies import handle_reply

#: sysexits.h EX_TEMPFAIL: the mail server keeps the message and tries again later.
TEMPFAIL = 75
MAX_BYTES = 25 * 1024 * 1024


class Command(BaseCommand):
    help = (
        "Handle a reply to an approval email (raw RFC 822 from FILE or stdin); print the outcome."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("file", nargs="?", default="-", help="the message; - for stdin")

    def handle(self, *args: Any, **options: Any) -> None:
        path = options["file"]
        try:
            if path == "-":
                raw = sys.stdin.buffer.read(MAX_BYTES + 1)
            else:
                with open(path, "rb") as fh:
                    raw = fh.read(MAX_BYTES + 1)
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc}") from None
        if not raw.strip():
            raise CommandError("no message on the input")
        if len(raw) > MAX_BYTES:
            raise CommandError(f"the message is larger than {MAX_BYTES // (1024 * 1024)} MB")
        message = email.message_from_bytes(raw, policy=email.policy.default)
        try:
            result = handle_reply(message)
        except DatabaseError as exc:
            # Refused by the database now, not by us: the mail server should deliver it again
            # (a redelivery is safe, the Message-ID decides once).
            raise CommandError(f"try again later: {exc}", returncode=TEMPFAIL) from None
        self.stdout.write(json.dumps(result.as_dict(), ensure_ascii=False))
