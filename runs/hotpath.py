"""The per-step statements in plain SQL.

A step's checkpoint is the engine's hot path: one guarded UPDATE of the run (returning the
flags the next step is checked against), one INSERT of the checkpoint and one of its audit
event, in one transaction. The ORM builds these same statements at several times their cost,
so they are written out here once per database vendor, with Django's own adapters for the
values. Everything else stays on the ORM.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection

from runs.audit import Event
from runs.audit import digest as audit_digest
from runs.models import Run, Step

#: The run columns every step is checked against (cancel, pause, budgets).
FLAG_COLUMNS = (
    "stop_requested",
    "pause_requested",
    "pause_reason",
    "limit_usd",
    "limit_tokens",
    "limit_actions",
    "limit_wall_seconds",
    "spent_usd",
    "spent_tokens",
    "spent_actions",
    "budget_warned",
)
_Q6 = Decimal("0.000001")
_Q4 = Decimal("0.0001")


@cache
def _sql(vendor: str) -> dict[str, str]:
    run, step, event = Run._meta.db_table, Step._meta.db_table, Event._meta.db_table
    flags = ", ".join(FLAG_COLUMNS)
    step_cols = (
        "run_id, seq, name, kind, status, output, error, attempts, service, via_fallback, "
        "usage_usd, usage_tokens, started_at, finished_at"
    )
    event_cols = (
        "run_id, team_id, chain, chain_seq, kind, actor, actor_user_id, data, created_at, "
        "prev_hash, hash"
    )
    guard = (
        f"UPDATE {run} SET spent_actions = spent_actions + %s, spent_usd = spent_usd + %s, "
        "spent_tokens = spent_tokens + %s, last_activity_at = %s, updated_at = %s, "
        "step_deadline_at = NULL{idle} "
        "WHERE id = %s AND lease_owner = %s AND status = 'running' "
        f"RETURNING {flags}"
    )
    return {
        "guard": guard.format(idle=""),
        "guard_idle": guard.format(idle=", idle_deadline_at = %s"),
        "flags": f"SELECT lease_owner, {flags} FROM {run} WHERE id = %s",
        "step": f"INSERT INTO {step} ({step_cols}) VALUES ({', '.join(['%s'] * 14)})",
        "event": f"INSERT INTO {event} ({event_cols}) VALUES ({', '.join(['%s'] * 11)})",
        "head": (
            f"SELECT chain_seq, hash FROM {event} WHERE chain = %s ORDER BY chain_seq DESC LIMIT 1"
        ),
    }


def _dec(value: Any, q: Decimal) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value
    return Decimal(repr(value)).quantize(q)  # SQLite hands back int or float


def _flags(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(FLAG_COLUMNS, row, strict=True))
    out["pause_requested"] = bool(out["pause_requested"])
    out["limit_usd"] = _dec(out["limit_usd"], _Q4)
    out["spent_usd"] = _dec(out["spent_usd"], _Q6)
    warned = out["budget_warned"]
    out["budget_warned"] = json.loads(warned) if isinstance(warned, str) else (warned or [])
    return out


def _dt(value: datetime | None) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


def _json(value: Any) -> Any:
    return None if value is None else connection.ops.adapt_json_value(value, DjangoJSONEncoder)


def _run_id(run_id: Any) -> Any:
    return Run._meta.pk.get_db_prep_value(run_id, connection)


Statement = tuple[str, list[Any]]


def run(statements: list[Statement]) -> dict[str, Any] | None:
    """Execute the statements in the current transaction; the first must be a ``guard``.

    Returns the run's flags as of the guard's write, or None when this worker no longer holds
    the lease (then the caller raises, and the transaction with the later statements rolls
    back). On PostgreSQL the statements go in one pipeline: one network round trip.
    """
    if connection.vendor == "postgresql" and len(statements) > 1:
        connection.ensure_connection()
        cursors = [connection.cursor() for _ in statements]
        try:
            with connection.connection.pipeline():
                for cur, (sql, params) in zip(cursors, statements, strict=True):
                    cur.execute(sql, params)
            row = cursors[0].fetchone()
        finally:
            for cur in cursors:
                cur.close()
    else:
        with connection.cursor() as cur:
            for i, (sql, params) in enumerate(statements):
                cur.execute(sql, params)
                if i == 0:
                    row = cur.fetchone()
    return _flags(row) if row else None


def guard(
    run_id: Any,
    worker: str,
    *,
    now: datetime,
    actions: int,
    usd: Decimal,
    tokens: int,
    idle_deadline: datetime | None = None,
) -> Statement:
    """The lease check that starts every checkpoint transaction, charging the step's spend
    and returning the run's flags (see ``run``)."""
    sql = _sql(connection.vendor)
    params: list[Any] = [
        actions,
        connection.ops.adapt_decimalfield_value(usd, 14, 6),
        tokens,
        _dt(now),
        _dt(now),
    ]
    if idle_deadline is not None:
        params.append(_dt(idle_deadline))
    params += [_run_id(run_id), worker]
    return sql["guard_idle" if idle_deadline is not None else "guard"], params


def read_flags(run_id: Any) -> tuple[str, dict[str, Any]] | None:
    with connection.cursor() as cur:
        cur.execute(_sql(connection.vendor)["flags"], [_run_id(run_id)])
        row = cur.fetchone()
    return (row[0], _flags(row[1:])) if row else None


def step(
    run_id: Any,
    *,
    seq: int,
    name: str,
    kind: str,
    status: str,
    output: Any,
    error: Any,
    attempts: int,
    service: str,
    via_fallback: bool,
    usd: Decimal,
    tokens: int,
    started: datetime,
    finished: datetime | None,
) -> Statement:
    params = [
        _run_id(run_id),
        seq,
        name,
        kind,
        status,
        _json(output),
        _json(error),
        attempts,
        service,
        via_fallback,
        connection.ops.adapt_decimalfield_value(usd, 12, 6),
        tokens,
        _dt(started),
        _dt(finished),
    ]
    return _sql(connection.vendor)["step"], params


def chain_head(chain: str) -> tuple[int, str]:
    from runs.audit import GENESIS

    with connection.cursor() as cur:
        cur.execute(_sql(connection.vendor)["head"], [chain])
        row = cur.fetchone()
    return (row[0], row[1]) if row else (0, GENESIS)


def event(
    *,
    run_id: Any,
    team_id: int,
    chain: str,
    head: tuple[int, str],
    kind: str,
    actor: str,
    data: dict[str, Any],
    now: datetime,
) -> tuple[Statement, tuple[int, str]]:
    """The INSERT of an event after ``head``, and the new head. A stale head makes the INSERT
    fail on the (chain, chain_seq) unique constraint, so the caller retries with a fresh one."""
    seq, prev = head[0] + 1, head[1]
    # The same digest as ``Event.compute_hash``, without building a model instance.
    digest = audit_digest(prev, chain, seq, kind, actor, str(run_id), data, now.isoformat())
    params = [
        _run_id(run_id),
        team_id,
        chain,
        seq,
        kind,
        actor,
        None,
        _json(data),
        _dt(now),
        prev,
        digest,
    ]
    return (_sql(connection.vendor)["event"], params), (seq, digest)
