"""Which errors are worth another attempt, and how errors are recorded."""

from __future__ import annotations

import socket
import urllib.error
from typing import Any

from runs.exceptions import PermanentError, RetryableError
from runs.redact import redact_text


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an exception carries (requests, httpx, urllib), if any."""
    for candidate in (
        getattr(exc, "status_code", None),
        getattr(exc, "status", None),
        getattr(exc, "code", None) if isinstance(exc, urllib.error.HTTPError) else None,
        getattr(getattr(exc, "response", None), "status_code", None),
    ):
        if isinstance(candidate, int) and 100 <= candidate < 600:
            return candidate
    return None


def is_retryable(exc: BaseException) -> bool:
    """429, 408, 5xx, timeouts and connection errors retry; other 4xx, validation and
    programming errors do not. Unknown errors retry (the policy bounds the attempts)."""
    if isinstance(exc, PermanentError):
        return False
    if isinstance(exc, RetryableError):
        return True
    status = http_status(exc)
    if status is not None:
        return status in (408, 429) or status >= 500
    if isinstance(exc, TimeoutError | ConnectionError | socket.timeout | urllib.error.URLError):
        return True
    if isinstance(
        exc,
        ValueError
        | TypeError
        | LookupError
        | AttributeError
        | NotImplementedError
        | AssertionError
        | PermissionError,
    ):
        return False
    return True


def error_dict(exc: BaseException) -> dict[str, Any]:
    err: dict[str, Any] = {
        "type": type(exc).__name__,
        "message": redact_text(str(exc))[:4000],
        "retryable": is_retryable(exc),
    }
    status = http_status(exc)
    if status is not None:
        err["status"] = status
    return err
