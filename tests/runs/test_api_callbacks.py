"""Run callbacks: each milestone POSTed once, signed (Standard Webhooks), from an outbox row
written with its event, retried with backoff, given up on a 4xx, refused when the address
turns link-local. A real HTTP receiver verifies every signature with the README's snippet."""

from __future__ import annotations

import importlib
import socket
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.apps import apps
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from runs import deliveries, sweeps, webhooks
from runs.audit import Event
from runs.deliveries import CallbackAttempt, CallbackDelivery
from runs.models import Run, RunStatus, Team
from runs.tasks import deliver_callback, sweep_callbacks
from tests.approvals.support import make_reviewers
from tests.runs.api_support import member, token_client
from tests.runs.callback_support import (
    Receiver,
    deliver_due,
    in_thread,
    readme_snippet,
    with_callback,
)

pytestmark = [pytest.mark.engine, pytest.mark.django_db]

Status = CallbackDelivery.Status
# The Standard Webhooks specification's published test vector.
VECTOR = {
    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "timestamp": 1614265330,
    "body": b'{"test": 2432232314}',
    "signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
}


@pytest.fixture
def receiver(team: Team, settings: Any) -> Any:
    settings.AGENTOPS_ALLOW_PRIVATE_CALLBACKS = True
    r = Receiver(team.webhook_secret)
    yield r
    if r.server is not None:
        r.down()


@pytest.fixture
def api(team: Team) -> Any:
    return token_client(member("alice", team), team)


def submit(api: Any, url: str, workflow: str = "t-steps", **body: Any) -> str:
    r = api.post("/api/v1/runs", {"workflow": workflow, "callback_url": url, **body})
    assert r.status_code == 202, r.content
    return r.json()["id"]


def types_of(run_id: Any) -> list[str]:
    return list(
        CallbackDelivery.objects.filter(run_id=run_id).order_by("id").values_list("type", flat=True)
    )


# --- signing ------------------------------------------------------------------------------------
def test_the_readme_snippet_and_the_sender_reproduce_the_standard_vector(time_machine):
    snippet = readme_snippet()
    v = VECTOR
    assert snippet["sign"](v["secret"], v["id"], str(v["timestamp"]), v["body"]) == v["signature"]
    assert webhooks.sign(v["secret"], v["id"], v["timestamp"], v["body"]) == v["signature"]
    headers = {
        "webhook-id": v["id"],
        "webhook-timestamp": str(v["timestamp"]),
        "webhook-signature": f"v1,bm90IGl0 {v['signature']}",  # any listed signature may match
    }
    time_machine.move_to(datetime.fromtimestamp(v["timestamp"] + 60, tz=UTC))
    assert snippet["verify"](v["secret"], headers, v["body"]) is True
    assert snippet["verify"](v["secret"], headers, v["body"] + b" ") is False
    assert snippet["verify"](webhooks.new_secret(), headers, v["body"]) is False
    time_machine.move_to(datetime.fromtimestamp(v["timestamp"] + 3600, tz=UTC))
    assert snippet["verify"](v["secret"], headers, v["body"]) is False  # a replay, too late


def test_secrets_are_per_team_and_standard():
    a, b = Team.objects.create(slug="a", name="A"), Team.objects.create(slug="b", name="B")
    assert a.webhook_secret != b.webhook_secret
    for secret in (a.webhook_secret, b.webhook_secret):
        assert secret.startswith("whsec_") and len(webhooks._key(secret)) == 24
    # The migration gives each existing team its own secret, not one shared default.
    migration = importlib.import_module("runs.migrations.0008_callback_deliveries")
    Team.objects.update(webhook_secret="")
    migration.give_each_team_a_secret(apps, None)
    secrets = list(Team.objects.values_list("webhook_secret", flat=True))
    assert len(set(secrets)) == len(secrets) == Team.objects.count() and all(secrets)


