"""Crash recovery with real processes: a worker SIGKILLed in the middle of a step loses at most
that step; beat notices the lapsed lease, another worker resumes from the checkpoints, and every
side effect (keyed by ``ctx.idempotency_key()``) is applied exactly once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentops.celery import app
from runs.audit import Event
from runs.engine import HOST
from runs.models import Run, RunStatus, Step, Team
from tests.processes import Cluster, cluster_fixture, install_fast_sweeps
from tests.testapp.models import Effect

pytestmark = [pytest.mark.pg, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def cluster(request: pytest.FixtureRequest, transactional_db: None) -> Iterator[Cluster]:
    yield from cluster_fixture(request)


def test_sigkilled_worker_loses_only_the_step_in_flight(cluster: Cluster, team: Team) -> None:
    n = 12
    install_fast_sweeps()
    a = cluster.worker("a", wait_ready=False)
    beat = cluster.beat(wait_ready=False)
    cluster.ready(a, beat)
    run, _ = Run.start("t-steps", {"n": n, "work_ms": 300}, team=team, actor="test")

    def held_by_a_with_steps() -> bool:
        owner = Run.objects.filter(pk=run.pk).values_list("lease_owner", flat=True)[0]
        return owner.startswith(f"{HOST}:{a.pid}:") and Step.objects.filter(run=run).count() >= 3

    # Each step sleeps 300 ms before its effect: right after a checkpoint appears, worker A is
    # inside the next step.
    cluster.wait(
        held_by_a_with_steps, timeout=20, what="worker A to checkpoint 3 steps", every=0.01
    )
    a.kill()
    assert Run.objects.get(pk=run.pk).status == RunStatus.RUNNING

    b = cluster.worker("b")
    cluster.wait(
        lambda: Run.objects.get(pk=run.pk).status not in (RunStatus.QUEUED, RunStatus.RUNNING),
        timeout=30,
        what="worker B to finish the run",
    )

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, (run.status, run.error)
    assert run.result == {"keys": n}
    assert run.recoveries >= 1
    assert run.lease_owner == ""
    recovered = Event.objects.filter(run=run, kind="run.recovered").first()
    assert recovered is not None
    assert recovered.data["previous_worker"].startswith(f"{HOST}:{a.pid}:")
    assert recovered.data["worker"].startswith(f"{HOST}:{b.pid}:")

    # What A checkpointed, by its events (a COMMIT A sent just before dying may land after
    # the kill, so counting rows right after it could be one short).
    done_by_a = max(
        e["seq"]
        for e in Event.objects.filter(
            run=run, kind="step.completed", actor=f"worker:{HOST}:{a.pid}"
        ).values_list("data", flat=True)
    )
    assert 3 <= done_by_a < n
    steps = list(Step.objects.filter(run=run).order_by("seq").values_list("seq", "name", "status"))
    assert steps == [(i + 1, f"effect {i}", Step.Status.COMPLETED) for i in range(n)]

    effects = dict(Effect.objects.filter(run_id=str(run.pk)).values_list("key", "calls"))
    assert set(effects) == {f"{run.pk}:{seq}" for seq in range(1, n + 1)}
    # Only the step in flight when A died may have been asked twice (effect applied, checkpoint
    # not yet written); the idempotency key made the second ask a no-op.
    in_flight = f"{run.pk}:{done_by_a + 1}"
    assert {k: c for k, c in effects.items() if c != 1 and k != in_flight} == {}
    assert effects[in_flight] in (1, 2)


def test_a_live_worker_keeps_its_run_through_steps_longer_than_the_lease(
    cluster: Cluster, team: Team
) -> None:
    """The heartbeat renews the lease while a step runs: a step longer than the lease (2 s
    here) is neither recovered by the sweep nor taken by another worker the doorbell wakes."""
    install_fast_sweeps()
    a = cluster.worker("a", wait_ready=False)
    b = cluster.worker("b", wait_ready=False)
    beat = cluster.beat(wait_ready=False)
    cluster.ready(a, b, beat)
    n = 2
    run, _ = Run.start("t-steps", {"n": n, "work_ms": 3000}, team=team, actor="test")
    cluster.wait(
        lambda: Run.objects.filter(pk=run.pk, lease_owner__contains=":").exists(),
        timeout=20,
        what="a worker to take the run",
    )
    for _ in range(6):  # doorbells for whichever worker is idle: each must find the run held
        app.send_task("runs.drive", args=[str(run.pk)])
    cluster.wait(
        lambda: Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED,
        timeout=20,
        what="the run to succeed",
    )
    run.refresh_from_db()
    assert run.recoveries == 0
    assert not Event.objects.filter(run=run, kind="run.recovered").exists()
    calls = dict(Effect.objects.filter(run_id=str(run.pk)).values_list("key", "calls"))
    assert calls == {f"{run.pk}:{seq}": 1 for seq in range(1, n + 1)}
    drivers = set(
        Event.objects.filter(run=run, kind="step.completed").values_list("actor", flat=True)
    )
    assert len(drivers) == 1, drivers  # one worker drove it from start to end
    # The extra doorbells reached a worker and found the run held.
    assert sum(p.log().count("s: 'skipped'") for p in (a, b)) >= 1, cluster.logs()
