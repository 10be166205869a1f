"""A realistic console dataset on PostgreSQL: teams, owners, runs, steps and audit events.

The rows are written with ``COPY`` (psycopg), in batches, because the supported path
(``Run.start`` and a worker) makes about a hundred runs a second on two cores and the console
benchmark needs a hundred thousand. They are what the engine would have written: every run
has a ``run.created`` event, started runs a ``run.started`` one, one ``step.completed`` event
per checkpoint and an event for their last transition, and the events of each run form a
valid hash chain (``runs.audit.digest`` over ``canonical`` data, as ``Event.append`` does),
so ``verify_audit`` accepts them.

The mix: 3 teams of different sizes, 30 owners, the registered workflows, every status with
the waiting kinds, budgets of which about one run in nine is past 80 %, progress, results
and errors, spread over 30 days (active runs over the last two).
"""

from __future__ import annotations

import json
import random
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

TEAMS = [("alpha", "Alpha", 0.5), ("beta", "Beta", 0.3), ("gamma", "Gamma", 0.2)]
OWNERS_PER_TEAM = 10
#: The console's bench users: ``lead-NN`` (operator in every team) and ``admin-NN``
#: (superusers, for Django admin); each client signs in as its own user.
LEAD = "lead-{:02d}"
ADMIN = "admin-{:02d}"
WORKFLOWS = [
    ("digest", 0.35),
    ("flaky-service", 0.25),
    ("nap", 0.15),
    ("bench-noop", 0.15),
    ("bench-sleep", 0.10),
]
STATUSES = [
    ("succeeded", 0.60),
    ("failed", 0.09),
    ("cancelled", 0.04),
    ("timed_out", 0.02),
    ("running", 0.08),
    ("waiting", 0.11),
    ("paused", 0.03),
    ("queued", 0.03),
]
WAIT_KINDS = [("timer", 0.35), ("event", 0.2), ("retry", 0.2), ("approval", 0.2), ("circuit", 0.05)]
TERMINAL_EVENT = {
    "succeeded": "run.succeeded",
    "failed": "run.failed",
    "cancelled": "run.changed",
    "timed_out": "run.changed",
    "waiting": "run.waiting",
    "paused": "run.paused",
}
WORDS = "invoice churn quarterly vendor audit refund latency summary backlog cohort".split()
BATCH = 5000


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _pick(rng: random.Random, table: list[tuple[str, float]]) -> str:
    return rng.choices([k for k, _ in table], weights=[w for _, w in table])[0]


def ensure_people(*, clients: int) -> dict[str, Any]:
    """Teams, owners and the bench users (idempotent); returns what the runs refer to."""
    from django.contrib.auth.models import User

    from runs.models import Membership, Team

    teams = {}
    for slug, name, _ in TEAMS:
        teams[slug], _ = Team.objects.get_or_create(slug=slug, defaults={"name": name})
    owners: dict[str, list[tuple[int, str]]] = {}
    for slug, team in teams.items():
        ids = []
        for i in range(OWNERS_PER_TEAM):
            user, created = User.objects.get_or_create(username=f"{slug}-owner-{i}")
            if created:
                user.set_unusable_password()
                user.save()
            Membership.objects.get_or_create(
                user=user, team=team, defaults={"role": Membership.Role.OPERATOR}
            )
            ids.append((user.pk, user.username))
        owners[slug] = ids
    for i in range(clients):
        lead, _ = User.objects.get_or_create(username=LEAD.format(i))
        for team in teams.values():
            Membership.objects.get_or_create(
                user=lead, team=team, defaults={"role": Membership.Role.OPERATOR}
            )
        if not User.objects.filter(username=ADMIN.format(i)).exists():
            User.objects.create_superuser(ADMIN.format(i), f"admin{i}@bench.invalid", None)
    return {"teams": {s: t.pk for s, t in teams.items()}, "owners": owners}


def _runs(n: int, people: dict[str, Any], rng: random.Random, now: datetime) -> Iterator[dict]:
    team_weights = [w for _, _, w in TEAMS]
    for _ in range(n):
        status = _pick(rng, STATUSES)
        active = status in ("running", "waiting", "paused", "queued")
        age = timedelta(seconds=rng.uniform(30, (2 if active else 30) * 86400))
        created = now - age
        slug = rng.choices([s for s, _, _ in TEAMS], weights=team_weights)[0]
        owner = rng.choice(people["owners"][slug]) if rng.random() < 0.9 else None
        steps = 0 if status == "queued" else rng.randint(1, 6)
        started = None if status == "queued" else created + timedelta(seconds=rng.uniform(0, 5))
        finished = None
        if status in ("succeeded", "failed", "cancelled", "timed_out"):
            finished = started + timedelta(seconds=rng.uniform(5, 3 * 3600))
        last = finished or (started + timedelta(seconds=rng.uniform(1, 60)) if started else None)
        yield {
            "id": uuid.UUID(int=rng.getrandbits(128), version=4),
            "status": status,
            "workflow": _pick(rng, WORKFLOWS),
            "team": slug,
            "owner": owner,
            "created": created,
            "started": started,
            "finished": finished,
            "last": last,
            "steps": steps,
        }


