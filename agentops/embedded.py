"""The embedded deployment: a Celery worker pool and beat as threads of the web process.

With the in-process (memory) broker, messages only travel between threads of one process, so
the worker must live here. The database stays the ledger: when the process stops, the
broker's messages are gone, and the start-up sweep plus the beat sweeps ring again for every
run that nobody holds.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from celery.beat import EmbeddedService
from celery.worker import WorkController

from agentops.celery import app
from runs.context import SHUTDOWN
from runs.workflow import all_workflows

log = logging.getLogger(__name__)


class EmbeddedCelery:
    def __init__(self, *, workers: int, beat: bool = True) -> None:
        self.workers = workers
        self.with_beat = beat
        self.worker: WorkController | None = None
        self.beat: Any = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.workers > 0:
            self.worker = WorkController(
                app=app,
                hostname=f"embedded@{socket.gethostname()}",
                pool_cls="threads",
                concurrency=self.workers,
                # Every queue a registered workflow uses: here one pool does all kinds of work.
                queues=sorted({"runs", "sweeps", *(wf.queue for wf in all_workflows())}),
                without_heartbeat=True,
                without_mingle=True,
                without_gossip=True,
                loglevel="INFO",
            )
            self.thread = threading.Thread(
                target=self.worker.start, name="embedded-worker", daemon=True
            )
            self.thread.start()
        if self.with_beat:
            self.beat = EmbeddedService(
                app, thread=True, scheduler_cls="django_celery_beat.schedulers:DatabaseScheduler"
            )
            self.beat.start()

    def stop(self) -> None:
        # Runs stop at their next step boundary and hand their leases back.
        SHUTDOWN.set()
        if self.beat is not None:
            self.beat.stop()
        if self.worker is not None:
            self.worker.stop(in_sighandler=False)
        if self.thread is not None:
            self.thread.join(timeout=30)
