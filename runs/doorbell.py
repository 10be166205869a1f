"""Ringing the doorbell: telling some worker "look at run X".

The message carries only the id, is sent only after the transaction that made the run
runnable commits, and may be lost or duplicated: the sweeps ring again for runs nobody holds,
and the lease makes a duplicate harmless.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

log = logging.getLogger(__name__)


def _send(task_name: str, run_id: str, countdown: float | None, queue: str) -> None:
    from agentops.celery import app

    try:
        app.send_task(task_name, args=[run_id], countdown=countdown, queue=queue)
    except Exception:  # the broker is down: the orphan sweep rings again later
        log.warning("could not ring the doorbell for run %s; the sweep will", run_id, exc_info=True)


def _queue_of(run_id: Any) -> str:
    from runs.models import Run

    return Run.objects.filter(pk=run_id).values_list("queue", flat=True).first() or "runs"


def ring(run_id: Any, *, countdown: float | None = None, queue: str | None = None) -> None:
    """After commit, ask a worker (of the run's queue) to drive the run."""
    rid, q = str(run_id), queue or _queue_of(run_id)
    transaction.on_commit(lambda: _send("runs.drive", rid, countdown, q))


def ring_wake(run_id: Any, *, countdown: float) -> None:
    """After commit, ask a worker to wake the run when its short timer is due."""
    rid, q = str(run_id), _queue_of(run_id)
    transaction.on_commit(lambda: _send("runs.wake", rid, countdown, q))