def _budget(rng: random.Random, run: dict) -> dict[str, Any]:
    """Limits on 70 % of runs; spent as a skewed fraction, so ~1 in 9 is past 80 %."""
    out: dict[str, Any] = {
        "limit_usd": None,
        "limit_tokens": None,
        "limit_actions": None,
        "spent_usd": Decimal(0),
        "spent_tokens": 0,
        "warned": [],
    }
    if rng.random() >= 0.7:
        out["spent_usd"] = Decimal(rng.uniform(0, 2)).quantize(Decimal("0.000001"))
        out["spent_tokens"] = rng.randint(0, 100_000)
        return out
    frac = rng.random() ** 2.2 * 1.05
    limit_usd = Decimal(rng.choice([0.5, 1, 2, 5, 10])).quantize(Decimal("0.0001"))
    limit_tokens = rng.choice([50_000, 100_000, 200_000, 500_000])
    out.update(
        limit_usd=limit_usd,
        limit_tokens=limit_tokens,
        limit_actions=rng.choice([50, 100, 500, None]),
        spent_usd=(limit_usd * Decimal(frac)).quantize(Decimal("0.000001")),
        spent_tokens=int(limit_tokens * frac * rng.uniform(0.5, 1.0)),
    )
    if frac >= 0.8:
        out["warned"] = ["usd"]
    return out


def _copy(cursor: Any, table: str, columns: list[str], rows: list[tuple]) -> None:
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


RUN_COLUMNS = [
    "id", "team_id", "created_by_id", "parent_id", "workflow", "workflow_version", "queue",
    "input", "status", "wait_kind", "waiting_for", "wake_at", "stop_requested",
    "pause_requested", "pause_reason", "result", "result_is_partial", "error", "progress",
    "lease_owner", "lease_expires_at", "rung_at", "step_deadline_at", "deadline_at",
    "idle_timeout_seconds", "idle_deadline_at", "last_activity_at", "recoveries", "limit_usd",
    "limit_tokens", "limit_actions", "limit_wall_seconds", "spent_usd", "spent_tokens",
    "spent_actions", "budget_warned", "idempotency_key", "created_at", "started_at",
    "finished_at", "updated_at",
]  # fmt: skip
STEP_COLUMNS = [
    "run_id", "seq", "name", "kind", "status", "output", "error", "attempts", "service",
    "via_fallback", "usage_usd", "usage_tokens", "started_at", "finished_at",
]  # fmt: skip
EVENT_COLUMNS = [
    "run_id", "team_id", "chain", "chain_seq", "kind", "actor", "actor_user_id", "data",
    "created_at", "prev_hash", "hash",
]  # fmt: skip


