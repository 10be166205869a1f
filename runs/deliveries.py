"""Run callbacks: each milestone of a run submitted with a ``callback_url`` is POSTed there,
signed with its team's secret (runs/webhooks.py does the signing and the sending).

Milestones: the start (the first transition to running), waiting for a person (an approval),
paused, and the terminal state. Invariants:
- outbox: a delivery row is written in the transaction that records the milestone's event
  (``Run.transition`` calls ``CallbackDelivery.record``), so a transition that rolls back
  leaves no delivery and one that commits always has one; a unique constraint makes it one
  delivery per (callback, event), and ``webhook-id`` is the event's, so receivers deduplicate;
- the body is fixed when the row is written: every attempt sends the same bytes;
- the broker is a doorbell: the task gets only the delivery's id, rung from on_commit; the
  beat sweep rings again for due deliveries that nobody rang recently (a lost message, a retry
  whose backoff was too long for a Celery countdown, a worker that died mid-send);
- at most one worker sends a delivery at a time: it claims the row with one conditional UPDATE
  that also moves ``next_attempt_at`` past its lease, so the row is due again only if that
  worker dies; it writes the outcome only while it still holds the claim;
- the POST happens outside any transaction (``deliver`` refuses to run inside one);
- every attempt is a ``CallbackAttempt`` row. A failure is retried with exponential backoff
  and jitter (longer if the receiver asked with ``Retry-After``) up to
  ``AGENTOPS_CALLBACK_MAX_ATTEMPTS``; a permanent failure (a 4xx other than 408/429, a refused
  address) or the last attempt gives up, recorded on the run as ``callback.gave_up``. An admin
  may redeliver.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from runs import webhooks
from runs.audit import Event
from runs.redact import redact_text

if TYPE_CHECKING:
    from runs.webhooks import Result

__all__ = ["CallbackAttempt", "CallbackDelivery", "deliver", "due", "sweep"]

log = logging.getLogger(__name__)

#: A claim lasts this long: well past a POST's own deadline (``webhooks.DEADLINE``).
LEASE = timedelta(seconds=120)
#: Backoff after failed attempt n: ``INITIAL * 2**(n-1)`` seconds, at most ``MAXIMUM``, plus up
#: to a tenth more at random so that retries after an outage spread out.
INITIAL = 5.0
MAXIMUM = 3600.0
#: A ``Retry-After`` is honoured up to this long; a longer one waits this long.
RETRY_AFTER_CAP = 3600.0
BATCH = 500
TASK = "runs.deliver_callback"


def max_attempts() -> int:
    return int(getattr(settings, "AGENTOPS_CALLBACK_MAX_ATTEMPTS", 15))


def backoff(attempt: int, *, retry_after: float | None = None) -> float:
    """Seconds to wait after failed attempt ``attempt`` (tenacity's math, as the engine's)."""
    from runs.workflow import RetryPolicy

    wait = RetryPolicy(initial=INITIAL, maximum=MAXIMUM, jitter=0).delay(attempt)
    wait += random.uniform(0, wait / 10)
    if retry_after is not None:
        wait = max(wait, min(retry_after, RETRY_AFTER_CAP))
    return wait


def milestone(to: str, *, event: str, wait_kind: str = "") -> str:
    """The callback type a transition to ``to`` announces ("" if none). ``run.started`` is a
    candidate only: it is sent for the first transition to running, not for wake-ups."""
    from runs.models import TERMINAL, RunStatus, WaitKind

    if to in TERMINAL:
        return f"run.{to}"
    if to == RunStatus.PAUSED:
        return "run.paused"
    if to == RunStatus.WAITING and wait_kind == WaitKind.APPROVAL:
        return "run.waiting"
    if to == RunStatus.RUNNING and event != "run.stopping":  # a stop is not a start
        return "run.started"
    return ""


class CallbackDelivery(models.Model):
    """One milestone event for one run's callback URL, until it is delivered or given up."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Gave up"

    callback = models.ForeignKey(
        "runs.RunCallback", on_delete=models.CASCADE, related_name="deliveries"
    )
    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="+")
    event = models.ForeignKey("runs.Event", on_delete=models.PROTECT, related_name="+")
    type = models.CharField(max_length=64)
    body = models.TextField(help_text="The JSON sent, byte for byte, by every attempt.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="When it is due; empty once delivered or given up."
    )
    rung_at = models.DateTimeField(
        null=True, blank=True, help_text="When a worker was last asked to send it."
    )
    lease_owner = models.CharField(max_length=120, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["callback", "event"], name="callback_delivery_once")
        ]
        indexes = [
            # The sweep's query: due rows only (delivered and given-up ones have no due time).
            models.Index(
                fields=["next_attempt_at"],
                name="callback_due",
                condition=Q(next_attempt_at__isnull=False),
            )
        ]
        ordering = ["-created_at", "-id"]
        verbose_name = "callback delivery"
        verbose_name_plural = "callback deliveries"

    def __str__(self) -> str:
        return f"{self.type} for {self.run_id} ({self.status})"

    @property
    def message_id(self) -> str:
        """``webhook-id``: the event's, the same on every attempt and redelivery."""
        return f"evt_{self.event_id}"

    # --- the outbox ---------------------------------------------------------------------------
    @classmethod
    def record(
        cls, callback_id: int, *, event: Event, to: str, fields: dict[str, Any]
    ) -> CallbackDelivery | None:
        """In the transition's transaction: the delivery of ``event`` if it is a milestone."""
        kind = milestone(to, event=event.kind, wait_kind=fields.get("wait_kind", ""))
        if not kind:
            return None
        # The caller holds the run's row lock, so two transitions cannot both be "first".
        if (
            kind == "run.started"
            and cls.objects.filter(callback_id=callback_id, type=kind).exists()
        ):
            return None
        from runs.models import Run

        workflow = Run.objects.filter(pk=event.run_id).values_list("workflow", flat=True)[0]
        now = timezone.now()
        delivery = cls.objects.create(
            callback_id=callback_id,
            run_id=event.run_id,
            event=event,
            type=kind,
            body=_body(kind, event, to=to, workflow=workflow),
            next_attempt_at=now,
            rung_at=now,
            created_at=now,
        )
        delivery.ring()
        return delivery

    def ring(self, *, countdown: float | None = None) -> None:
        """After commit, ask a worker to send this delivery (only its id travels)."""
        delivery_id = self.pk

        def send_task() -> None:
            from agentops.celery import app

            try:
                app.send_task(TASK, args=[delivery_id], countdown=countdown, queue="runs")
            except Exception:  # the broker is down: the sweep rings again
                log.warning("could not ring for callback delivery %s", delivery_id, exc_info=True)

        transaction.on_commit(send_task)

    # --- sending ------------------------------------------------------------------------------
    @classmethod
    def claim(cls, delivery_id: int, token: str, *, now: datetime) -> int | None:
        """Take the delivery if it is due and nobody holds it; returns the attempt number."""
        taken = cls.objects.filter(
            pk=delivery_id, status=cls.Status.PENDING, next_attempt_at__lte=now
        ).update(
            next_attempt_at=now + LEASE,
            lease_owner=token,
            rung_at=None,
            attempts=F("attempts") + 1,
        )
        if not taken:
            return None
        return cls.objects.filter(pk=delivery_id).values_list("attempts", flat=True)[0]

    def settle(self, result: Result, *, token: str, attempt: int, started: datetime) -> str:
        """Keep the attempt, then deliver, retry or give up, if this worker still holds it."""
        now = timezone.now()
        final = result.permanent or attempt >= max_attempts()
        error = redact_text(result.error)[:2000]
        with transaction.atomic():
            CallbackAttempt.objects.create(
                delivery=self,
                number=attempt,
                at=started,
                duration_ms=result.duration_ms,
                ok=result.ok,
                permanent=result.permanent,
                status_code=result.status_code,
                error=error,
                response_excerpt=redact_text(result.excerpt)[: webhooks.EXCERPT_CHARS],
                worker=f"{socket.gethostname()}:{os.getpid()}"[:120],
            )
            mine = type(self).objects.filter(pk=self.pk, lease_owner=token)
            common = {"lease_owner": "", "last_status_code": result.status_code}
            if result.ok:
                held = mine.update(
                    status=self.Status.DELIVERED,
                    delivered_at=now,
                    next_attempt_at=None,
                    last_error="",
                    **common,
                )
                return "delivered" if held else "lost-claim"
            if final:
                held = mine.update(
                    status=self.Status.FAILED, next_attempt_at=None, last_error=error, **common
                )
                if held:
                    Event.append(
                        "callback.gave_up",
                        run_id=self.run_id,
                        team_id=self.event.team_id,
                        actor="system:callbacks",
                        data={
                            "delivery": self.pk,
                            "type": self.type,
                            "attempts": attempt,
                            "permanent": result.permanent,
                            "error": error[:500],
                        },
                    )
                return "failed" if held else "lost-claim"
            delay = backoff(attempt, retry_after=result.retry_after)
            due_at = now + timedelta(seconds=delay)
            # A short wait also gets a Celery countdown; a long one is left to the sweep (a long
            # ETA on Redis is redelivered after its visibility timeout).
            short = delay <= float(settings.AGENTOPS_SHORT_TIMER_SECONDS)
            held = mine.update(
                next_attempt_at=due_at,
                rung_at=due_at if short else None,
                last_error=error,
                **common,
            )
            if held and short:
                self.ring(countdown=delay)
            return "retrying" if held else "lost-claim"

    # --- operators ----------------------------------------------------------------------------
    @classmethod
    def redeliver(cls, ids: Iterable[int], *, actor: str, actor_user_id: int | None = None) -> int:
        """Send the deliveries again now, with a fresh count of attempts and the same
        ``webhook-id`` (receivers that saw it already ignore it). One a worker is sending right
        now is left alone. Each is recorded on its run as ``callback.redelivery``."""
        now = timezone.now()
        done = 0
        with transaction.atomic():
            rows = list(
                cls.objects.select_for_update()
                .filter(pk__in=list(ids))
                .filter(Q(lease_owner="") | Q(next_attempt_at__lt=now))
                .select_related("event")
            )
            for delivery in rows:
                cls.objects.filter(pk=delivery.pk).update(
                    status=cls.Status.PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    rung_at=now,
                    lease_owner="",
                    last_error=f"redelivery asked by {actor}"[:2000],
                )
                Event.append(
                    "callback.redelivery",
                    run_id=delivery.run_id,
                    team_id=delivery.event.team_id,
                    actor=actor,
                    actor_user_id=actor_user_id,
                    data={"delivery": delivery.pk, "type": delivery.type},
                )
                delivery.ring()
                done += 1
        return done