# --- the outbox ---------------------------------------------------------------------------------
def test_the_delivery_is_written_in_the_transitions_transaction(team, receiver):
    run = with_callback("t-steps", receiver.url)
    with pytest.raises(RuntimeError), transaction.atomic():
        assert Run.transition(
            run.pk,
            to=RunStatus.PAUSED,
            from_=[RunStatus.QUEUED],
            event="run.paused",
            actor="test",
            data={"reason": "lunch"},
        )
        delivery = CallbackDelivery.objects.get(run=run)  # there, with its event
        assert (delivery.type, delivery.event.kind) == ("run.paused", "run.paused")
        raise RuntimeError("roll back")
    assert not CallbackDelivery.objects.exists()
    assert not Event.objects.filter(run=run, kind="run.paused").exists()
    # One delivery per (callback, event), whoever writes it.
    Run.transition(
        run.pk, to=RunStatus.PAUSED, from_=[RunStatus.QUEUED], event="run.paused", actor="t"
    )
    delivery = CallbackDelivery.objects.get(run=run)
    with pytest.raises(IntegrityError), transaction.atomic():
        CallbackDelivery.objects.create(
            callback=delivery.callback, run=run, event=delivery.event, type="x", body="{}"
        )


def test_a_run_without_a_callback_writes_no_delivery(team, drive):
    run = Run.start("t-steps", {"n": 1}, actor="test")[0]
    assert drive(run.pk).status == RunStatus.SUCCEEDED
    assert not CallbackDelivery.objects.exists()


def test_only_the_id_travels_and_only_after_commit(
    team, receiver, monkeypatch, drive, django_capture_on_commit_callbacks
):
    from agentops.celery import app

    sent: list[tuple[str, list[Any], str]] = []
    monkeypatch.setattr(
        app, "send_task", lambda name, args, queue, **kw: sent.append((name, args, queue))
    )
    run = with_callback("t-steps", receiver.url, {"n": 1})
    with django_capture_on_commit_callbacks() as callbacks:
        drive(run.pk)
    assert not [s for s in sent if s[0] == deliveries.TASK]  # nothing before the commit
    ids = list(CallbackDelivery.objects.order_by("id").values_list("pk", flat=True))
    assert len(ids) == 2
    for callback in callbacks:  # what the commit runs
        callback()
    rung = [(args, queue) for name, args, queue in sent if name == deliveries.TASK]
    assert rung == [([ids[0]], "runs"), ([ids[1]], "runs")]
    for args, _ in rung:
        assert deliver_callback(*args) == "delivered"
    assert receiver.types() == ["run.started", "run.succeeded"]


# --- end to end -------------------------------------------------------------------------------
def test_a_submitted_run_calls_back_at_its_start_and_its_end(api, receiver, drive, settings):
    run_id = submit(api, receiver.url, input={"n": 3})
    assert drive(run_id).status == RunStatus.SUCCEEDED
    assert deliver_due() == ["delivered", "delivered"]
    assert receiver.types() == ["run.started", "run.succeeded"]
    assert all(r.verified for r in receiver.received)
    assert {r.path for r in receiver.received} == {"/hooks/agentops?source=test"}
    events = {e.pk: e.kind for e in Event.objects.filter(run_id=run_id)}
    for r in receiver.received:
        body = r.json
        assert r.id == f"evt_{body['data']['event_id']}"
        assert events[body["data"]["event_id"]] == body["type"]
        assert body["data"]["run_id"] == run_id and body["data"]["workflow"] == "t-steps"
        run_url = f"{settings.AGENTOPS_BASE_URL}/api/v1/runs/{run_id}"
        assert body["data"]["links"] == {"run": run_url, "events": f"{run_url}/events"}
    assert [r.json["data"]["status"] for r in receiver.received] == ["running", "succeeded"]
    assert deliver_due() == []  # nothing more to send


def test_pause_resume_and_wake_ups(api, receiver, drive, time_machine):
    time_machine.move_to(timezone.now())
    run_id = submit(api, receiver.url, workflow="t-sleep", input={"seconds": 600})
    assert drive(run_id).status == RunStatus.WAITING  # a timer: no milestone
    r = api.post(f"/api/v1/runs/{run_id}/pause", {"reason": "change freeze"})
    assert r.status_code == 202, r.content
    assert api.post(f"/api/v1/runs/{run_id}/resume", {}).status_code == 202
    time_machine.shift(timedelta(seconds=601))
    sweeps.wake_due_timers()
    assert drive(run_id).status == RunStatus.SUCCEEDED
    # Resumed and woken are no second start.
    assert types_of(run_id) == ["run.started", "run.paused", "run.succeeded"]
    deliver_due()
    paused = receiver.received[1].json
    assert paused["type"] == "run.paused" and paused["data"]["reason"] == "change freeze"
    assert receiver.types() == ["run.started", "run.paused", "run.succeeded"]


