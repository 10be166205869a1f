"""What-if settings for the benchmark's second latency figure: agentops' settings plus
``CELERY_DB_REUSE_MAX``.

Without it, Celery's Django fix-up closes every database connection before and after each
task, so each ``runs.drive`` task opens a new PostgreSQL connection (a new server process).
Used only by ``bench/distributed.py`` to show what that costs; not the shipped configuration.
"""

from __future__ import annotations

from agentops.settings import *  # noqa: F403

CELERY_DB_REUSE_MAX = 1000
