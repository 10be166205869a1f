"""Signed webhooks the Standard Webhooks way: the signature and one HTTP POST.

Shared by the runs' callbacks (runs/deliveries.py) and the notifications' webhook transport;
it knows neither. Invariants:
- a delivery carries ``webhook-id`` (the caller's, stable per message, so a receiver
  deduplicates by it), ``webhook-timestamp`` (this attempt's, in Unix seconds) and
  ``webhook-signature``: ``v1,<base64 HMAC-SHA256 over "{id}.{timestamp}.{body}">`` keyed with
  the base64-decoded part of a ``whsec_…`` secret;
- the destination is checked again when it is called, with the rules the callback URL was
  checked with when it was stored (runs/api/callbacks.py), because DNS answers change; the
  connection then goes to the address that was checked, so a second lookup cannot answer
  differently, and redirects are never followed;
- ``send`` never raises for what the network or the receiver does: it returns a ``Result``
  saying whether trying again can help (``permanent``) and, if the receiver said, when;
- timeouts are short and the whole exchange has a deadline; of the response only the status
  and a short excerpt of the body are kept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import http.client
import ipaddress
import secrets
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

__all__ = [
    "Result",
    "new_secret",
    "parse_retry_after",
    "send",
    "sign",
    "signed_headers",
]

SECRET_PREFIX = "whsec_"
#: Seconds to open the connection (per address) and to wait for each read.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
#: The whole exchange, however slowly the receiver drips its answer. Callers' leases must be
#: longer than this.
DEADLINE = 30.0
#: Bytes of the response body read, and characters of it kept.
EXCERPT_BYTES = 1024
EXCERPT_CHARS = 500
USER_AGENT = "agentops-webhooks/1"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


# --- signing ------------------------------------------------------------------------------------
def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` and 24 random bytes in base64 (as Standard Webhooks)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is whsec_ followed by base64") from None


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` and the base64 HMAC-SHA256 of the message."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, message_id: str, body: bytes, *, timestamp: int) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }


# --- the outcome --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Result:
    """What one POST came to. ``permanent``: the same request can never succeed (a 4xx other
    than 408/429, a refused address); ``retry_after``: seconds the receiver asked for."""

    ok: bool
    status_code: int | None = None
    error: str = ""
    permanent: bool = False
    retry_after: float | None = None
    duration_ms: float = 0.0
    excerpt: str = ""


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date); None if absent or unreadable."""
    value = (value or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def classify(status: int) -> tuple[bool, bool, str]:
    """``(ok, permanent, error)`` for an HTTP status."""
    if 200 <= status < 300:
        return True, False, ""
    if status in (408, 429) or status >= 500:
        return False, False, f"HTTP {status}"
    if status in (301, 308):
        return False, True, f"HTTP {status}: moved permanently (redirects are not followed)"
    if 300 <= status < 400:
        return False, False, f"HTTP {status}: redirects are not followed"
    return False, True, f"HTTP {status}"


# --- the destination ----------------------------------------------------------------------------
class Refused(Exception):
    def __init__(self, message: str, *, permanent: bool) -> None:
        self.permanent = permanent
        super().__init__(message)


def _addresses(host: str, port: int) -> list[Address]:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:  # DNS may be back in a minute: not permanent
        raise Refused(f"cannot resolve {host!r} ({exc})", permanent=False) from None
    found: list[Address] = []
    for info in infos:
        addr = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        if addr not in found:
            found.append(addr)
    if not found:
        raise Refused(f"{host!r} has no address", permanent=False)
    return found


def destination(url: str, *, allow_private: bool) -> tuple[str, int, str, bool, list[Address]]:
    """``(host, port, path, tls, addresses)`` of a URL the server may call now; else ``Refused``.

    The rules are the callback URL's (runs/api/callbacks.py), applied to today's DNS answer:
    every address must pass, since the connection may go to any of them."""
    from runs.api.callbacks import METADATA_HOSTS, refusal

    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise Refused(f"not a valid URL ({exc})", permanent=True) from None
    host = (parts.hostname or "").rstrip(".").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise Refused("only http:// and https:// URLs with a host are called", permanent=True)
    if parts.username or parts.password:
        raise Refused("credentials in the URL are not allowed", permanent=True)
    if host in METADATA_HOSTS:
        raise Refused(f"{host} is a metadata service", permanent=True)
    addresses = _addresses(host, port)
    for addr in addresses:
        reason = refusal(addr, allow_private=allow_private)
        if reason:
            raise Refused(f"{host} resolves to {addr}, which {reason}", permanent=True)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return host, port, path, parts.scheme == "https", addresses


# --- the POST -----------------------------------------------------------------------------------
class _Pinned(http.client.HTTPConnection):
    """A connection to one checked address, whatever the host name resolves to meanwhile; the
    ``Host`` header (and, over TLS, SNI and the certificate check) still use the name."""

    def __init__(
        self, host: str, port: int, address: Address, *, tls: ssl.SSLContext | None
    ) -> None:
        super().__init__(host, port, timeout=READ_TIMEOUT)
        self.address, self.tls = address, tls
        self.connected = self.aborted = False

    def connect(self) -> None:
        sock = socket.create_connection((str(self.address), self.port), CONNECT_TIMEOUT)
        self.connected = True
        sock.settimeout(READ_TIMEOUT)
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host) if self.tls else sock