def test_a_run_paused_before_it_started_starts_when_resumed(api, receiver, drive):
    run_id = submit(api, receiver.url)
    assert api.post(f"/api/v1/runs/{run_id}/pause", {}).status_code == 202
    assert api.post(f"/api/v1/runs/{run_id}/resume", {}).status_code == 202
    drive(run_id)
    assert types_of(run_id) == ["run.paused", "run.started", "run.succeeded"]


def test_a_budget_pause_held_by_a_worker(api, receiver, drive):
    run_id = submit(api, receiver.url, "t-spend", budget={"usd": 0.25})
    assert drive(run_id).status == RunStatus.PAUSED  # the engine pauses it mid-run
    assert types_of(run_id) == ["run.started", "run.paused"]
    deliver_due()
    assert receiver.received[1].json["data"]["reason"].startswith("cost budget reached")


def test_waiting_for_a_person(team, other_team, receiver, drive):
    people = make_reviewers(team, other_team)
    run = with_callback("t-approve", receiver.url, user=people.owner)
    assert drive(run.pk).status == RunStatus.WAITING
    from approvals.models import ApprovalRequest

    ApprovalRequest.objects.get(run=run).decide(people.alice, "approve")
    assert drive(run.pk).status == RunStatus.SUCCEEDED
    deliver_due()
    assert receiver.types() == ["run.started", "run.waiting", "run.succeeded"]
    waiting = receiver.received[1].json["data"]
    assert waiting["status"] == "waiting"
    assert waiting["waiting_for"] == {"kind": "approval", "name": "publish"}


def test_failed_cancelled_and_timed_out(api, receiver, drive, time_machine):
    time_machine.move_to(timezone.now())
    failed = submit(api, receiver.url, "t-flaky", input={"fail_times": 1, "kind": "permanent"})
    cancelled = submit(api, receiver.url, "t-wait")
    late = submit(api, receiver.url, "t-sleep", input={"seconds": 3600}, deadline=60)
    assert drive(failed).status == RunStatus.FAILED
    drive(cancelled), drive(late)
    assert api.post(f"/api/v1/runs/{cancelled}/cancel", {}).status_code == 202
    assert drive(cancelled).status == RunStatus.CANCELLED
    time_machine.shift(timedelta(seconds=61))
    sweeps.enforce_deadlines()
    assert drive(late).status == RunStatus.TIMED_OUT
    for run_id, end in ((failed, "failed"), (cancelled, "cancelled"), (late, "timed_out")):
        assert types_of(run_id) == ["run.started", f"run.{end}"]
    deliver_due()
    bodies = {(r.json["data"]["run_id"], r.json["type"]): r.json for r in receiver.received}
    assert len(bodies) == len(receiver.received) == 6
    assert "permanent failure" in bodies[(failed, "run.failed")]["data"]["error"]["message"]
    assert bodies[(late, "run.timed_out")]["data"]["error"]["type"] == "DeadlineExceeded"


