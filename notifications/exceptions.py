"""Errors of the notification transports."""

from __future__ import annotations


class TransportError(Exception):
    """A message could not be delivered. ``permanent``: retrying will not help (a 4xx, an
    undeliverable address), so the next channel carries it; otherwise it is retried later."""

    def __init__(self, message: str, *, permanent: bool = False, status_code: int | None = None):
        self.permanent = permanent
        self.status_code = status_code
        super().__init__(message)
