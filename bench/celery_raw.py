"""A bare Celery app with one no-op task: the broker-and-worker floor under our doorbell.

The task records (sent, started, finished) wall-clock times in a Redis list, so the
benchmark measures latency and throughput without a result backend.
"""

from __future__ import annotations

import json
import os
import time

import redis
from celery import Celery

QUEUE = "bench_raw"
DONE_KEY = "bench:raw:done"

app = Celery("bench_raw", broker=os.environ.get("BENCH_RAW_BROKER_URL", "redis://127.0.0.1/1"))
app.conf.update(
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=1,  # as in agentops/settings.py
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(app.conf.broker_url)
    return _client


@app.task(name="bench.noop")
def noop(sent: float) -> None:
    started = time.time()
    _redis().rpush(DONE_KEY, json.dumps([sent, started, time.time()]))
