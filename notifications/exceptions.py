"""Errors of the notification transports."""

from __future__ import annotations


class TransportError(Exception):
    """A message could not be delivered. ``permanent``: retrying will not help (a 4xx, an
    undeliverable address), so the next channel carries it; otherwise it is retried later."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.permanent = permanent
        self.status_code = status_code
        #: Seconds the receiver asked us to wait (``Retry-After``), if it said.
        self.retry_after = retry_after
        super().__init__(message)
