"""Concurrency on PostgreSQL: idempotent starts under a race, and single execution of a run
when threads or worker processes compete for it (the lease admits one driver at a time)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings

from agentops.celery import app
from runs import engine
from runs.audit import Event
from runs.exceptions import IdempotencyConflict
from runs.models import IdempotencyKey, Run, RunStatus, Step, Team
from tests.processes import Cluster, cluster_fixture
from tests.testapp.models import Effect

pytestmark = [pytest.mark.pg, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def cluster(request: pytest.FixtureRequest, transactional_db: None) -> Iterator[Cluster]:
    yield from cluster_fixture(request)


def _in_threads(count: int, fn: Callable[[], Any]) -> tuple[list[Any], list[BaseException]]:
    """Run ``fn`` in ``count`` threads released together; each closes its own connection."""
    barrier = threading.Barrier(count)
    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def target() -> None:
        try:
            barrier.wait(timeout=10)
            value = fn()
            with lock:
                results.append(value)
        except BaseException as exc:
            with lock:
                errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=target) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"
    return results, errors


def _assert_applied_once(run: Run, n: int) -> None:
    seqs = list(Step.objects.filter(run=run).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, n + 1))
    calls = dict(Effect.objects.filter(run_id=str(run.pk)).values_list("key", "calls"))
    assert calls == {f"{run.pk}:{seq}": 1 for seq in range(1, n + 1)}


def test_concurrent_starts_with_one_idempotency_key_make_one_run(team: Team) -> None:
    body = {"n": 2, "work_ms": 0}

    def start() -> tuple[Any, bool]:
        run, replayed = Run.start("t-steps", body, team=team, actor="api", idempotency_key="same")
        return run.pk, replayed

    results, errors = _in_threads(20, start)

    assert errors == []
    assert len(results) == 20
    assert len({pk for pk, _ in results}) == 1
    assert sorted(replayed for _, replayed in results) == [False] + [True] * 19
    assert IdempotencyKey.objects.filter(key="same").count() == 1
    assert Run.objects.count() == 1
    assert Event.objects.filter(kind="run.created").count() == 1

    # The same key with another body is a conflict, not a replay.
    with pytest.raises(IdempotencyConflict):
        Run.start("t-steps", {"n": 3, "work_ms": 0}, team=team, actor="api", idempotency_key="same")
    assert Run.objects.count() == 1


@override_settings(AGENTOPS_SLICE_SECONDS=0.15)
def test_two_threads_driving_one_run_execute_each_step_once(team: Team) -> None:
    # Short slices: the run is released and taken again many times, so the threads race for
    # the lease at every slice boundary.
    n = 20
    run, _ = Run.start("t-steps", {"n": n, "work_ms": 20}, team=team, actor="test")

    outcomes: list[list[str]] = []
    for _ in range(40):
        results, errors = _in_threads(2, lambda: engine.drive(run.pk))
        assert errors == []
        outcomes.append(sorted(results))
        if Run.objects.get(pk=run.pk).status != RunStatus.RUNNING:
            break

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, (run.status, run.error, outcomes)
    assert len(outcomes) >= 3, outcomes  # several rounds, so several races
    assert any("skipped" in round_ for round_ in outcomes), outcomes  # they did collide
    assert run.recoveries == 0
    _assert_applied_once(run, n)


def test_many_doorbells_for_one_run_across_two_workers_execute_each_step_once(
    cluster: Cluster, team: Team
) -> None:
    # Short slices again, so the run changes hands between the two processes.
    w1 = cluster.worker("w1", wait_ready=False, AGENTOPS_SLICE_SECONDS="0.3")
    w2 = cluster.worker("w2", wait_ready=False, AGENTOPS_SLICE_SECONDS="0.3")
    cluster.ready(w1, w2)
    n = 20
    run, _ = Run.start("t-steps", {"n": n, "work_ms": 40}, team=team, actor="test")
    for _ in range(10):
        app.send_task("runs.drive", args=[str(run.pk)])

    cluster.wait(
        lambda: Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED,
        timeout=30,
        what="the run to succeed",
    )
    run.refresh_from_db()
    assert run.recoveries == 0
    _assert_applied_once(run, n)
    # Both processes were asked to drive it (so the lease, not luck, kept it single).
    for w in (w1, w2):
        assert "Task runs.drive[" in w.log(), f"{w.name} never got a doorbell\n{cluster.logs()}"
    drivers = set(
        Event.objects.filter(run=run, kind="step.completed").values_list("actor", flat=True)
    )
    assert drivers <= {f"worker:{engine.HOST}:{w1.pid}", f"worker:{engine.HOST}:{w2.pid}"}
