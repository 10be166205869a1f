"""Signed, expiring reply addresses: ``<local>+<token>@<AGENTOPS_REPLY_DOMAIN>``.

The token names a request and a person and the moment it stops being valid, and carries an
HMAC from ``django.core.signing`` (salted, SHA-256, verified against ``SECRET_KEY`` and its
fallbacks). Why not ``signing.dumps`` as it is: it is base64 (mixed case, and some mail
servers lower-case the local part) and, base32-encoded, about 115 characters, while a local
part may have at most 64 (RFC 5321). So the fields are written in base36 and the signature is
cut to 80 bits and written in base32, all lower case: ``reply+2n-3-tbc7ww-<16 chars>``,
about 35 characters, unchanged by lower- or upper-casing. 80 bits of HMAC cannot be guessed
through a mailbox.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import getaddresses
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core import signing
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.utils.http import base36_to_int, int_to_base36

if TYPE_CHECKING:
    from approvals.models import ApprovalRequest

__all__ = ["BadToken", "ExpiredToken", "Token", "find_tokens", "make_token", "reply_address"]

SALT = "agentops.approvals.reply"
MAC_BYTES = 10
TOKEN = re.compile(r"^[0-9a-z]{1,13}-[0-9a-z]{1,13}-[0-9a-z]{1,13}-[a-z2-7]{16}$")
#: Headers that may carry the address the reply was sent to.
RECIPIENT_HEADERS = ("To", "Cc", "Delivered-To", "X-Original-To", "Envelope-To")


class BadToken(signing.BadSignature):
    """Not a token of ours: malformed, or its signature does not match."""


class ExpiredToken(signing.SignatureExpired):
    """An authentic token past its expiry: it still names its request and person."""

    def __init__(self, token: Token) -> None:
        self.token = token
        super().__init__(f"the reply address expired at {token.expires_at:%Y-%m-%d %H:%M} UTC")


@dataclass(frozen=True)
class Token:
    request_id: int
    user_id: int
    expires_at: datetime


def _mac(value: str, key: Any) -> str:
    signer = signing.Signer(salt=SALT, algorithm="sha256")
    digest = signing.b64_decode(signer.signature(value, key=key).encode())[:MAC_BYTES]
    return base64.b32encode(digest).decode().lower()


def make_token(request_id: int, user_id: int, expires_at: datetime) -> str:
    value = "-".join(
        int_to_base36(n) for n in (int(request_id), int(user_id), int(expires_at.timestamp()))
    )
    return f"{value}-{_mac(value, settings.SECRET_KEY)}"


def read_token(token: str, *, now: datetime | None = None) -> Token:
    """The token's fields, or ``BadToken`` / ``ExpiredToken`` (signature first: an expired
    token is only reported as such when it is authentic)."""
    token = token.strip().lower()
    if not TOKEN.match(token):
        raise BadToken("not a reply token")
    value, _, mac = token.rpartition("-")
    keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    if not any(constant_time_compare(mac, _mac(value, key)) for key in keys):
        raise BadToken("the reply address's signature does not match")
    request_id, user_id, expires = (base36_to_int(part) for part in value.split("-"))
    found = Token(request_id, user_id, datetime.fromtimestamp(expires, tz=UTC))
    if (now or timezone.now()) > found.expires_at:
        raise ExpiredToken(found)
    return found


def expiry_for(request: ApprovalRequest, *, now: datetime | None = None) -> datetime:
    """The request's deadline, or the maximum age when it has none."""
    if request.deadline_at:
        return request.deadline_at
    hours = float(settings.AGENTOPS_REPLY_MAX_AGE_HOURS)
    return (now or timezone.now()) + timedelta(hours=hours)


def reply_address(request: ApprovalRequest, user: Any, *, now: datetime | None = None) -> str:
    token = make_token(request.pk, user.pk, expiry_for(request, now=now))
    return f"{settings.AGENTOPS_REPLY_LOCAL}+{token}@{settings.AGENTOPS_REPLY_DOMAIN}"


def find_tokens(addresses: Iterable[str]) -> list[str]:
    """The tokens in ``addresses`` that are ours by shape (``<local>+<token>@…``), in order."""
    local = re.escape(str(settings.AGENTOPS_REPLY_LOCAL).lower())
    shape = re.compile(rf"^{local}\+([0-9a-z-]+)@", re.IGNORECASE)
    found: list[str] = []
    for _name, address in getaddresses([a for a in addresses if a]):
        match = shape.match(address.strip().lower())
        if match and match.group(1) not in found:
            found.append(match.group(1))
    return found


def recipients_of(message: Any) -> list[str]:
    """Every address a message was sent to, as far as its headers and envelope tell."""
    values: list[str] = []
    for header in RECIPIENT_HEADERS:
        values.extend(str(v) for v in (message.get_all(header) or []))
    envelope = getattr(message, "envelope_recipient", None)  # set by anymail's webhooks
    if envelope:
        values.append(str(envelope))
    return values