def _rows(
    run: dict, people: dict[str, Any], rng: random.Random, now: datetime
) -> tuple[tuple, list[tuple], list[tuple]]:
    """The run's row, its checkpoints and its event chain."""
    from django.core.serializers.json import DjangoJSONEncoder

    from runs.audit import GENESIS, canonical, digest

    def dumps(value: Any) -> str | None:
        return None if value is None else json.dumps(value, cls=DjangoJSONEncoder)

    status, created, started = run["status"], run["created"], run["started"]
    team_id = people["teams"][run["team"]]
    budget = _budget(rng, run)
    wait_kind = waiting_for = ""
    wake_at = None
    if status == "waiting":
        wait_kind = _pick(rng, WAIT_KINDS)
        waiting_for = {"approval": "publish", "event": "confirm"}.get(wait_kind, f"s{run['steps']}")
        if wait_kind in ("timer", "retry", "circuit"):
            wake_at = now + timedelta(seconds=rng.uniform(10, 6 * 3600))
    total = rng.choice([10, 50, 200])
    done = total if status == "succeeded" else rng.randint(0, total)
    progress = (
        {"done": done, "total": total, "stage": "reading", "updated_at": run["last"].isoformat()}
        if started and run["workflow"] == "digest"
        else {}
    )
    result = {"files": done, "words": done * 811} if status == "succeeded" else None
    error = (
        {"type": "PermanentError", "message": "HTTP 404 from corpus"}
        if status == "failed"
        else None
    )
    owner_id = run["owner"][0] if run["owner"] else None
    run_row = (
        run["id"], team_id, owner_id, None, run["workflow"], "1", "runs",
        dumps({"topic": rng.choice(WORDS), "limit": total}), status, wait_kind, waiting_for,
        wake_at, "", False, "budget reached" if status == "paused" else "", dumps(result),
        False, dumps(error), dumps(progress), "", None, None, None, None, None, None,
        run["last"], 0, budget["limit_usd"], budget["limit_tokens"], budget["limit_actions"],
        None, budget["spent_usd"], budget["spent_tokens"], run["steps"],
        dumps(budget["warned"]), "", created, started, run["finished"], run["last"] or created,
    )  # fmt: skip

    steps, events = [], []
    chain = str(run["id"])
    prev = GENESIS
    actor_owner = f"user:{run['owner'][1]}" if run["owner"] else "api:ci"

    def event(kind: str, at: datetime, data: dict[str, Any], actor: str) -> None:
        nonlocal prev
        seq = len(events) + 1
        payload = canonical(data)
        h = digest(prev, chain, seq, kind, actor, chain, payload, at.isoformat())
        events.append(
            (run["id"], team_id, chain, seq, kind, actor, None, dumps(payload), at, prev, h)
        )
        prev = h

    event("run.created", created, {"workflow": run["workflow"], "version": "1"}, actor_owner)
    if started:
        event("run.started", started, {"to": "running"}, "worker:bench")
        span = ((run["last"] or started) - started) / max(run["steps"], 1)
        for seq in range(1, run["steps"] + 1):
            at0 = started + span * (seq - 1)
            at1 = started + span * seq
            steps.append(
                (run["id"], seq, f"s{seq}", "step", "completed", dumps({"n": seq}), None, 1, "",
                 False, Decimal(0), 0, at0, at1)
            )  # fmt: skip
            event("step.completed", at1, {"seq": seq, "name": f"s{seq}"}, "worker:bench")
    if status in TERMINAL_EVENT:
        at = run["finished"] or run["last"] or created
        event(TERMINAL_EVENT[status], at, {"to": status}, "worker:bench")
    return run_row, steps, events


def seed(n: int, *, clients: int, seed_value: int = 7) -> dict[str, Any]:
    """Write ``n`` runs (with checkpoints and events) in batches; returns counts and timing."""
    from django.db import connection
    from django.utils import timezone

    from runs.audit import Event
    from runs.models import Run, Step

    rng = random.Random(seed_value)
    people = ensure_people(clients=clients)
    now = timezone.now()
    t0 = time.perf_counter()
    counts = {"runs": 0, "steps": 0, "events": 0}
    batch_runs: list[tuple] = []
    batch_steps: list[tuple] = []
    batch_events: list[tuple] = []

    def flush() -> None:
        with connection.cursor() as cur:
            raw = cur.cursor
            _copy(raw, Run._meta.db_table, RUN_COLUMNS, batch_runs)
            _copy(raw, Step._meta.db_table, STEP_COLUMNS, batch_steps)
            _copy(raw, Event._meta.db_table, EVENT_COLUMNS, batch_events)
        counts["runs"] += len(batch_runs)
        counts["steps"] += len(batch_steps)
        counts["events"] += len(batch_events)
        batch_runs.clear()
        batch_steps.clear()
        batch_events.clear()

    for run in _runs(n, people, rng, now):
        r, s, e = _rows(run, people, rng, now)
        batch_runs.append(r)
        batch_steps.extend(s)
        batch_events.extend(e)
        if len(batch_runs) >= BATCH:
            flush()
            if counts["runs"] % 20_000 == 0:
                _log(f"[seed] {counts['runs']:,} runs in {time.perf_counter() - t0:.0f} s")
    if batch_runs:
        flush()
    with connection.cursor() as cur:
        # A ledger in service is vacuumed as it goes; one written in 30 s by COPY is not, and
        # autovacuum and the checkpointer would then work through it (with fsync on) while
        # the pages are measured, stalls of the seed's making.
        cur.execute("VACUUM (ANALYZE)")
        cur.execute("CHECKPOINT")
    counts["seconds"] = time.perf_counter() - t0
    _log(
        f"[seed] {counts['runs']:,} runs, {counts['steps']:,} steps, {counts['events']:,} "
        f"events in {counts['seconds']:.1f} s"
    )
    return counts


def verify_sample(k: int, *, seed_value: int = 11) -> dict[str, Any]:
    """``verify_chain`` over ``k`` random seeded runs' chains (all of them when k <= 0)."""
    from runs.audit import verify_chain
    from runs.models import Run

    ids = list(Run.objects.values_list("id", flat=True))
    if k > 0:
        ids = random.Random(seed_value).sample(ids, min(k, len(ids)))
    t0 = time.perf_counter()
    broken = [r for r in (verify_chain(str(i)) for i in ids) if r.broken_at is not None]
    return {"chains": len(ids), "broken": len(broken), "seconds": time.perf_counter() - t0}
