"""Warm shutdown with real processes: SIGTERM makes a worker stop its runs at the next step
boundary and hand their leases back, so the next worker continues at once and nothing counts
as a recovery (the run was released, not lost)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from django.utils import timezone

from runs.audit import Event
from runs.engine import HOST
from runs.models import Run, RunStatus, Step, Team
from tests.processes import Cluster, cluster_fixture
from tests.testapp.models import Effect

pytestmark = [pytest.mark.pg, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def cluster(request: pytest.FixtureRequest, transactional_db: None) -> Iterator[Cluster]:
    yield from cluster_fixture(request)


def test_sigterm_releases_the_lease_at_a_step_boundary(cluster: Cluster, team: Team) -> None:
    n = 24  # 24 steps of 150 ms: far longer than the test lets worker A work
    a = cluster.worker("a")
    run, _ = Run.start("t-steps", {"n": n, "work_ms": 150}, team=team, actor="test")

    def held_by_a_with_steps() -> bool:
        owner = Run.objects.filter(pk=run.pk).values_list("lease_owner", flat=True)[0]
        return owner.startswith(f"{HOST}:{a.pid}:") and Step.objects.filter(run=run).count() >= 3

    cluster.wait(held_by_a_with_steps, timeout=20, what="worker A to checkpoint 3 steps")
    sigterm_at = timezone.now()
    a.terminate()
    sent = time.monotonic()
    code = a.wait_exit(timeout=10)
    took = time.monotonic() - sent
    assert code is not None, f"worker A still running 10 s after SIGTERM\n{cluster.logs()}"
    assert code == 0, cluster.logs()
    assert took < 5, f"worker A took {took:.1f}s to exit"

    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING
    assert run.lease_owner == ""
    assert run.lease_expires_at is None
    done_by_a = Step.objects.filter(run=run).count()
    assert 3 <= done_by_a < n
    # A step boundary: every effect A applied has its checkpoint, and nothing half-done.
    assert Effect.objects.filter(run_id=str(run.pk)).count() == done_by_a
    assert list(Step.objects.filter(run=run).order_by("seq").values_list("seq", flat=True)) == (
        list(range(1, done_by_a + 1))
    )

    # No beat runs here: the doorbell A rang when it let go is what wakes worker B.
    b = cluster.worker("b")
    cluster.wait(
        lambda: Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED,
        timeout=30,
        what="worker B to finish the run",
    )
    run.refresh_from_db()
    assert run.recoveries == 0
    assert not Event.objects.filter(run=run, kind="run.recovered").exists()
    calls = dict(Effect.objects.filter(run_id=str(run.pk)).values_list("key", "calls"))
    assert calls == {f"{run.pk}:{seq}": 1 for seq in range(1, n + 1)}
    drivers = set(
        Event.objects.filter(run=run, kind="step.completed").values_list("actor", flat=True)
    )
    assert drivers == {f"worker:{HOST}:{a.pid}", f"worker:{HOST}:{b.pid}"}

    # The doorbell A rings as it lets go may reach A itself while it is still shutting down
    # (Celery handles a message that arrives after SIGTERM): A must not start another step,
    # or a long step would outlast the shutdown grace period and become a recovery.
    a_seqs = [
        e["seq"]
        for e in Event.objects.filter(
            run=run, kind="step.completed", actor=f"worker:{HOST}:{a.pid}"
        ).values_list("data", flat=True)
    ]
    late = list(
        Step.objects.filter(run=run, seq__in=a_seqs, started_at__gt=sigterm_at).values_list(
            "seq", flat=True
        )
    )
    assert not late, f"worker A started step(s) {late} after SIGTERM"