class CallbackAttempt(models.Model):
    """One POST of a delivery: when, how long, what came back (a short excerpt at most)."""

    delivery = models.ForeignKey(CallbackDelivery, on_delete=models.CASCADE, related_name="tries")
    number = models.PositiveIntegerField()
    at = models.DateTimeField()
    duration_ms = models.FloatField(default=0)
    ok = models.BooleanField(default=False)
    permanent = models.BooleanField(default=False)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    response_excerpt = models.TextField(blank=True)
    worker = models.CharField(max_length=120, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = "callback attempt"

    def __str__(self) -> str:
        outcome = "ok" if self.ok else (self.error[:60] or self.status_code)
        return f"attempt {self.number} of {self.delivery_id}: {outcome}"


def _body(kind: str, event: Event, *, to: str, workflow: str) -> str:
    from django.urls import reverse

    run_url = f"{settings.AGENTOPS_BASE_URL.rstrip('/')}{reverse('api-v1:api-root')}runs/"
    run_url += str(event.run_id)
    data: dict[str, Any] = {
        "run_id": str(event.run_id),
        "workflow": workflow,
        "status": to,
        "event_id": event.pk,
    }
    extra = event.data  # already redacted when the event was written
    if kind == "run.paused" and extra.get("reason"):
        data["reason"] = extra["reason"]
    if kind == "run.waiting":
        data["waiting_for"] = {"kind": "approval", "name": extra.get("for")}
    if extra.get("error"):
        data["error"] = extra["error"]
    data["links"] = {"run": run_url, "events": f"{run_url}/events"}
    payload = {"type": kind, "timestamp": event.created_at, "data": data}
    return json.dumps(payload, cls=DjangoJSONEncoder, separators=(",", ":"))


# --- the worker's side ----------------------------------------------------------------------------
def deliver(delivery_id: int) -> str:
    """Send delivery ``delivery_id`` if it is due and nobody else is; returns what happened."""
    token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    now = timezone.now()
    # Durable: this refuses to run inside a caller's transaction, so the POST below never
    # holds one open (Django's test cases excepted).
    with transaction.atomic(durable=True):
        attempt = CallbackDelivery.claim(delivery_id, token, now=now)
    if attempt is None:
        return "skipped"
    delivery = CallbackDelivery.objects.select_related("callback", "run__team", "event").get(
        pk=delivery_id
    )
    try:
        result = webhooks.send(
            delivery.callback.url,
            delivery.body.encode(),
            secret=delivery.run.team.webhook_secret,
            message_id=delivery.message_id,
        )
    except Exception as exc:  # a bug here must not leave the row claimed until the lease ends
        log.exception("callback delivery %s", delivery_id)
        result = webhooks.Result(ok=False, error=f"{type(exc).__name__}: {exc}")
    return delivery.settle(result, token=token, attempt=attempt, started=now)


def due(now: datetime) -> QuerySet[CallbackDelivery]:
    """Deliveries due now, on the ``callback_due`` partial index."""
    return CallbackDelivery.objects.filter(next_attempt_at__lte=now).order_by("next_attempt_at")


def sweep(*, now: datetime | None = None) -> list[int]:
    """Ring for due deliveries nobody rang within ``AGENTOPS_ORPHAN_SECONDS``: a lost doorbell,
    a retry too far off for a countdown, a claim whose worker died. Returns the ids rung."""
    now = now or timezone.now()
    again = now - timedelta(seconds=float(settings.AGENTOPS_ORPHAN_SECONDS))
    rung: list[int] = []
    for delivery_id, rung_at in due(now).values_list("pk", "rung_at")[:BATCH]:
        if rung_at is not None and rung_at > again:
            continue
        with transaction.atomic():
            if (
                CallbackDelivery.objects.filter(pk=delivery_id, next_attempt_at__lte=now)
                .filter(Q(rung_at__isnull=True) | Q(rung_at__lte=again))
                .update(rung_at=now)
            ):
                CallbackDelivery(pk=delivery_id).ring()
                rung.append(delivery_id)
    return rung