# --- retries ------------------------------------------------------------------------------------
def test_down_then_back_each_event_arrives_exactly_once(
    api, receiver, drive, time_machine, settings
):
    time_machine.move_to(timezone.now())
    receiver.down()
    run_id = submit(api, receiver.url, input={"n": 2})
    drive(run_id)
    assert deliver_due() == ["retrying", "retrying"]
    assert deliver_due() == []  # not due again yet
    first = {d.pk: d.next_attempt_at - timezone.now() for d in CallbackDelivery.objects.all()}
    assert all(timedelta(seconds=4) < wait <= timedelta(seconds=5.6) for wait in first.values())
    time_machine.shift(timedelta(seconds=6))
    assert deliver_due() == ["retrying", "retrying"]
    for d in CallbackDelivery.objects.all():  # the wait doubled
        assert d.next_attempt_at - timezone.now() > timedelta(seconds=9)
        assert d.attempts == 2 and d.status == Status.PENDING
    tried = CallbackAttempt.objects.all()
    assert tried.count() == 4 and not any(a.ok or a.permanent or a.status_code for a in tried)
    assert all("Connection" in a.error for a in tried)

    receiver.up()
    time_machine.shift(timedelta(seconds=12))
    assert deliveries.sweep() == []  # due, but their countdown doorbells may still come
    time_machine.shift(timedelta(seconds=float(settings.AGENTOPS_ORPHAN_SECONDS)))
    rung = deliveries.sweep()  # they did not: ring again
    assert sorted(rung) == sorted(first)
    assert [deliver_callback(i) for i in rung] == ["delivered", "delivered"]
    time_machine.shift(timedelta(hours=2))
    assert deliveries.sweep() == [] and deliver_due() == []
    counts = receiver.by_id()
    assert sorted(receiver.types()) == ["run.started", "run.succeeded"]
    assert set(counts.values()) == {1} and all(r.verified for r in receiver.received)
    assert {d.status for d in CallbackDelivery.objects.all()} == {Status.DELIVERED}


def test_a_redelivery_keeps_the_webhook_id(team, receiver, drive):
    run = with_callback("t-steps", receiver.url, {"n": 1})
    drive(run.pk)
    deliver_due()
    done = CallbackDelivery.objects.get(run=run, type="run.succeeded")
    assert CallbackDelivery.redeliver([done.pk], actor="admin:root") == 1
    assert deliver_due() == ["delivered"]
    assert receiver.by_id()[done.message_id] == 2  # the receiver sees the duplicate by its id
    assert Event.objects.filter(run=run, kind="callback.redelivery", actor="admin:root").exists()


def test_400_is_permanent(team, receiver, drive, time_machine):
    time_machine.move_to(timezone.now())
    run = with_callback("t-steps", receiver.url, {"n": 1})
    receiver.answer(400, times=2, body=b'{"error": "no such run here"}')
    drive(run.pk)
    assert deliver_due() == ["failed", "failed"]
    attempt = CallbackAttempt.objects.first()
    assert (attempt.status_code, attempt.permanent, attempt.ok) == (400, True, False)
    assert attempt.response_excerpt == '{"error": "no such run here"}'
    gave_up = Event.objects.filter(run=run, kind="callback.gave_up")
    assert gave_up.count() == 2 and gave_up[0].data["permanent"] is True
    time_machine.shift(timedelta(days=1))
    assert deliveries.sweep() == [] and deliver_due() == []
    assert len(receiver.received) == 2


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
def test_408_429_and_5xx_are_retried(team, receiver, status):
    run = with_callback("t-steps", receiver.url)
    receiver.answer(status)
    Run.transition(
        run.pk, to=RunStatus.PAUSED, from_=[RunStatus.QUEUED], event="run.paused", actor="t"
    )
    assert deliver_due() == ["retrying"]
    delivery = CallbackDelivery.objects.get()
    assert delivery.status == Status.PENDING and delivery.last_status_code == status
    assert delivery.next_attempt_at > timezone.now()


@pytest.mark.parametrize(
    ("status", "retry_after", "low", "high"),
    [(429, "120", 120, 121), (503, "86400", 3600, 3601), (500, "600", 4, 6)],
)
def test_retry_after_is_honoured_within_reason(team, receiver, status, retry_after, low, high):
    run = with_callback("t-steps", receiver.url)
    receiver.answer(status, headers={"Retry-After": retry_after})
    Run.transition(
        run.pk, to=RunStatus.PAUSED, from_=[RunStatus.QUEUED], event="run.paused", actor="t"
    )
    before = timezone.now()
    deliver_due()
    wait = (CallbackDelivery.objects.get().next_attempt_at - before).total_seconds()
    assert low <= wait <= high  # a 500's Retry-After is not a request to wait


def test_http_date_retry_after():
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert webhooks.parse_retry_after("Tue, 24 Nov 2026 12:02:00 GMT", now=now) == 120
    assert webhooks.parse_retry_after("soon", now=now) is None


