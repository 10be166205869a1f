"""The append-only event log: the audit trail, the outbox and the SSE continuation token.

Invariants:
- an event is never updated or deleted (``Event.save``/``delete`` and the queryset refuse;
  on PostgreSQL a trigger refuses too, so raw SQL cannot either);
- each event carries the hash of its predecessor in its chain. There is one chain per run, so
  unrelated runs never serialise on one lock; events outside runs go to one chain per team
  (``team:<slug>``) or the global ``ops`` chain;
- ``verify_chains`` recomputes every chain and names the first broken link.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from runs.exceptions import AuditImmutable
from runs.redact import redact

if TYPE_CHECKING:
    from runs.models import Run, Team

GENESIS = "0" * 64


def normalise(value: Any) -> Any:
    """Numbers as PostgreSQL's jsonb gives them back: an integral float that JSON writes with
    an exponent (``1e+16``) returns as an int, and ``-0.0`` as ``0.0``."""
    if isinstance(value, float):
        if value == 0:
            return 0.0
        if value.is_integer() and "e" in repr(value):
            return int(value)
        return value
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


def canonical(value: Any) -> Any:
    """The value as it will read back from a JSON column (so hashes survive a round trip)."""
    return normalise(json.loads(json.dumps(value, cls=DjangoJSONEncoder)))


def digest(
    prev: str, chain: str, seq: int, kind: str, actor: str, run_id: str, data: Any, created_at: str
) -> str:
    body = json.dumps(
        [prev, chain, seq, kind, actor, run_id, data, created_at],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(body.encode()).hexdigest()


class EventQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> int:
        raise AuditImmutable("events are append-only: they cannot be updated")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AuditImmutable("events are append-only: they cannot be deleted")


class Event(models.Model):
    """One fact: a transition, a step, an attempt, a spend, a decision or an operator action."""

    id = models.BigAutoField(primary_key=True)
    run = models.ForeignKey(
        "runs.Run", null=True, blank=True, on_delete=models.PROTECT, related_name="events"
    )
    team = models.ForeignKey(
        "runs.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    chain = models.CharField(max_length=64)
    chain_seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=64, db_index=True)
    actor = models.CharField(max_length=200)
    actor_user_id = models.BigIntegerField(null=True, blank=True)
    data = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField()
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    objects = EventQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["chain", "chain_seq"], name="event_chain_seq_unique")
        ]
        indexes = [models.Index(fields=["run", "id"], name="event_run_id")]
        ordering = ["id"]

    def __str__(self) -> str:
        return f"#{self.id} {self.kind} by {self.actor}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AuditImmutable("events are append-only: they cannot be updated")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise AuditImmutable("events are append-only: they cannot be deleted")

    def compute_hash(self) -> str:
        return digest(
            self.prev_hash,
            self.chain,
            self.chain_seq,
            self.kind,
            self.actor,
            str(self.run_id or ""),
            self.data,
            self.created_at.isoformat(),
        )

    @classmethod
    def append(
        cls,
        kind: str,
        *,
        actor: str,
        run: Run | None = None,
        run_id: Any = None,
        team: Team | None = None,
        team_id: int | None = None,
        data: dict[str, Any] | None = None,
        actor_user_id: int | None = None,
        chain: str | None = None,
        locked: bool = False,
    ) -> Event:
        """Append an event to its chain, inside the caller's transaction.

        ``locked=True`` says the caller already holds the run's row lock (it updated the run in
        this transaction), so no other writer can append to this run's chain concurrently and
        the savepoint-and-retry below is not needed.
        """
        if run is not None:
            run_id, team_id = run.pk, run.team_id
        if team is not None:
            team_id = team.pk
        if chain is None:
            chain = str(run_id) if run_id else "ops"
        payload = canonical(redact(data or {}))
        for _ in range(20):
            last = (
                cls.objects.filter(chain=chain)
                .order_by("-chain_seq")
                .values_list("chain_seq", "hash")
                .first()
            )
            seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
            event = cls(
                run_id=run_id,
                team_id=team_id,
                chain=chain,
                chain_seq=seq,
                kind=kind,
                actor=actor[:200],
                actor_user_id=actor_user_id,
                data=payload,
                created_at=timezone.now(),
                prev_hash=prev,
            )
            event.hash = event.compute_hash()
            if locked:
                event.save(force_insert=True)
                _announce(event)
                return event
            try:
                with transaction.atomic():
                    event.save(force_insert=True)
                _announce(event)
                return event
            except IntegrityError:
                continue  # another writer appended to this chain first: read the head again
        raise RuntimeError(f"could not append to audit chain {chain!r}: too much contention")


def _announce(event: Event) -> None:
    """Open pages of the run show every event (a signal, a budget raise, a stop requested of
    a held run) once it commits; pushes are throttled per run, so this costs little."""
    if event.run_id is not None:
        from runs.live import publish_run_changed

        publish_run_changed(event.run_id, team_id=event.team_id)


@dataclass(frozen=True)
class ChainReport:
    chain: str
    events: int
    broken_at: int | None  # event id of the first broken link
    reason: str = ""


def verify_chain(chain: str) -> ChainReport:
    prev, expected_seq, count = GENESIS, 1, 0
    for event in Event.objects.filter(chain=chain).order_by("chain_seq").iterator(2000):
        count += 1
        if event.chain_seq != expected_seq:
            return ChainReport(
                chain,
                count,
                event.id,
                f"sequence gap: expected {expected_seq}, found {event.chain_seq}",
            )
        if event.prev_hash != prev:
            return ChainReport(chain, count, event.id, "prev_hash does not match the predecessor")
        if event.compute_hash() != event.hash:
            return ChainReport(chain, count, event.id, "content does not match its hash")
        prev, expected_seq = event.hash, expected_seq + 1
    return ChainReport(chain, count, None)


def verify_chains() -> Iterator[ChainReport]:
    chains = Event.objects.order_by().values_list("chain", flat=True).distinct()
    for chain in chains.iterator():
        yield verify_chain(chain)
