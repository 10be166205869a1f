"""Lost broker messages: the broker is a doorbell, not the ledger. Flushing Redis while runs are
queued, running and sleeping loses no run: beat's sweeps find what nobody holds and ring again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runs.models import TERMINAL, Run, RunStatus, Step, Team
from tests.processes import Cluster, cluster_fixture, install_fast_sweeps, redis_client
from tests.testapp.models import Effect

pytestmark = [pytest.mark.pg, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def cluster(request: pytest.FixtureRequest, transactional_db: None) -> Iterator[Cluster]:
    yield from cluster_fixture(request)


def _flush() -> int:
    """FLUSHALL, returning how many doorbell messages were waiting in the ``runs`` queue."""
    pipe = redis_client().pipeline(transaction=True)
    pipe.llen("runs")
    pipe.flushall()
    waiting, _ = pipe.execute()
    return int(waiting)


def test_every_run_finishes_after_the_broker_forgets_everything(
    cluster: Cluster, team: Team
) -> None:
    install_fast_sweeps()
    worker = cluster.worker("w1", wait_ready=False)
    beat = cluster.beat(wait_ready=False)
    cluster.ready(worker, beat)

    n = 6
    steps = [
        Run.start("t-steps", {"n": n, "work_ms": 100}, team=team, actor="test")[0] for _ in range(4)
    ]
    sleeps = [Run.start("t-sleep", {"seconds": 1}, team=team, actor="test")[0] for _ in range(4)]
    runs = steps + sleeps
    ids = [r.pk for r in runs]

    def step_rows() -> int:
        return Step.objects.filter(run_id__in=ids).count()

    # In flight: a worker is inside the runs while most doorbells still wait in Redis.
    cluster.wait(lambda: step_rows() >= 2, timeout=20, what="the first steps")
    dropped = _flush()
    after_first = step_rows()
    unfinished = Run.objects.filter(pk__in=ids).exclude(status__in=TERMINAL).count()
    assert unfinished > 0, "every run finished before the broker was flushed"
    # Once more, after the engine has made some progress on whatever it still held.
    cluster.wait(lambda: step_rows() > after_first, timeout=20, what="progress after the flush")
    dropped += _flush()
    assert dropped >= 1, "the flushes dropped no doorbell: the test did not test anything"

    def all_finished() -> bool:
        return not Run.objects.filter(pk__in=ids).exclude(status__in=TERMINAL).exists()

    cluster.wait(all_finished, timeout=45, what="every run to finish after the flushes")

    statuses = dict(Run.objects.filter(pk__in=ids).values_list("pk", "status"))
    assert set(statuses.values()) == {RunStatus.SUCCEEDED}, statuses
    for run in steps:
        seqs = list(Step.objects.filter(run=run).order_by("seq").values_list("seq", flat=True))
        assert seqs == list(range(1, n + 1))
        calls = dict(Effect.objects.filter(run_id=str(run.pk)).values_list("key", "calls"))
        assert calls == {f"{run.pk}:{seq}": 1 for seq in range(1, n + 1)}
    for run in sleeps:
        kinds = list(Step.objects.filter(run=run).order_by("seq").values_list("kind", "status"))
        assert kinds == [
            (Step.Kind.STEP, Step.Status.COMPLETED),
            (Step.Kind.SLEEP, Step.Status.COMPLETED),
            (Step.Kind.STEP, Step.Status.COMPLETED),
        ]
