"""The demo workflows do real work offline: a local corpus, a local flaky HTTP service."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from runs import sweeps
from runs.models import CircuitBreaker, Run, RunStatus, StepAttempt

pytestmark = [pytest.mark.engine, pytest.mark.django_db]


@pytest.fixture
def flaky_server() -> Iterator[tuple[str, Counter[str]]]:
    """A real local HTTP service that answers 503 to the first N calls of each key."""
    calls: Counter[str] = Counter()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlparse(self.path).query)
            key, fail_first = query["key"][0], int(query["fail_first"][0])
            calls[key] += 1
            status = 503 if calls[key] <= fail_first else 200
            body = json.dumps({"key": key, "call": calls[key], "source": "service"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/flaky", calls
    finally:
        server.shutdown()


def drive_with_timers(drive, time_machine, run_id, *, rounds: int = 40) -> Run:
    run = drive(run_id)
    for _ in range(rounds):
        if run.status != RunStatus.WAITING:
            return run
        time_machine.move_to(run.wake_at + timedelta(milliseconds=5))
        sweeps.wake_due_timers()
        run = drive(run_id)
    return run


def test_digest_reads_a_corpus_with_progress_and_budget(team, drive, tmp_path: Path):
    for name, body in {
        "a.py": '"""Alpha module."""\n\ndef f():\n    return 1\n',
        "b.py": "class B:\n    pass\n",
        "c.py": "def broken(:\n",
    }.items():
        (tmp_path / name).write_text(body)
    run = Run.start("digest", {"corpus": str(tmp_path)}, actor="t")[0]
    assert run.limit_usd is not None  # the workflow's default budget
    run = drive(run.pk)
    assert run.status == RunStatus.SUCCEEDED
    assert run.result["files"] == 3
    assert run.result["functions"] == 1 and run.result["classes"] == 1
    assert run.result["undocumented"] == ["b.py"]
    assert run.progress["done"] == 3 and run.progress["total"] == 3
    assert run.spent_tokens > 0 and run.spent_usd > 0 and run.spent_actions == 4


def test_digest_stops_at_its_budget(team, drive):
    run = Run.start("digest", {"limit": 50}, actor="t", budget={"tokens": 2000})[0]
    run = drive(run.pk)
    assert run.status == RunStatus.PAUSED
    assert "tokens budget reached" in run.pause_reason


def test_flaky_service_retries_with_backoff_then_succeeds(team, drive, time_machine, flaky_server):
    url, calls = flaky_server
    run = Run.start("flaky-service", {"url": url, "calls": 3, "fail_first": 2}, actor="t")[0]
    run = drive_with_timers(drive, time_machine, run.pk)
    assert run.status == RunStatus.SUCCEEDED
    assert [a["source"] for a in run.result["answers"]] == ["service"] * 3
    assert sum(calls.values()) == 9  # three calls, each failing twice first
    failed = StepAttempt.objects.filter(run=run)
    assert failed.count() == 6 and {a.error["status"] for a in failed} == {503}
    retry_gaps = [(a.retry_at - a.finished_at).total_seconds() for a in failed]
    assert all(0.5 <= g <= 5.5 for g in retry_gaps)


def test_flaky_service_falls_back_when_the_circuit_opens(team, drive, time_machine, flaky_server):
    url, _ = flaky_server
    CircuitBreaker.objects.create(service="demo-flaky", failure_threshold=2, cooldown_seconds=300)
    run = Run.start("flaky-service", {"url": url, "calls": 2, "fail_first": 10}, actor="t")[0]
    run = drive_with_timers(drive, time_machine, run.pk)
    assert run.status == RunStatus.SUCCEEDED
    assert run.result["from_fallback"] == 2
    assert CircuitBreaker.objects.get(service="demo-flaky").state == CircuitBreaker.State.OPEN


def test_nap_sleeps_durably(team, drive, time_machine):
    run = drive(Run.start("nap", {"seconds": 30}, actor="t")[0].pk)
    assert run.status == RunStatus.WAITING and run.lease_owner == ""
    run = drive_with_timers(drive, time_machine, run.pk)
    assert run.status == RunStatus.SUCCEEDED