def test_max_attempts_gives_up(team, receiver, time_machine, settings):
    settings.AGENTOPS_CALLBACK_MAX_ATTEMPTS = 3
    time_machine.move_to(timezone.now())
    run = with_callback("t-steps", receiver.url)
    receiver.answer(500, times=5)
    Run.transition(
        run.pk, to=RunStatus.PAUSED, from_=[RunStatus.QUEUED], event="run.paused", actor="t"
    )
    outcomes = []
    for _ in range(5):
        outcomes += deliver_due()
        time_machine.shift(timedelta(hours=2))
    assert outcomes == ["retrying", "retrying", "failed"]
    delivery = CallbackDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == (
        Status.FAILED,
        3,
        None,
    )
    assert list(delivery.tries.order_by("number").values_list("number", "status_code")) == [
        (1, 500),
        (2, 500),
        (3, 500),
    ]
    assert set(receiver.by_id().values()) == {3}  # one webhook-id, three tries
    gave_up = Event.objects.get(run=run, kind="callback.gave_up")
    assert gave_up.data["attempts"] == 3 and gave_up.data["permanent"] is False


def test_redirects_are_not_followed(team, receiver):
    run = with_callback("t-steps", receiver.url)
    receiver.answer(302, headers={"Location": "http://127.0.0.1:9/elsewhere"})
    Run.transition(
        run.pk, to=RunStatus.PAUSED, from_=[RunStatus.QUEUED], event="run.paused", actor="t"
    )
    assert deliver_due() == ["retrying"]
    assert "redirects are not followed" in CallbackDelivery.objects.get().last_error
    assert len(receiver.received) == 1


def test_a_receiver_dripping_its_answer_is_cut_off_and_retried(team, settings, monkeypatch):
    settings.AGENTOPS_ALLOW_PRIVATE_CALLBACKS = True
    monkeypatch.setattr(webhooks, "DEADLINE", 1.0)
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drip() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.wait(0.2):  # a header line now and then, never the end
                try:
                    conn.sendall(b"X-Still-Thinking: yes\r\n")
                except OSError:
                    return

    threading.Thread(target=drip, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.getsockname()[1]}/"
        result = webhooks.send(url, b"{}", secret=team.webhook_secret, message_id="evt_1")
    finally:
        stop.set()
        server.close()
    assert not result.ok and not result.permanent and result.status_code is None
    assert "no complete answer within 1 s" in result.error
    assert 900 <= result.duration_ms < 5000


# --- the destination at delivery time ----------------------------------------------------------
@pytest.fixture
def dns(monkeypatch: Any) -> dict[str, str]:
    """Answers for ``hooks.example.test``, changeable mid-test (DNS is the network's edge)."""
    answers = {"hooks.example.test": "127.0.0.1"}
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: Any, *args: Any, **kw: Any) -> Any:
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]
        return real(host, port, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


def test_the_address_is_checked_again_and_pinned(api, receiver, dns, drive):
    url = f"http://hooks.example.test:{receiver.port}/cb"
    run_id = submit(api, url, input={"n": 1})  # checked at submit: 127.0.0.1 (allowed here)
    drive(run_id)
    started, ended = CallbackDelivery.objects.order_by("id")
    assert deliveries.deliver(started.pk) == "delivered"
    # The connection went to the checked address, under the URL's own name.
    assert receiver.received[0].host == f"hooks.example.test:{receiver.port}"
    dns["hooks.example.test"] = "169.254.169.254"  # the name now points at a metadata service
    assert deliveries.deliver(ended.pk) == "failed"
    ended.refresh_from_db()
    attempt = ended.tries.get()
    assert ended.status == Status.FAILED and attempt.permanent and attempt.status_code is None
    assert "169.254.169.254" in attempt.error and "link-local" in attempt.error
    assert len(receiver.received) == 1


def test_private_addresses_are_refused_unless_allowed(team, receiver, settings):
    run = with_callback("t-steps", receiver.url)
    settings.AGENTOPS_ALLOW_PRIVATE_CALLBACKS = False
    Run.transition(
        run.pk, to=RunStatus.PAUSED, from_=[RunStatus.QUEUED], event="run.paused", actor="t"
    )
    assert deliver_due() == ["failed"]
    assert "loopback" in CallbackDelivery.objects.get().last_error
    assert receiver.received == []


# --- one worker at a time -----------------------------------------------------------------------
def test_a_second_worker_does_not_send_a_claimed_delivery(team, receiver):
    run = with_callback("t-steps", receiver.url)
    Run.transition(
        run.pk, to=RunStatus.PAUSED, from_=[RunStatus.QUEUED], event="run.paused", actor="t"
    )
    delivery = CallbackDelivery.objects.get()
    assert CallbackDelivery.claim(delivery.pk, "worker-a", now=timezone.now()) == 1
    assert deliveries.deliver(delivery.pk) == "skipped"
    assert deliveries.sweep() == []  # held: not due until the claim lapses
    assert receiver.received == []


def test_a_claim_whose_worker_died_is_rung_again(team, receiver, time_machine):
    time_machine.move_to(timezone.now())
    run = with_callback("t-steps", receiver.url)
    Run.transition(
        run.pk, to=RunStatus.PAUSED, from_=[RunStatus.QUEUED], event="run.paused", actor="t"
    )
    delivery = CallbackDelivery.objects.get()
    CallbackDelivery.claim(delivery.pk, "died-mid-send", now=timezone.now())
    time_machine.shift(deliveries.LEASE + timedelta(seconds=1))
    assert deliveries.sweep() == [delivery.pk]
    assert deliveries.sweep() == []  # rung just now: not again at once
    assert deliver_callback(delivery.pk) == "delivered"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.tries.count()) == (Status.DELIVERED, 2, 1)


