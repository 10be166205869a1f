"""Redaction of secrets before anything is stored or shown.

Values under keys that look like secrets are replaced, recursively; error messages (free
text) are also scrubbed of ``password=…`` / ``Authorization: Bearer …`` patterns. Redaction
is one-way on purpose: a secret never reaches the database, so a step that returns one
replays the redacted value.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "[redacted]"
# "token" only at the end of a key: "access_token" is a secret, "max_tokens" is a count,
# and a paging cursor ("next_page_token") is neither.
_SECRET_KEY = re.compile(
    r"(passw(or)?d|passphrase|secret|api[-_ ]?key|access[-_ ]?key|authori[sz]ation|"
    r"private[-_ ]?key|cookie|credential|session[-_ ]?id|token$)",
    re.IGNORECASE,
)
_NOT_SECRET_KEY = re.compile(r"(page|next|continuation|cursor|sync)[-_ ]?token$", re.IGNORECASE)
_SECRET_TEXT = re.compile(
    r"(?i)([\w-]*(?:authorization|token|password|passwd|passphrase|secret|api[-_]?key))"
    r"([\"']?\s*[:=]\s*[\"']?)(bearer\s+)?[^\s,;'\"&}]+"
)
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s/]+@", re.IGNORECASE)
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]+=*")


def is_secret_key(key: object) -> bool:
    return (
        isinstance(key, str) and bool(_SECRET_KEY.search(key)) and not _NOT_SECRET_KEY.search(key)
    )


def redact_text(text: str) -> str:
    text = _SECRET_TEXT.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    return _BEARER.sub(f"Bearer {REDACTED}", text)


def redact(value: Any) -> Any:
    """Return a copy of ``value`` with secret-looking keys' values replaced."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_key(k) else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value
