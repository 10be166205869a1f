"""Approvals on PostgreSQL with real threads and real worker processes: racing outcomes end
in exactly one, and a worker killed right after a decision does not repeat the approved action."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from approvals.exceptions import NotPending
from approvals.models import ApprovalRequest, Decision
from runs.engine import HOST
from runs.exceptions import IllegalTransition
from runs.models import Event, Run, RunStatus, Step, Team
from tests.approvals.support import make_reviewers, start_gated
from tests.processes import Cluster, cluster_fixture, install_fast_sweeps
from tests.testapp.models import Effect

pytestmark = [pytest.mark.pg, pytest.mark.django_db(transaction=True)]
OUTCOME_EVENTS = ["approval.decided", "approval.expired", "approval.cancelled"]


@pytest.fixture
def cluster(request: pytest.FixtureRequest, transactional_db: None) -> Iterator[Cluster]:
    yield from cluster_fixture(request)


def _race(*fns: Any) -> list[BaseException]:
    barrier = threading.Barrier(len(fns))
    errors: list[BaseException] = []
    lock = threading.Lock()

    def target(fn: Any) -> None:
        try:
            barrier.wait(timeout=10)
            fn()
        except BaseException as exc:
            with lock:
                errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=target, args=(fn,)) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"
    return errors


def test_decide_cancel_expire_and_a_second_reviewer_end_in_one_outcome(
    team: Team, other_team: Team
) -> None:
    people = make_reviewers(team, other_team)
    seen: set[str] = set()
    for _ in range(12):
        run, request = start_gated(people.owner, {"deadline": 3600})
        # The deadline passes "now", so the sweep's expiry races the people.
        ApprovalRequest.objects.filter(pk=request.pk).update(
            deadline_at=timezone.now() - timedelta(seconds=1)
        )
        errors = _race(
            lambda r=request: ApprovalRequest.objects.get(pk=r.pk).decide(people.alice, "approve"),
            lambda r=request: ApprovalRequest.objects.get(pk=r.pk).decide(people.bob, "reject"),
            lambda r=run: Run.objects.get(pk=r.pk).cancel(actor="user:owner"),
            lambda r=request: ApprovalRequest.objects.get(pk=r.pk).apply_timeout(),
        )
        assert all(isinstance(e, NotPending | IllegalTransition) for e in errors), errors
        request.refresh_from_db()
        assert request.status != ApprovalRequest.Status.PENDING
        seen.add(request.status)
        outcomes = Event.objects.filter(run=run, kind__in=OUTCOME_EVENTS)
        assert outcomes.count() == 1, list(outcomes.values_list("kind", "actor"))
        # The decisions recorded agree with the outcome: a losing reviewer left no row.
        verdicts = set(Decision.objects.filter(request=request).values_list("verdict", flat=True))
        if request.status == "approved":
            assert verdicts == {"approve"}
        elif request.status == "rejected":
            assert verdicts == {"reject"}
        else:
            assert verdicts == set()
    assert seen  # which one wins varies with scheduling; each round had exactly one


def test_quorum_two_reviewers_at_once_settle_it_once(team: Team, other_team: Team) -> None:
    people = make_reviewers(team, other_team)
    for _ in range(8):
        run, request = start_gated(people.owner, {"quorum": 2})
        errors = _race(
            lambda r=request: ApprovalRequest.objects.get(pk=r.pk).decide(people.alice, "approve"),
            lambda r=request: ApprovalRequest.objects.get(pk=r.pk).decide(people.bob, "approve"),
        )
        assert errors == []
        request.refresh_from_db()
        assert request.status == "approved"  # neither approval was lost to the other
        assert Event.objects.filter(run=run, kind="approval.decided").count() == 1
        assert Run.objects.get(pk=run.pk).status == RunStatus.RUNNING  # woken once


def test_worker_killed_right_after_the_decision_acts_once(cluster: Cluster, team: Team) -> None:
    people = make_reviewers(team, Team.objects.create(slug="elsewhere", name="Elsewhere"))
    install_fast_sweeps()
    a = cluster.worker("a", wait_ready=False)
    beat = cluster.beat(wait_ready=False)
    cluster.ready(a, beat)
    run = Run.start("t-approve", {"work_ms": 1500}, team=team, actor="t", user=people.owner)[0]
    cluster.wait(
        lambda: (
            ApprovalRequest.objects.filter(run=run).exists()
            and Run.objects.get(pk=run.pk).status == RunStatus.WAITING
        ),
        timeout=20,
        what="the run to wait at its gate",
    )
    request = ApprovalRequest.objects.get(run=run)
    request.decide(people.alice, "approve", edits={"title": "Approved title"})

    def a_is_acting() -> bool:
        current = Run.objects.get(pk=run.pk)
        gate = Step.objects.filter(run=run, seq=1, status=Step.Status.COMPLETED).exists()
        return gate and current.lease_owner.startswith(f"{HOST}:{a.pid}:")

    # Right after the decision, A replays the gate and is inside the guarded step: kill it.
    cluster.wait(a_is_acting, timeout=20, what="worker A to pass the gate", every=0.01)
    a.kill()
    cluster.worker("b")
    cluster.wait(
        lambda: Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED,
        timeout=40,
        what="worker B to finish the run",
    )
    run.refresh_from_db()
    assert run.result["outcome"] == "approved" and run.result["title"] == "Approved title"
    assert run.recoveries >= 1
    effects = list(Effect.objects.filter(run_id=str(run.pk)).values_list("label", "calls"))
    assert len(effects) == 1 and effects[0][0] == "Approved title"
    assert ApprovalRequest.objects.filter(run=run).count() == 1
    assert Decision.objects.filter(request__run=run).count() == 1