def test_a_lost_doorbell_is_rung_by_the_sweep(team, receiver, time_machine, settings):
    time_machine.move_to(timezone.now())
    run = with_callback("t-steps", receiver.url)
    Run.transition(
        run.pk, to=RunStatus.PAUSED, from_=[RunStatus.QUEUED], event="run.paused", actor="t"
    )
    assert sweep_callbacks() == 0  # its doorbell may still be on its way
    time_machine.shift(timedelta(seconds=float(settings.AGENTOPS_ORPHAN_SECONDS) + 1))
    assert deliveries.sweep() == [CallbackDelivery.objects.get().pk]


@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_send_once(team, receiver):
    run = with_callback("t-steps", receiver.url)
    Run.transition(
        run.pk, to=RunStatus.PAUSED, from_=[RunStatus.QUEUED], event="run.paused", actor="t"
    )
    delivery = CallbackDelivery.objects.get()
    receiver.hold()
    first, first_out = in_thread(deliveries.deliver, delivery.pk)
    assert receiver.arrived.wait(timeout=30)  # the first worker's POST is in flight
    second, second_out = in_thread(deliveries.deliver, delivery.pk)
    second.join(timeout=30)
    receiver.release.set()
    first.join(timeout=30)
    assert (first_out, second_out) == (["delivered"], ["skipped"])
    assert len(receiver.received) == 1 and CallbackAttempt.objects.count() == 1


def test_the_post_never_runs_inside_a_transaction(team, receiver):
    run = with_callback("t-steps", receiver.url)
    Run.transition(
        run.pk, to=RunStatus.PAUSED, from_=[RunStatus.QUEUED], event="run.paused", actor="t"
    )
    with transaction.atomic(), pytest.raises(RuntimeError, match="durable"):
        deliveries.deliver(CallbackDelivery.objects.get().pk)
    assert receiver.received == []


def test_the_sweep_reads_its_partial_index(team):
    with connection.cursor() as cur:
        if connection.vendor == "postgresql":
            cur.execute("SET LOCAL enable_seqscan = off")
    plan = deliveries.due(timezone.now()).explain()
    assert "callback_due" in plan, plan


def test_the_sweep_is_registered_for_beat(db):
    from django_celery_beat.models import PeriodicTask

    from runs.sweeps_schedule import SWEEPS, install

    assert "runs.sweep_callbacks" in [task for _, task, _ in SWEEPS]
    PeriodicTask.objects.filter(task="runs.sweep_callbacks").delete()
    install()  # what the migration runs
    task = PeriodicTask.objects.get(task="runs.sweep_callbacks")
    assert task.queue == "sweeps" and task.enabled
