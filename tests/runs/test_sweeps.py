"""Sweeps ring again for what the doorbell lost, and each reads its own partial index."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from runs import sweeps
from runs.models import Run, RunStatus
from runs.redact import redact, redact_text
from runs.retry import is_retryable
from runs.workflow import RetryPolicy
from tests.conftest import doorbells

pytestmark = [pytest.mark.engine, pytest.mark.django_db]


def test_orphaned_runs_are_rung_again_once_per_interval(
    team, time_machine, settings, django_capture_on_commit_callbacks
):
    settings.AGENTOPS_ORPHAN_SECONDS = 30
    time_machine.move_to(timezone.now(), tick=False)
    run = Run.start("t-steps", {"n": 1}, actor="t")[0]
    assert sweeps.requeue_orphans() == 0  # just rung at start
    time_machine.shift(timedelta(seconds=31))
    with django_capture_on_commit_callbacks() as rings:
        assert sweeps.requeue_orphans() == 1
    assert len(rings) == 1
    assert sweeps.requeue_orphans() == 0
    run.refresh_from_db()
    assert run.rung_at == timezone.now()


def test_expired_leases_are_rung(team, time_machine, django_capture_on_commit_callbacks):
    run = Run.start("t-steps", {"n": 1}, actor="t")[0]
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING,
        lease_owner="gone",
        rung_at=None,
        lease_expires_at=timezone.now() - timedelta(seconds=1),
    )
    with django_capture_on_commit_callbacks() as rings:
        assert sweeps.requeue_expired_leases() == 1
    assert len(rings) == 1


def test_the_doorbell_rings_only_after_commit(team, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        Run.start("t-steps", {"n": 1}, actor="t")
    assert len(doorbells(callbacks)) == 1


@pytest.mark.parametrize("index", sorted(sweeps.QUERIES))
def test_each_sweep_query_reads_its_partial_index(team, index):
    qs = sweeps.QUERIES[index](timezone.now())
    with connection.cursor() as cur:
        if connection.vendor == "postgresql":
            cur.execute("SET LOCAL enable_seqscan = off")
    plan = qs.explain()
    assert index in plan, plan


def test_redaction():
    assert redact(
        {"api_key": "k", "max_tokens": 5, "access_token": "t", "x": [{"Password": 1}]}
    ) == {
        "api_key": "[redacted]",
        "max_tokens": 5,
        "access_token": "[redacted]",
        "x": [{"Password": "[redacted]"}],
    }
    text = redact_text("401 for Authorization: Bearer abc.def password=hunter2 ok")
    assert "abc.def" not in text and "hunter2" not in text and "ok" in text


class HTTPError(Exception):
    def __init__(self, status: int) -> None:
        self.status_code = status


@pytest.mark.parametrize(
    ("exc", "retry"),
    [
        (HTTPError(429), True),
        (HTTPError(503), True),
        (HTTPError(408), True),
        (HTTPError(404), False),
        (HTTPError(422), False),
        (TimeoutError(), True),
        (ConnectionResetError(), True),
        (ValueError("bad"), False),
        (KeyError("k"), False),
    ],
)
def test_retry_classification(exc, retry):
    assert is_retryable(exc) is retry


def test_backoff_grows_with_jitter_and_is_capped():
    policy = RetryPolicy(max_attempts=10, initial=1, maximum=8, jitter=0.5)
    delays = [policy.delay(n) for n in range(1, 7)]
    assert 1 <= delays[0] <= 1.5 and 2 <= delays[1] <= 2.5 and 4 <= delays[2] <= 4.5
    assert all(d <= 8 for d in delays) and delays[-1] == 8
