"""The API's request limit: a fixed one-minute window per caller, counted in Django's cache.

The counters live in the cache that ``CACHE_URL`` names. Distributed, that is a Redis every
web process shares, so N processes behind a load balancer allow the limit once, not N times;
the embedded default counts in its one process's memory.

Invariants:
- counting is atomic across processes: ``add`` creates a window's counter only if it is absent
  (``SET NX`` with an expiry on Redis) and ``incr`` adds one in place (``INCR``), so two
  callers never read-modify-write the same count;
- the first requests of a window race only on ``add``: one creates the counter, the others'
  ``add`` does nothing, and every one of them increments it. A counter that vanished between
  the two calls (evicted) is created again with ``add``, never ``set``, which would overwrite
  the increments of other processes;
- a counter outlives its window (two windows), so it never expires while requests still
  count in it, and an ``incr`` never recreates an expired key without an expiry.
"""

from __future__ import annotations

import logging
import math
import time

from django.core.cache import cache

logger = logging.getLogger(__name__)

WINDOW = 60
KEY_PREFIX = "agentops:api-rate"


def window_key(ident: str, now: float) -> str:
    return f"{KEY_PREFIX}:{ident}:{int(now // WINDOW)}"


def hit(ident: str, *, now: float | None = None) -> int:
    """Count one request of ``ident`` in the current window; the count including this one.

    When the cache cannot be reached the request is let through (0): the limit protects the
    service, and refusing every request because Redis is away would be the larger outage.
    """
    now = time.time() if now is None else now
    key = window_key(ident, now)
    try:
        for _ in range(3):
            cache.add(key, 0, timeout=2 * WINDOW)
            try:
                return int(cache.incr(key))
            except ValueError:  # evicted between add and incr: create it again
                continue
    except Exception:  # the cache backend's own client errors (redis.ConnectionError, …)
        logger.warning("rate limit not counted: the cache is unavailable", exc_info=True)
        return 0
    logger.warning("rate limit not counted: the counter %s kept vanishing", key)
    return 0


def seconds_left(now: float | None = None) -> int:
    """Whole seconds until the next window (at least 1): the ``Retry-After`` of a 429."""
    now = time.time() if now is None else now
    return max(1, math.ceil(WINDOW - now % WINDOW))
