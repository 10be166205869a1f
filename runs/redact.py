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
# "token" only at the end of a key: "access_token" is a secret, "max_tokens" is a count.
_SECRET_KEY = re.compile(
    r"(passw(or)?d|secret|api[-_ ]?key|authori[sz]ation|private[-_ ]?key|cookie|credential|"
    r"session[-_ ]?id|token$)",
    re.IGNORECASE,
)
_SECRET_TEXT = re.compile(
    r"(?i)\b(authorization|token|password|passwd|secret|api[-_]?key)(\s*[:=]\s*)"
    r"(bearer\s+)?[^\s,;'\"&]+"
)
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]+=*")


def is_secret_key(key: object) -> bool:
    return isinstance(key, str) and bool(_SECRET_KEY.search(key))


def redact_text(text: str) -> str:
    text = _SECRET_TEXT.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return _BEARER.sub(f"Bearer {REDACTED}", text)


def redact(value: Any) -> Any:
    """Return a copy of ``value`` with secret-looking keys' values replaced."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_key(k) else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value
