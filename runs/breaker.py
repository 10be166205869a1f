"""Circuit breakers, one row per external service, shared by every worker.

closed --(threshold consecutive retryable failures)--> open --(cooldown)--> half_open
half_open --(trial succeeds)--> closed; half_open --(trial fails)--> open again.
While open, a step that names the service runs its fallback, or parks its run until the
circuit is due (a durable timer), so no attempts are burned against a service that is down.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from runs.audit import Event
from runs.models import CircuitBreaker

State = CircuitBreaker.State
#: How long a run parks when another worker's trial call is in flight on a half-open circuit.
HALF_OPEN_PARK = timedelta(seconds=5)
#: A trial call that neither succeeded nor failed within this time (its worker died) lets
#: the next caller try again.
TRIAL_TIMEOUT = timedelta(seconds=60)


def blocked_until(service: str) -> datetime | None:
    """None when a call may go ahead; else when the circuit should be asked again."""
    now = timezone.now()
    row = CircuitBreaker.objects.filter(service=service).values("state", "opened_until").first()
    if row is None or row["state"] == State.CLOSED:
        return None
    if row["opened_until"] and row["opened_until"] > now:
        # Open and cooling down, or half-open with a trial call in flight.
        return row["opened_until"] if row["state"] == State.OPEN else now + HALF_OPEN_PARK
    # Due (or the last trial was abandoned): exactly one caller wins the next trial call;
    # ``opened_until`` then bounds how long the others wait for it.
    claimed = CircuitBreaker.objects.filter(
        service=service, state__in=[State.OPEN, State.HALF_OPEN], opened_until__lte=now
    ).update(state=State.HALF_OPEN, opened_until=now + TRIAL_TIMEOUT)
    if claimed:
        return None
    return now + HALF_OPEN_PARK


def record_success(service: str) -> None:
    # Conditional so that a healthy service costs no write per call.
    changed = CircuitBreaker.objects.filter(
        Q(service=service) & (~Q(state=State.CLOSED) | Q(consecutive_failures__gt=0))
    ).update(state=State.CLOSED, consecutive_failures=0, opened_until=None)
    if changed:
        with transaction.atomic():
            Event.append(
                "circuit.closed",
                actor="system:breaker",
                chain=f"circuit:{service}",
                data={"service": service},
            )


def record_failure(service: str, *, retrying: bool) -> bool:
    """Count a retryable failure; returns True when this failure opened the circuit."""
    now = timezone.now()
    with transaction.atomic():
        CircuitBreaker.objects.get_or_create(service=service)
        CircuitBreaker.objects.filter(service=service).update(
            consecutive_failures=F("consecutive_failures") + 1,
            total_failures=F("total_failures") + 1,
            total_retries=F("total_retries") + (1 if retrying else 0),
        )
        row = CircuitBreaker.objects.get(service=service)
        if row.state == State.OPEN:
            return False
        if row.state == State.HALF_OPEN or row.consecutive_failures >= row.failure_threshold:
            until = now + timedelta(seconds=row.cooldown_seconds)
            CircuitBreaker.objects.filter(service=service).update(
                state=State.OPEN, opened_until=until
            )
            Event.append(
                "circuit.opened",
                actor="system:breaker",
                chain=f"circuit:{service}",
                data={
                    "service": service,
                    "failures": row.consecutive_failures,
                    "until": until.isoformat(),
                },
            )
            return True
    return False