def _abort(conn: _Pinned) -> None:
    """Past the deadline: end a receiver's slow drip by shutting the socket under the reader."""
    conn.aborted = True
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _post(
    conn: _Pinned, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, str, str | None]:
    timer = threading.Timer(DEADLINE, _abort, args=(conn,))
    timer.daemon = True
    timer.start()
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        excerpt = response.read(EXCERPT_BYTES).decode("utf-8", "replace")[:EXCERPT_CHARS]
        if conn.aborted:  # what was read is cut short: it proves nothing
            raise TimeoutError(f"no complete answer within {DEADLINE:g} s")
        return response.status, excerpt, response.getheader("Retry-After")
    finally:
        timer.cancel()
        conn.close()


def send(
    url: str,
    body: bytes,
    *,
    secret: str,
    message_id: str,
    timestamp: int | None = None,
    allow_private: bool | None = None,
) -> Result:
    """POST ``body`` (JSON) to ``url``, signed with ``secret``, once. Never follows a redirect.

    ``allow_private`` defaults to ``AGENTOPS_ALLOW_PRIVATE_CALLBACKS``."""
    from django.conf import settings

    if allow_private is None:
        allow_private = bool(getattr(settings, "AGENTOPS_ALLOW_PRIVATE_CALLBACKS", False))
    started = time.monotonic()

    def took() -> float:
        return round((time.monotonic() - started) * 1000, 1)

    try:
        host, port, path, tls, addresses = destination(url, allow_private=allow_private)
    except Refused as exc:
        return Result(
            ok=False, error=f"refused: {exc}", permanent=exc.permanent, duration_ms=took()
        )
    if timestamp is None:
        from django.utils import timezone

        timestamp = int(timezone.now().timestamp())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        **signed_headers(secret, message_id, body, timestamp=timestamp),
    }
    context = ssl.create_default_context() if tls else None
    error = ""
    for address in addresses:
        conn = _Pinned(host, port, address, tls=context)
        try:
            status, excerpt, retry_after = _post(conn, path, body, headers)
        except (OSError, http.client.HTTPException) as exc:
            # Refused, reset, timed out, TLS, a garbled answer: the next address, or later.
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if conn.connected:
                break  # the request may have reached this address: do not send it twice now
            continue
        ok, permanent, error = classify(status)
        return Result(
            ok=ok,
            status_code=status,
            error=error,
            permanent=permanent,
            retry_after=parse_retry_after(retry_after) if status in (429, 503) else None,
            duration_ms=took(),
            excerpt=excerpt,
        )
    return Result(ok=False, error=error[:2000], duration_ms=took())
